//! The board: conflation, views, offline and stale drivers, bounds, OwnTracks.

use super::*;
use fleetcast_proto::Status;

/// A plausible clock: the location rules refuse fixes from before 2000.
const T0: u64 = 1_700_000_000_000;

fn fix(id: &str, seq: u64, lat: f64, lon: f64) -> Vec<u8> {
    serde_json::to_vec(&Location {
        id: id.into(),
        lat,
        lon,
        heading: 0.0,
        speed: 1.0,
        accuracy: 3.0,
        status: Status::Available,
        seq,
        ts: T0 + 1_000,
    })
    .expect("json")
}

#[test]
fn latest_position_per_driver_is_kept() {
    let b = Board::new(BoardConfig::default());
    for seq in 1..=10 {
        b.ingest("drivers/a/location", &fix("a", seq, 60.0, 24.0), T0 + 1_005);
    }
    let c = b.changes_since(0, &View::default(), 100);
    assert_eq!(c.positions.len(), 1, "conflated to one");
    assert_eq!(c.positions[0].seq, 10);
    assert_eq!(b.panel().p50_ms, 5.0);
    // Nothing new since.
    assert!(b
        .changes_since(c.version, &View::default(), 100)
        .positions
        .is_empty());
}

#[test]
fn viewport_filters_and_follow() {
    let b = Board::new(BoardConfig::default());
    b.ingest(
        "drivers/in/location",
        &fix("in", 1, 60.17, 24.94),
        T0 + 2_000,
    );
    b.ingest(
        "drivers/out/location",
        &fix("out", 1, 61.5, 25.5),
        T0 + 2_000,
    );
    let mut view = View {
        viewport: Viewport::from_bbox([24.9, 60.1, 25.0, 60.2]),
        ..View::default()
    };
    let c = b.changes_since(0, &view, 100);
    assert_eq!(
        c.positions
            .iter()
            .map(|l| l.id.as_str())
            .collect::<Vec<_>>(),
        ["in"]
    );
    assert_eq!(c.filtered_out, 1);
    view.follow = Some("out".into());
    assert_eq!(b.changes_since(0, &view, 100).positions.len(), 2);
    // A filter that matches no driver topic shows nothing.
    let none = View {
        filters: vec!["owntracks/#".into()],
        ..View::default()
    };
    assert!(b.changes_since(0, &none, 100).positions.is_empty());
}

#[test]
fn offline_and_stale_drivers_are_sent_as_gone() {
    let b = Board::new(BoardConfig {
        stale_after: Duration::from_secs(5),
        ..BoardConfig::default()
    });
    b.ingest("drivers/a/location", &fix("a", 1, 60.0, 24.0), T0 + 2_000);
    b.ingest("drivers/b/location", &fix("b", 1, 60.0, 24.0), T0 + 2_000);
    let seen = b.changes_since(0, &View::default(), 100).version;
    b.ingest(
        "drivers/a/status",
        br#"{"id":"a","status":"offline"}"#,
        T0 + 2_000,
    );
    let c = b.changes_since(seen, &View::default(), 100);
    assert_eq!(
        c.gone,
        [Gone {
            id: "a".into(),
            reason: GoneReason::Offline
        }]
    );
    b.sweep(Instant::now() + Duration::from_secs(6));
    let c2 = b.changes_since(c.version, &View::default(), 100);
    assert_eq!(
        c2.gone,
        [Gone {
            id: "b".into(),
            reason: GoneReason::Stale
        }]
    );
    assert_eq!(b.online(), 0);
    // A fresh browser is not told about drivers it never saw.
    assert!(b.changes_since(0, &View::default(), 100).gone.is_empty());
    // Coming back makes a driver live again.
    b.ingest("drivers/a/location", &fix("a", 2, 60.0, 24.0), T0 + 2_000);
    assert_eq!(b.online(), 1);
}

