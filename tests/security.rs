//! Identity and topic policy with `examples/credentials.toml`: drivers publish only their
//! own topics, riders cannot subscribe to everything, wrong or missing credentials get
//! CONNACK 0x05 (MQTT 5: 0x86/0x87, forged publishes PUBACK 0x87), wills are checked too, and `serve` will not run anonymous on a public
//! address.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::*;
use fleetcast_loadtest::wire;
use rumqttc::{QoS, SubscribeReasonCode};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

fn login(
    id: &str,
    user: &str,
    pass: &str,
    addrs: &fleetcast_broker::Addrs,
) -> rumqttc::MqttOptions {
    let mut o = tcp_options(id, addrs);
    o.set_credentials(user, pass);
    o
}

/// The CONNACK return code for a raw CONNECT with these credentials.
async fn connack(addr: std::net::SocketAddr, id: &str, creds: Option<(&str, &str)>) -> u8 {
    let (_, answer) = raw_exchange(addr, &wire::connect(id, 30, creds), 4).await;
    assert_eq!(answer[0], 0x20);
    answer[3]
}

#[tokio::test]
async fn a_driver_cannot_publish_as_another() {
    let b = TestBroker::with_example_credentials().await;
    let mut bridge = TestClient::connect(login(
        "fleetcast-dashboard-t",
        "bridge",
        "bridge-demo",
        &b.addrs,
    ))
    .await;
    assert_eq!(
        bridge.subscribe("drivers/#", QoS::AtMostOnce).await,
        [SubscribeReasonCode::Success(QoS::AtMostOnce)]
    );

    let mut a = TestClient::connect(login("drv-000001", "drv-000001", "drv1-demo", &b.addrs)).await;
    let mine = r#"{"id":"drv-000001","lat":60.17,"lon":24.94,"heading":0,"speed":0,"accuracy":3,"status":"available","seq":1,"ts":1795963525273}"#;
    a.client
        .publish("drivers/drv-000001/location", QoS::AtMostOnce, false, mine)
        .await
        .unwrap();
    assert_eq!(
        &bridge
            .next_publish()
            .await
            .expect("own topic flows")
            .payload[..],
        mine.as_bytes()
    );

    a.client
        .publish(
            "drivers/drv-000002/location",
            QoS::AtMostOnce,
            false,
            "forged",
        )
        .await
        .unwrap();
    assert!(a.closed().await.is_some(), "the forger is disconnected");
    assert!(
        bridge
            .publish_within(Duration::from_millis(500))
            .await
            .is_none(),
        "drv-000002's subscribers receive nothing"
    );
}

#[tokio::test]
async fn a_rider_cannot_subscribe_to_everything() {
    let b = TestBroker::with_example_credentials().await;
    let mut rider = TestClient::connect(login("rider-1", "rider-1", "rider-demo", &b.addrs)).await;
    assert_eq!(
        rider.subscribe("#", QoS::AtMostOnce).await,
        [SubscribeReasonCode::Failure]
    );
    assert_eq!(
        rider.subscribe("drivers/#", QoS::AtMostOnce).await,
        [SubscribeReasonCode::Failure]
    );
    assert_eq!(
        rider.subscribe("drivers/+/location", QoS::AtMostOnce).await,
        [SubscribeReasonCode::Success(QoS::AtMostOnce)]
    );
    // And may not publish at all.
    rider
        .client
        .publish("drivers/drv-000001/location", QoS::AtMostOnce, false, "x")
        .await
        .unwrap();
    assert!(rider.closed().await.is_some());
}

#[tokio::test]
async fn bad_or_missing_credentials_get_connack_5() {
    let b = TestBroker::with_example_credentials().await;
    assert_eq!(
        connack(
            b.addrs.mqtt,
            "drv-000001",
            Some(("drv-000001", "drv1-demo"))
        )
        .await,
        0
    );
    assert_eq!(
        connack(b.addrs.mqtt, "drv-000001", Some(("drv-000001", "wrong"))).await,
        5
    );
    assert_eq!(connack(b.addrs.mqtt, "drv-000001", None).await, 5);
    assert_eq!(
        connack(b.addrs.mqtt, "drv-000001", Some(("nobody", "drv1-demo"))).await,
        5
    );
    // The right password for another client id.
    assert_eq!(
        connack(
            b.addrs.mqtt,
            "drv-000002",
            Some(("drv-000001", "drv1-demo"))
        )
        .await,
        5
    );
    // The fleet account covers drv-* ids.
    assert_eq!(
        connack(b.addrs.mqtt, "drv-000777", Some(("fleet", "fleet-demo"))).await,
        0
    );
}

