//! MQTT 3.1.1 behaviour of the gateway over real sockets, with rumqttc and raw frames.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::*;
use rumqttc::{QoS, SubscribeReasonCode};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

/// How a test's clients reach the broker: the same behaviour is checked over both.
type Dial = fn(&str, &fleetcast_broker::Addrs) -> rumqttc::MqttOptions;

/// Runs an `async fn(Dial)` test once over TCP and once over WebSocket.
macro_rules! over_both_transports {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn tcp() {
                super::$name(super::tcp_options).await
            }
            #[tokio::test]
            async fn ws() {
                super::$name(super::ws_options).await
            }
        }
    };
}

over_both_transports!(round_trip_qos0_and_qos1);
async fn round_trip_qos0_and_qos1(dial: Dial) {
    let b = TestBroker::start().await;
    let mut sub = TestClient::connect(dial("sub", &b.addrs)).await;
    assert_eq!(
        sub.subscribe("fleet/drv-1/location", QoS::AtLeastOnce)
            .await,
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    let publ = TestClient::connect(dial("drv-1", &b.addrs)).await;
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce].into_iter().enumerate() {
        publ.client
            .publish("fleet/drv-1/location", qos, false, format!("fix {i}"))
            .await
            .unwrap();
        let got = sub.next_publish().await.expect("delivered");
        assert_eq!(&got.payload[..], format!("fix {i}").as_bytes());
        assert_eq!(got.topic, "fleet/drv-1/location");
    }
    publ.disconnect().await;
    sub.disconnect().await;
}

#[tokio::test]
async fn websocket_and_tcp_clients_see_each_other() {
    let b = TestBroker::start().await;
    let mut sub = TestClient::connect(ws_options("ws-sub", &b.addrs)).await;
    sub.subscribe("fleet/+/location", QoS::AtLeastOnce).await;
    // A TCP publisher reaches the WebSocket subscriber.
    let tcp = TestClient::connect(tcp_options("tcp-pub", &b.addrs)).await;
    tcp.client
        .publish("fleet/drv-8/location", QoS::AtMostOnce, false, "from tcp")
        .await
        .unwrap();
    assert_eq!(
        &sub.next_publish().await.expect("cross").payload[..],
        b"from tcp"
    );
}

#[tokio::test]
async fn websocket_refuses_other_paths() {
    let b = TestBroker::start().await;
    let url = format!("ws://{}/not-mqtt", b.addrs.ws);
    let err = tokio_tungstenite::connect_async(url)
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("404"), "{err}");
}

#[tokio::test]
async fn websocket_picks_the_mqtt_subprotocol() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let b = TestBroker::start().await;
    for (offered, chosen) in [
        ("mqtt", "mqtt"),
        ("mqttv3.1", "mqttv3.1"),
        ("wamp, mqtt", "mqtt"),
    ] {
        let mut req = b.ws_url().into_client_request().unwrap();
        req.headers_mut()
            .insert("sec-websocket-protocol", offered.parse().unwrap());
        let (_ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert_eq!(resp.headers()["sec-websocket-protocol"], chosen);
    }
}

over_both_transports!(wildcards_match_as_mqtt_says);
async fn wildcards_match_as_mqtt_says(dial: Dial) {
    let b = TestBroker::start().await;
    let mut plus = TestClient::connect(dial("plus", &b.addrs)).await;
    plus.subscribe("fleet/+/location", QoS::AtMostOnce).await;
    let mut hash = TestClient::connect(dial("hash", &b.addrs)).await;
    hash.subscribe("fleet/#", QoS::AtMostOnce).await;
    let p = TestClient::connect(dial("p", &b.addrs)).await;
    p.client
        .publish("fleet/a/status", QoS::AtMostOnce, false, "s")
        .await
        .unwrap();
    p.client
        .publish("fleet/a/location", QoS::AtMostOnce, false, "l")
        .await
        .unwrap();
    // `+` skips the status topic and sees the location; `#` sees both, in order.
    assert_eq!(plus.next_publish().await.unwrap().topic, "fleet/a/location");
    assert_eq!(hash.next_publish().await.unwrap().topic, "fleet/a/status");
    assert_eq!(hash.next_publish().await.unwrap().topic, "fleet/a/location");
}

over_both_transports!(retained_message_reaches_a_late_subscriber);
async fn retained_message_reaches_a_late_subscriber(dial: Dial) {
    let b = TestBroker::start().await;
    let p = TestClient::connect(dial("drv-9", &b.addrs)).await;
    p.client
        .publish("fleet/drv-9/location", QoS::AtLeastOnce, true, "last known")
        .await
        .unwrap();
    p.disconnect().await;
    let mut late = TestClient::connect(dial("rider", &b.addrs)).await;
    late.subscribe("fleet/+/location", QoS::AtLeastOnce).await;
    let got = late.next_publish().await.expect("retained delivered");
    assert_eq!(&got.payload[..], b"last known");
    assert!(got.retain, "delivered with the retain flag");
}

