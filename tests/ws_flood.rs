//! A WebSocket ping flood that never reads its pongs (issue 13), against the MQTT-over-
//! WebSocket port before any CONNECT and against the map's `/ws`: the process's resident
//! memory must stay flat, the flooder be closed or throttled, and normal clients served
//! afterwards.
//!
//! One test in its own binary: it measures this process's RSS, which other tests running
//! alongside would disturb.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::*;
use rumqttc::QoS;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Pings sent per flood: 400,000 x 106 bytes = 42 MB of pongs if each were kept.
const PINGS: usize = 400_000;
/// Pings per write.
const PER_WRITE: usize = 1_000;
/// A write that takes longer than this means the server stopped reading.
const STALL: Duration = Duration::from_secs(1);
/// The most the process may grow by under one flood.
const MAX_GROWTH: u64 = 20 << 20;

/// How a flood ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The server closed the connection.
    Closed,
    /// The server stopped reading (writes stalled).
    Throttled,
    /// Every ping was taken.
    Accepted,
}

/// This process's resident set, bytes.
fn rss() -> u64 {
    fleetcast_proto::process::own_usage().unwrap().rss_bytes
}

/// Upgrades a raw socket to WebSocket on `path`; returns it past the 101 response.
async fn upgrade(addr: std::net::SocketAddr, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: mqtt\r\n\r\n"
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        timeout(PATIENCE, s.read_exact(&mut b))
            .await
            .unwrap()
            .unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

/// Sends [`PINGS`] masked 106-byte ping frames (100 bytes of payload, mask key 0) and
/// never reads.
async fn flood(s: &mut TcpStream) -> Outcome {
    let mut ping = vec![0x89, 0x80 | 100, 0, 0, 0, 0];
    ping.extend_from_slice(&[b'p'; 100]);
    assert_eq!(ping.len(), 106);
    let chunk: Vec<u8> = ping.repeat(PER_WRITE);
    for _ in 0..PINGS / PER_WRITE {
        match timeout(STALL, s.write_all(&chunk)).await {
            Err(_) => return Outcome::Throttled,
            Ok(Err(_)) => return Outcome::Closed,
            Ok(Ok(())) => {}
        }
    }
    Outcome::Accepted
}

/// Floods `path` on `addr`; returns how it ended and how much this process grew.
async fn measure(addr: std::net::SocketAddr, path: &str) -> (Outcome, u64) {
    let before = rss();
    let mut s = upgrade(addr, path).await;
    let outcome = flood(&mut s).await;
    // Let the server take what is still in flight.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = rss().saturating_sub(before);
    eprintln!("{path}: {outcome:?}, RSS +{:.1} MB", grown as f64 / 1e6);
    drop(s);
    (outcome, grown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_that_never_reads_its_pongs_is_bounded() {
    let stack = start_stack(fleetcast::stack::offline_dashboard().unwrap()).await;
    let addrs = stack.addrs();
    // Warm up both paths once, so the first flood does not pay for first allocations.
    let warm = TestClient::connect(ws_options("warm", &addrs)).await;
    warm.disconnect().await;
    let (mut map, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", addrs.http))
        .await
        .unwrap();
    futures_util::StreamExt::next(&mut map).await;
    drop(map);

    // MQTT over WebSocket, no CONNECT: a connection that has not logged in has a small
    // budget of bytes that are not MQTT.
    let (outcome, grown) = measure(addrs.ws, "/mqtt").await;
    assert_eq!(outcome, Outcome::Closed, "a pre-CONNECT flood is closed");
    assert!(grown < MAX_GROWTH, "MQTT/WS: RSS +{grown} bytes");

    // The map's bridge: it answers pings only as fast as the browser reads the pongs.
    let (outcome, grown) = measure(addrs.http, "/ws").await;
    assert_ne!(
        outcome,
        Outcome::Accepted,
        "the flood is closed or throttled"
    );
    assert!(grown < MAX_GROWTH, "/ws: RSS +{grown} bytes");

    // Normal clients are served afterwards.
    let mut sub = TestClient::connect(ws_options("after-sub", &addrs)).await;
    sub.subscribe("fleet/after", QoS::AtMostOnce).await;
    let publ = TestClient::connect(ws_options("after-pub", &addrs)).await;
    publ.client
        .publish("fleet/after", QoS::AtMostOnce, false, "ok")
        .await
        .unwrap();
    assert_eq!(&sub.next_publish().await.expect("flows").payload[..], b"ok");
    let (mut map, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", addrs.http))
        .await
        .unwrap();
    let hello = timeout(PATIENCE, futures_util::StreamExt::next(&mut map)).await;
    assert!(matches!(hello, Ok(Some(Ok(_)))), "{hello:?}");
}
