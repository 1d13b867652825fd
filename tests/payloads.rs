//! Location payloads that slip past validation, or that validation wrongly stops (issue
//! 13): last wills checked at CONNECT with the rules of a PUBLISH, an empty payload that
//! clears a driver's retained location, and oversized or out-of-range fields.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::raw::{self, closed_after, read_frame, Hello};
use common::*;
use rumqttc::QoS;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A location of driver `id` with `lat`, now, and the rest of the document.
fn fix(id: &str, lat: &str) -> String {
    let now = fleetcast_proto::time::now_ms();
    format!(
        r#"{{"id":"{id}","lat":{lat},"lon":24.9,"heading":0,"speed":0,"accuracy":3,"status":"available","seq":1,"ts":{now}}}"#
    )
}

/// What a metric's line says, from `/metrics`.
async fn metric(http: std::net::SocketAddr, name_and_labels: &str) -> Option<String> {
    let body = http_get(http, "/metrics").await;
    body.lines()
        .find_map(|l| l.strip_prefix(name_and_labels))
        .map(|v| v.trim().to_owned())
}

/// A retained message on `filter` within 300 ms, for a subscriber that comes late.
async fn retained(addrs: &fleetcast_broker::Addrs, filter: &str) -> Option<rumqttc::Publish> {
    // A new client id each time: one id may connect once a second.
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut late = TestClient::connect(tcp_options(&format!("late-{n}"), addrs)).await;
    late.subscribe(filter, QoS::AtMostOnce).await;
    let got = late.publish_within(Duration::from_millis(300)).await;
    late.disconnect().await;
    got
}

/// Connects a raw client; returns the socket once the CONNACK (its code) is read.
async fn hello(addr: std::net::SocketAddr, bytes: &[u8]) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let connack = read_frame(&mut s, PATIENCE).await.expect("a CONNACK");
    (s, connack)
}

#[tokio::test]
async fn a_will_that_is_not_a_valid_location_is_refused_at_connect() {
    let stack = start_stack(fleetcast::stack::offline_dashboard().unwrap()).await;
    let addrs = stack.addrs();
    let topic = b"drivers/drv-w/location";
    let bad = [
        fix("drv-w", "999"),
        "not json".to_owned(),
        fix("drv-other", "60.1"),
    ];
    for level in [4u8, 5] {
        for (i, payload) in bad.iter().enumerate() {
            let connect = raw::connect(
                &format!("drv-w-{level}-{i}"),
                &Hello {
                    level,
                    will: Some((topic, payload.as_bytes(), true)),
                    keep_alive: 30,
                    ..Hello::default()
                },
            );
            let (mut s, connack) = hello(addrs.mqtt, &connect).await;
            if connack[3] == 0 {
                // Accepted: the attack goes on with a TCP reset, which fires the will.
                s.set_zero_linger().unwrap();
                drop(s);
            } else {
                assert!(closed_after(&mut s).await.0, "closed after the refusal");
            }
            // MQTT 5: 0x99, payload format invalid. 3.1.1 has no such code: 0x05, not
            // authorized (the will is not one this client may leave), as mosquitto answers
            // a will it refuses for its payload.
            let expected = if level == 5 { 0x99 } else { 0x05 };
            assert_eq!(connack[3], expected, "level {level}: {payload}");
        }
    }
    assert!(
        retained(&addrs, "drivers/+/location").await.is_none(),
        "no bad will was delivered or retained"
    );
    let refusals = "fleetcast_connect_refusals_total{reason=\"invalid_will\"}";
    assert_eq!(metric(addrs.http, refusals).await.as_deref(), Some("6"));
    // A valid will on its own location is accepted, and fires on a reset.
    let good = fix("drv-w", "60.1");
    let connect = raw::connect(
        "drv-w",
        &Hello {
            level: 4,
            will: Some((topic, good.as_bytes(), true)),
            keep_alive: 30,
            ..Hello::default()
        },
    );
    let (s, connack) = hello(addrs.mqtt, &connect).await;
    assert_eq!(connack[3], 0);
    s.set_zero_linger().unwrap();
    drop(s);
    let mut will = None;
    for _ in 0..20 {
        will = retained(&addrs, "drivers/+/location").await;
        if will.is_some() {
            break;
        }
    }
    assert_eq!(&will.expect("retained will").payload[..], good.as_bytes());
}

