//! What `--data` history costs (`bench/history_store.sh`): the history writer's CPU for a
//! 10,000-driver fleet at 1 fix/s in real time, and the store bytes of a driver-hour (500
//! drivers, an hour of fixes fed 100x faster). Ignored: prints figures, asserts none but
//! that nothing was dropped.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::TempDir;
use fleetcast::tracks::StoreArchive;
use fleetcast_broker::store::Store;
use fleetcast_dashboard::archive::{ArchiveConfig, Archiver};
use fleetcast_dashboard::history::{History, HistoryConfig};
use fleetcast_proto::{Location, Status};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn fix(d: usize, s: u64, t0: u64) -> Location {
    // About 10 m/s north-east, each driver from its own corner of the city.
    let (lat, lon) = (
        60.15 + (d % 100) as f64 * 1e-3,
        24.90 + (d / 100) as f64 * 1e-3,
    );
    Location {
        id: format!("drv-{d:06}"),
        lat: lat + s as f64 * 9e-5,
        lon: lon + s as f64 * 1.8e-4,
        heading: 45.0,
        speed: 10.0,
        accuracy: 5.0,
        status: if (s / 600 + d as u64) % 3 == 0 {
            Status::OnTrip
        } else {
            Status::Available
        },
        seq: s,
        ts: t0 + s * 1_000,
    }
}

struct Run {
    dir: TempDir,
    store: Store,
    history: History,
    archiver: Arc<Archiver>,
    recorder: metrics_exporter_prometheus::PrometheusRecorder,
}

fn run(tag: &str) -> Run {
    let dir = TempDir::new(tag);
    let store = Store::open(&dir.path).unwrap();
    let recorder = fleetcast::stack::prometheus().unwrap();
    let archiver = Archiver::start(
        Arc::new(StoreArchive(store.tracks())),
        ArchiveConfig::default(),
        &recorder,
    )
    .unwrap();
    // Memory keeps a minute: the figures are the store's.
    let history = History::new(HistoryConfig {
        window: Duration::from_secs(60),
        ..HistoryConfig::default()
    });
    history.archive_to(Arc::clone(&archiver));
    Run {
        dir,
        store,
        history,
        archiver,
        recorder,
    }
}

/// Bytes of the records themselves (what the codec wrote), without redb's pages.
fn record_bytes(store: &Store) -> u64 {
    let t = store.tracks();
    let mut total = 0u64;
    let mut after: Option<String> = None;
    loop {
        let ids = t.drivers_after(after.as_deref(), 1_000).unwrap();
        let Some(last) = ids.last().cloned() else {
            return total;
        };
        for id in &ids {
            total += t
                .read(id, 0, u64::MAX)
                .unwrap()
                .iter()
                .map(|r| r.len() as u64)
                .sum::<u64>();
        }
        after = Some(last);
    }
}

fn counter(r: &Run, name: &str) -> u64 {
    let text = r.recorder.handle().render();
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[test]
#[ignore = "benchmark: prints figures (bench/history_store.sh)"]
fn bench_history_store_cost() {
    let secs: u64 = std::env::var("FLEETCAST_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let now = fleetcast_proto::time::now_ms();

    // 10,000 drivers, one fix a second each, in real time.
    const FLEET: usize = 10_000;
    let r = run("history-bench-fleet");
    let empty = r.store.size_bytes();
    let start = Instant::now();
    let cpu0 = common::threads_cpu("history-writer");
    for s in 0..secs {
        for d in 0..FLEET {
            let l = fix(d, s, now);
            r.history.record(&format!("drivers/{}/location", l.id), &l);
        }
        std::thread::sleep(
            (start + Duration::from_secs(s + 1)).saturating_duration_since(Instant::now()),
        );
    }
    let cpu = common::threads_cpu("history-writer") - cpu0;
    let wall = start.elapsed();
    r.archiver.close();
    let written = counter(&r, "fleetcast_history_store_points_total");
    let dropped = counter(&r, "fleetcast_history_store_dropped_total");
    let grown = r.store.size_bytes() - empty;
    let records = record_bytes(&r.store);
    println!(
        "bench fleet: {FLEET} drivers x {secs} s at 1 fix/s: writer CPU {:.1}% of a core ({:.2} s over {:.1} s), {written} points written, {dropped} dropped, file +{grown} bytes ({:.0} bytes per driver-minute), records {records} bytes ({:.1} bytes a point)",
        cpu.as_secs_f64() / wall.as_secs_f64() * 100.0,
        cpu.as_secs_f64(),
        wall.as_secs_f64(),
        grown as f64 / FLEET as f64 / (secs as f64 / 60.0),
        records as f64 / written.max(1) as f64,
    );
    assert_eq!(dropped, 0);
    drop(r.dir);

    // 500 drivers' hour, fed 100 s of fixes a real second.
    const HOUR_FLEET: usize = 500;
    let r = run("history-bench-hour");
    let empty = r.store.size_bytes();
    let t0 = now - 3_600_000;
    let start = Instant::now();
    for s in 0..3_600u64 {
        for d in 0..HOUR_FLEET {
            let l = fix(d, s, t0);
            r.history.record(&format!("drivers/{}/location", l.id), &l);
        }
        std::thread::sleep(
            (start + Duration::from_millis((s + 1) * 10)).saturating_duration_since(Instant::now()),
        );
    }
    r.archiver.close();
    let written = counter(&r, "fleetcast_history_store_points_total");
    let dropped = counter(&r, "fleetcast_history_store_dropped_total");
    let grown = r.store.size_bytes() - empty;
    let records = record_bytes(&r.store);
    println!(
        "bench hour: {HOUR_FLEET} drivers x 3,600 fixes: {written} points written, {dropped} dropped, file +{grown} bytes: {:.0} bytes per driver-hour ({:.1} bytes a point); records {:.0} bytes per driver-hour ({:.1} bytes a point)",
        grown as f64 / HOUR_FLEET as f64,
        grown as f64 / written.max(1) as f64,
        records as f64 / HOUR_FLEET as f64,
        records as f64 / written.max(1) as f64,
    );
    assert_eq!(dropped, 0);
    drop(r.dir);
}