#[tokio::test]
async fn mqtt5_gets_0x86_for_a_wrong_password_and_puback_0x87_for_a_forged_topic() {
    use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode as C5, Packet as P5, PubAckReason};
    use rumqttc::v5::mqttbytes::QoS as Q5;
    use rumqttc::v5::{ConnectionError, MqttOptions};
    let b = TestBroker::with_example_credentials().await;
    let port = b.addrs.mqtt.port();

    let mut wrong = MqttOptions::new("drv-000001", "127.0.0.1", port);
    wrong.set_credentials("drv-000001", "wrong");
    let (_c, mut events) = v5_client(wrong);
    match v5_error(&mut events).await {
        ConnectionError::ConnectionRefused(code) => assert_eq!(code, C5::BadUserNamePassword),
        e => panic!("expected CONNACK 0x86, got {e}"),
    }
    let (_c, mut events) = v5_client(MqttOptions::new("drv-000001", "127.0.0.1", port));
    match v5_error(&mut events).await {
        ConnectionError::ConnectionRefused(code) => assert_eq!(code, C5::NotAuthorized),
        e => panic!("expected CONNACK 0x87, got {e}"),
    }

    let mut bridge = TestClient::connect(login(
        "fleetcast-dashboard-t5",
        "bridge",
        "bridge-demo",
        &b.addrs,
    ))
    .await;
    bridge.subscribe("drivers/#", QoS::AtLeastOnce).await;
    let mut right = MqttOptions::new("drv-000001", "127.0.0.1", port);
    right.set_credentials("drv-000001", "drv1-demo");
    let (driver, mut events) = v5_client(right);
    let mine = r#"{"id":"drv-000001","lat":60.17,"lon":24.94,"heading":0,"speed":0,"accuracy":3,"status":"available","seq":1,"ts":1795963525273}"#;
    for (topic, expected) in [
        ("drivers/drv-000002/location", PubAckReason::NotAuthorized),
        ("drivers/drv-000001/location", PubAckReason::Success),
    ] {
        driver
            .publish(topic, Q5::AtLeastOnce, false, mine)
            .await
            .unwrap();
        let reason = v5_until(&mut events, |p| match p {
            P5::PubAck(a) => Some(a.reason),
            _ => None,
        })
        .await;
        assert_eq!(reason, expected, "{topic}");
    }
    // The same connection carried on, and only its own topic reached the subscriber.
    let got = bridge.next_publish().await.expect("own topic flows");
    assert_eq!(got.topic, "drivers/drv-000001/location");
    assert!(bridge
        .publish_within(Duration::from_millis(300))
        .await
        .is_none());
}

