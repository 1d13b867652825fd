//! Server-side aggregation over real sockets: a browser whose view holds the whole city of
//! 20,000 drivers gets `cells` messages, not 20,000 positions, and its followed driver as a
//! position; zooming in brings positions back. The bytes per second sent to it are
//! printed with aggregation off and on (figures, not assertions on timing).
//!
//! Also the benchmark (ignored by default; `bench/aggregation.sh` runs it in release):
//! 20 browsers zoomed out over 20,000 drivers, the bridge's CPU (its runtime's threads)
//! and bytes per browser, aggregation off then on.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use fleetcast_dashboard::bridge::BridgeConfig;
use fleetcast_dashboard::service::{Dashboard, DashboardOptions};
use fleetcast_proto::{Location, Status};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::Message;

const DRIVERS: usize = 20_000;
/// Central Helsinki, where the drivers are spread.
const CITY: [f64; 4] = [24.85, 60.13, 25.05, 60.25];

/// Driver `i`'s fix number `round`: spread over the city, moving a little each round.
fn fix(i: usize, round: u64, now: u64) -> (String, Vec<u8>) {
    let id = format!("drv-{i:06}");
    let (cols, rows) = (200.0, 100.0);
    let step = round as f64 * 0.00002;
    let loc = Location {
        id: id.clone(),
        lat: CITY[1] + (CITY[3] - CITY[1]) * ((i / 200) as f64 / rows) + step,
        lon: CITY[0] + (CITY[2] - CITY[0]) * ((i % 200) as f64 / cols) + step,
        heading: (i % 360) as f64,
        speed: 8.0,
        accuracy: 4.0,
        status: [Status::Available, Status::ToPickup, Status::OnTrip][i % 3],
        seq: round + 1,
        ts: now,
    };
    (
        format!("drivers/{id}/location"),
        serde_json::to_vec(&loc).unwrap(),
    )
}

/// Every driver once a second, in ten slices, onto each board, until `stop`.
fn feed(
    dashboards: Vec<Arc<fleetcast_dashboard::board::Board>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("fc-feed".into())
        .spawn(move || {
            let start = std::time::Instant::now();
            for tick in 0u64.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let round = tick / 10;
                let slice = (tick % 10) as usize;
                let now = fleetcast_proto::time::now_ms();
                for i in (slice * DRIVERS / 10)..((slice + 1) * DRIVERS / 10) {
                    let (topic, body) = fix(i, round, now);
                    for b in &dashboards {
                        b.ingest(&topic, &body, now);
                    }
                }
                let next = start + Duration::from_millis(100 * (tick + 1));
                std::thread::sleep(next.saturating_duration_since(std::time::Instant::now()));
            }
        })
        .unwrap()
}

fn options(aggregate_above: usize) -> DashboardOptions {
    let mut o = DashboardOptions::new("{\"type\":\"FeatureCollection\",\"features\":[]}".into());
    o.bridge = BridgeConfig {
        aggregate_above,
        ..BridgeConfig::default()
    };
    o
}

/// Serves `dashboard`'s routes on a port-0 listener (on the current runtime).
async fn serve(dashboard: &Dashboard, stop: tokio_util::sync::CancellationToken) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tasks = tokio_util::task::TaskTracker::new();
    tokio::spawn(fleetcast_broker::http::serve(
        listener,
        None,
        dashboard.router(),
        stop,
        tasks,
    ));
    addr
}

/// What one browser got.
#[derive(Default)]
struct Seen {
    bytes: u64,
    batches: u64,
    positions: u64,
    cells: u64,
    /// The followed driver's id in the last cells message.
    followed: Option<String>,
    last: Option<Value>,
}

/// A browser: sends `setup`, then reads for `wait`, parsing each message when `parse`.
async fn browser(addr: SocketAddr, setup: Vec<Value>, wait: Duration, parse: bool) -> Seen {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    for m in setup {
        ws.send(Message::Text(m.to_string().into())).await.unwrap();
    }
    let mut seen = Seen::default();
    let deadline = Instant::now() + wait;
    while let Ok(Some(Ok(m))) = timeout(
        deadline.saturating_duration_since(Instant::now()),
        ws.next(),
    )
    .await
    {
        let Message::Text(t) = m else { continue };
        seen.bytes += t.len() as u64;
        if t.starts_with("{\"type\":\"cells\"") {
            seen.cells += 1;
        } else if t.starts_with("{\"type\":\"batch\"") {
            seen.batches += 1;
        }
        if parse {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] == "batch" {
                seen.positions += v["positions"].as_array().map_or(0, |p| p.len() as u64);
            }
            if v["type"] == "cells" {
                seen.followed = v["follow"]["id"].as_str().map(str::to_owned);
            }
            seen.last = Some(v);
        }
    }
    seen
}

fn zoomed_out() -> Vec<Value> {
    vec![
        json!({"op": "viewport", "bbox": CITY}),
        json!({"op": "follow", "id": "drv-000007"}),
    ]
}

