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
    let end = scrape(addrs.http).await;
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