over_both_transports!(will_is_published_on_abrupt_disconnect_not_on_clean_one);
async fn will_is_published_on_abrupt_disconnect_not_on_clean_one(dial: Dial) {
    let b = TestBroker::start().await;
    let mut watcher = TestClient::connect(dial("watcher", &b.addrs)).await;
    watcher.subscribe("fleet/+/status", QoS::AtLeastOnce).await;

    // Clean DISCONNECT: no will.
    let mut o = dial("drv-clean", &b.addrs);
    o.set_last_will(rumqttc::LastWill::new(
        "fleet/drv-clean/status",
        "offline",
        QoS::AtLeastOnce,
        false,
    ));
    TestClient::connect(o).await.disconnect().await;

    // Abrupt loss: the will fires.
    let mut o = dial("drv-lost", &b.addrs);
    o.set_last_will(rumqttc::LastWill::new(
        "fleet/drv-lost/status",
        "offline",
        QoS::AtLeastOnce,
        false,
    ));
    TestClient::connect(o).await.kill();

    let got = watcher.next_publish().await.expect("will delivered");
    assert_eq!(got.topic, "fleet/drv-lost/status");
    assert_eq!(&got.payload[..], b"offline");
    assert!(
        watcher
            .publish_within(Duration::from_millis(300))
            .await
            .is_none(),
        "no will for the clean disconnect"
    );
}

over_both_transports!(persistent_session_gets_its_qos1_messages_after_reconnect);
async fn persistent_session_gets_its_qos1_messages_after_reconnect(dial: Dial) {
    let b = TestBroker::with_config(reconnect_at_once()).await;
    let mut o = dial("rider-p", &b.addrs);
    o.set_clean_session(false);
    let mut rider = TestClient::connect(o.clone()).await;
    rider
        .subscribe("fleet/drv-2/location", QoS::AtLeastOnce)
        .await;
    rider.disconnect().await;

    let p = TestClient::connect(dial("drv-2", &b.addrs)).await;
    for i in 0..3 {
        p.client
            .publish(
                "fleet/drv-2/location",
                QoS::AtLeastOnce,
                false,
                format!("m{i}"),
            )
            .await
            .unwrap();
    }
    p.disconnect().await;

    let (client, eventloop) = rumqttc::AsyncClient::new(o, 100);
    let mut eventloop = eventloop;
    let mut session_present = None;
    let mut got = Vec::new();
    let _client = client;
    let deadline = Instant::now() + PATIENCE;
    while got.len() < 3 && Instant::now() < deadline {
        match timeout(PATIENCE, eventloop.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(a)))) => {
                session_present = Some(a.session_present)
            }
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)))) => {
                got.push(String::from_utf8_lossy(&p.payload).into_owned())
            }
            Ok(Ok(_)) => {}
            other => panic!("reconnect failed: {other:?}"),
        }
    }
    assert_eq!(session_present, Some(true));
    assert_eq!(got, ["m0", "m1", "m2"]);
}

#[tokio::test]
async fn idle_sockets_do_not_delay_other_clients() {
    let b = TestBroker::start().await;
    // 1,000 idle TCP connections on each port: no CONNECT, no WebSocket upgrade.
    let mut idle = Vec::new();
    for _ in 0..1_000 {
        idle.push(TcpStream::connect(b.addrs.mqtt).await.unwrap());
        idle.push(TcpStream::connect(b.addrs.ws).await.unwrap());
    }
    // Well-behaved clients still connect at once (connect() waits for the CONNACK); if the
    // idle sockets held the accept loop they would wait for the 10 s handshake time-out.
    for dial in [tcp_options, ws_options] {
        let started = Instant::now();
        let c = TestClient::connect(dial(&format!("after-idle-{}", dial as usize), &b.addrs)).await;
        let took = started.elapsed();
        assert!(took < Duration::from_secs(1), "connect took {took:?}");
        c.disconnect().await;
    }
    drop(idle);
}

