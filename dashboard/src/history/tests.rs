//! The history ring: order, window, caps, exactness across gaps and jumps, thinning.

use super::*;

const T0: u64 = 1_700_000_000_000;

fn loc(id: &str, t: u64, lat: f64, lon: f64, status: Status) -> Location {
    Location {
        id: id.into(),
        lat,
        lon,
        heading: 90.0,
        speed: 5.0,
        accuracy: 3.0,
        status,
        seq: t,
        ts: t,
    }
}

fn history(window_s: u64) -> History {
    History::new(HistoryConfig {
        window: Duration::from_secs(window_s),
        ..HistoryConfig::default()
    })
}

#[test]
fn fixes_come_back_in_order_and_exact() {
    let h = history(3_600);
    for i in 0..100u64 {
        let l = loc(
            "a",
            T0 + i * 1_000,
            60.17 + i as f64 * 1e-4,
            24.94 - i as f64 * 2e-4,
            Status::OnTrip,
        );
        h.record("drivers/a/location", &l);
    }
    let t = h.trace("a", 0, u64::MAX).expect("a track");
    assert_eq!(t.points.len(), 100);
    for (i, p) in t.points.iter().enumerate() {
        assert_eq!(p.t, T0 + i as u64 * 1_000);
        assert!((p.lat - (60.17 + i as f64 * 1e-4)).abs() < 1e-6, "{p:?}");
        assert!((p.lon - (24.94 - i as f64 * 2e-4)).abs() < 1e-6, "{p:?}");
        assert_eq!(p.status, Status::OnTrip);
        assert!((p.heading - 90.0).abs() < 1.5);
    }
    // A window inside.
    let part = h.trace("a", T0 + 10_000, T0 + 19_999).expect("a track");
    assert_eq!(part.points.len(), 10);
    assert_eq!(part.points[0].t, T0 + 10_000);
    assert!(h.trace("b", 0, u64::MAX).is_none());
}

#[test]
fn gaps_and_jumps_are_carried_exactly_and_hidden() {
    let h = history(86_400);
    h.record(
        "drivers/a/location",
        &loc("a", T0, 60.0, 24.0, Status::Available),
    );
    // Twenty minutes later, 100 km away: more than one step can carry.
    h.record(
        "drivers/a/location",
        &loc("a", T0 + 1_200_000, 60.9, 25.0, Status::Available),
    );
    h.record(
        "drivers/a/location",
        &loc("a", T0 + 1_201_000, 60.9001, 25.0, Status::ToPickup),
    );
    let t = h.trace("a", 0, u64::MAX).expect("a track");
    assert_eq!(t.points.len(), 3, "{:?}", t.points);
    assert_eq!(t.points[1].t, T0 + 1_200_000);
    assert!((t.points[1].lat - 60.9).abs() < 1e-9 && (t.points[1].lon - 25.0).abs() < 1e-9);
    assert_eq!(t.points[2].status, Status::ToPickup);
}

#[test]
fn the_window_and_the_caps_bound_a_track() {
    let h = history(60);
    for i in 0..600u64 {
        h.record(
            "drivers/a/location",
            &loc("a", T0 + i * 1_000, 60.0, 24.0, Status::Available),
        );
    }
    let t = h.trace("a", 0, u64::MAX).expect("a track");
    assert_eq!(t.points.first().map(|p| p.t), Some(T0 + 539_000));
    assert_eq!(t.points.len(), 61);

    let capped = History::new(HistoryConfig {
        max_points_per_driver: 10,
        max_drivers: 2,
        ..HistoryConfig::default()
    });
    for id in ["a", "b", "c"] {
        for i in 0..50u64 {
            capped.record("t", &loc(id, T0 + i * 1_000, 60.0, 24.0, Status::Available));
        }
    }
    assert_eq!(capped.trace("a", 0, u64::MAX).expect("a").points.len(), 10);
    assert!(
        capped.trace("c", 0, u64::MAX).is_none(),
        "beyond max_drivers"
    );
    assert_eq!(capped.size(), (2, 18));

    let total = History::new(HistoryConfig {
        max_points: 30,
        ..HistoryConfig::default()
    });
    for i in 0..100u64 {
        for id in ["a", "b"] {
            total.record("t", &loc(id, T0 + i * 1_000, 60.0, 24.0, Status::Available));
        }
    }
    assert!(total.size().1 <= 30, "{:?}", total.size());
}

