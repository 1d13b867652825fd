//! The store side of history over an in-memory [`TrackArchive`]: records round-trip,
//! continue across flushes, refill a history, and old ones are pruned.

use super::*;
use fleetcast_proto::Status;
use std::collections::BTreeMap;

/// (id, start) -> record, as the broker's table keeps them; and the records written.
#[derive(Debug, Default)]
struct MemArchive(
    Mutex<BTreeMap<(String, u64), Vec<u8>>>,
    std::sync::atomic::AtomicUsize,
);

impl TrackArchive for MemArchive {
    fn append(&self, appends: &[Append]) -> Result<(), ArchiveError> {
        self.1
            .fetch_add(appends.len(), std::sync::atomic::Ordering::Relaxed);
        let mut m = self.0.lock().expect("lock");
        for a in appends {
            m.entry((a.id.clone(), a.start))
                .or_insert_with(|| a.head.clone())
                .extend_from_slice(&a.tail);
        }
        Ok(())
    }

    fn read(&self, id: &str, from: u64, until: u64) -> Result<Vec<Vec<u8>>, ArchiveError> {
        let m = self.0.lock().expect("lock");
        Ok(m.range((id.to_owned(), from)..=(id.to_owned(), until))
            .map(|(_, v)| v.clone())
            .collect())
    }

    fn drivers_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, ArchiveError> {
        let m = self.0.lock().expect("lock");
        let mut ids: Vec<String> = m.keys().map(|(id, _)| id.clone()).collect();
        ids.dedup();
        Ok(ids
            .into_iter()
            .filter(|id| after.is_none_or(|a| id.as_str() > a))
            .take(limit)
            .collect())
    }

    fn prune(&self, ids: &[String], before: u64) -> Result<usize, ArchiveError> {
        let mut m = self.0.lock().expect("lock");
        let n = m.len();
        m.retain(|(id, start), _| !(ids.contains(id) && *start < before));
        Ok(n - m.len())
    }
}

fn at(t: u64, i: i32, tag: u8) -> Abs {
    Abs {
        t,
        lat: 60_100_000 + i * 90,
        lon: 24_900_000 - i * 45,
        tag,
        heading: (i % 256) as u8,
    }
}

fn writer(store: &Arc<MemArchive>, retention_s: u64) -> writer::Writer {
    let r = metrics::NoopRecorder;
    let meters = Meters {
        written: counter(&r, "w", &[]),
        dropped: counter(&r, "d", &[]),
        errors: counter(&r, "e", &[]),
        pruned: counter(&r, "p", &[]),
    };
    let config = ArchiveConfig {
        retention: Duration::from_secs(retention_s),
        ..ArchiveConfig::default()
    };
    writer::Writer::new(Arc::clone(store) as _, config, meters)
}

fn entry(id: &str, a: Abs) -> Entry {
    Entry {
        id: id.into(),
        topic: format!("drivers/{id}/location").into(),
        at: a,
    }
}

/// On a minute, so records fall on whole minutes.
const T0: u64 = 1_699_999_980_000;

#[test]
fn points_round_trip_across_flushes_and_chunks_compactly() {
    let store = Arc::new(MemArchive::default());
    let mut w = writer(&store, 86_400);
    let mut sent = Vec::new();
    // 5 minutes at 1 Hz, flushed every 5 s; a status change and a 2 km jump on the way.
    for i in 0..300 {
        let mut a = at(T0 + i as u64 * 1_000, i, u8::from(i >= 100));
        if i >= 200 {
            a.lat += 20_000;
        }
        w.add(entry("a", a));
        sent.push(a);
        if i % 5 == 4 {
            w.flush(true);
        }
    }
    w.flush(true);
    let m = store.0.lock().expect("lock");
    // One record a minute.
    assert_eq!(m.len(), 5);
    let bytes: usize = m.values().map(Vec::len).sum();
    assert!(bytes < 300 * 10, "{bytes} bytes for 300 points");
    let mut back = Vec::new();
    for v in m.values() {
        let (topic, points) = codec::decode(v);
        assert_eq!(topic.as_deref(), Some("drivers/a/location"));
        back.extend(points);
    }
    assert_eq!(back, sent);
    // A damaged record gives what precedes the damage, no panic.
    let v = m.values().next().expect("a record");
    for cut in 0..v.len() {
        let (_, points) = codec::decode(&v[..cut]);
        assert!(points.len() <= 60);
        assert_eq!(points[..], sent[..points.len()]);
    }
}

