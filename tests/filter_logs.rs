//! A filter's log keeps only what a subscriber may still read: rumqttd keeps a log per
//! filter, and as published it kept what matched, read or not, up to the log's segments
//! (4 MiB by default): a filter nobody held any more for the life of the process, a rider
//! following a driver everything since it began. Our copy of rumqttd
//! (`vendor/rumqttd/FLEETCAST.md`) drops a log's messages when no session, live or saved,
//! holds its filter, and when every session holding it has read them all. Alone in its
//! test binary, because it reads the process's resident memory.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::*;
use fleetcast_broker::Config;
use fleetcast_loadtest::wire;
use rumqttc::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One publish's payload: large, so that what a log keeps dwarfs everything else.
const PAYLOAD: usize = 64 * 1024;
/// Publishes a phase: 62.5 MiB of payload, half of what one log may keep here.
const PUBLISHES: usize = 1_000;

/// This process's resident memory (MiB).
fn rss_mib() -> u64 {
    fleetcast_proto::process::own_usage()
        .expect("RSS from /proc")
        .rss_bytes
        / (1024 * 1024)
}

fn big_options(id: &str, addrs: &fleetcast_broker::Addrs) -> rumqttc::MqttOptions {
    let mut o = tcp_options(id, addrs);
    o.set_max_packet_size(2 * PAYLOAD, 2 * PAYLOAD);
    o
}

/// A publisher on a bare socket: a client library would queue what it was given, and
/// that memory (this process's) would blur what the router keeps.
async fn raw_publisher(addrs: &fleetcast_broker::Addrs) -> TcpStream {
    let mut s = TcpStream::connect(addrs.mqtt).await.unwrap();
    s.write_all(&wire::connect("publisher", 30, None))
        .await
        .unwrap();
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0]);
    s
}

/// Publishes [`PUBLISHES`] payloads to `topic`, then a marker to `done`, and waits until
/// `marker` has it: the router handles one connection's publishes in order, so by then it
/// has put every one of them in the logs of the filters that match.
async fn publish_phase(
    publisher: &mut TcpStream,
    marker: &mut TestClient,
    topic: &str,
    done: &str,
) {
    let mut frame = Vec::with_capacity(PAYLOAD + 64);
    for i in 0..PUBLISHES {
        frame.clear();
        wire::publish(&mut frame, topic, &[(i % 251) as u8; PAYLOAD], 0, 0);
        publisher.write_all(&frame).await.unwrap();
    }
    frame.clear();
    wire::publish(&mut frame, done, b"done", 0, 0);
    publisher.write_all(&frame).await.unwrap();
    let p = marker.next_publish().await.expect("the marker arrives");
    assert_eq!(&p.topic[..], done);
}

/// Publishes [`PUBLISHES`] payloads to `topic` in runs of ten, each waited for until
/// `reader` has read it: a subscriber that keeps up.
async fn publish_read(publisher: &mut TcpStream, reader: &mut TestClient, topic: &str) {
    let mut frame = Vec::with_capacity(PAYLOAD + 64);
    for run in 0..PUBLISHES / 10 {
        for i in 0..10 {
            frame.clear();
            wire::publish(&mut frame, topic, &[((run + i) % 251) as u8; PAYLOAD], 0, 0);
            publisher.write_all(&frame).await.unwrap();
        }
        for _ in 0..10 {
            let p = reader.next_publish().await.expect("the follower hears all");
            assert_eq!(p.payload.len(), PAYLOAD);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_keeps_only_what_a_subscriber_may_still_read() {
    // One log may keep 128 MiB here, so that a phase's 62.5 MiB all stays if it is kept.
    let mut config = Config::ephemeral();
    config.router.max_segment_size = 16 << 20;
    config.router.max_segment_count = 8;
    config.limits.publish_rate_per_connection = 1_000_000;
    config.limits.publish_rate_global = 1_000_000;
    let b = TestBroker::with_config(config).await;

    let mut marker = TestClient::connect(tcp_options("marker", &b.addrs)).await;
    marker.subscribe("phase/+", QoS::AtMostOnce).await;
    let mut publisher = raw_publisher(&b.addrs).await;

    // A rider follows one driver, then leaves: one by UNSUBSCRIBE, one by going away.
    let mut rider = TestClient::connect(tcp_options("rider-1", &b.addrs)).await;
    rider.subscribe("follow/drv-1", QoS::AtMostOnce).await;
    rider.unsubscribe("follow/drv-1").await;
    let mut gone = TestClient::connect(tcp_options("rider-2", &b.addrs)).await;
    gone.subscribe("follow/drv-2", QoS::AtMostOnce).await;
    gone.disconnect().await;

    let before = rss_mib();
    publish_phase(&mut publisher, &mut marker, "follow/drv-1", "phase/1").await;
    publish_phase(&mut publisher, &mut marker, "follow/drv-2", "phase/2").await;
    let abandoned = rss_mib();
    eprintln!(
        "2 x {PUBLISHES} x {PAYLOAD} B to two abandoned filters: RSS {before} -> {abandoned} MiB"
    );

    // The same to a filter a connected rider holds and reads as it comes.
    let mut follower = TestClient::connect(big_options("rider-3", &b.addrs)).await;
    follower.subscribe("follow/drv-3", QoS::AtMostOnce).await;
    publish_read(&mut publisher, &mut follower, "follow/drv-3").await;
    let read = rss_mib();
    eprintln!("{PUBLISHES} x {PAYLOAD} B to a filter whose holder read them: RSS {abandoned} -> {read} MiB");

    // The same to a filter a saved session holds while it is away: kept for it.
    let mut o = big_options("rider-4", &b.addrs);
    o.set_clean_session(false);
    let mut away = TestClient::connect(o).await;
    away.subscribe("follow/drv-4", QoS::AtMostOnce).await;
    away.disconnect().await;
    publish_phase(&mut publisher, &mut marker, "follow/drv-4", "phase/4").await;
    let saved = rss_mib();
    eprintln!(
        "{PUBLISHES} x {PAYLOAD} B to a filter a saved session holds: RSS {read} -> {saved} MiB"
    );

    // Kept, each of the three logs would hold 62.5 MiB; each publish's memory is reused.
    assert!(
        abandoned < before + 24,
        "abandoned filters kept their messages: RSS {before} -> {abandoned} MiB"
    );
    assert!(
        read < abandoned + 24,
        "a filter's log kept what its holder had read: RSS {abandoned} -> {read} MiB"
    );
    // The measure sees a log that keeps: 62.5 MiB held.
    assert!(
        saved > read + 40,
        "a saved session's filter kept less than expected: RSS {read} -> {saved} MiB"
    );
}