#[tokio::test]
async fn a_driver_clears_its_retained_location_with_an_empty_payload() {
    let stack = start_stack(fleetcast::stack::offline_dashboard().unwrap()).await;
    let addrs = stack.addrs();
    let topic = b"drivers/drv-e/location";
    let (mut s, connack) = hello(addrs.mqtt, &raw::plain_connect("drv-e", 5)).await;
    assert_eq!(connack[3], 0);
    let v5: Option<&[u8]> = Some(&[]);
    let good = fix("drv-e", "60.1");
    for (i, retain) in [true, false].into_iter().enumerate() {
        let pkid = 2 * i as u16 + 1;
        s.write_all(&raw::publish(topic, good.as_bytes(), 1, pkid, true, v5))
            .await
            .unwrap();
        assert_eq!(puback_reason(&mut s).await, 0x00);
        let kept = retained(&addrs, "drivers/drv-e/location").await;
        assert_eq!(&kept.expect("retained").payload[..], good.as_bytes());
        // Empty, retained or not: accepted (PUBACK 0x00), and the router clears the
        // retained location.
        s.write_all(&raw::publish(topic, b"", 1, pkid + 1, retain, v5))
            .await
            .unwrap();
        assert_eq!(puback_reason(&mut s).await, 0x00, "retain {retain}");
        assert!(
            retained(&addrs, "drivers/drv-e/location").await.is_none(),
            "retain {retain}: cleared"
        );
    }
    let dropped = "fleetcast_messages_dropped_total{reason=\"invalid_payload\"}";
    assert_eq!(metric(addrs.http, dropped).await.as_deref(), Some("0"));
}

/// The reason code of the next PUBACK (0x00 when it has none).
async fn puback_reason(s: &mut TcpStream) -> u8 {
    let ack = read_frame(s, PATIENCE).await.expect("a PUBACK");
    assert_eq!(ack[0], 0x40, "{ack:02x?}");
    ack.get(4).copied().unwrap_or(0)
}

#[tokio::test]
async fn a_huge_status_string_and_heading_720_are_refused_at_the_gateway() {
    let stack = start_stack(fleetcast::stack::offline_dashboard().unwrap()).await;
    let addrs = stack.addrs();
    let mut watcher = TestClient::connect(tcp_options("watch", &addrs)).await;
    watcher
        .subscribe("drivers/+/location", QoS::AtMostOnce)
        .await;
    let (mut s, connack) = hello(addrs.mqtt, &raw::plain_connect("drv-h", 5)).await;
    assert_eq!(connack[3], 0);
    let good = fix("drv-h", "60.1");
    let huge = good.replace("available", &"x".repeat(100 * 1024));
    let heading = good.replace(r#""heading":0"#, r#""heading":720"#);
    let topic = b"drivers/drv-h/location";
    for (i, bad) in [huge, heading].iter().enumerate() {
        let p = raw::publish(topic, bad.as_bytes(), 1, i as u16 + 1, false, Some(&[]));
        s.write_all(&p).await.unwrap();
        assert_eq!(puback_reason(&mut s).await, 0x99, "payload {i}");
    }
    assert!(watcher
        .publish_within(Duration::from_millis(300))
        .await
        .is_none());
    let dropped = "fleetcast_messages_dropped_total{reason=\"invalid_payload\"}";
    assert_eq!(metric(addrs.http, dropped).await.as_deref(), Some("2"));
    // The connection stays: a good fix still flows.
    s.write_all(&raw::publish(
        topic,
        good.as_bytes(),
        1,
        3,
        false,
        Some(&[]),
    ))
    .await
    .unwrap();
    assert_eq!(puback_reason(&mut s).await, 0x00);
    assert_eq!(
        &watcher.next_publish().await.expect("flows").payload[..],
        good.as_bytes()
    );
}
