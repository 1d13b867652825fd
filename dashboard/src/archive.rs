//! Each driver's track kept in a store beside the memory (`serve --data`): written in
//! batches off the tokio workers, read back for ranges older than memory holds and, at
//! start, to refill the memory window (so a trail and the replay work right after a
//! restart). The dashboard knows no store: it talks to a [`TrackArchive`] (the broker's
//! redb file, wired in `src/`), which keeps opaque records keyed by (driver, chunk start).
//!
//! A record is one driver's minute (`CHUNK_MS`): a head (format, topic) and segments
//! appended once per flush, each a count of points then, for the first, either an absolute
//! point or the continuation of the record's last one, then varint deltas (time in ms,
//! micro-degrees as zigzag varints, status, heading): about 8 bytes a point at 1 Hz. The
//! writer remembers each driver's last written point so a flush appends deltas only;
//! after a restart or a failed commit the next segment is absolute again.
//!
//! Bounds: the queue (`queue` fixes; past it a fix is counted in
//! `fleetcast_history_store_dropped_total` and not stored), the points pending between
//! flushes, the drivers remembered, and pruning (`prune_drivers` drivers a step, every
//! flush): records wholly older than `retention` go.

mod codec;
mod writer;

use crate::history::{Abs, History, Point, Trace};
use fleetcast_proto::meter::counter;
use fleetcast_proto::Location;
use metrics::Counter;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Span of one record (ms): a driver's minute.
pub const CHUNK_MS: u64 = 60_000;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[error("track store: {0}")]
pub struct ArchiveError(pub String);

/// One append: to the record (`id`, `start`) add `tail`; a new record begins with `head`.
#[derive(Debug, Clone)]
pub struct Append {
    /// Driver id.
    pub id: String,
    /// Chunk start, ms since the epoch.
    pub start: u64,
    /// What a new record begins with.
    pub head: Vec<u8>,
    /// What is added.
    pub tail: Vec<u8>,
}

/// Where tracks are kept: records keyed by (driver id, chunk start). Calls block (disk):
/// never on a tokio worker.
pub trait TrackArchive: Send + Sync + std::fmt::Debug + 'static {
    /// Applies every append at once (one commit).
    ///
    /// # Errors
    /// Nothing was written.
    fn append(&self, appends: &[Append]) -> Result<(), ArchiveError>;
    /// The records of `id` starting in `from..=until`, oldest first.
    ///
    /// # Errors
    /// The store cannot be read.
    fn read(&self, id: &str, from: u64, until: u64) -> Result<Vec<Vec<u8>>, ArchiveError>;
    /// Up to `limit` driver ids with records after `after` (from the first when None).
    ///
    /// # Errors
    /// The store cannot be read.
    fn drivers_after(&self, after: Option<&str>, limit: usize)
        -> Result<Vec<String>, ArchiveError>;
    /// Deletes the records of `ids` starting before `before`; returns how many.
    ///
    /// # Errors
    /// Nothing was deleted.
    fn prune(&self, ids: &[String], before: u64) -> Result<usize, ArchiveError>;
}

/// How tracks are stored.
#[derive(Debug, Clone)]
pub struct ArchiveConfig {
    /// How long records are kept (`[map] history_retention_s`).
    pub retention: Duration,
    /// Time between two writes (one commit each).
    pub flush_every: Duration,
    /// Fixes waiting for the writer; more are dropped and counted.
    pub queue: usize,
    /// Points held until their minute is over and written; more are dropped and counted.
    pub max_pending: usize,
    /// Drivers whose old records one pruning step deletes.
    pub prune_drivers: usize,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            retention: Duration::from_secs(86_400),
            flush_every: Duration::from_secs(5),
            // 10 s of a 20,000-driver fleet at 1 Hz.
            queue: 200_000,
            // A minute and a flush of a 35,000-driver fleet at 1 Hz (24 bytes a point:
            // 60 MB at most).
            max_pending: 2_500_000,
            prune_drivers: 1_000,
        }
    }
}

/// Counters the writer keeps.
#[derive(Debug, Clone)]
struct Meters {
    written: Counter,
    dropped: Counter,
    errors: Counter,
    pruned: Counter,
}

/// A fix for the writer.
#[derive(Debug)]
struct Entry {
    id: Box<str>,
    topic: Box<str>,
    at: Abs,
}

/// The store side of history: the writer thread and the reads.
#[derive(Debug)]
pub struct Archiver {
    /// Let go at [`Archiver::close`], so the store's file can close while a history lives.
    store: Mutex<Option<Arc<dyn TrackArchive>>>,
    config: ArchiveConfig,
    tx: Mutex<Option<SyncSender<Entry>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    meters: Meters,
}