#[tokio::test]
async fn a_persistent_session_keeps_counting_its_filters_across_reconnects() {
    let mut config = reconnect_at_once();
    config.limits.max_subscriptions_per_connection = 2;
    let b = TestBroker::with_config(config).await;
    let mut o = tcp_options("persistent-subs", &b.addrs);
    o.set_clean_session(false);
    let ok = vec![SubscribeReasonCode::Success(QoS::AtMostOnce)];
    let c = TestClient::connect(o.clone()).await;
    let mut c = c;
    for f in ["a/1", "a/2"] {
        assert_eq!(c.subscribe(f, QoS::AtMostOnce).await, ok, "{f}");
    }
    c.disconnect().await;
    // The router restored both filters: a third is over the limit.
    let mut c = TestClient::connect(o.clone()).await;
    assert_eq!(
        c.subscribe("a/3", QoS::AtMostOnce).await,
        vec![SubscribeReasonCode::Failure]
    );
    assert_eq!(
        c.subscribe("a/1", QoS::AtMostOnce).await,
        ok,
        "held already"
    );
    c.disconnect().await;
    // A clean session starts from nothing.
    o.set_clean_session(true);
    let mut c = TestClient::connect(o).await;
    assert_eq!(c.subscribe("a/3", QoS::AtMostOnce).await, ok);
}

#[tokio::test]
async fn subscriptions_per_connection_are_bounded() {
    let mut config = fleetcast_broker::Config::ephemeral();
    config.limits.max_subscriptions_per_connection = 3;
    let b = TestBroker::with_config(config).await;
    let mut c = TestClient::connect(tcp_options("many-subs", &b.addrs)).await;
    let ok = vec![SubscribeReasonCode::Success(QoS::AtMostOnce)];
    for f in ["a/1", "a/2", "a/3"] {
        assert_eq!(c.subscribe(f, QoS::AtMostOnce).await, ok, "{f}");
    }
    assert_eq!(
        c.subscribe("a/4", QoS::AtMostOnce).await,
        vec![SubscribeReasonCode::Failure]
    );
    // Subscribing again to one it holds is not a new one.
    assert_eq!(c.subscribe("a/2", QoS::AtMostOnce).await, ok);
    // Unsubscribing frees a place.
    c.unsubscribe("a/1").await;
    assert_eq!(c.subscribe("a/4", QoS::AtMostOnce).await, ok);
}

#[tokio::test]
async fn connect_timeout_closes_silent_sockets() {
    let mut config = fleetcast_broker::Config::ephemeral();
    config.limits.connect_timeout_ms = 300;
    config.limits.ws_handshake_timeout_ms = 300;
    let b = TestBroker::with_config(config).await;
    for addr in [b.addrs.mqtt, b.addrs.ws] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 16];
        // The server closes: read returns 0 (EOF) well before PATIENCE.
        let n = timeout(PATIENCE, s.read(&mut buf))
            .await
            .expect("closed by server");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    }
}

#[tokio::test]
async fn keepalive_expiry_drops_the_client_and_fires_its_will() {
    let b = TestBroker::start().await;
    let mut watcher = TestClient::connect(tcp_options("watcher", &b.addrs)).await;
    watcher.subscribe("fleet/+/status", QoS::AtMostOnce).await;
    // Keepalive 1 s, then silence: dropped after 1.5 s.
    let hello = connect_frame(
        "drv-silent",
        1,
        true,
        Some(("fleet/drv-silent/status", b"offline", false)),
    );
    let (mut silent, connack) = raw_exchange(b.addrs.mqtt, &hello, 4).await;
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
    let quiet_since = Instant::now();
    let will = watcher
        .next_publish()
        .await
        .expect("will after keepalive expiry");
    let after = quiet_since.elapsed();
    assert_eq!(will.topic, "fleet/drv-silent/status");
    assert!(
        after >= Duration::from_millis(1_400),
        "dropped too early: {after:?}"
    );
    let mut buf = [0u8; 4];
    let n = timeout(PATIENCE, silent.read(&mut buf))
        .await
        .expect("socket closed");
    assert!(matches!(n, Ok(0) | Err(_)));
}

#[tokio::test]
async fn pings_keep_a_quiet_client_alive() {
    let b = TestBroker::start().await;
    let hello = connect_frame("pinger", 1, true, None);
    let (mut s, _) = raw_exchange(b.addrs.mqtt, &hello, 4).await;
    // Three seconds of pings every 0.5 s: twice the 1.5 s expiry.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        s.write_all(&[0xC0, 0x00]).await.unwrap();
        let mut resp = [0u8; 2];
        timeout(PATIENCE, s.read_exact(&mut resp))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp, [0xD0, 0x00]);
    }
}

