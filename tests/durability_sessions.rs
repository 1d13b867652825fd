//! `serve --data DIR` with what else keeps or makes state: a session's expiry runs on
//! across a restart (one that expired while fleetcast was down is gone, one with time left
//! is back), and a retained message published over HTTP survives a kill -9 like one
//! published over MQTT.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::persist::*;
use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An MQTT 5 CONNECT with Clean Start 1 and a Session Expiry Interval of `secs`.
fn connect_v5_expiring(client_id: &str, secs: u32) -> Vec<u8> {
    let mut props = vec![0x11];
    props.extend_from_slice(&secs.to_be_bytes());
    raw::connect(
        client_id,
        &raw::Hello {
            level: 5,
            props: &props,
            keep_alive: 30,
            ..raw::Hello::default()
        },
    )
}

/// Connects with `hello` and subscribes to `filter`, then leaves with DISCONNECT.
async fn subscribe_and_leave(mqtt: std::net::SocketAddr, hello: &[u8], filter: &str, v5: bool) {
    let mut s = TcpStream::connect(mqtt).await.unwrap();
    s.write_all(hello).await.unwrap();
    let connack = raw::read_frame(&mut s, PATIENCE).await.expect("CONNACK");
    assert_eq!(connack[0], 0x20);
    s.write_all(&raw::subscribe(filter, 1, v5)).await.unwrap();
    let suback = raw::read_frame(&mut s, PATIENCE).await.expect("SUBACK");
    assert_eq!(suback[0], 0x90);
    s.write_all(&[0xE0, 0]).await.unwrap();
}

/// Whether the broker still has a session for `client_id` (CONNACK session present), asked
/// in MQTT 5 with Clean Start 0 and no expiry, so that asking does not keep one.
async fn session_present(mqtt: std::net::SocketAddr, client_id: &str) -> bool {
    let hello = connect_frame_version(b"MQTT", 5, client_id, 30, false, None);
    let mut s = TcpStream::connect(mqtt).await.unwrap();
    s.write_all(&hello).await.unwrap();
    let connack = raw::read_frame(&mut s, PATIENCE).await.expect("CONNACK");
    assert_eq!((connack[0], connack[3]), (0x20, 0), "{connack:?}");
    connack[2] & 1 == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_runs_on_across_a_restart() {
    let dir = TempDir::new("durable-expiry");
    let conf = TempDir::new("durable-expiry-conf");
    let file = conf.path.join("fleetcast.toml");
    // A persistent 3.1.1 session lasts at most this long after its connection.
    std::fs::write(&file, "[limits]\nmax_session_expiry_secs = 2\n").unwrap();
    let config = ["--config", file.to_str().unwrap()];
    let mut first = serve_with_data_and(&dir.path, None, &config);
    let short = connect_frame("short-lived", 30, false, None);
    subscribe_and_leave(first.mqtt, &short, "alerts/#", false).await;
    let long = connect_v5_expiring("long-lived", 2);
    subscribe_and_leave(first.mqtt, &long, "alerts/#", true).await;
    sigterm(&mut first);
    // The expiry is the behaviour under test: wait it out while fleetcast is down.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = serve_with_data_and(&dir.path, None, &config);
    assert!(
        !session_present(second.mqtt, "short-lived").await,
        "expired while down"
    );
    assert!(
        !session_present(second.mqtt, "long-lived").await,
        "expired while down too"
    );

    // Sessions with time left come back, with it.
    let dir = TempDir::new("durable-expiry-left");
    let mut first = serve_with_data(&dir.path, None);
    let kept = connect_v5_expiring("kept", 3600);
    subscribe_and_leave(first.mqtt, &kept, "alerts/#", true).await;
    subscribe_and_leave(
        first.mqtt,
        &connect_frame("kept-311", 30, false, None),
        "a/#",
        false,
    )
    .await;
    kill_9_after_the_bound(&mut first).await;
    let second = serve_with_data(&dir.path, None);
    assert!(session_present(second.mqtt, "kept").await);
    assert!(session_present(second.mqtt, "kept-311").await);
}

/// What is older than the stated bound must be on disk: wait that long, then SIGKILL.
async fn kill_9_after_the_bound(served: &mut Served) {
    tokio::time::sleep(LOSS_BOUND).await;
    kill_9(served);
}

/// `POST path` with `body`; the status code.
async fn post(addr: std::net::SocketAddr, path: &str, body: &[u8]) -> u16 {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut out))
        .await
        .expect("an answer in time")
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_position_posted_over_http_survives_kill_9() {
    let dir = TempDir::new("durable-http");
    let mut first = serve_with_data(&dir.path, None);
    let id = driver_id(7);
    let path = format!("/topics/drivers/{id}/location?qos=1&retain=true");
    assert_eq!(post(first.http, &path, &location(&id, 41)).await, 200);
    kill_9_after_the_bound(&mut first).await;
    let second = serve_with_data(&dir.path, None);
    let got = retained_seqs(second.mqtt, std::slice::from_ref(&id), "http-check").await;
    assert_eq!(got.get(&id), Some(&41));
}

