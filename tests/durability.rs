//! `serve --data DIR` over real sockets and the real binary: retained positions and a
//! persistent session's queued and in-flight QoS 1 messages survive a `kill -9` (older than
//! the stated bound) and a SIGTERM (all of them); a damaged or foreign store, or one held
//! by a running fleetcast, is refused by name; the store's meters.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::persist::*;
use common::*;
use std::collections::HashMap;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

const DRIVERS: usize = 200;
const QUEUED: usize = 5;
const RIDER: &str = "rider-persistent";

/// 200 drivers publish retained positions (each on its own connection, QoS 1, acked);
/// a persistent subscriber to `alerts/#` (QoS 1) is away while 5 alerts are published.
async fn fill(mqtt: std::net::SocketAddr) {
    let (mut rider, present) = raw_connect(mqtt, RIDER, false).await;
    assert!(!present);
    rider
        .write_all(&raw::subscribe("alerts/#", 1, false))
        .await
        .unwrap();
    let suback = raw::read_frame(&mut rider, PATIENCE).await.unwrap();
    assert_eq!(suback, [0x90, 3, 0, 1, 1]);
    rider.write_all(&[0xE0, 0]).await.unwrap();
    drop(rider);
    for i in 0..DRIVERS {
        let id = driver_id(i);
        let (mut s, _) = raw_connect(mqtt, &id, true).await;
        let topic = format!("drivers/{id}/location");
        publish_acked(&mut s, &topic, &location(&id, i as u64 + 1), 1, true).await;
        s.write_all(&[0xE0, 0]).await.unwrap();
    }
    let (mut alerts, _) = raw_connect(mqtt, "dispatcher", true).await;
    for n in 1..=QUEUED {
        let body = format!("alert {n}");
        publish_acked(
            &mut alerts,
            &format!("alerts/{n}"),
            body.as_bytes(),
            n as u16,
            false,
        )
        .await;
    }
}