#[tokio::test]
async fn mqtt5_clients_talk_to_mqtt311_clients_and_mqtt31_gets_0x01() {
    use rumqttc::v5::mqttbytes::v5::Packet as P5;
    use rumqttc::v5::mqttbytes::QoS as Q5;
    let b = TestBroker::start().await;
    let (sub5, mut sub5_events) = v5_client(rumqttc::v5::MqttOptions::new(
        "v5-sub",
        "127.0.0.1",
        b.addrs.mqtt.port(),
    ));
    sub5.subscribe("chat/#", Q5::AtLeastOnce).await.unwrap();
    let granted = v5_until(&mut sub5_events, |p| match p {
        P5::SubAck(a) => Some(a.return_codes.clone()),
        _ => None,
    })
    .await;
    assert_eq!(
        granted,
        [rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(
            Q5::AtLeastOnce
        )]
    );
    let mut sub311 = TestClient::connect(tcp_options("v311-sub", &b.addrs)).await;
    sub311.subscribe("chat/#", QoS::AtLeastOnce).await;

    // 3.1.1 publisher -> both; then MQTT 5 publisher (QoS 1, acknowledged) -> both.
    let pub311 = TestClient::connect(tcp_options("v311-pub", &b.addrs)).await;
    pub311
        .client
        .publish("chat/a", QoS::AtLeastOnce, false, "from 3.1.1")
        .await
        .unwrap();
    let (pub5, mut pub5_events) = v5_client(rumqttc::v5::MqttOptions::new(
        "v5-pub",
        "127.0.0.1",
        b.addrs.mqtt.port(),
    ));
    for (expect, sent_by_v5) in [("from 3.1.1", false), ("from 5", true)] {
        if sent_by_v5 {
            pub5.publish("chat/b", Q5::AtLeastOnce, false, "from 5")
                .await
                .unwrap();
            let reason = v5_until(&mut pub5_events, |p| match p {
                P5::PubAck(a) => Some(a.reason),
                _ => None,
            })
            .await;
            assert_eq!(reason, rumqttc::v5::mqttbytes::v5::PubAckReason::Success);
        }
        let got = v5_until(&mut sub5_events, |p| match p {
            P5::Publish(p) => Some(p.payload.clone()),
            _ => None,
        })
        .await;
        assert_eq!(&got[..], expect.as_bytes());
        let got = sub311
            .next_publish()
            .await
            .expect("3.1.1 subscriber receives");
        assert_eq!(&got.payload[..], expect.as_bytes());
    }

    let v31 = connect_frame_version(b"MQIsdp", 3, "v31", 30, true, None);
    let (_, answer) = raw_exchange(b.addrs.mqtt, &v31, 4).await;
    assert_eq!(answer, [0x20, 0x02, 0x00, 0x01], "3.1.1 CONNACK 0x01");
}

#[tokio::test]
async fn bad_client_ids_get_identifier_rejected() {
    let b = TestBroker::start().await;
    for hello in [
        connect_frame("", 30, false, None),
        connect_frame("has/slash", 30, true, None),
        connect_frame(&"x".repeat(200), 30, true, None),
    ] {
        let (_, answer) = raw_exchange(b.addrs.mqtt, &hello, 4).await;
        assert_eq!(answer, [0x20, 0x02, 0x00, 0x02]);
    }
    // An empty id with a clean session is given one.
    let (_, answer) = raw_exchange(b.addrs.mqtt, &connect_frame("", 30, true, None), 4).await;
    assert_eq!(answer, [0x20, 0x02, 0x00, 0x00]);
}

#[tokio::test]
async fn invalid_filters_are_refused_one_by_one() {
    let b = TestBroker::start().await;
    let (mut s, _) = raw_exchange(b.addrs.mqtt, &connect_frame("filters", 30, true, None), 4).await;
    // rumqttc checks filters itself, so this SUBSCRIBE is written by hand.
    let mut body = vec![0x00, 0x2A];
    for (filter, qos) in [
        ("fleet/+/location", 0u8),
        ("$SYS/#", 0),
        ("bad/#/x", 0),
        ("fleet/#", 1),
    ] {
        body.extend_from_slice(&(filter.len() as u16).to_be_bytes());
        body.extend_from_slice(filter.as_bytes());
        body.push(qos);
    }
    s.write_all(&frame(0x82, &body)).await.unwrap();
    let mut suback = [0u8; 8];
    timeout(PATIENCE, s.read_exact(&mut suback))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(suback, [0x90, 0x06, 0x00, 0x2A, 0x00, 0x80, 0x80, 0x01]);
    // All refused: answered by the gateway alone, and the connection stays usable.
    let mut body = vec![0x00, 0x2B, 0x00, 0x06];
    body.extend_from_slice(b"$SYS/#");
    body.push(0);
    s.write_all(&frame(0x82, &body)).await.unwrap();
    let mut suback = [0u8; 5];
    timeout(PATIENCE, s.read_exact(&mut suback))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(suback, [0x90, 0x03, 0x00, 0x2B, 0x80]);
    s.write_all(&[0xC0, 0x00]).await.unwrap();
    let mut pong = [0u8; 2];
    timeout(PATIENCE, s.read_exact(&mut pong))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pong, [0xD0, 0x00]);
}

