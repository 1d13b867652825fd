//! The driver fleet against real brokers: fleetcast over TCP and WebSocket, Debian's
//! mosquitto, and fleetcast restarted under it.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::*;
use fleetcast_proto::{Location, Presence};
use fleetcast_simulator::endpoint::Endpoint;
use fleetcast_simulator::fleet::{Fleet, FleetConfig};
use fleetcast_simulator::road_graph::RoadGraph;
use rumqttc::QoS;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

fn graph() -> Arc<RoadGraph> {
    Arc::new(RoadGraph::helsinki().unwrap())
}

/// Runs `drivers` drivers at 5 Hz against `broker`, watches them with a subscriber on
/// `watch` (same broker), and checks what a rider would rely on.
async fn fleet_publishes_as_documented(
    broker: Endpoint,
    watch: rumqttc::MqttOptions,
    drivers: usize,
) {
    let mut rider = TestClient::connect(watch).await;
    rider.subscribe("drivers/+/location", QoS::AtMostOnce).await;
    let mut config = FleetConfig::new(broker, drivers);
    config.interval = Duration::from_millis(200);
    config.id_prefix = "t-".into();
    let fleet = Fleet::start(config, graph());

    // Collect until every driver has published at least 8 fixes.
    let mut seen: HashMap<String, Vec<Location>> = HashMap::new();
    let deadline = Instant::now() + PATIENCE;
    while seen.len() < drivers || seen.values().any(|v| v.len() < 8) {
        assert!(
            Instant::now() < deadline,
            "only {} drivers seen",
            seen.len()
        );
        let p = rider.next_publish().await.expect("positions keep coming");
        let loc: Location = serde_json::from_slice(&p.payload).unwrap();
        assert_eq!(p.topic, format!("drivers/{}/location", loc.id));
        seen.entry(loc.id.clone()).or_default().push(loc);
    }
    let (w, s, e, n) = graph().bounds();
    for (id, fixes) in &seen {
        assert!(id.starts_with("t-"), "{id}");
        for pair in fixes.windows(2) {
            assert_eq!(
                pair[1].seq,
                pair[0].seq + 1,
                "{id}: seq must count up by one"
            );
            assert!(pair[1].ts >= pair[0].ts);
        }
        for f in fixes {
            // Inside the map, give or take the GPS noise.
            assert!(
                f.lon > w - 0.001 && f.lon < e + 0.001 && f.lat > s - 0.001 && f.lat < n + 0.001
            );
            assert!(f.speed >= 0.0 && f.speed < 40.0 && f.accuracy == 3.0);
            assert!((0.0..360.0).contains(&f.heading));
        }
    }
    let stats = fleet.stop().await;
    assert_eq!(stats.connected, 0);
    assert!(stats.published >= (drivers * 8) as u64);
}

#[tokio::test]
async fn fleet_over_tcp_against_fleetcast() {
    let b = TestBroker::start().await;
    let url = format!("mqtt://{}", b.addrs.mqtt).parse().unwrap();
    fleet_publishes_as_documented(url, tcp_options("rider", &b.addrs), 20).await;
}

#[tokio::test]
async fn fleet_over_websocket_against_fleetcast() {
    let b = TestBroker::start().await;
    let url = b.ws_url().parse().unwrap();
    fleet_publishes_as_documented(url, ws_options("rider", &b.addrs), 20).await;
}

#[tokio::test]
async fn fleet_against_mosquitto() {
    let Some(m) = Mosquitto::start().await else {
        return;
    };
    let url = format!("mqtt://{}", m.addr).parse().unwrap();
    let mut watch = rumqttc::MqttOptions::new("rider", "127.0.0.1", m.addr.port());
    watch.set_keep_alive(Duration::from_secs(30));
    fleet_publishes_as_documented(url, watch, 20).await;
}

#[tokio::test]
async fn presence_is_retained_online_and_offline_on_stop() {
    let b = TestBroker::start().await;
    let mut config = FleetConfig::new(format!("mqtt://{}", b.addrs.mqtt).parse().unwrap(), 3);
    config.interval = Duration::from_millis(200);
    let fleet = Fleet::start(config, graph());
    let deadline = Instant::now() + PATIENCE;
    while fleet.stats().snapshot().connected < 3 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A late rider sees each driver's retained presence: online.
    let mut rider = TestClient::connect(tcp_options("late", &b.addrs)).await;
    rider.subscribe("drivers/+/status", QoS::AtLeastOnce).await;
    for _ in 0..3 {
        let p = rider.next_publish().await.expect("retained presence");
        let presence: Presence = serde_json::from_slice(&p.payload).unwrap();
        assert_eq!(presence.status, "online");
        assert!(p.retain);
    }
    fleet.stop().await;
    for _ in 0..3 {
        let p = rider.next_publish().await.expect("offline on stop");
        let presence: Presence = serde_json::from_slice(&p.payload).unwrap();
        assert_eq!(presence.status, "offline");
    }
}

