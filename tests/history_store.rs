//! Driver history in the store (`serve --data`): a track survives a restart (the memory
//! window is refilled at start, older ranges are read from the store), and records older
//! than `[map] history_retention_s` are pruned.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::*;
use fleetcast::stack::Stack;
use fleetcast_broker::Config;
use fleetcast_proto::time::now_ms;
use rumqttc::QoS;
use serde_json::Value;
use std::time::Duration;
use tokio::time::Instant;

const ID: &str = "drv-000042";

fn fix(seq: u64, lat: f64, lon: f64, ts: u64) -> String {
    format!(
        r#"{{"id":"{ID}","lat":{lat},"lon":{lon},"heading":45,"speed":10,"accuracy":5,"status":"on_trip","seq":{seq},"ts":{ts}}}"#
    )
}

async fn stack(dir: &TempDir, window_s: u64, retention_s: u64) -> Stack {
    let mut config = Config::ephemeral();
    config.storage.dir = dir.path.to_str().unwrap().to_owned();
    config.map.history_retention_s = retention_s;
    let mut options = fleetcast::stack::offline_dashboard().unwrap();
    options.history.window = Duration::from_secs(window_s);
    start_stack_with_config(config, options, None).await
}

/// `n` fixes of [`ID`] 5 s apart from `t0`; returns their times and the client (which
/// sends them while it lives).
async fn publish(s: &Stack, t0: u64, n: u64) -> (Vec<u64>, TestClient) {
    let client = TestClient::connect(tcp_options(ID, &s.addrs())).await;
    let mut sent = Vec::new();
    for i in 0..n {
        let ts = t0 + i * 5_000;
        let (lat, lon) = (60.16 + i as f64 * 0.0005, 24.93 + i as f64 * 0.0007);
        client
            .client
            .publish(
                format!("drivers/{ID}/location"),
                QoS::AtLeastOnce,
                false,
                fix(i + 1, lat, lon, ts),
            )
            .await
            .unwrap();
        sent.push(ts);
    }
    (sent, client)
}

/// The track's times from the API, polled until it has `n` points.
async fn times(s: &Stack, n: usize) -> Vec<u64> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let path = format!("/api/drivers/{ID}/track?since=0");
        let a = http_request(s.addrs().http, "GET", &path, &[], b"").await;
        let body: Value = serde_json::from_str(&a.body).unwrap_or(Value::Null);
        let times: Vec<u64> = body["properties"]["times"]
            .as_array()
            .map(|t| t.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        if times.len() >= n {
            return times;
        }
        assert!(
            Instant::now() < deadline,
            "{} {} ({} points)",
            a.status,
            a.body,
            times.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_track_survives_a_restart_and_older_ranges_come_from_the_store() {
    let dir = TempDir::new("history-store");
    // Memory keeps a minute; the fixes span 195 s, the last 100 s ago.
    let s = stack(&dir, 60, 86_400).await;
    let (sent, client) = publish(&s, now_ms() - 295_000, 40).await;
    assert_eq!(times(&s, 40).await, sent);
    let (_, held) = s.dashboard.history.size();
    assert!(held < 20, "memory holds its minute only: {held} steps");
    drop(client);
    s.shutdown().await.unwrap();

    // Again on the same directory, with an hour in memory: refilled before the start ends.
    let s = stack(&dir, 3_600, 86_400).await;
    let memory = s
        .dashboard
        .history
        .trace(ID, 0, u64::MAX)
        .expect("refilled");
    let memory: Vec<u64> = memory.points.iter().map(|p| p.t).collect();
    assert_eq!(memory, sent);
    assert_eq!(times(&s, 40).await, sent);
    s.shutdown().await.unwrap();

    // And with a minute in memory again: all but the window from the store.
    let s = stack(&dir, 60, 86_400).await;
    assert_eq!(times(&s, 40).await, sent);
    s.shutdown().await.unwrap();
}

#[tokio::test]
async fn records_older_than_the_retention_are_pruned() {
    let dir = TempDir::new("history-retention");
    // Kept two minutes; the fixes span the last 10 minutes.
    let s = stack(&dir, 3_600, 120).await;
    let t0 = now_ms() - 600_000;
    let (_sent, _client) = publish(&s, t0, 120).await;
    let store = s.broker.track_store().expect("a data directory");
    let deadline = Instant::now() + PATIENCE;
    loop {
        // Written (the last minutes), and what is older than the retention's minute gone.
        let recent = store.read(ID, now_ms() - 120_000, u64::MAX).unwrap();
        let old = store.read(ID, 0, now_ms() - 240_000).unwrap();
        if !recent.is_empty() && old.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} recent, {} old records",
            recent.len(),
            old.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(store);
    s.shutdown().await.unwrap();
}