/// A device that only publishes, at QoS 1, goes through a shared lane and is acked by the
/// gateway; once it subscribes it has a link of its own and the router acks it. Either
/// way its PUBACKs come in order, and its messages reach a subscriber in order, at QoS 1.
#[tokio::test]
async fn a_qos1_publisher_is_acked_in_order_before_and_after_it_subscribes() {
    let b = TestBroker::start().await;
    let mut rider = TestClient::connect(tcp_options("rider-q1", &b.addrs)).await;
    rider
        .subscribe("fleet/drv-q1/location", QoS::AtLeastOnce)
        .await;
    let hello = connect_frame("drv-q1", 30, true, None);
    let (mut s, _) = raw_exchange(b.addrs.mqtt, &hello, 4).await;
    let qos1 = |pkid: u16| {
        let mut body = Vec::new();
        body.extend_from_slice(&21u16.to_be_bytes());
        body.extend_from_slice(b"fleet/drv-q1/location");
        body.extend_from_slice(&pkid.to_be_bytes());
        body.extend_from_slice(format!("m{pkid}").as_bytes());
        frame(0x32, &body)
    };
    // Three in one write, on the lane.
    let burst: Vec<u8> = (1..=3).flat_map(qos1).collect();
    s.write_all(&burst).await.unwrap();
    let mut acks = [0u8; 12];
    timeout(PATIENCE, s.read_exact(&mut acks))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(acks, [0x40, 2, 0, 1, 0x40, 2, 0, 2, 0x40, 2, 0, 3]);
    // A publish, a SUBSCRIBE and a publish in one write: the first still on the lane, the
    // rest through the link the SUBSCRIBE builds.
    let mut mixed = qos1(4);
    let mut body = vec![0x00, 0x09];
    body.extend_from_slice(&17u16.to_be_bytes());
    body.extend_from_slice(b"fleet/drv-q1/echo");
    body.push(1);
    mixed.extend(frame(0x82, &body));
    mixed.extend(qos1(5));
    s.write_all(&mixed).await.unwrap();
    let mut answers = [0u8; 13];
    timeout(PATIENCE, s.read_exact(&mut answers))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        answers,
        [0x40, 2, 0, 4, 0x90, 3, 0, 9, 1, 0x40, 2, 0, 5],
        "PUBACK 4, SUBACK, PUBACK 5"
    );
    for i in 1..=5 {
        let got = rider.next_publish().await.expect("delivered");
        assert_eq!(&got.payload[..], format!("m{i}").as_bytes(), "in order");
        assert_eq!(got.qos, QoS::AtLeastOnce);
    }
}

#[tokio::test]
async fn publishing_to_a_wildcard_topic_closes_the_connection() {
    let b = TestBroker::start().await;
    let hello = connect_frame("naughty", 30, true, None);
    let (mut s, _) = raw_exchange(b.addrs.mqtt, &hello, 4).await;
    let mut body = vec![0, 3, b'a', b'/', b'#'];
    body.extend_from_slice(b"x");
    s.write_all(&frame(0x30, &body)).await.unwrap();
    let mut buf = [0u8; 4];
    let n = timeout(PATIENCE, s.read(&mut buf)).await.expect("closed");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
}

over_both_transports!(duplicate_client_id_takes_over_and_fires_the_old_will);
async fn duplicate_client_id_takes_over_and_fires_the_old_will(dial: Dial) {
    let b = TestBroker::with_config(reconnect_at_once()).await;
    let mut watcher = TestClient::connect(dial("watcher", &b.addrs)).await;
    watcher.subscribe("fleet/+/status", QoS::AtMostOnce).await;
    let mut o = dial("drv-dup", &b.addrs);
    o.set_last_will(rumqttc::LastWill::new(
        "fleet/drv-dup/status",
        "offline",
        QoS::AtMostOnce,
        false,
    ));
    let mut first = TestClient::connect(o).await;
    let second = TestClient::connect(dial("drv-dup", &b.addrs)).await;
    assert!(first.closed().await.is_some(), "old connection closed");
    assert_eq!(
        &watcher.next_publish().await.expect("old will").payload[..],
        b"offline"
    );
    // The newcomer works.
    second
        .client
        .publish("fleet/drv-dup/status", QoS::AtMostOnce, false, "online")
        .await
        .unwrap();
    assert_eq!(
        &watcher.next_publish().await.expect("new").payload[..],
        b"online"
    );
}