/// Geofence shapes and counts are the geofence task's to publish at start: a fence in
/// force before the restart and gone after it leaves no retained shape or count behind,
/// while a driver's position does stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fence_gone_after_a_restart_leaves_nothing_retained() {
    let dir = TempDir::new("durable-fences");
    let conf = TempDir::new("durable-fences-conf");
    let fences = conf.path.join("fences.geojson");
    let square = r#"{"type":"Polygon","coordinates":[[[24.9,60.1],[25.0,60.1],[25.0,60.2],[24.9,60.2],[24.9,60.1]]]}"#;
    let collection = format!(
        r#"{{"type":"FeatureCollection","features":[{{"type":"Feature","properties":{{"name":"depot"}},"geometry":{square}}}]}}"#
    );
    std::fs::write(&fences, collection).unwrap();
    let with_fences = ["--geofences", fences.to_str().unwrap()];
    let mut first = serve_with_data_and(&dir.path, None, &with_fences);
    let mut o = rumqttc::MqttOptions::new("fences", first.mqtt.ip().to_string(), first.mqtt.port());
    o.set_keep_alive(Duration::from_secs(30));
    let mut watcher = TestClient::connect(o).await;
    watcher
        .subscribe("geofences/depot/shape", rumqttc::QoS::AtMostOnce)
        .await;
    assert!(
        watcher.next_publish().await.is_some(),
        "the fence's shape, retained"
    );
    let id = driver_id(3);
    let (mut driver, _) = raw_connect(first.mqtt, &id, true).await;
    let topic = format!("drivers/{id}/location");
    publish_acked(&mut driver, &topic, &location(&id, 5), 1, true).await;
    kill_9_after_the_bound(&mut first).await;

    let second = serve_with_data(&dir.path, None);
    let mut o =
        rumqttc::MqttOptions::new("fences-2", second.mqtt.ip().to_string(), second.mqtt.port());
    o.set_keep_alive(Duration::from_secs(30));
    let mut watcher = TestClient::connect(o).await;
    watcher
        .subscribe("geofences/#", rumqttc::QoS::AtMostOnce)
        .await;
    watcher.subscribe(&topic, rumqttc::QoS::AtMostOnce).await;
    let p = watcher.next_publish().await.expect("the driver's position");
    assert_eq!(p.topic, topic, "nothing retained under geofences/");
    assert!(
        watcher
            .publish_within(Duration::from_millis(500))
            .await
            .is_none(),
        "no ghost of the fence"
    );
}

/// MQTT 5 properties of a retained message: Content Type (0x03) and Message Expiry
/// Interval (0x02) of `secs`.
fn v5_props(secs: u32) -> Vec<u8> {
    let mut p = vec![0x02];
    p.extend_from_slice(&secs.to_be_bytes());
    p.push(0x03);
    raw::put(&mut p, b"application/json");
    p
}

/// A retained message keeps its MQTT 5 properties across a kill -9, and its expiry runs on:
/// one that expired while fleetcast was down is not delivered after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_properties_and_expiry_survive_kill_9() {
    let dir = TempDir::new("durable-props");
    let mut first = serve_with_data(&dir.path, None);
    let mut s = TcpStream::connect(first.mqtt).await.unwrap();
    s.write_all(&raw::plain_connect("props-publisher", 5))
        .await
        .unwrap();
    raw::read_frame(&mut s, PATIENCE).await.expect("CONNACK");
    for (topic, secs, pkid) in [("notes/long", 3600, 1), ("notes/short", 1, 2)] {
        let props = v5_props(secs);
        let frame = raw::publish(topic.as_bytes(), b"{}", 1, pkid, true, Some(&props));
        s.write_all(&frame).await.unwrap();
        let ack = raw::read_frame(&mut s, PATIENCE).await.expect("PUBACK");
        assert_eq!(ack[0], 0x40);
    }
    kill_9_after_the_bound(&mut first).await;
    let second = serve_with_data(&dir.path, None);
    let mut s = TcpStream::connect(second.mqtt).await.unwrap();
    s.write_all(&raw::plain_connect("props-reader", 5))
        .await
        .unwrap();
    raw::read_frame(&mut s, PATIENCE).await.expect("CONNACK");
    s.write_all(&raw::subscribe("notes/#", 1, true))
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Some(f) = raw::read_frame(&mut s, Duration::from_millis(1_500)).await {
        if f[0] >> 4 == 3 {
            got.push(f);
        }
    }
    assert_eq!(got.len(), 1, "only the message with time left");
    let f = &got[0];
    let at = f
        .windows(10)
        .position(|w| w == b"notes/long")
        .expect("its topic");
    assert!(f.windows(16).any(|w| w == b"application/json"), "{f:?}");
    let expiry = f[at..]
        .windows(5)
        .find(|w| w[0] == 0x02)
        .expect("an expiry");
    let left = u32::from_be_bytes([expiry[1], expiry[2], expiry[3], expiry[4]]);
    assert!(
        (3500..3600).contains(&left),
        "the expiry it had left: {left}"
    );
}