/// After the restart: a new subscriber gets all 200 positions (with their seq), the
/// persistent subscriber its session and its 5 alerts, in order, and nothing more once
/// it has acknowledged them.
async fn check(mqtt: std::net::SocketAddr) {
    let mut o = rumqttc::MqttOptions::new("rider-new", mqtt.ip().to_string(), mqtt.port());
    o.set_keep_alive(Duration::from_secs(30));
    let mut rider = TestClient::connect(o).await;
    rider
        .subscribe("drivers/+/location", rumqttc::QoS::AtMostOnce)
        .await;
    let mut seen = HashMap::new();
    while seen.len() < DRIVERS {
        let Some(p) = rider.next_publish().await else {
            break;
        };
        assert!(
            p.retain,
            "only the retained positions: nobody publishes now"
        );
        seen.insert(p.topic.clone(), seq_of(&p.payload));
    }
    assert_eq!(
        seen.len(),
        DRIVERS,
        "every driver's last position after the restart"
    );
    for i in 0..DRIVERS {
        let topic = format!("drivers/{}/location", driver_id(i));
        assert_eq!(seen.get(&topic), Some(&(i as u64 + 1)), "{topic}");
    }

    let (mut s, present) = raw_connect(mqtt, RIDER, false).await;
    assert!(present, "the persistent session is back (session present)");
    for n in 1..=QUEUED {
        let f = raw::read_frame(&mut s, PATIENCE)
            .await
            .expect("a queued alert");
        let (topic, payload, pkid) = parse_publish(&f).expect("PUBLISH");
        assert_eq!(f[0] & 0x06, 0x02, "QoS 1");
        assert_eq!(
            (topic, payload),
            (format!("alerts/{n}"), format!("alert {n}").into_bytes())
        );
        s.write_all(&[0x40, 2, (pkid >> 8) as u8, pkid as u8])
            .await
            .unwrap();
    }
    assert!(
        raw::read_frame(&mut s, Duration::from_millis(500))
            .await
            .is_none(),
        "exactly the 5 queued alerts"
    );
    s.write_all(&[0xE0, 0]).await.unwrap();
    drop(s);
    // Acknowledged: a later connection is owed nothing (the PINGRESP is the first answer).
    let (mut s, present) = raw_connect(mqtt, RIDER, false).await;
    assert!(present);
    s.write_all(&[0xC0, 0]).await.unwrap();
    assert_eq!(raw::read_frame(&mut s, PATIENCE).await, Some(vec![0xD0, 0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_keeps_the_positions_and_the_queued_messages() {
    let dir = TempDir::new("durable-kill");
    let mut first = serve_with_data(&dir.path, None);
    fill(first.mqtt).await;
    // What is older than the stated bound must be on disk: wait that long, no more.
    tokio::time::sleep(LOSS_BOUND).await;
    kill_9(&mut first);
    let second = serve_with_data(&dir.path, None);
    check(second.mqtt).await;
    let metrics = http_get(second.http, "/metrics").await;
    for line in [
        "fleetcast_store_loaded_items{kind=\"retained\"} 200",
        "fleetcast_store_loaded_items{kind=\"sessions\"} 1",
        "fleetcast_store_loaded_items{kind=\"queued\"} 5",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    assert!(metrics.contains("fleetcast_store_size_bytes "), "{metrics}");
    assert!(
        metrics.contains("fleetcast_store_flush_duration_seconds_count "),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_everything_at_once() {
    let dir = TempDir::new("durable-term");
    // Flushes a minute apart: only the shutdown's own flush can have written the state.
    let conf = TempDir::new("durable-term-conf");
    let file = conf.path.join("fleetcast.toml");
    std::fs::write(&file, "[storage]\nflush_interval_ms = 60000\n").unwrap();
    let config = ["--config", file.to_str().unwrap()];
    let mut first = serve_with_data_and(&dir.path, None, &config);
    fill(first.mqtt).await;
    sigterm(&mut first);
    let second = serve_with_data(&dir.path, None);
    check(second.mqtt).await;
}

/// Messages sent to a connected persistent subscriber and not acknowledged when the broker
/// is killed are sent again after the restart; acknowledged ones are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_messages_survive_kill_9() {
    let dir = TempDir::new("durable-inflight");
    let mut first = serve_with_data(&dir.path, None);
    let (mut rider, _) = raw_connect(first.mqtt, RIDER, false).await;
    rider
        .write_all(&raw::subscribe("alerts/#", 1, false))
        .await
        .unwrap();
    raw::read_frame(&mut rider, PATIENCE).await.expect("SUBACK");
    let (mut alerts, _) = raw_connect(first.mqtt, "dispatcher", true).await;
    for n in 1..=3u16 {
        publish_acked(
            &mut alerts,
            "alerts/x",
            format!("m{n}").as_bytes(),
            n,
            false,
        )
        .await;
    }
    // The rider takes all three and acknowledges only the first.
    for n in 1..=3 {
        let f = raw::read_frame(&mut rider, PATIENCE)
            .await
            .expect("delivered");
        let (_, payload, pkid) = parse_publish(&f).unwrap();
        assert_eq!(payload, format!("m{n}").into_bytes());
        if n == 1 {
            rider.write_all(&[0x40, 2, 0, pkid as u8]).await.unwrap();
        }
    }
    tokio::time::sleep(LOSS_BOUND).await;
    kill_9(&mut first);
    drop(rider);
    let second = serve_with_data(&dir.path, None);
    let (mut rider, present) = raw_connect(second.mqtt, RIDER, false).await;
    assert!(present);
    let mut again = Vec::new();
    while let Some(f) = raw::read_frame(&mut rider, Duration::from_millis(500)).await {
        let (_, payload, pkid) = parse_publish(&f).unwrap();
        again.push(String::from_utf8(payload).unwrap());
        rider
            .write_all(&[0x40, 2, (pkid >> 8) as u8, pkid as u8])
            .await
            .unwrap();
    }
    assert_eq!(again, ["m2", "m3"], "the two unacknowledged, once each");
}

#[test]
fn a_store_held_by_a_running_fleetcast_is_refused() {
    let dir = TempDir::new("durable-lock");
    let _first = serve_with_data(&dir.path, None);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fleetcast"))
        .arg("serve")
        .args(EPHEMERAL_LISTENERS)
        .args(["--data", dir.path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("fleetcast.redb") && err.contains("in use"),
        "{err}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("fleetcast ready"));
}

#[test]
fn damaged_or_foreign_files_are_refused_by_name_never_started_empty() {
    let dir = TempDir::new("durable-corrupt");
    let store = dir.path.join("fleetcast.redb");
    let refused = |expect: &str, named: &std::path::Path| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fleetcast"))
            .arg("serve")
            .args(EPHEMERAL_LISTENERS)
            .args(["--data", dir.path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&named.display().to_string()) && err.contains(expect),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("fleetcast ready"));
    };
    std::fs::write(&store, vec![0x5A; 64 * 1024]).unwrap();
    refused("corrupt", &store);
    // A good store damaged in its middle.
    std::fs::remove_file(&store).unwrap();
    {
        let mut served = serve_with_data(&dir.path, None);
        sigterm(&mut served);
    }
    let mut bytes = std::fs::read(&store).unwrap();
    let mid = bytes.len() / 2;
    bytes[..mid].fill(0xFF);
    std::fs::write(&store, bytes).unwrap();
    refused("corrupt", &store);
    std::fs::remove_file(&store).unwrap();
    let stray = dir.path.join("mosquitto.db");
    std::fs::write(&stray, b"x").unwrap();
    refused("not fleetcast's", &stray);
}

/// What `fleetcast_drivers_online` (drivers live on the map) reads now.
async fn drivers_on_the_map(http: std::net::SocketAddr) -> Option<u64> {
    let metrics = http_get(http, "/metrics").await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("fleetcast_drivers_online "))?;
    line.split(' ')
        .nth(1)?
        .parse::<f64>()
        .ok()
        .map(|v| v as u64)
}

/// A restarted demo shows the map full at once: the second run has no fleet at all, so only
/// the kept positions can fill it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_demo_shows_every_car_before_any_driver_is_back() {
    let dir = TempDir::new("durable-demo");
    let data = dir.path.join("demo");
    let data = data.to_str().unwrap();
    let first = spawn_ready("demo", &["--drivers", "30", "--data", data]);
    let mut first = first;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while drivers_on_the_map(first.http).await != Some(30) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fleet is not on the map"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(LOSS_BOUND).await;
    kill_9(&mut first);
    let second = spawn_ready("demo", &["--drivers", "0", "--data", data]);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while drivers_on_the_map(second.http).await != Some(30) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the kept positions are not on the map"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