#[tokio::test]
async fn oversized_packets_close_the_connection() {
    let mut config = fleetcast_broker::Config::ephemeral();
    config.limits.max_packet_size = 1024;
    let b = TestBroker::with_config(config).await;
    let hello = connect_frame("big", 30, true, None);
    let (mut s, _) = raw_exchange(b.addrs.mqtt, &hello, 4).await;
    let mut body = vec![0, 1, b'a'];
    body.extend(std::iter::repeat_n(b'x', 4096));
    let _ = s.write_all(&frame(0x30, &body)).await;
    let mut buf = [0u8; 4];
    let n = timeout(PATIENCE, s.read(&mut buf)).await.expect("closed");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
}

#[tokio::test]
async fn server_full_answers_connack_server_unavailable() {
    let mut config = fleetcast_broker::Config::ephemeral();
    config.limits.max_connections = 2;
    let b = TestBroker::with_config(config).await;
    let _a = TestClient::connect(tcp_options("a", &b.addrs)).await;
    let _b = TestClient::connect(tcp_options("b", &b.addrs)).await;
    let (_, answer) = raw_exchange(b.addrs.mqtt, &connect_frame("c", 30, true, None), 4).await;
    assert_eq!(answer, [0x20, 0x02, 0x00, 0x03]);
}

/// A flooding publisher is paced (socket reads pause) rather than outrunning a subscriber
/// that keeps up with the paced rate: nothing is lost.
#[tokio::test]
async fn paced_flood_loses_nothing() {
    let mut config = fleetcast_broker::Config::ephemeral();
    // 5,000/s leaves a slow subscriber (tests share two cores) 1.6 s of slack in the log.
    config.limits.publish_rate_per_connection = 5_000;
    // A short router log (about 8,000 of these messages per topic), so that a publisher
    // left unpaced would push unread messages out of it before the subscriber reads them.
    config.limits.max_packet_size = 16 * 1024;
    config.router.max_segment_size = 64 * 1024;
    config.router.max_segment_count = 2;
    let b = TestBroker::with_config(config).await;
    const N: usize = 20_000;
    let mut sub = TestClient::connect(tcp_options("slow-sub", &b.addrs)).await;
    sub.subscribe("flood/#", QoS::AtMostOnce).await;
    // A raw publisher writes N QoS 0 publishes as fast as its socket takes them.
    let hello = connect_frame("flooder", 0, true, None);
    let (mut s, _) = raw_exchange(b.addrs.mqtt, &hello, 4).await;
    let writer = tokio::spawn(async move {
        let mut batch = Vec::new();
        for i in 0..N {
            let mut body = vec![0, 7];
            body.extend_from_slice(b"flood/x");
            body.extend_from_slice(format!("{i:08}").as_bytes());
            batch.extend(frame(0x30, &body));
            if batch.len() > 32 * 1024 {
                s.write_all(&batch).await.unwrap();
                batch.clear();
            }
        }
        s.write_all(&batch).await.unwrap();
        s
    });
    let mut next = 0usize;
    while next < N {
        let p = sub
            .next_publish()
            .await
            .unwrap_or_else(|| panic!("lost after {next}"));
        let seq: usize = std::str::from_utf8(&p.payload).unwrap().parse().unwrap();
        assert_eq!(seq, next, "in order, none missing");
        next += 1;
    }
    let _ = writer.await;
}

/// Defaults, but one client id may connect again at once: these tests reconnect within a
/// second on purpose. (The 1/s quota itself is tested in tests/security.rs.)
fn reconnect_at_once() -> fleetcast_broker::Config {
    let mut config = fleetcast_broker::Config::ephemeral();
    config.limits.connect_rate_per_client_id = 1_000_000_000;
    config
}

#[tokio::test]
async fn unsubscribe_is_always_answered_and_mqtt5_says_why() {
    use rumqttc::v5::mqttbytes::v5::{Packet as P5, SubscribeReasonCode as S5, UnsubAckReason};
    use rumqttc::v5::mqttbytes::QoS as Q5;
    let mut config = fleetcast_broker::Config::ephemeral();
    config.limits.max_subscriptions_per_connection = 1;
    let b = TestBroker::with_config(config).await;
    // 3.1.1: a filter never subscribed still gets its UNSUBACK.
    let mut c = TestClient::connect(tcp_options("unsub-311", &b.addrs)).await;
    c.client.unsubscribe("never/held").await.unwrap();
    let acked = loop {
        match c.next_packet().await {
            Some(rumqttc::Packet::UnsubAck(_)) => break true,
            Some(_) => continue,
            None => break false,
        }
    };
    assert!(acked, "UNSUBACK for a filter not held");

    // MQTT 5: one reason per filter, 0x11 for the one not held; SUBACK reasons say why.
    let mut o = rumqttc::v5::MqttOptions::new("unsub-5", "127.0.0.1", b.addrs.mqtt.port());
    o.set_clean_start(true);
    let (c5, mut events) = v5_client(o);
    c5.subscribe_many([
        rumqttc::v5::mqttbytes::v5::Filter::new("held/x", Q5::AtMostOnce),
        rumqttc::v5::mqttbytes::v5::Filter::new("over/limit", Q5::AtMostOnce),
    ])
    .await
    .unwrap();
    let codes = v5_until(&mut events, |p| match p {
        P5::SubAck(a) => Some(a.return_codes.clone()),
        _ => None,
    })
    .await;
    assert_eq!(codes, [S5::Success(Q5::AtMostOnce), S5::QuotaExceeded]);
    c5.unsubscribe("held/x").await.unwrap();
    let reasons = v5_until(&mut events, |p| match p {
        P5::UnsubAck(a) => Some(a.reasons.clone()),
        _ => None,
    })
    .await;
    assert_eq!(reasons, [UnsubAckReason::Success]);
    c5.unsubscribe("held/x").await.unwrap();
    let reasons = v5_until(&mut events, |p| match p {
        P5::UnsubAck(a) => Some(a.reasons.clone()),
        _ => None,
    })
    .await;
    assert_eq!(reasons, [UnsubAckReason::NoSubscriptionExisted]);
}

