//! What an adversarial client sends that a client library never would, over raw sockets
//! (issue 13): packets pipelined behind the CONNECT, the CONNECT's reserved flag, packet id
//! 0, MQTT 5 properties with forbidden values, topic aliases, topics that are not UTF-8,
//! and a PUBLISH dripped a byte at a time to outlive the keepalive.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::raw::{self, closed_after, read_frame, Hello};
use common::*;
use rumqttc::QoS;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long pipelined packets may wait for their answer.
const AT_ONCE: Duration = Duration::from_millis(100);

/// Writes `bytes` in one write on a new connection.
async fn one_write(addr: std::net::SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(bytes).await.unwrap();
    s
}

/// Reads the CONNACK and checks that it accepts (each client id connects at most once a
/// second: a test reusing one would be refused).
async fn accepted(s: &mut TcpStream) {
    let connack = read_frame(s, PATIENCE).await.expect("a CONNACK");
    assert_eq!((connack[0], connack[3]), (0x20, 0), "{connack:02x?}");
}

/// The frames answered within `wait` of the write, until `n` came.
async fn answers(s: &mut TcpStream, n: usize, wait: Duration) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match read_frame(s, left).await {
            Some(f) => out.push(f),
            None => break,
        }
    }
    out
}

#[tokio::test]
async fn connect_and_subscribe_in_one_write_are_both_answered_at_once() {
    let b = TestBroker::start().await;
    for level in [4u8, 5] {
        let v5 = level == 5;
        let mut hello = raw::plain_connect(&format!("pipe-sub-{level}"), level);
        hello.extend(raw::subscribe("fleet/#", 7, v5));
        let mut s = one_write(b.addrs.mqtt, &hello).await;
        let got = answers(&mut s, 2, AT_ONCE).await;
        assert_eq!(got.len(), 2, "level {level}: {got:02x?}");
        assert_eq!(got[0][0], 0x20, "CONNACK first");
        assert_eq!(got[0][3], 0, "accepted");
        assert_eq!(got[1][0], 0x90, "then the SUBACK");
        assert_eq!(&got[1][2..4], [0, 7], "for packet id 7");
    }
}

#[tokio::test]
async fn connect_and_a_qos1_publish_in_one_write_get_connack_and_puback_at_once() {
    let b = TestBroker::start().await;
    let mut watcher = TestClient::connect(tcp_options("pipe-watch", &b.addrs)).await;
    watcher.subscribe("fleet/pipe", QoS::AtMostOnce).await;
    for level in [4u8, 5] {
        let props: Option<&[u8]> = if level == 5 { Some(&[]) } else { None };
        let mut hello = raw::plain_connect(&format!("pipe-pub-{level}"), level);
        hello.extend(raw::publish(b"fleet/pipe", b"hi", 1, 9, false, props));
        let mut s = one_write(b.addrs.mqtt, &hello).await;
        let got = answers(&mut s, 2, AT_ONCE).await;
        assert_eq!(got.len(), 2, "level {level}: {got:02x?}");
        assert_eq!(got[0][0], 0x20);
        assert_eq!(got[1][0], 0x40, "PUBACK");
        assert_eq!(&got[1][2..4], [0, 9]);
        let p = watcher
            .next_publish()
            .await
            .expect("the publish went through");
        assert_eq!(&p.payload[..], b"hi");
    }
}

#[tokio::test]
async fn a_connect_with_the_reserved_flag_set_is_closed_without_connack() {
    let b = TestBroker::start().await;
    for level in [4u8, 5] {
        let hello = raw::connect(
            "reserved",
            &Hello {
                level,
                extra_flags: 0x01,
                keep_alive: 30,
                ..Hello::default()
            },
        );
        let mut s = one_write(b.addrs.mqtt, &hello).await;
        let (closed, got) = closed_after(&mut s).await;
        assert!(closed, "level {level}: still open");
        assert!(got.is_empty(), "level {level}: answered {got:02x?}");
    }
}