#[tokio::test]
async fn a_will_outside_the_policy_is_refused() {
    let b = TestBroker::with_example_credentials().await;
    let mut o = login("drv-000001", "drv-000001", "drv1-demo", &b.addrs);
    o.set_last_will(rumqttc::LastWill::new(
        "drivers/drv-000002/status",
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    let (_client, mut eventloop) = rumqttc::AsyncClient::new(o, 10);
    let code = loop {
        match timeout(PATIENCE, eventloop.poll()).await.unwrap() {
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(a))) => break Some(a.code),
            Ok(_) => continue,
            Err(rumqttc::ConnectionError::ConnectionRefused(code)) => break Some(code),
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(code, Some(rumqttc::ConnectReturnCode::NotAuthorized));
}

#[tokio::test]
async fn a_fleet_drives_with_one_account() {
    let b = TestBroker::with_example_credentials().await;
    let mut bridge = TestClient::connect(login(
        "fleetcast-dashboard-f",
        "bridge",
        "bridge-demo",
        &b.addrs,
    ))
    .await;
    bridge
        .subscribe("drivers/+/location", QoS::AtMostOnce)
        .await;
    let mut config = fleetcast_simulator::fleet::FleetConfig::new(
        format!("mqtt://{}", b.addrs.mqtt).parse().unwrap(),
        3,
    );
    config.username = Some("fleet".into());
    config.password = Some("fleet-demo".into());
    config.interval = Duration::from_millis(200);
    let graph =
        std::sync::Arc::new(fleetcast_simulator::road_graph::RoadGraph::helsinki().unwrap());
    let fleet = fleetcast_simulator::fleet::Fleet::start(config, graph);
    let p = bridge
        .next_publish()
        .await
        .expect("positions through the policy");
    assert!(p.topic.starts_with("drivers/drv-"));
    let stats = fleet.stop().await;
    assert_eq!(stats.reconnects, 0, "no driver was refused or dropped");
}

#[test]
fn serve_refuses_anonymous_clients_on_a_public_address() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fleetcast"))
        .args([
            "serve",
            "--mqtt",
            "0.0.0.0:0",
            "--ws",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to serve anonymous clients") && err.contains("--auth"),
        "{err}"
    );
    // With credentials it starts.
    let creds = EXAMPLE_CREDENTIALS;
    let mut served = spawn_ready("serve", &["--auth", creds]);
    assert!(served.child.try_wait().unwrap().is_none());
}

#[tokio::test]
async fn passwd_makes_hashes_the_broker_accepts() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_fleetcast"))
        .args(["passwd", "correct horse"])
        .output()
        .await
        .unwrap();
    let hash = String::from_utf8(out.stdout).unwrap();
    let file = format!("[[account]]\nusername = \"u\"\nclient_id = \"*\"\npassword_hash = \"{}\"\nrole = \"rider\"\n", hash.trim());
    let auth = fleetcast_broker::auth::Auth::from_toml(&file).unwrap();
    assert!(auth
        .check("any", Some(("u", "correct horse")))
        .await
        .is_ok());
    assert!(auth
        .check("any", Some(("u", "battery staple")))
        .await
        .is_err());
    // Stdin works too.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fleetcast"))
        .arg("passwd")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin\n")
        .await
        .unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .await
        .unwrap();
    assert!(out.starts_with("$argon2id$"), "{out}");
}

/// Each kind of bad location is dropped and counted; good ones flow; the publisher stays.
#[tokio::test]
async fn bad_locations_are_dropped_and_counted_while_good_ones_flow() {
    let stack = start_stack(fleetcast::stack::offline_dashboard().unwrap()).await;
    let addrs = stack.addrs();
    let mut rider = TestClient::connect(tcp_options("rider", &addrs)).await;
    rider.subscribe("drivers/+/location", QoS::AtMostOnce).await;
    let driver = TestClient::connect(tcp_options("drv-9", &addrs)).await;
    let now = fleetcast_proto::time::now_ms();
    let fix = |lat: &str, lon: &str, speed: &str, ts: u64, id: &str| {
        format!(
            r#"{{"id":"{id}","lat":{lat},"lon":{lon},"heading":0,"speed":{speed},"accuracy":3,"status":"available","seq":1,"ts":{ts}}}"#
        )
    };
    let bad = [
        "not json".to_owned(),
        r#"{"lat":60.1}"#.to_owned(),
        fix("1e999", "24.9", "1", now, "drv-9"),
        fix("91", "24.9", "1", now, "drv-9"),
        fix("60.1", "181", "1", now, "drv-9"),
        fix("60.1", "24.9", "-3", now, "drv-9"),
        fix("60.1", "24.9", "1", 12, "drv-9"),
        fix("60.1", "24.9", "1", now, "drv-10"),
    ];
    for (i, body) in bad.iter().enumerate() {
        // QoS 1 too: a dropped message is still acknowledged.
        let qos = if i % 2 == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        driver
            .client
            .publish("drivers/drv-9/location", qos, false, body.clone())
            .await
            .unwrap();
    }
    let good = fix("60.1", "24.9", "1", now, "drv-9");
    driver
        .client
        .publish(
            "drivers/drv-9/location",
            QoS::AtLeastOnce,
            false,
            good.clone(),
        )
        .await
        .unwrap();
    let got = rider.next_publish().await.expect("the good one flows");
    assert_eq!(
        &got.payload[..],
        good.as_bytes(),
        "only the good one arrives, first"
    );
    assert!(rider
        .publish_within(Duration::from_millis(300))
        .await
        .is_none());
    let metrics = http_get(addrs.http, "/metrics").await;
    assert!(
        metrics.contains("fleetcast_messages_dropped_total{reason=\"invalid_payload\"} 8"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("dropped"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        metrics.contains("fleetcast_connections{transport=\"tcp\"} 2"),
        "the publisher stays connected"
    );
}

/// Quick reconnects are not refused: five connects of one id within a second all get
/// CONNACK 0, in both versions (mosquitto takes them too); past `flap_max_connects` in the
/// window the id is banned (0x03 / MQTT 5 0x9F), counted as flapping, and other ids go on.
#[tokio::test]
async fn quick_reconnects_pass_and_a_flapping_id_is_banned() {
    let mut config = fleetcast_broker::Config::ephemeral();
    config.limits.flap_max_connects = 7;
    let stack =
        start_stack_with_config(config, fleetcast::stack::offline_dashboard().unwrap(), None).await;
    let addrs = stack.addrs();
    let started = std::time::Instant::now();
    for i in 0..5 {
        let (_, answer) =
            raw_exchange(addrs.mqtt, &connect_frame("drv-quick", 30, true, None), 4).await;
        assert_eq!(answer, [0x20, 0x02, 0x00, 0x00], "connect {i} accepted");
    }
    let v5 = connect_frame_version(b"MQTT", 5, "drv-quick", 30, true, None);
    for i in 5..7 {
        let (_, answer) = raw_exchange(addrs.mqtt, &v5, 5).await;
        // CONNACK, reason 0 (its properties follow).
        assert_eq!((answer[0], answer[3]), (0x20, 0x00), "connect {i} accepted");
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "all within the window"
    );
    // The eighth within the minute: a kicking loop, banned.
    let (_, v311) = raw_exchange(addrs.mqtt, &connect_frame("drv-quick", 30, true, None), 4).await;
    assert_eq!(v311, [0x20, 0x02, 0x00, 0x03], "3.1.1: server unavailable");
    let (_, v5) = raw_exchange(addrs.mqtt, &v5, 6).await;
    assert_eq!(
        [v5[0], v5[2], v5[3], v5[5]],
        [0x20, 0x00, 0x9F, 0x1F],
        "5: connection rate exceeded, with a Reason String"
    );
    let (_, other) = raw_exchange(addrs.mqtt, &connect_frame("drv-other", 30, true, None), 4).await;
    assert_eq!(other[3], 0, "other ids are not affected");
    let metrics = http_get(addrs.http, "/metrics").await;
    assert!(
        metrics.contains("fleetcast_connect_refusals_total{reason=\"flapping\"} 2"),
        "the bans are counted: {metrics}"
    );
}

/// The strict per-id rate (AWS IoT Core's one connect a second) for those who set it.
#[tokio::test]
async fn one_client_id_connects_at_most_once_a_second() {
    let mut config = fleetcast_broker::Config::ephemeral();
    config.limits.connect_rate_per_client_id = 1;
    let b = TestBroker::with_config(config).await;
    let first = TestClient::connect(tcp_options("drv-kick", &b.addrs)).await;
    // A second device with the same id, at once: refused, in either version, and the
    // first connection is not kicked.
    let (_, v311) = raw_exchange(b.addrs.mqtt, &connect_frame("drv-kick", 30, true, None), 4).await;
    assert_eq!(v311, [0x20, 0x02, 0x00, 0x03], "3.1.1: server unavailable");
    let v5 = connect_frame_version(b"MQTT", 5, "drv-kick", 30, true, None);
    let (_, v5) = raw_exchange(b.addrs.mqtt, &v5, 6).await;
    assert_eq!(
        [v5[0], v5[2], v5[3], v5[5]],
        [0x20, 0x00, 0x9F, 0x1F],
        "5: connection rate exceeded, with a Reason String"
    );
    first
        .client
        .publish("chat/x", QoS::AtMostOnce, false, "still here")
        .await
        .unwrap();
    // Refusals are not charged: once the second is over, the id connects again.
    let started = std::time::Instant::now();
    loop {
        let (_, answer) =
            raw_exchange(b.addrs.mqtt, &connect_frame("drv-kick", 30, true, None), 4).await;
        if answer[3] == 0 {
            break;
        }
        assert!(started.elapsed() < PATIENCE, "never admitted again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started.elapsed() < Duration::from_millis(1_500));
}

#[tokio::test]
async fn the_global_connect_rate_refuses_the_excess() {
    let mut config = fleetcast_broker::Config::ephemeral();
    config.limits.connect_rate_global = 5;
    let b = TestBroker::with_config(config).await;
    let mut codes = Vec::new();
    for i in 0..8 {
        let (_, answer) = raw_exchange(
            b.addrs.mqtt,
            &connect_frame(&format!("c-{i}"), 30, true, None),
            4,
        )
        .await;
        codes.push(answer[3]);
    }
    // One second's worth passes at once; the rest are refused until the rate allows.
    assert_eq!(codes[..5], [0; 5]);
    assert!(codes[5..].iter().all(|&c| c == 3), "{codes:?}");
}

#[tokio::test]
async fn one_connection_publishes_at_most_its_quota() {
    // Defaults: 100 PUBLISH/s per connection. 250 sent at once arrive, all of them, but
    // no sooner than the quota allows: (250 - 10 of burst) / 100 = 2.4 s.
    let b = TestBroker::start().await;
    let mut sub = TestClient::connect(tcp_options("quota-sub", &b.addrs)).await;
    sub.subscribe("chat/quota", QoS::AtLeastOnce).await;
    let (mut s, _) =
        raw_exchange(b.addrs.mqtt, &connect_frame("quota-pub", 30, true, None), 4).await;
    let started = std::time::Instant::now();
    s.write_all(&publish_burst("chat/quota", 250))
        .await
        .unwrap();
    for i in 0..250u32 {
        let p = sub.next_publish().await.expect("every message arrives");
        assert_eq!(&p.payload[..], i.to_be_bytes());
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2_300),
        "250 publishes in {took:?}"
    );
    drop(s);
}

#[tokio::test]
async fn an_mqtt5_rider_subscribing_to_everything_gets_suback_0x87() {
    use rumqttc::v5::mqttbytes::v5::{Packet as P5, SubscribeReasonCode as S5};
    use rumqttc::v5::mqttbytes::QoS as Q5;
    let b = TestBroker::with_example_credentials().await;
    let mut o = rumqttc::v5::MqttOptions::new("rider-1", "127.0.0.1", b.addrs.mqtt.port());
    o.set_credentials("rider-1", "rider-demo");
    let (rider, mut events) = v5_client(o);
    for (filter, expected) in [
        ("#", S5::NotAuthorized),
        ("drivers/+/location", S5::Success(Q5::AtMostOnce)),
    ] {
        rider.subscribe(filter, Q5::AtMostOnce).await.unwrap();
        let codes = v5_until(&mut events, |p| match p {
            P5::SubAck(a) => Some(a.return_codes.clone()),
            _ => None,
        })
        .await;
        assert_eq!(codes, [expected], "{filter}");
    }
}

/// The recommended per-device layout: each device logs in only as itself, with its own
/// password, and no device's password opens another's id (unlike the shared `fleet`).
#[tokio::test]
async fn per_device_accounts_speak_for_one_car_only() {
    use fleetcast_broker::auth::{Auth, Denial};
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/credentials-per-device.toml"
    );
    let auth = Auth::from_file(std::path::Path::new(path)).unwrap();
    assert!(auth.has_token_secret());
    assert!(auth
        .check("drv-000001", Some(("drv-000001", "dev1-secret")))
        .await
        .is_ok());
    assert_eq!(
        auth.check("drv-000002", Some(("drv-000001", "dev1-secret")))
            .await
            .unwrap_err(),
        Denial::ClientIdNotAllowed
    );
    assert_eq!(
        auth.check("drv-000002", Some(("drv-000002", "dev1-secret")))
            .await
            .unwrap_err(),
        Denial::BadCredentials
    );
    let grants = auth
        .check("drv-000003", Some(("drv-000003", "dev3-secret")))
        .await
        .unwrap();
    assert!(grants.may_publish("drivers/drv-000003/location", "drv-000003", "drv-000003"));
    assert!(!grants.may_publish("drivers/drv-000001/location", "drv-000003", "drv-000003"));
}
