//! The load tester's accounting against a broker double that drops, duplicates and delays
//! on purpose (so the right answers are known), and small runs against fleetcast and
//! Debian's mosquitto.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::*;
use fleetcast_loadtest::{self as loadtest, wire, LoadConfig, Scenario};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpListener;

/// A broker double: every 10th message (by seq) is dropped, every 7th sent twice, and
/// every message is delivered 30 ms late.
async fn double() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let subscribers: Arc<Mutex<Vec<Arc<tokio::sync::Mutex<OwnedWriteHalf>>>>> = Arc::default();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let subscribers = Arc::clone(&subscribers);
            tokio::spawn(async move {
                let (mut rd, wr) = stream.into_split();
                let wr = Arc::new(tokio::sync::Mutex::new(wr));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = match rd.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    while let Ok(Some((frame, len))) = wire::next_frame(&buf) {
                        let raw = buf[..len].to_vec();
                        match frame {
                            wire::Frame::Other(1) => {
                                wr.lock().await.write_all(&[0x20, 2, 0, 0]).await.unwrap()
                            }
                            wire::Frame::Other(8) => {
                                let pkid = [raw[2], raw[3]];
                                wr.lock()
                                    .await
                                    .write_all(&[0x90, 3, pkid[0], pkid[1], 0])
                                    .await
                                    .unwrap();
                                subscribers.lock().unwrap().push(Arc::clone(&wr));
                            }
                            wire::Frame::Publish { payload, .. } => {
                                let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
                                let seq = v["seq"].as_u64().unwrap();
                                let copies = if seq % 10 == 0 {
                                    0
                                } else if seq % 7 == 0 {
                                    2
                                } else {
                                    1
                                };
                                let targets = subscribers.lock().unwrap().clone();
                                tokio::spawn(async move {
                                    tokio::time::sleep(Duration::from_millis(30)).await;
                                    for t in targets {
                                        for _ in 0..copies {
                                            let _ = t.lock().await.write_all(&raw).await;
                                        }
                                    }
                                });
                            }
                            _ => {}
                        }
                        buf.drain(..len);
                    }
                }
            });
        }
    });
    addr
}

fn config(broker: &str, scenario: Scenario) -> LoadConfig {
    LoadConfig {
        scenario,
        broker: broker.parse().unwrap(),
        more_brokers: Vec::new(),
        connections: 5,
        connect_rate: 1000,
        interval: Duration::from_millis(50),
        payload_size: None,
        qos: 0,
        subscribers: 1,
        shared: false,
        duration: Duration::from_secs(2),
        keep_alive: Duration::from_secs(60),
        source_ips: vec![],
        broker_pid: None,
        jitter: false,
        retain: false,
        id_prefix: "lt-".into(),
        worker: (0, 1),
        credentials: None,
    }
}

#[tokio::test]
async fn accounting_matches_what_the_double_did() {
    let addr = double().await;
    let r = loadtest::run(config(&format!("mqtt://{addr}"), Scenario::Fleet), |_| {})
        .await
        .unwrap();
    assert!(r.published >= 150, "{r:?}");
    // Per publisher seq 1..=k: k/10 dropped; multiples of 7 that are not multiples of 10
    // arrive twice. Publishers may differ by one message at the end.
    let per = r.published as f64 / 5.0;
    let dropped = (per / 10.0).floor() * 5.0;
    assert!(
        (r.lost as f64 - dropped).abs() <= 5.0,
        "lost {} expected about {dropped}",
        r.lost
    );
    let dups = ((per / 7.0).floor() - (per / 70.0).floor()) * 5.0;
    assert!(
        (r.duplicates as f64 - dups).abs() <= 5.0,
        "duplicates {} expected about {dups}",
        r.duplicates
    );
    assert_eq!(r.out_of_order, 0);
    assert!(
        r.latency_ms.p50 >= 30.0,
        "the 30 ms delay shows: {:?}",
        r.latency_ms
    );
    assert!(r.latency_ms.p50 < 1_000.0);
}

#[tokio::test]
async fn small_runs_against_fleetcast() {
    let b = TestBroker::start().await;
    for broker in [format!("mqtt://{}", b.addrs.mqtt), b.ws_url()] {
        let r = loadtest::run(config(&broker, Scenario::Fleet), |_| {})
            .await
            .unwrap();
        assert_eq!(r.connected, 6);
        assert!(r.published >= 150);
        assert_eq!((r.lost, r.duplicates), (0, 0), "{r:?}");
        assert_eq!(r.received, r.published);
    }
    let mut storm = config(&format!("mqtt://{}", b.addrs.mqtt), Scenario::Storm);
    storm.connections = 50;
    storm.subscribers = 0;
    let r = loadtest::run(storm, |_| {}).await.unwrap();
    assert_eq!(r.connected, 100, "50 connects and 50 reconnects: {r:?}");
    assert!(r.reconnect_all_s.is_some());
    let mut idle = config(&format!("mqtt://{}", b.addrs.mqtt), Scenario::Idle);
    idle.connections = 100;
    idle.subscribers = 0;
    // New ids: the storm's reconnected less than a second ago (1 connect/s per id).
    idle.id_prefix = "idle-".into();
    idle.duration = Duration::from_millis(500);
    let r = loadtest::run(idle, |_| {}).await.unwrap();
    assert_eq!(r.connected, 100);
    assert!(r.connect_errors.is_empty());
}

/// A subscriber sends nothing once subscribed at QoS 0: unless it pings, a broker closes it
/// after 1.5 keep-alives and the rest of the run reads as lost. With a 1 s keep-alive and a
/// 4 s run it must still get everything, from fleetcast and from mosquitto.
#[tokio::test]
async fn a_subscriber_outlives_its_keep_alive() {
    let b = TestBroker::start().await;
    let m = Mosquitto::start().await;
    let mut brokers = vec![format!("mqtt://{}", b.addrs.mqtt)];
    brokers.extend(m.as_ref().map(|m| format!("mqtt://{}", m.addr)));
    for broker in brokers {
        let mut c = config(&broker, Scenario::Fleet);
        c.keep_alive = Duration::from_secs(1);
        c.duration = Duration::from_secs(4);
        let r = loadtest::run(c, |_| {}).await.unwrap();
        assert_eq!(r.subscribers_dropped, 0, "{broker}: {r:?}");
        assert!(r.published >= 300, "{broker}: {r:?}");
        assert_eq!((r.lost, r.duplicates), (0, 0), "{broker}: {r:?}");
    }
}

#[tokio::test]
async fn small_run_against_mosquitto() {
    let Some(m) = Mosquitto::start().await else {
        return;
    };
    let mut c = config(&format!("mqtt://{}", m.addr), Scenario::Fleet);
    c.qos = 1;
    let r = loadtest::run(c, |_| {}).await.unwrap();
    assert_eq!(r.connected, 6);
    assert_eq!((r.lost, r.duplicates), (0, 0), "{r:?}");
}