#[test]
fn close_fixes_are_skipped_unless_the_status_changes() {
    let h = history(3_600);
    h.record("t", &loc("a", T0, 60.0, 24.0, Status::Available));
    h.record("t", &loc("a", T0 + 300, 60.0, 24.0, Status::Available));
    h.record("t", &loc("a", T0 + 600, 60.0, 24.0, Status::OnTrip));
    // Older than the last: a retransmission.
    h.record("t", &loc("a", T0 + 100, 60.0, 24.0, Status::OnTrip));
    let ts: Vec<u64> = h
        .trace("a", 0, u64::MAX)
        .expect("a")
        .points
        .iter()
        .map(|p| p.t)
        .collect();
    assert_eq!(ts, [T0, T0 + 600]);
}

#[test]
fn replay_keeps_the_visible_drivers_thinned_and_capped() {
    let h = history(3_600);
    for i in 0..120u64 {
        h.record(
            "drivers/in/location",
            &loc("in", T0 + i * 1_000, 60.17, 24.94, Status::OnTrip),
        );
        h.record(
            "drivers/out/location",
            &loc("out", T0 + i * 1_000, 61.5, 25.5, Status::OnTrip),
        );
        h.record(
            "drivers/hid/location",
            &loc("hid", T0 + i * 1_000, 60.17, 24.94, Status::OnTrip),
        );
    }
    let r = h.replay(
        (T0, T0 + 59_999),
        Some([24.9, 60.1, 25.0, 60.2]),
        10_000,
        (10, 1_000),
        |id, _| id != "hid",
    );
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].id, "in");
    let ts: Vec<u64> = r[0].points.iter().map(|p| p.t).collect();
    assert_eq!(
        ts,
        [
            T0,
            T0 + 10_000,
            T0 + 20_000,
            T0 + 30_000,
            T0 + 40_000,
            T0 + 50_000,
            T0 + 59_000
        ]
    );
    let capped = h.replay((T0, T0 + 200_000), None, 0, (10, 50), |_, _| true);
    assert_eq!(capped.iter().map(|t| t.points.len()).sum::<usize>(), 50);
}

#[test]
fn sweep_forgets_silent_drivers() {
    let h = history(60);
    h.record("t", &loc("a", T0, 60.0, 24.0, Status::Available));
    h.record("t", &loc("a", T0 + 1_000, 60.0, 24.0, Status::Available));
    h.sweep(T0 + 30_000);
    assert_eq!(h.size(), (1, 1));
    h.sweep(T0 + 120_000);
    assert_eq!(h.size(), (0, 0));
}

/// A slot the board remembers goes to its driver's track, and to no other once a sweep
/// gave it to another driver.
#[test]
fn a_remembered_slot_reaches_its_own_drivers_track_only() {
    let h = history(60);
    let (mut a, mut b) = (None, None);
    let fix = |id, t| loc(id, t, 60.0, 24.0, Status::Available);
    h.batch().record_at("da", &fix("a", T0).fields(), &mut a);
    h.batch()
        .record_at("da", &fix("a", T0 + 1_000).fields(), &mut a);
    let kept = a;
    // A forgotten, and its slot given to b.
    h.sweep(T0 + 120_000);
    h.batch()
        .record_at("db", &fix("b", T0 + 120_000).fields(), &mut b);
    assert_eq!(b.map(|s| s.at), kept.map(|s| s.at), "the slot is reused");
    // a comes back with the slot it remembered: a track of its own, b's untouched.
    h.batch()
        .record_at("da", &fix("a", T0 + 121_000).fields(), &mut a);
    assert_ne!(a, kept);
    let times = |id| {
        h.trace(id, 0, u64::MAX)
            .map(|t| t.points.iter().map(|p| p.t).collect::<Vec<_>>())
    };
    assert_eq!(times("a"), Some(vec![T0 + 121_000]));
    assert_eq!(times("b"), Some(vec![T0 + 120_000]));
    // With a slot that is still right, and with none, the same track.
    h.batch()
        .record_at("da", &fix("a", T0 + 122_000).fields(), &mut a);
    h.batch()
        .record_at("da", &fix("a", T0 + 123_000).fields(), &mut None);
    assert_eq!(
        times("a"),
        Some(vec![T0 + 121_000, T0 + 122_000, T0 + 123_000])
    );
    assert_eq!(h.size().0, 2);
}

