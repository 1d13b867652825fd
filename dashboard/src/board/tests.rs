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