#[tokio::test]
async fn fleet_comes_back_after_a_broker_restart_at_the_connect_rate() {
    const DRIVERS: usize = 40;
    const RATE: u32 = 20;
    let first = TestBroker::start().await;
    let addrs = first.addrs;
    let mut config = FleetConfig::new(format!("mqtt://{}", addrs.mqtt).parse().unwrap(), DRIVERS);
    config.interval = Duration::from_millis(500);
    config.connect_rate = RATE;
    let fleet = Fleet::start(config, graph());
    let stats = Arc::clone(fleet.stats());
    let deadline = Instant::now() + PATIENCE;
    while stats.snapshot().connected < DRIVERS {
        assert!(Instant::now() < deadline, "fleet never fully connected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Restart the broker on the same ports.
    first.broker.shutdown().await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    while stats.snapshot().connected > 0 {
        assert!(
            Instant::now() < deadline,
            "drivers did not notice the broker going away"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut config = fleetcast_broker::Config::ephemeral();
    config.listen.mqtt = addrs.mqtt;
    config.listen.ws = addrs.ws;
    config.listen.http = addrs.http;
    let second = TestBroker::with_config(config).await;

    // Watch the broker's open connections climb back, noting when each arrives.
    let mut arrivals = Vec::new();
    let started = Instant::now();
    let budget = Duration::from_secs(30);
    let mut open = 0;
    while open < DRIVERS {
        assert!(
            started.elapsed() < budget,
            "{open} of {DRIVERS} back after {budget:?}"
        );
        let now_open = second.broker.gateway().stats.open_total();
        for _ in open..now_open {
            arrivals.push(started.elapsed());
        }
        open = open.max(now_open);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The gate spaced the reconnects: 40 connects at 20/s take at least 1.95 s, and no
    // second holds more than the rate (plus one for window edges).
    let spread = arrivals[DRIVERS - 1] - arrivals[0];
    assert!(
        spread >= Duration::from_millis(1_800),
        "reconnects bunched in {spread:?}"
    );
    for (i, t) in arrivals.iter().enumerate() {
        let within_a_second = arrivals[i..]
            .iter()
            .take_while(|u| **u - *t < Duration::from_secs(1))
            .count();
        assert!(
            within_a_second <= RATE as usize + 1,
            "{within_a_second} reconnects within 1 s"
        );
    }
    let after = fleet.stop().await;
    assert!(after.reconnects >= DRIVERS as u64);
}

/// Driver ids seen on `rider` until `want` distinct ones came or `within` ran out.
async fn drivers_seen(
    rider: &mut TestClient,
    want: usize,
    within: Duration,
) -> std::collections::HashSet<String> {
    let mut ids = std::collections::HashSet::new();
    let deadline = Instant::now() + within;
    while ids.len() < want && Instant::now() < deadline {
        if let Some(p) = rider.publish_within(Duration::from_millis(200)).await {
            ids.insert(p.topic.split('/').nth(1).unwrap_or_default().to_owned());
        }
    }
    ids
}

#[tokio::test]
async fn drivers_spread_over_several_brokers_and_fail_over_to_the_next() {
    let a = TestBroker::start().await;
    let b = TestBroker::start().await;
    let mut rider = TestClient::connect(tcp_options("rider-b", &b.addrs)).await;
    rider.subscribe("drivers/+/location", QoS::AtMostOnce).await;
    let mut config = FleetConfig::new(format!("mqtt://{}", a.addrs.mqtt).parse().unwrap(), 4);
    config.more_brokers = vec![format!("mqtt://{}", b.addrs.mqtt).parse().unwrap()];
    config.interval = Duration::from_millis(100);
    let fleet = Fleet::start(config, graph());
    // Spread: the second and fourth drivers on b, the others on a.
    let on_b = drivers_seen(&mut rider, 3, Duration::from_secs(3)).await;
    assert_eq!(on_b.len(), 2, "{on_b:?}");
    assert!(
        on_b.contains("drv-000002") && on_b.contains("drv-000004"),
        "{on_b:?}"
    );
    a.broker.shutdown().await.unwrap();
    // a's drivers lost their connection and moved on to b.
    let all = drivers_seen(&mut rider, 4, PATIENCE).await;
    assert_eq!(all.len(), 4, "{all:?}");
    fleet.stop().await;
}