/// A board of at most `max_drivers` that keeps history (default settings), and the history.
fn with_history(max_drivers: usize) -> (Board, Arc<crate::history::History>) {
    let history = Arc::new(crate::history::History::new(
        crate::history::HistoryConfig::default(),
    ));
    let board = Board::new(BoardConfig {
        max_drivers,
        ..BoardConfig::default()
    })
    .with_history(Arc::clone(&history));
    (board, history)
}

/// A batch ends as its messages taken one at a time would: positions, presence, counts,
/// versions and history alike (a driver's buffered track in a row included).
#[test]
fn a_batch_ends_as_one_message_at_a_time() {
    let loc = |id: &str| format!("drivers/{id}/location").into_bytes();
    let mut batch: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    // A phone's buffered track: five fixes in a row, two seconds apart.
    for seq in 1..=5 {
        let mut f: Location = serde_json::from_slice(&fix("a", seq, 60.0, 24.0)).expect("a fix");
        f.ts = T0 + seq * 2_000;
        batch.push((loc("a"), serde_json::to_vec(&f).expect("json")));
    }
    batch.extend([
        (loc("a"), b"{".to_vec()),
        (loc("c"), fix("c", 1, 60.0, 24.0)),
        (loc("b"), fix("b", 1, 60.0, 24.0)),
        // a goes offline, then comes back: order kept across kinds of message.
        (
            b"drivers/a/status".to_vec(),
            br#"{"id":"a","status":"offline"}"#.to_vec(),
        ),
        (b"other/x".to_vec(), b"{}".to_vec()),
        (loc("d"), fix("d", 1, 60.0, 24.0)),
    ]);
    let board = || with_history(3);
    let now = T0 + 20_000;
    let (one, one_history) = board();
    for (topic, body) in &batch {
        one.ingest(std::str::from_utf8(topic).expect("utf-8"), body, now);
    }
    let (all, all_history) = board();
    all.ingest_batch(&batch, now);
    let seen = |b: &Board| {
        let c = b.changes_since(0, &View::default(), 100);
        let mut p: Vec<(String, u64)> = c.positions.iter().map(|p| (p.id.clone(), p.seq)).collect();
        p.sort();
        (
            p,
            c.version,
            b.online(),
            b.ignored.load(Ordering::Relaxed),
            b.refused.load(Ordering::Relaxed),
        )
    };
    assert_eq!(seen(&all), seen(&one));
    // a is offline; b and c are shown; d did not fit.
    assert_eq!(seen(&all).2, 2);
    assert_eq!(seen(&all).3, 2, "the unreadable fix and other/x");
    assert_eq!(seen(&all).4, 1, "d");
    for id in ["a", "b", "c", "d"] {
        let points = |h: &crate::history::History| h.trace(id, 0, u64::MAX).map(|t| t.points);
        assert_eq!(points(&all_history), points(&one_history), "{id}");
    }
    let a = all_history.trace("a", 0, u64::MAX).expect("a's track");
    assert_eq!(a.points.len(), 5, "every buffered fix is history");
}

/// Put together, a batch's fixes still go into history and meet the board's bound one
/// by one: what the board refuses is neither shown nor history.
#[test]
fn a_batch_keeps_history_and_the_bound() {
    let (b, history) = with_history(2);
    let batch: Vec<(String, Vec<u8>)> = ["a", "b", "c"]
        .iter()
        .map(|id| (format!("drivers/{id}/location"), fix(id, 1, 60.0, 24.0)))
        .collect();
    b.ingest_batch(&batch, T0 + 1_010);
    assert_eq!(b.online(), 2);
    assert_eq!(b.refused.load(Ordering::Relaxed), 1);
    for id in ["a", "b"] {
        let trace = history.trace(id, 0, u64::MAX).expect("a track");
        assert_eq!(trace.points.len(), 1, "{id}");
    }
    assert!(history.trace("c", 0, u64::MAX).is_none());
    assert_eq!(b.panel().p50_ms, 10.0, "latency recorded per fix");
}