#[tokio::test]
async fn a_publisher_paused_by_its_quota_is_not_dropped_by_keepalive() {
    // Keepalive 1 s (dropped after 1.5 s of silence); 300 publishes at once take 2.9 s at
    // the default 100/s. The client is sending all along, held back by the gateway.
    let b = TestBroker::start().await;
    let mut sub = TestClient::connect(tcp_options("ka-sub", &b.addrs)).await;
    sub.subscribe("chat/ka", QoS::AtMostOnce).await;
    let (mut s, _) = raw_exchange(b.addrs.mqtt, &connect_frame("ka-pub", 1, true, None), 4).await;
    s.write_all(&publish_burst("chat/ka", 300)).await.unwrap();
    for i in 0..300u32 {
        let p = sub.next_publish().await.expect("every message arrives");
        assert_eq!(&p.payload[..], i.to_be_bytes());
    }
    // Still connected: a PINGREQ is answered.
    s.write_all(&[0xC0, 0x00]).await.unwrap();
    let mut resp = [0u8; 2];
    timeout(PATIENCE, s.read_exact(&mut resp))
        .await
        .expect("PINGRESP in time")
        .expect("still connected");
    assert_eq!(resp, [0xD0, 0x00]);
}

#[tokio::test]
async fn mqtt5_disconnect_with_a_reason_other_than_0_publishes_the_will() {
    let b = TestBroker::start().await;
    let mut watcher = TestClient::connect(tcp_options("will-watch", &b.addrs)).await;
    watcher.subscribe("chat/+/will", QoS::AtMostOnce).await;
    for (id, reason, fires) in [
        ("w0", 0x00u8, false),
        ("w4", 0x04, true),
        ("w80", 0x80, true),
    ] {
        let topic = format!("chat/{id}/will");
        let hello = connect_frame_version(b"MQTT", 5, id, 30, true, Some((&topic, b"gone", false)));
        let (mut s, connack) = raw_exchange(b.addrs.mqtt, &hello, 5).await;
        assert_eq!(connack[3], 0, "{id}");
        // DISCONNECT with a reason code and no properties.
        s.write_all(&[0xE0, 0x01, reason]).await.unwrap();
        let got = watcher.publish_within(Duration::from_millis(700)).await;
        assert_eq!(got.is_some(), fires, "reason {reason:#04x}: {got:?}");
        if let Some(p) = got {
            assert_eq!(p.topic, topic);
        }
    }
}

#[tokio::test]
async fn mqtt5_enhanced_authentication_is_refused_with_0x8c() {
    let b = TestBroker::start().await;
    // CONNECT v5, clean start, keepalive 30, properties: Authentication Method "SCRAM".
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 30];
    body.extend_from_slice(&[8, 0x15, 0, 5, b'S', b'C', b'R', b'A', b'M']);
    body.extend_from_slice(&[0, 2, b'e', b'a']);
    let why = b"MQTT 5 enhanced authentication is not supported";
    let n = 8 + why.len();
    let (_, answer) = raw_exchange(b.addrs.mqtt, &frame(0x10, &body), n).await;
    // The code, then a Reason String (0x1F) saying why.
    let len = why.len() as u8;
    assert_eq!(
        answer[..8],
        [0x20, 6 + len, 0x00, 0x8C, 3 + len, 0x1F, 0, len]
    );
    assert_eq!(&answer[8..], why);
}

