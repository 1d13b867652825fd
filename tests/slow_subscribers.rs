//! A subscriber slower than the publisher it listens to (`gateway/backlog.rs`): the
//! publisher's reads hold while the subscriber is behind in the router's log, so a 1 -> 1
//! QoS 0 flood arrives whole; a stuck subscriber holds a publisher at most
//! `behind_hold_ms`, after which another subscriber of the same topic gets everything.
//! Real sockets on loopback; a log of a few hundred KiB so a flood of a few MB outruns it.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

const PAYLOAD: usize = 100;

/// Quotas lifted and a small log: 4 x 128 KiB, ~3,500 messages of 100 bytes kept.
fn config(hold_ms: u64) -> fleetcast_broker::Config {
    let mut config = fleetcast_broker::Config::ephemeral();
    config.limits.publish_rate_per_connection = 1_000_000;
    config.limits.publish_rate_global = 1_000_000;
    config.limits.max_packet_size = 4_096;
    config.limits.behind_hold_ms = hold_ms;
    config.router.max_segment_size = 128 * 1024;
    config.router.max_segment_count = 4;
    config
}

async fn metrics(addr: SocketAddr) -> HashMap<String, f64> {
    let body = http_get(addr, "/metrics").await;
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    body.split_once("\r\n\r\n")
        .unwrap()
        .1
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

fn counted(m: &HashMap<String, f64>, key: &str) -> u64 {
    m.get(key).copied().unwrap_or(0.0) as u64
}

/// A connection with a small receive buffer (so the kernel cannot hide a slow reader),
/// its CONNACK read.
async fn connect(addr: SocketAddr, id: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let mut s = socket.connect(addr).await.unwrap();
    s.write_all(&connect_frame(id, 0, true, None))
        .await
        .unwrap();
    let mut connack = [0u8; 4];
    timeout(PATIENCE, s.read_exact(&mut connack))
        .await
        .expect("connack")
        .unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0]);
    s
}

/// Subscribes `s` to `filter` at QoS 0 and reads the SUBACK.
async fn subscribe(s: &mut TcpStream, filter: &str) {
    let mut body = vec![0, 1];
    body.extend_from_slice(&(filter.len() as u16).to_be_bytes());
    body.extend_from_slice(filter.as_bytes());
    body.push(0);
    s.write_all(&frame(0x82, &body)).await.unwrap();
    let mut suback = [0u8; 5];
    timeout(PATIENCE, s.read_exact(&mut suback))
        .await
        .expect("suback")
        .unwrap();
    assert_eq!(suback, [0x90, 3, 0, 1, 0]);
}

/// `n` QoS 0 publishes to `topic`, each a 100-byte payload starting with its index.
fn flood(topic: &str, n: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let mut body = Vec::new();
        body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        body.extend_from_slice(topic.as_bytes());
        body.extend_from_slice(&i.to_be_bytes());
        body.resize(2 + topic.len() + PAYLOAD, 0);
        out.extend(frame(0x30, &body));
    }
    out
}