impl Archiver {
    /// Starts the writer thread over `store`, its meters on `r`.
    ///
    /// # Errors
    /// The thread could not be started.
    pub fn start(
        store: Arc<dyn TrackArchive>,
        config: ArchiveConfig,
        r: &dyn metrics::Recorder,
    ) -> std::io::Result<Arc<Archiver>> {
        let meters = Meters {
            written: counter(r, "fleetcast_history_store_points_total", &[]),
            dropped: counter(r, "fleetcast_history_store_dropped_total", &[]),
            errors: counter(r, "fleetcast_history_store_errors_total", &[]),
            pruned: counter(r, "fleetcast_history_store_pruned_total", &[]),
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(config.queue);
        let w = writer::Writer::new(Arc::clone(&store), config.clone(), meters.clone());
        let thread = std::thread::Builder::new()
            .name("history-writer".into())
            .spawn(move || w.run(&rx))?;
        Ok(Arc::new(Archiver {
            store: Mutex::new(Some(store)),
            config,
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            meters,
        }))
    }

    fn store(&self) -> Option<Arc<dyn TrackArchive>> {
        self.store.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The settings.
    pub fn config(&self) -> &ArchiveConfig {
        &self.config
    }

    /// Queues a point history kept; a full queue drops it (counted).
    pub(crate) fn offer(&self, id: &str, topic: &str, at: Abs) {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = tx.as_ref() else { return };
        let entry = Entry {
            id: id.into(),
            topic: topic.into(),
            at,
        };
        match tx.try_send(entry) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.meters.dropped.increment(1),
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Writes what is queued and stops the writer (blocks until its last commit).
    pub fn close(&self) {
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        drop(self.store.lock().unwrap_or_else(|p| p.into_inner()).take());
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            if t.join().is_err() {
                tracing::error!("the history writer thread panicked");
            }
        }
    }

    /// Driver `id`'s stored points with `since <= t <= until` (and inside the retention
    /// at `now`), oldest first; None when the store holds none. Blocks.
    ///
    /// # Errors
    /// The store cannot be read.
    pub fn trace(
        &self,
        id: &str,
        (since, until): (u64, u64),
        now: u64,
    ) -> Result<Option<Trace>, ArchiveError> {
        let retention = u64::try_from(self.config.retention.as_millis()).unwrap_or(u64::MAX);
        let since = since.max(now.saturating_sub(retention));
        if since > until {
            return Ok(None);
        }
        let Some(store) = self.store() else {
            return Ok(None);
        };
        let records = store.read(id, since - since % CHUNK_MS, until)?;
        let mut topic = None;
        let mut points = Vec::new();
        for r in &records {
            let (t, abs) = codec::decode(r);
            topic = topic.or(t);
            points.extend(abs.into_iter().filter(|a| a.t >= since && a.t <= until));
        }
        let Some(topic) = topic else { return Ok(None) };
        // A driver whose memory track restarted may have written an older fix later.
        points.sort_by_key(|a| a.t);
        Ok(Some(Trace {
            id: id.to_owned(),
            topic,
            points: points.into_iter().map(Abs::point).collect(),
        }))
    }

    /// Records into `history` every stored point of its window up to `now` (before the
    /// writer is attached, so nothing is written twice); returns the drivers refilled.
    /// Blocks.
    ///
    /// # Errors
    /// The store cannot be read.
    pub fn refill(&self, history: &History, now: u64) -> Result<usize, ArchiveError> {
        let window = u64::try_from(history.config().window.as_millis()).unwrap_or(u64::MAX);
        if window == 0 {
            return Ok(0);
        }
        let Some(store) = self.store() else {
            return Ok(0);
        };
        let max = history.config().max_drivers;
        let mut after: Option<String> = None;
        let mut n = 0;
        while n < max {
            let ids = store.drivers_after(after.as_deref(), (max - n).min(1_000))?;
            let Some(last) = ids.last().cloned() else {
                break;
            };
            for id in &ids {
                let Some(trace) = self.trace(id, (now.saturating_sub(window), now), now)? else {
                    continue;
                };
                for p in &trace.points {
                    history.record(&trace.topic, &location(id, p));
                }
                n += 1;
            }
            after = Some(last);
        }
        Ok(n)
    }
}

/// A point as the fix history records.
fn location(id: &str, p: &Point) -> Location {
    Location {
        id: id.to_owned(),
        lat: p.lat,
        lon: p.lon,
        heading: p.heading,
        speed: 0.0,
        accuracy: 0.0,
        status: p.status,
        seq: 0,
        ts: p.t,
    }
}

#[cfg(test)]
mod tests;