#[test]
fn bad_messages_are_ignored_and_the_board_is_bounded() {
    let b = Board::new(BoardConfig {
        max_drivers: 2,
        ..BoardConfig::default()
    });
    assert_eq!(b.ingest("drivers/a/location", b"{", T0), Ingested::Ignored);
    // A payload naming another driver than its topic.
    assert_eq!(
        b.ingest("drivers/a/location", &fix("b", 1, 60.0, 24.0), T0),
        Ingested::Ignored
    );
    assert_eq!(b.ingest("other/topic", b"{}", T0), Ingested::Ignored);
    b.ingest("drivers/a/location", &fix("a", 1, 60.0, 24.0), T0);
    b.ingest("drivers/b/location", &fix("b", 1, 60.0, 24.0), T0);
    assert_eq!(
        b.ingest("drivers/c/location", &fix("c", 1, 60.0, 24.0), T0),
        Ingested::Full
    );
    assert_eq!(b.ignored.load(Ordering::Relaxed), 3);
    assert_eq!(b.refused.load(Ordering::Relaxed), 1);
}

#[test]
fn owntracks_devices_appear() {
    let b = Board::new(BoardConfig::default());
    let body = br#"{"_type":"location","lat":60.17,"lon":24.94,"tst":1700000001,"acc":10,"vel":18,"cog":90,"tid":"ph"}"#;
    assert!(matches!(
        b.ingest("owntracks/alice/phone", body, T0 + 5_000),
        Ingested::Position { .. }
    ));
    b.ingest("owntracks/alice/phone", body, T0 + 5_000);
    let c = b.changes_since(0, &View::default(), 10);
    assert_eq!(c.positions[0].id, "ot-alice-phone");
    assert_eq!(c.positions[0].seq, 2);
}

/// What the map pays per fix, one at a time against in batches, on a 10,000-driver fleet at
/// 1 Hz with history kept (each round every driver once, in the order a fleet's fixes
/// come). A benchmark, not a check: run with
/// `cargo test --release -p fleetcast-dashboard ingest_cost -- --ignored --nocapture`.
#[test]
#[ignore = "a benchmark: prints figures"]
fn ingest_cost() {
    let drivers = 10_000u64;
    let rounds = 30u64;
    let topics: Vec<String> = (0..drivers)
        .map(|d| format!("drivers/drv-{d:06}/location"))
        .collect();
    let body = |d: u64, r: u64| {
        serde_json::to_vec(&Location {
            id: format!("drv-{d:06}"),
            lat: 60.0 + (d as f64) * 1e-5,
            lon: 24.0 + (r as f64) * 1e-5,
            heading: 90.0,
            speed: 8.0,
            accuracy: 4.0,
            status: Status::Available,
            seq: r,
            ts: T0 + r * 1_000,
        })
        .expect("json")
    };
    let fixes: Vec<Vec<(String, Vec<u8>)>> = (0..rounds)
        .map(|r| {
            (0..drivers)
                .map(|d| (topics[d as usize].clone(), body(d, r)))
                .collect()
        })
        .collect();
    for batch in [1usize, 50, 256] {
        let (b, _history) = with_history(20_000);
        let t = Instant::now();
        for (r, round) in fixes.iter().enumerate() {
            let now = T0 + r as u64 * 1_000 + 5;
            if batch == 1 {
                for (topic, body) in round {
                    b.ingest(topic, body, now);
                }
            } else {
                for chunk in round.chunks(batch) {
                    b.ingest_batch(chunk, now);
                }
            }
        }
        let ns = t.elapsed().as_nanos() as f64 / (drivers * rounds) as f64;
        assert_eq!(b.online(), drivers as usize);
        let how = match batch {
            1 => "one at a time (ingest)".to_string(),
            n => format!("in batches of {n} (ingest_batch)"),
        };
        println!("{drivers} drivers x {rounds} rounds, {how}: {ns:.0} ns a fix");
    }
}
