//! `/metrics` while a small fleet runs: connection gauges, publish and delivery counters,
//! the latency histogram and disconnect reasons move by the expected amounts; no driver id
//! ever becomes a label.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::*;
use fleetcast_simulator::fleet::{Fleet, FleetConfig};
use fleetcast_simulator::road_graph::RoadGraph;
use rumqttc::QoS;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// `name{labels}` -> value, from Prometheus text.
fn parse(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

async fn scrape(addr: std::net::SocketAddr) -> HashMap<String, f64> {
    let body = http_get(addr, "/metrics").await;
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(!body.contains("drv-"), "a driver id became a label");
    parse(body.split_once("\r\n\r\n").unwrap().1)
}

fn value(m: &HashMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_move_with_a_running_fleet() {
    let stack = start_stack(fleetcast::stack::offline_dashboard().unwrap()).await;
    let addrs = stack.addrs();
    let before = scrape(addrs.http).await;
    for name in [
        "fleetcast_connections{transport=\"tcp\"}",
        "fleetcast_publishes_received_total",
        "fleetcast_messages_delivered_total",
        "fleetcast_messages_dropped_total{reason=\"invalid_topic\"}",
        "fleetcast_messages_dropped_total{reason=\"map_behind\"}",
        "fleetcast_disconnects_total{reason=\"keepalive_timeout\"}",
        "fleetcast_process_open_fds",
        "fleetcast_process_max_fds",
    ] {
        assert!(before.contains_key(name), "{name} missing");
    }
    let mut rider = TestClient::connect(tcp_options("rider", &addrs)).await;
    rider.subscribe("drivers/+/location", QoS::AtMostOnce).await;

    let mut fleet_config = FleetConfig::new(format!("mqtt://{}", addrs.mqtt).parse().unwrap(), 50);
    fleet_config.interval = Duration::from_secs(1);
    let fleet = Fleet::start(fleet_config, Arc::new(RoadGraph::helsinki().unwrap()));
    let deadline = Instant::now() + PATIENCE;
    loop {
        let m = scrape(addrs.http).await;
        if value(&m, "fleetcast_connections{transport=\"tcp\"}") == 51.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "connections gauge never reached 51"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connected = scrape(addrs.http).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = scrape(addrs.http).await;
    let grew = |k: &str| value(&after, k) - value(&connected, k);
    // 50 drivers at 1 Hz for 3 s.
    assert!(
        grew("fleetcast_publishes_received_total") >= 100.0,
        "{}",
        grew("fleetcast_publishes_received_total")
    );
    assert!(grew("fleetcast_messages_delivered_total") >= 100.0);
    assert!(grew("fleetcast_e2e_latency_seconds_count") >= 100.0);
    assert!(value(&after, "fleetcast_drivers_online") >= 50.0);
    assert!(
        value(&after, "fleetcast_received_bytes_total")
            > value(&before, "fleetcast_received_bytes_total")
    );
    assert!(value(&after, "fleetcast_process_resident_memory_bytes") > 0.0);
    assert!(
        value(&after, "fleetcast_process_max_fds") > value(&after, "fleetcast_process_open_fds"),
        "the open-files limit is above the files open"
    );
    assert_eq!(
        value(&after, "fleetcast_connects_total{transport=\"tcp\"}"),
        51.0
    );

    // An abrupt close and a silent client: the reasons say which.
    let (lost, _) = raw_exchange(addrs.mqtt, &connect_frame("lost", 30, true, None), 4).await;
    drop(lost);
    let (_silent, _) = raw_exchange(addrs.mqtt, &connect_frame("silent", 1, true, None), 4).await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let m = scrape(addrs.http).await;
        let peer = value(&m, "fleetcast_disconnects_total{reason=\"peer_closed\"}");
        let keepalive = value(
            &m,
            "fleetcast_disconnects_total{reason=\"keepalive_timeout\"}",
        );
        if peer >= 1.0 && keepalive >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "disconnect reasons not counted: peer {peer} keepalive {keepalive}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fleet.stop().await;
    // The drivers have sent DISCONNECT and closed; their sessions end on the broker's
    // connection threads a moment later.
    let deadline = Instant::now() + PATIENCE;
    let end = loop {
        let m = scrape(addrs.http).await;
        let clean = value(&m, "fleetcast_disconnects_total{reason=\"clean\"}");
        let open = value(&m, "fleetcast_connections{transport=\"tcp\"}");
        if clean >= 50.0 && open <= 1.0 {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "clean disconnects {clean} of 50, {open} connections still open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        value(&end, "fleetcast_disconnects_total{reason=\"clean\"}"),
        50.0
    );
    assert_eq!(value(&end, "fleetcast_connections{transport=\"tcp\"}"), 1.0);
    // Histogram buckets are rendered for the latency.
    assert!(end
        .keys()
        .any(|k| k.starts_with("fleetcast_e2e_latency_seconds_bucket{le=\"0.005\"")));
}

#[tokio::test]
async fn simulate_serves_its_own_counters() {
    let b = TestBroker::start().await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fleetcast"))
        .args(["simulate", "--broker", &format!("mqtt://{}", b.addrs.mqtt)])
        .args([
            "--drivers",
            "3",
            "--interval",
            "200ms",
            "--metrics",
            "127.0.0.1:0",
            "--duration",
            "20s",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().unwrap()));
    let addr: std::net::SocketAddr = loop {
        let line = lines.next_line().await.unwrap().expect("metrics line");
        if let Some(rest) = line.strip_prefix("simulate: metrics at http://") {
            break rest.trim_end_matches("/metrics").parse().unwrap();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let deadline = Instant::now() + PATIENCE;
    loop {
        let m = scrape(addr).await;
        if value(&m, "fleetcast_sim_drivers_connected") == 3.0
            && value(&m, "fleetcast_sim_published_total") >= 6.0
        {
            assert!(value(&m, "fleetcast_process_open_fds") > 3.0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "simulate's counters did not move"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.start_kill();
}

/// A QoS 0 PUBLISH of `payload_len` bytes to `topic`, its payload starting with `index`.
fn publish_frame(topic: &str, index: u32, payload_len: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(2 + topic.len() + payload_len);
    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&index.to_be_bytes());
    body.resize(2 + topic.len() + payload_len, 0);
    frame(0x30, &body)
}

/// Reads one frame off `s` (buffered in `buf`): its first byte and body.
async fn read_frame(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> (u8, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    loop {
        let mut len = 0usize;
        let mut at = 1;
        let mut complete = None;
        while at < buf.len() && at <= 4 {
            len |= usize::from(buf[at] & 0x7f) << (7 * (at - 1));
            if buf[at] & 0x80 == 0 {
                complete = Some(at + 1);
                break;
            }
            at += 1;
        }
        if let Some(head) = complete {
            if buf.len() >= head + len {
                let first = buf[0];
                let body = buf[head..head + len].to_vec();
                buf.drain(..head + len);
                return (first, body);
            }
        }
        let mut chunk = [0u8; 64 * 1024];
        let n = s.read(&mut chunk).await.expect("read");
        assert!(n > 0, "closed");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A subscriber that reads nothing while a publisher floods: the router overwrites what it
/// has not read, and the gateway counts it (`subscriber_behind`) instead of losing it
/// silently. The count cannot include what was overwritten before the subscriber's first
/// message (that is where its count starts), so it is at most what never arrived.
#[tokio::test]
async fn messages_a_slow_subscriber_never_got_are_counted() {
    use tokio::io::AsyncWriteExt;
    const N: u32 = 20_000;
    const PAYLOAD: usize = 1_000;
    let mut config = fleetcast_broker::Config::ephemeral();
    config.limits.publish_rate_per_connection = 1_000_000;
    config.limits.publish_rate_global = 1_000_000;
    config.limits.max_packet_size = 4_096;
    // 2 x 256 KiB of log: ~500 messages kept, 20 MB published.
    config.router.max_segment_size = 256 * 1024;
    config.router.max_segment_count = 2;
    let stack =
        start_stack_with_config(config, fleetcast::stack::offline_dashboard().unwrap(), None).await;
    let addrs = stack.addrs();

    let (mut sub, connack) =
        raw_exchange(addrs.mqtt, &connect_frame("slow", 0, true, None), 4).await;
    assert_eq!(connack, [0x20, 2, 0, 0]);
    let mut body = vec![0, 1];
    body.extend_from_slice(&6u16.to_be_bytes());
    body.extend_from_slice(b"t/slow");
    body.push(0);
    sub.write_all(&frame(0x82, &body)).await.unwrap();
    let mut buf = Vec::new();
    let (first, _) = tokio::time::timeout(PATIENCE, read_frame(&mut sub, &mut buf))
        .await
        .expect("suback");
    assert_eq!(first, 0x90);

    let (mut publisher, connack) =
        raw_exchange(addrs.mqtt, &connect_frame("fast", 0, true, None), 4).await;
    assert_eq!(connack, [0x20, 2, 0, 0]);
    let mut burst = Vec::new();
    for i in 0..N {
        burst.extend(publish_frame("t/slow", i, PAYLOAD));
    }
    tokio::time::timeout(PATIENCE * 3, publisher.write_all(&burst))
        .await
        .expect("published in time")
        .unwrap();

    // Now read: until the last message, which no later one can overwrite.
    let mut received = 0u64;
    tokio::time::timeout(PATIENCE * 3, async {
        loop {
            let (first, body) = read_frame(&mut sub, &mut buf).await;
            if first & 0xf0 != 0x30 {
                continue;
            }
            received += 1;
            let at = 2 + 6;
            if body[at..at + 4] == (N - 1).to_be_bytes() {
                break;
            }
        }
    })
    .await
    .expect("the last message arrives");

    let behind = value(
        &scrape(addrs.http).await,
        "fleetcast_messages_dropped_total{reason=\"subscriber_behind\"}",
    ) as u64;
    eprintln!("{received} received, {behind} counted behind, of {N}");
    assert!(
        received < u64::from(N),
        "nothing was overwritten: the test floods too little"
    );
    assert!(behind > 0, "{received} received, none counted behind");
    assert!(
        received + behind <= u64::from(N),
        "{received} received + {behind} behind > {N}"
    );
}