/// Not a check: prints what one driver-hour at the simulator's 1 Hz costs.
#[test]
fn history_memory_per_driver_hour() {
    let h = history(3_600);
    let drivers = 200u64;
    for i in 0..3_600u64 {
        for d in 0..drivers {
            let id = format!("drv-{d:06}");
            let step = i as f64 * 1e-5;
            h.record(
                &format!("drivers/{id}/location"),
                &loc(
                    &id,
                    T0 + i * 1_000,
                    60.1 + step,
                    24.9 + step,
                    Status::OnTrip,
                ),
            );
        }
    }
    let (n, steps) = h.size();
    assert_eq!(n, 200);
    // The last 10 minutes whole (600 steps), the 50 before them one per 5 s (600 steps).
    let per_driver = steps / 200;
    assert!((1_195..=1_205).contains(&per_driver), "{per_driver}");
    let per = h.memory_bytes() as f64 / drivers as f64;
    eprintln!(
        "history: {per:.0} bytes per driver-hour at 1 fix/s ({} bytes a step, {per_driver} steps)",
        std::mem::size_of::<Step>()
    );
    // 20,000 drivers' hour must fit the 40 million points.
    assert!(per_driver * 20_000 < HistoryConfig::default().max_points);
    assert!(per < 20_000.0, "{per}");
}

#[test]
fn older_points_are_thinned_but_status_changes_and_exactness_stay() {
    let h = history(3_600);
    // 20 minutes at 1 fix/s; the status changes at 200 s and back at 203 s.
    for i in 0..1_200u64 {
        let status = if (200..203).contains(&i) {
            Status::ToPickup
        } else {
            Status::Available
        };
        let l = loc("a", T0 + i * 1_000, 60.1 + i as f64 * 1e-5, 24.9, status);
        h.record("drivers/a/location", &l);
    }
    let t = h.trace("a", 0, u64::MAX).expect("a track").points;
    let horizon = T0 + 1_199_000 - 600_000;
    let (old, recent): (Vec<Point>, Vec<Point>) = t.iter().partition(|p| p.t < horizon);
    // Recent points whole (599 s to 1,199 s).
    assert_eq!(recent.len(), 601);
    // Older ones one per 5 s, plus the points around the status changes.
    assert!((120..=130).contains(&old.len()), "{}", old.len());
    for w in old.windows(2) {
        let changed = w[0].status != w[1].status;
        assert!(w[1].t - w[0].t <= 5_000, "{w:?}");
        assert!(changed || w[1].t - w[0].t >= 1_000);
    }
    let picks: Vec<u64> = t
        .iter()
        .filter(|p| p.status == Status::ToPickup)
        .map(|p| (p.t - T0) / 1_000)
        .collect();
    assert_eq!(picks.first(), Some(&200));
    assert_eq!(picks.last(), Some(&202));
    // Whatever was kept is exact.
    for p in &t {
        let i = (p.t - T0) / 1_000;
        assert_eq!(p.t, T0 + i * 1_000);
        assert!((p.lat - (60.1 + i as f64 * 1e-5)).abs() < 1e-6, "{p:?}");
    }
    let (_, steps) = h.size();
    assert_eq!(steps, t.len() - 1);
}