#[test]
fn a_minute_is_written_once_when_it_is_over() {
    let store = Arc::new(MemArchive::default());
    let mut w = writer(&store, 86_400);
    let writes = || store.1.load(std::sync::atomic::Ordering::Relaxed);
    // A minute two ahead of the wall clock (fixes may run ahead): over only once the
    // driver's own fixes have gone past it.
    let now = fleetcast_proto::time::now_ms();
    let minute = now - now % CHUNK_MS + 2 * CHUNK_MS;
    let mut sent = Vec::new();
    for i in 0..30 {
        let a = at(minute + i * 2_000, i as i32, 0);
        w.add(entry("a", a));
        sent.push(a);
        if i % 5 == 4 {
            w.flush(false);
        }
    }
    assert_eq!(writes(), 0, "the minute under way waits");
    w.add(entry("a", at(minute + CHUNK_MS, 30, 0)));
    w.flush(false);
    w.flush(false);
    assert_eq!(writes(), 1, "written once, when over");
    let m = store.0.lock().expect("lock");
    let (_, back) = codec::decode(&m[&("a".to_owned(), minute)]);
    assert_eq!(back, sent);
    drop(m);
    // A clean stop writes the minute under way.
    w.flush(true);
    assert_eq!(writes(), 2);
}

#[test]
fn records_older_than_the_retention_are_pruned() {
    let store = Arc::new(MemArchive::default());
    let mut w = writer(&store, 3_600);
    // Two hours of two drivers, one point a minute.
    for i in 0..120u64 {
        for id in ["a", "b"] {
            w.add(entry(id, at(T0 + i * 60_000, i as i32, 0)));
        }
    }
    w.flush(true);
    assert_eq!(store.0.lock().expect("lock").len(), 240);
    let now = T0 + 120 * 60_000;
    w.prune_step(now);
    let m = store.0.lock().expect("lock");
    // The last hour stays for both.
    assert_eq!(m.len(), 2 * 60, "{:?}", m.keys().next());
    assert!(m.keys().all(|(_, start)| *start >= now - 3_600_000));
}

#[test]
fn a_history_is_refilled_from_the_store_and_older_ranges_read_from_it() {
    let store = Arc::new(MemArchive::default());
    let mut w = writer(&store, 86_400);
    let now = fleetcast_proto::time::now_ms();
    // Two hours a minute apart, ending now.
    let first = now - now % 1_000 - 120 * 60_000;
    for i in 0..=120u64 {
        w.add(entry("a", at(first + i * 60_000, i as i32, 2)));
    }
    w.flush(true);
    let archiver = Archiver::start(
        Arc::clone(&store) as _,
        ArchiveConfig::default(),
        &metrics::NoopRecorder,
    )
    .expect("writer");
    let history = History::new(crate::history::HistoryConfig {
        window: Duration::from_secs(1_800),
        ..crate::history::HistoryConfig::default()
    });
    assert_eq!(archiver.refill(&history, now).expect("refill"), 1);
    let t = history.trace("a", 0, u64::MAX).expect("refilled");
    // The window's 30 minutes (points a minute apart), as they were.
    let expected: Vec<u64> = (0..=120)
        .map(|i| first + i * 60_000)
        .filter(|t| *t >= now - 1_800_000)
        .collect();
    assert!(expected.len() >= 30);
    assert_eq!(t.points.iter().map(|p| p.t).collect::<Vec<_>>(), expected);
    assert_eq!(t.points[0].status, Status::OnTrip);
    let old = archiver
        .trace("a", (first, first + 10 * 60_000), now)
        .expect("read")
        .expect("stored");
    assert_eq!(old.topic, "drivers/a/location");
    let times: Vec<u64> = old.points.iter().map(|p| p.t).collect();
    assert_eq!(
        times,
        (0..=10).map(|i| first + i * 60_000).collect::<Vec<_>>()
    );
    assert!(archiver.trace("b", (0, now), now).expect("read").is_none());
    archiver.close();
}
