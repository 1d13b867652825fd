//! What the server says in its CONNACK and on refusals: Server Keep Alive when it
//! overrides the client's keep alive (3.2.2.3.14), and Reason Strings (3.2.2.3.9,
//! 3.4.2.2.2) that tell a user why a CONNECT or a PUBLISH was refused.

use crate::common::TestBroker;
use crate::raw::Raw;
use crate::wire::{id, Connect, Props};
use crate::{both, Broker};

async fn server_keep_alive(b: Broker) {
    let who = b.name;
    let mut long = Connect::new(&b.id("ka-60"));
    long.keep_alive = 60;
    let (c, ack) = Raw::connect(b.addr, who, &long).await;
    assert_eq!(
        ack.props.num(id::SERVER_KEEP_ALIVE),
        Some(10),
        "[{who}] keep alive 60 against a maximum of 10: Server Keep Alive in {:?}",
        ack.props
    );
    c.bye().await;

    let mut short = Connect::new(&b.id("ka-5"));
    short.keep_alive = 5;
    let (c, ack) = Raw::connect(b.addr, who, &short).await;
    // mosquitto sends none; repeating the client's own value would be as correct.
    let said = ack.props.num(id::SERVER_KEEP_ALIVE);
    assert!(
        matches!(said, None | Some(5)),
        "[{who}] keep alive 5 under a maximum of 10 was overridden: Server Keep Alive {said:?}"
    );
    c.bye().await;
}

#[tokio::test]
async fn server_keep_alive_is_sent_when_the_clients_is_too_long() {
    both(
        "max_keepalive 10",
        "max_keep_alive_secs = 10",
        server_keep_alive,
    )
    .await;
}

/// Fleetcast only: mosquitto 2.0.11 sends no Reason String on either refusal (checked
/// with a password file and an ACL: a wrong password gets CONNACK 0x87 with no
/// properties, where the spec's code is 0x86, and a publish outside the ACL gets
/// PUBACK 0x87 with no properties). Reason Strings are optional (the server "MAY"
/// send one); fleetcast promises them (issue 12) so a user learns why.
#[tokio::test]
async fn refusals_carry_a_reason_string() {
    let f = TestBroker::with_example_credentials().await;
    let who = "fleetcast";
    let mut wrong = Connect::new("drv-000001");
    wrong.login = Some(("drv-000001".into(), "wrong".into()));
    let (_, ack) = Raw::hello(f.addrs.mqtt, who, &wrong).await;
    assert_eq!(ack.reason, 0x86, "[{who}] a wrong password");
    let why = ack.props.string(id::REASON_STRING);
    assert!(
        why.is_some_and(|s| !s.is_empty()),
        "[{who}] CONNACK 0x86 without a Reason String: {:?}",
        ack.props
    );

    let mut right = Connect::new("drv-000001");
    right.login = Some(("drv-000001".into(), "drv1-demo".into()));
    let (mut c, _) = Raw::connect(f.addrs.mqtt, who, &right).await;
    let (reason, props) = c
        .publish1(
            "drivers/drv-000002/location",
            b"{}",
            1,
            false,
            &Props::new(),
        )
        .await;
    assert_eq!(reason, 0x87, "[{who}] another driver's topic");
    let why = props.string(id::REASON_STRING);
    assert!(
        why.is_some_and(|s| !s.is_empty()),
        "[{who}] PUBACK 0x87 without a Reason String: {props:?}"
    );
}