#[tokio::test]
async fn subscribe_or_unsubscribe_with_packet_id_0_closes_the_connection() {
    let b = TestBroker::start().await;
    for level in [4u8, 5] {
        let v5 = level == 5;
        for (i, packet) in [raw::subscribe("a/b", 0, v5), raw::unsubscribe("a/b", 0, v5)]
            .into_iter()
            .enumerate()
        {
            let id = format!("pkid0-{level}-{i}");
            let mut s = one_write(b.addrs.mqtt, &raw::plain_connect(&id, level)).await;
            accepted(&mut s).await;
            s.write_all(&packet).await.unwrap();
            let (closed, got) = closed_after(&mut s).await;
            assert!(closed, "level {level} {:02x}: still open", packet[0]);
            // 3.1.1 closes; MQTT 5 says why first: DISCONNECT 0x82, protocol error.
            let expected: &[u8] = if v5 { &[0xE0, 0x02, 0x82, 0x00] } else { &[] };
            let got = if v5 {
                raw::without_reason(&got, 1)
            } else {
                got
            };
            assert_eq!(got, expected, "level {level} {:02x}", packet[0]);
        }
    }
}

#[tokio::test]
async fn mqtt5_connect_with_receive_maximum_or_maximum_packet_size_0_gets_0x82() {
    let b = TestBroker::start().await;
    let receive_maximum_0: &[u8] = &[0x21, 0, 0];
    let maximum_packet_size_0: &[u8] = &[0x27, 0, 0, 0, 0];
    for props in [receive_maximum_0, maximum_packet_size_0] {
        let hello = raw::connect(
            "props0",
            &Hello {
                level: 5,
                props,
                keep_alive: 30,
                ..Hello::default()
            },
        );
        let mut s = one_write(b.addrs.mqtt, &hello).await;
        let (closed, got) = closed_after(&mut s).await;
        assert!(closed);
        // Protocol error, and a Reason String saying which.
        assert_eq!(
            raw::without_reason(&got, 2),
            [0x20, 0x03, 0x00, 0x82, 0x00],
            "{props:02x?}"
        );
    }
    // Topic Alias Maximum 0 is the default, not an error.
    let alias_max_0: &[u8] = &[0x22, 0, 0];
    let hello = raw::connect(
        "alias-max-0",
        &Hello {
            level: 5,
            props: alias_max_0,
            keep_alive: 30,
            ..Hello::default()
        },
    );
    let mut s = one_write(b.addrs.mqtt, &hello).await;
    let connack = read_frame(&mut s, PATIENCE).await.unwrap();
    assert_eq!(connack[3], 0, "{connack:02x?}");
}

#[tokio::test]
async fn mqtt5_publish_with_a_bad_topic_alias_is_disconnected() {
    let b = TestBroker::start().await;
    let mut watcher = TestClient::connect(tcp_options("alias-watch", &b.addrs)).await;
    watcher.subscribe("fleet/#", QoS::AtMostOnce).await;
    // The CONNACK grants 10 aliases: alias 0 is a protocol error (3.3.2-8), 11 exceeds
    // the maximum (3.3.2-9).
    for (alias, code) in [(0u16, 0x82u8), (11, 0x94)] {
        let id = format!("alias-{alias}");
        let mut s = one_write(b.addrs.mqtt, &raw::plain_connect(&id, 5)).await;
        accepted(&mut s).await;
        let props = [0x23, (alias >> 8) as u8, alias as u8];
        let p = raw::publish(b"fleet/alias", b"x", 0, 0, false, Some(&props));
        s.write_all(&p).await.unwrap();
        let (closed, got) = closed_after(&mut s).await;
        assert!(closed, "alias {alias}");
        assert_eq!(
            raw::without_reason(&got, 1),
            [0xE0, 0x02, code, 0x00],
            "alias {alias}"
        );
    }
    assert!(watcher
        .publish_within(Duration::from_millis(300))
        .await
        .is_none());
}

#[tokio::test]
async fn a_publish_topic_that_is_not_utf8_is_refused_at_the_gateway() {
    let b = TestBroker::start().await;
    let mut watcher = TestClient::connect(tcp_options("utf8-watch", &b.addrs)).await;
    watcher.subscribe("#", QoS::AtMostOnce).await;
    for level in [4u8, 5] {
        let props: Option<&[u8]> = if level == 5 { Some(&[]) } else { None };
        let id = format!("utf8-{level}");
        let mut s = one_write(b.addrs.mqtt, &raw::plain_connect(&id, level)).await;
        accepted(&mut s).await;
        let p = raw::publish(b"fleet/\xff\xfe", b"x", 1, 1, false, props);
        s.write_all(&p).await.unwrap();
        let (closed, got) = closed_after(&mut s).await;
        assert!(closed, "level {level}");
        // 3.1.1 (1.5.3): ill-formed UTF-8 closes the connection. MQTT 5 (1.5.4): it is a
        // malformed packet, DISCONNECT 0x81.
        let expected: &[u8] = if level == 5 {
            &[0xE0, 0x02, 0x81, 0x00]
        } else {
            &[]
        };
        let got = if level == 5 {
            raw::without_reason(&got, 1)
        } else {
            got
        };
        assert_eq!(got, expected, "level {level}");
    }
    assert!(
        watcher
            .publish_within(Duration::from_millis(300))
            .await
            .is_none(),
        "the router never saw it"
    );
    // The router is alive and well: a publish still flows.
    let other = TestClient::connect(tcp_options("utf8-other", &b.addrs)).await;
    other
        .client
        .publish("fleet/ok", QoS::AtMostOnce, false, "ok")
        .await
        .unwrap();
    assert_eq!(
        watcher.next_publish().await.expect("flows").topic,
        "fleet/ok"
    );
}