/// Reads publishes off `s` until the one numbered `last`, at most `chunk` bytes per read
/// and a millisecond's pause after each when `slow`; returns the indices in order.
async fn read_until(s: &mut TcpStream, last: u32, chunk: usize, slow: bool) -> Vec<u32> {
    let mut got = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut read = vec![0u8; chunk];
    loop {
        let n = s.read(&mut read).await.unwrap();
        assert!(n > 0, "the broker closed the subscriber");
        buf.extend_from_slice(&read[..n]);
        // Whole frames off the front (remaining length in one or two bytes here).
        loop {
            if buf.len() < 2 {
                break;
            }
            let (len, head) = if buf[1] & 0x80 == 0 {
                (usize::from(buf[1]), 2)
            } else if buf.len() >= 3 {
                (usize::from(buf[1] & 0x7f) | usize::from(buf[2]) << 7, 3)
            } else {
                break;
            };
            if buf.len() < head + len {
                break;
            }
            let body = &buf[head..head + len];
            assert_eq!(buf[0] & 0xf0, 0x30, "a publish");
            let topic = usize::from(u16::from_be_bytes([body[0], body[1]]));
            let at = 2 + topic;
            let i = u32::from_be_bytes(body[at..at + 4].try_into().unwrap());
            got.push(i);
            buf.drain(..head + len);
            if i == last {
                return got;
            }
        }
        if slow {
            // Reading slower than the publisher writes is the point of the test.
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
}

/// 1 -> 1 at QoS 0 into a subscriber that reads ~4 MB/s: without holding, the router
/// overwrites most of the flood before the subscriber reads it.
#[tokio::test]
async fn a_flood_into_a_slow_subscriber_arrives_whole() {
    const N: u32 = 40_000;
    let stack = start_stack_with_config(
        config(2_000),
        fleetcast::stack::offline_dashboard().unwrap(),
        None,
    )
    .await;
    let addrs = stack.addrs();
    let mut sub = connect(addrs.mqtt, "slow").await;
    subscribe(&mut sub, "t/flood").await;
    let mut publisher = connect(addrs.mqtt, "fast").await;
    let burst = flood("t/flood", N);
    let writer = tokio::spawn(async move {
        publisher.write_all(&burst).await.unwrap();
        publisher
    });

    let got = timeout(PATIENCE * 6, read_until(&mut sub, N - 1, 4_096, true))
        .await
        .expect("the last message arrives");
    let _publisher = writer.await.unwrap();
    let m = metrics(addrs.http).await;
    let behind = counted(
        &m,
        "fleetcast_messages_dropped_total{reason=\"subscriber_behind\"}",
    );
    let holds = counted(
        &m,
        "fleetcast_pacing_pauses_total{reason=\"subscriber_behind\"}",
    );
    eprintln!(
        "{} received of {N}, {behind} counted behind, {holds} holds",
        got.len()
    );
    assert!(
        holds > 0,
        "the publisher never held: the test floods too little"
    );
    assert_eq!(behind, 0, "messages overwritten");
    assert_eq!(got.len(), N as usize, "messages lost");
    assert!(got.iter().enumerate().all(|(i, &n)| n == i as u32), "order");
}

/// Two subscribers of one topic, one stuck (it never reads): the publisher holds for it at
/// most the bound, then goes on, and the other subscriber gets the whole flood.
#[tokio::test]
async fn a_stuck_subscriber_holds_the_publisher_no_longer_than_the_bound() {
    const N: u32 = 40_000;
    let stack = start_stack_with_config(
        config(200),
        fleetcast::stack::offline_dashboard().unwrap(),
        None,
    )
    .await;
    let addrs = stack.addrs();
    let mut stuck = connect(addrs.mqtt, "stuck").await;
    subscribe(&mut stuck, "t/#").await;
    let mut live = connect(addrs.mqtt, "live").await;
    subscribe(&mut live, "t/#").await;
    let mut publisher = connect(addrs.mqtt, "fast").await;
    let burst = flood("t/flood", N);
    let writer = tokio::spawn(async move {
        publisher.write_all(&burst).await.unwrap();
        publisher
    });

    let got = timeout(PATIENCE * 6, read_until(&mut live, N - 1, 64 * 1024, false))
        .await
        .expect("the last message reaches the live subscriber");
    let _publisher = writer.await.unwrap();
    let m = metrics(addrs.http).await;
    let holds = counted(
        &m,
        "fleetcast_pacing_pauses_total{reason=\"subscriber_behind\"}",
    );
    eprintln!("{} received of {N}, {holds} holds", got.len());
    assert!(
        holds > 0,
        "the publisher never held for the stuck subscriber"
    );
    // Once the stuck one is given up, the live one is still waited for when it falls
    // behind, within the same bound: on a busy machine (a debug build) it may miss some,
    // and then each is counted (the stuck one, blocked on its socket, counts nothing).
    let behind = counted(
        &m,
        "fleetcast_messages_dropped_total{reason=\"subscriber_behind\"}",
    );
    eprintln!("{behind} counted behind");
    assert!(
        got.len() as u64 + behind >= u64::from(N),
        "{} received, {behind} counted behind, of {N}",
        got.len()
    );
    drop(stuck);
}