#[tokio::test]
async fn an_http_connection_that_sends_no_headers_is_closed() {
    // A slow-loris socket on the HTTP port: closed after the 10 s header time-out.
    let b = TestBroker::start().await;
    let mut s = TcpStream::connect(b.addrs.http).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let n = timeout(Duration::from_secs(30), s.read(&mut buf))
        .await
        .expect("closed within 30 s");
    assert!(
        matches!(n, Ok(0) | Err(_)) || buf.starts_with(b"HTTP/1.1 408"),
        "{n:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "closed too early"
    );
}

/// Our rumqttd drops a filter's log once no session holds the filter (`tests/filter_logs.rs`
/// shows the memory): whoever holds it again, by SUBSCRIBE or by resuming a saved session,
/// gets what is published from then on, and a saved session gets what came while it was away.
#[tokio::test]
async fn a_filter_given_up_and_taken_again_delivers_again() {
    let b = TestBroker::with_config(reconnect_at_once()).await;
    let mut p = TestClient::connect(tcp_options("again-pub", &b.addrs)).await;

    // Given up by UNSUBSCRIBE, taken again by the same connection.
    let mut a = TestClient::connect(tcp_options("again-a", &b.addrs)).await;
    a.subscribe("again/x", QoS::AtMostOnce).await;
    a.unsubscribe("again/x").await;
    a.subscribe("again/x", QoS::AtMostOnce).await;
    p.publish_acked("again/x", "x1").await;
    let got = a.next_publish().await.expect("held again: delivered");
    assert_eq!(&got.payload[..], b"x1");

    // Held by a saved session while it is away: kept for it.
    let mut o = tcp_options("again-saved", &b.addrs);
    o.set_clean_session(false);
    let mut s = TestClient::connect(o.clone()).await;
    s.subscribe("again/y", QoS::AtLeastOnce).await;
    s.disconnect().await;
    p.publish_acked("again/y", "queued").await;
    let mut s = TestClient::connect(o.clone()).await;
    let got = s.next_publish().await.expect("the saved session's message");
    assert_eq!(&got.payload[..], b"queued");
    s.disconnect().await;

    // A clean session ends the saved one; a new subscriber of the filter still hears.
    o.set_clean_session(true);
    TestClient::connect(o).await.disconnect().await;
    let mut c = TestClient::connect(tcp_options("again-c", &b.addrs)).await;
    c.subscribe("again/y", QoS::AtMostOnce).await;
    p.publish_acked("again/y", "y2").await;
    let got = c.next_publish().await.expect("held again: delivered");
    assert_eq!(&got.payload[..], b"y2");
}

#[tokio::test]
async fn a_resumed_session_can_unsubscribe() {
    let b = TestBroker::with_config(reconnect_at_once()).await;
    let mut p = TestClient::connect(tcp_options("resumed-pub", &b.addrs)).await;
    let mut o = tcp_options("resumed-sub", &b.addrs);
    o.set_clean_session(false);
    let mut s = TestClient::connect(o.clone()).await;
    s.subscribe("resumed/u", QoS::AtMostOnce).await;
    s.disconnect().await;

    // Resumed (MQTT 3.1.1, so the gateway renews nothing), then given up, then the same
    // topic heard through another filter: each message must come once.
    let mut s = TestClient::connect(o).await;
    s.unsubscribe("resumed/u").await;
    s.subscribe("resumed/+", QoS::AtMostOnce).await;
    let mut got = Vec::new();
    for m in ["m1", "m2", "m3"] {
        // In the router's logs before the next.
        p.publish_acked("resumed/u", m).await;
        loop {
            let one = s.next_publish().await.expect("delivered");
            got.push(String::from_utf8_lossy(&one.payload).into_owned());
            if one.payload == m.as_bytes() {
                break;
            }
        }
    }
    assert_eq!(
        got,
        ["m1", "m2", "m3"],
        "a copy through the filter given up"
    );
}

#[tokio::test]
async fn a_qos1_message_unacked_when_a_saved_session_left_comes_again() {
    let b = TestBroker::with_config(reconnect_at_once()).await;
    let mut p = TestClient::connect(tcp_options("unacked-pub", &b.addrs)).await;
    let mut o = tcp_options("unacked-sub", &b.addrs);
    o.set_clean_session(false);
    let mut first = o.clone();
    first.set_manual_acks(true);
    let mut s = TestClient::connect(first).await;
    s.subscribe("unacked/x", QoS::AtLeastOnce).await;
    p.publish_acked("unacked/x", "m1").await;
    let got = s.next_publish().await.expect("delivered");
    assert_eq!(&got.payload[..], b"m1");
    // Read to the end of its filter's log but not acknowledged: the router reads it from
    // the log again for the session's return, so the log must not have let it go.
    s.disconnect().await;
    let mut s = TestClient::connect(o).await;
    let again = s.next_publish().await.expect("sent again");
    assert_eq!(&again.payload[..], b"m1");
}