#[tokio::test]
async fn a_publish_dripped_a_byte_at_a_time_does_not_outlive_the_keepalive() {
    let b = TestBroker::start().await;
    let mut watcher = TestClient::connect(tcp_options("drip-watch", &b.addrs)).await;
    watcher
        .subscribe("fleet/drip/status", QoS::AtMostOnce)
        .await;
    let hello = connect_frame(
        "drip",
        1,
        true,
        Some(("fleet/drip/status", b"offline", false)),
    );
    let mut s = one_write(b.addrs.mqtt, &hello).await;
    accepted(&mut s).await;
    let heard = Instant::now();
    // A 100 KB PUBLISH, one byte every 50 ms: bytes keep coming, a packet never does.
    let publish = raw::publish(b"fleet/drip", &vec![b'x'; 100_000], 0, 0, false, None);
    let (mut rd, mut wr) = s.into_split();
    let drip = tokio::spawn(async move {
        for byte in publish.iter().take(200) {
            if wr.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let will = watcher.next_publish().await.expect("the will fires");
    let after = heard.elapsed();
    assert_eq!(&will.payload[..], b"offline");
    // 1.5 x 1 s after the CONNECT, the last complete packet.
    assert!(
        after >= Duration::from_millis(1_400) && after < Duration::from_millis(2_500),
        "dropped after {after:?}"
    );
    let mut buf = [0u8; 16];
    let eof =
        tokio::time::timeout(PATIENCE, tokio::io::AsyncReadExt::read(&mut rd, &mut buf)).await;
    assert!(matches!(eof, Ok(Ok(0) | Err(_))), "{eof:?}");
    drip.abort();
}

/// A PUBLISH to a `$` topic (outside what the server offers) is acknowledged and dropped,
/// counted, and the connection stays (MQTT 5: PUBACK 0x90, topic name invalid), as
/// mosquitto keeps it; `#` never sees it.
#[tokio::test]
async fn a_publish_to_a_dollar_topic_is_acknowledged_and_the_connection_stays() {
    let stack = start_stack(fleetcast::stack::offline_dashboard().unwrap()).await;
    let addrs = stack.addrs();
    let mut watcher = TestClient::connect(tcp_options("dollar-watch", &addrs)).await;
    watcher.subscribe("#", QoS::AtMostOnce).await;
    for level in [4u8, 5] {
        let props: Option<&[u8]> = if level == 5 { Some(&[]) } else { None };
        let id = format!("dollar-{level}");
        let mut s = one_write(addrs.mqtt, &raw::plain_connect(&id, level)).await;
        accepted(&mut s).await;
        s.write_all(&raw::publish(b"$foo/bar", b"x", 1, 7, false, props))
            .await
            .unwrap();
        let ack = read_frame(&mut s, PATIENCE).await.expect("a PUBACK");
        let expected: &[u8] = if level == 5 {
            &[0x40, 0x04, 0x00, 0x07, 0x90, 0x00]
        } else {
            &[0x40, 0x02, 0x00, 0x07]
        };
        let ack = if level == 5 {
            raw::without_reason(&ack, 3)
        } else {
            ack
        };
        assert_eq!(ack, expected, "level {level}");
        // Still connected: a PINGREQ is answered.
        s.write_all(&[0xC0, 0x00]).await.unwrap();
        let pong = read_frame(&mut s, PATIENCE).await.expect("a PINGRESP");
        assert_eq!(pong, [0xD0, 0x00], "level {level}");
    }
    assert!(
        watcher
            .publish_within(Duration::from_millis(300))
            .await
            .is_none(),
        "# does not receive $ topics"
    );
    let metrics = http_get(addrs.http, "/metrics").await;
    assert!(
        metrics.contains("fleetcast_messages_dropped_total{reason=\"invalid_topic\"} 2"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("dropped"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