/// Waits until the board holds every driver.
async fn filled(dashboard: &Dashboard) {
    let deadline = Instant::now() + common::PATIENCE;
    while dashboard.board.online() < DRIVERS {
        assert!(
            Instant::now() < deadline,
            "{} drivers",
            dashboard.board.online()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zoomed_out_browser_gets_cells_not_20000_positions() {
    let stop = tokio_util::sync::CancellationToken::new();
    let recorder = metrics::NoopRecorder;
    let off = Dashboard::new(options(0), &recorder);
    let on = Dashboard::new(options(2_000), &recorder);
    let done = Arc::new(AtomicBool::new(false));
    let feeder = feed(
        vec![Arc::clone(&off.board), Arc::clone(&on.board)],
        Arc::clone(&done),
    );
    let (off_addr, on_addr) = (
        serve(&off, stop.clone()).await,
        serve(&on, stop.clone()).await,
    );
    filled(&on).await;
    filled(&off).await;
    let wait = Duration::from_secs(3);

    let before = browser(off_addr, zoomed_out(), wait, true).await;
    let after = browser(on_addr, zoomed_out(), wait, true).await;
    eprintln!(
        "zoomed-out browser over {DRIVERS} drivers, {} s each: aggregation off {} B/s ({} batches, {} positions); on {} B/s ({} cells messages, {} positions)",
        wait.as_secs(),
        before.bytes / wait.as_secs(),
        before.batches,
        before.positions,
        after.bytes / wait.as_secs(),
        after.cells,
        after.positions
    );
    assert!(
        before.positions >= DRIVERS as u64,
        "{} positions",
        before.positions
    );
    assert_eq!(before.cells, 0);
    assert!(after.cells >= 2, "{} cells messages", after.cells);
    assert_eq!(after.batches, 0, "no positions while zoomed out");
    assert_eq!(
        after.followed.as_deref(),
        Some("drv-000007"),
        "the followed driver is always sent"
    );
    let last = after.last.unwrap();
    let counted: u64 = last["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[2].as_u64().unwrap() + c[3].as_u64().unwrap() + c[4].as_u64().unwrap())
        .sum();
    assert_eq!(counted, DRIVERS as u64, "every driver in some cell");
    assert_eq!(last["drivers"], DRIVERS);

    // Zoomed in to a few streets: positions again, one by one.
    let street = [24.93, 60.16, 24.94, 60.165];
    // (Before its viewport arrives, a browser sees everywhere: cells at first.)
    let near = browser(
        on_addr,
        vec![json!({"op": "viewport", "bbox": street})],
        Duration::from_secs(1),
        true,
    )
    .await;
    assert!(
        near.positions > 0 && near.positions < 2_000,
        "{} positions",
        near.positions
    );
    assert_eq!(
        near.last.as_ref().map(|m| m["type"].clone()),
        Some(json!("batch"))
    );

    done.store(true, Ordering::Relaxed);
    feeder.join().unwrap();
    stop.cancel();
    on.shutdown().await;
    off.shutdown().await;
}

/// 20 zoomed-out browsers over 20,000 drivers, aggregation off, then on: the bridge's CPU
/// (its runtime's one worker thread) and the bytes each browser gets.
#[test]
#[ignore = "benchmark: prints figures (bench/aggregation.sh)"]
fn bench_20_browsers_over_20000_drivers() {
    const BROWSERS: usize = 20;
    let secs = std::env::var("FLEETCAST_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10u64);
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("fc-bridge")
        .enable_all()
        .build()
        .unwrap();
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("fc-browsers")
        .enable_all()
        .build()
        .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let recorder = metrics::NoopRecorder;
    let (off, on, off_addr, on_addr) = server.block_on(async {
        let off = Dashboard::new(options(0), &recorder);
        let on = Dashboard::new(options(2_000), &recorder);
        let a = serve(&off, stop.clone()).await;
        let b = serve(&on, stop.clone()).await;
        (off, on, a, b)
    });
    let done = Arc::new(AtomicBool::new(false));
    let feeder = feed(
        vec![Arc::clone(&off.board), Arc::clone(&on.board)],
        Arc::clone(&done),
    );
    clients.block_on(async {
        filled(&on).await;
        filled(&off).await;
    });
    println!("bench: {BROWSERS} zoomed-out browsers over {DRIVERS} drivers (1 fix/s each), {secs} s per phase");
    let idle0 = common::threads_cpu("fc-bridge");
    std::thread::sleep(Duration::from_secs(2));
    let idle = common::threads_cpu("fc-bridge")
        .saturating_sub(idle0)
        .as_secs_f64()
        / 2.0;
    println!("  no browser:        bridge CPU {:5.1} %", idle * 100.0);
    for (name, addr, bridge) in [
        ("aggregation off", off_addr, &off.bridge),
        ("aggregation on ", on_addr, &on.bridge),
    ] {
        let total = Arc::new(AtomicU64::new(0));
        let cpu0 = common::threads_cpu("fc-bridge");
        let sent0 = bridge.stats.bytes.load(Ordering::Relaxed);
        let wall = std::time::Instant::now();
        clients.block_on(async {
            let mut tasks = Vec::new();
            for _ in 0..BROWSERS {
                let total = Arc::clone(&total);
                tasks.push(tokio::spawn(async move {
                    let seen = browser(addr, zoomed_out(), Duration::from_secs(secs), false).await;
                    total.fetch_add(seen.bytes, Ordering::Relaxed);
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        });
        let wall = wall.elapsed().as_secs_f64();
        let cpu = common::threads_cpu("fc-bridge")
            .saturating_sub(cpu0)
            .as_secs_f64();
        let sent = bridge.stats.bytes.load(Ordering::Relaxed) - sent0;
        let per_browser = total.load(Ordering::Relaxed) as f64 / BROWSERS as f64 / wall;
        println!(
            "  {name}:   bridge CPU {:5.1} % of a core, {:9.0} B/s per browser received ({:.0} B/s sent in all), cells messages {}",
            cpu / wall * 100.0,
            per_browser,
            sent as f64 / wall,
            bridge.stats.cells.load(Ordering::Relaxed)
        );
    }
    done.store(true, Ordering::Relaxed);
    feeder.join().unwrap();
    stop.cancel();
    server.block_on(async {
        on.shutdown().await;
        off.shutdown().await;
    });
}
