//! Message Expiry Interval (3.3.2.3.3): a message that waited longer than its expiry for
//! an offline session, or as a retained message, is not delivered; one still alive
//! carries what remains of its interval. Real seconds pass here (the spec counts in
//! seconds), kept short: 2 s expiries, a 4 s wait.

use crate::raw::Raw;
use crate::wire::{id, options, Connect, Props};
use crate::{both, Broker};
use std::time::Duration;

fn expiring(secs: u32) -> Props {
    Props::new().u32(id::MESSAGE_EXPIRY, secs)
}

async fn expired_messages_are_not_delivered(b: Broker) {
    let who = b.name;
    let session = Connect::new(&b.id("exp-sub")).props(Props::new().u32(id::SESSION_EXPIRY, 60));
    let (mut sub, _) = Raw::connect(b.addr, who, &session).await;
    sub.sub("mqtt5/expiry/#", options(1, false, false, 0)).await;
    sub.bye().await;

    let mut publisher = Raw::plain(b.addr, who, &b.id("exp-pub")).await;
    let queued = [("short", 2), ("long", 60)];
    for (i, (name, secs)) in queued.iter().enumerate() {
        let topic = format!("mqtt5/expiry/{name}");
        let (r, _) = publisher
            .publish1(
                &topic,
                name.as_bytes(),
                i as u16 + 1,
                false,
                &expiring(*secs),
            )
            .await;
        assert_eq!(r, 0, "[{who}] PUBACK for {topic}");
    }
    // Retained: one that expires, one that does not (so that "nothing came" below means
    // expiry, not a broker that keeps no retained messages).
    publisher
        .publish1(
            "mqtt5/retained-expiry/short",
            b"r-short",
            3,
            true,
            &expiring(2),
        )
        .await;
    publisher
        .publish1(
            "mqtt5/retained-expiry/kept",
            b"r-kept",
            4,
            true,
            &Props::new(),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(4)).await;

    let (mut back, ack) = Raw::connect(b.addr, who, &session.clone().resume()).await;
    assert!(ack.session_present, "[{who}] the 60 s session is gone");
    let got = back.publishes_until_quiet(Duration::from_secs(1)).await;
    let texts: Vec<String> = got.iter().map(|p| p.text()).collect();
    assert_eq!(
        texts,
        ["long"],
        "[{who}] queued for an offline session: expiry 2 s is dropped after 4 s, 60 s is not"
    );
    let left = got[0].props.num(id::MESSAGE_EXPIRY);
    assert!(
        matches!(left, Some(1..=60)),
        "[{who}] the delivered message carries its remaining expiry (0 < n <= 60): {left:?}"
    );
    // The 4 s it waited are taken off (3.3.2-6).
    assert!(
        left.unwrap() <= 58,
        "[{who}] remaining expiry {left:?} after 4 s in the queue: not decremented"
    );

    let mut late = Raw::plain(b.addr, who, &b.id("exp-late")).await;
    late.sub("mqtt5/retained-expiry/#", options(1, false, false, 0))
        .await;
    let got = late.publishes_until_quiet(Duration::from_secs(1)).await;
    let texts: Vec<String> = got.iter().map(|p| p.text()).collect();
    assert_eq!(
        texts,
        ["r-kept"],
        "[{who}] a retained message with expiry 2 s is not sent 4 s later"
    );
}

#[tokio::test]
async fn expired_messages_are_not_delivered_and_live_ones_carry_the_time_left() {
    both("", "", expired_messages_are_not_delivered).await;
}
