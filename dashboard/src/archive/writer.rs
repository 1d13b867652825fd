//! The writer thread: collects queued fixes per driver, appends the minutes that are over
//! as one commit every `flush_every`, then prunes one bounded step of old records. A thread
//! of its own because a commit blocks on the disk (fsync), which no tokio worker may do.
//!
//! A minute is written once, when it is over (the wall clock or the driver's own later
//! fixes are past it), not every flush while it fills: redb copies a record's pages on
//! each write, so rewriting the current minute every 5 s grew the file about 4x what it
//! held. The price: a `kill -9` loses the minute under way (a clean stop writes it).

use super::{codec, Append, ArchiveConfig, Entry, Meters, TrackArchive, CHUNK_MS};
use crate::history::Abs;
use fleetcast_proto::time::now_ms;
use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Instant;

/// Drivers whose last written point is remembered; past it the memory starts over (the
/// next segments are absolute: a few bytes more each).
const MAX_REMEMBERED: usize = 200_000;

pub(super) struct Writer {
    store: Arc<dyn TrackArchive>,
    config: ArchiveConfig,
    meters: Meters,
    /// Driver id -> topic and the points since the last flush.
    pending: HashMap<Box<str>, (Box<str>, Vec<Abs>)>,
    pending_points: usize,
    /// Driver id -> the chunk and point it was last written up to.
    written: HashMap<Box<str>, (u64, Abs)>,
    /// Where the next pruning step starts.
    cursor: Option<String>,
}

impl Writer {
    pub(super) fn new(
        store: Arc<dyn TrackArchive>,
        config: ArchiveConfig,
        meters: Meters,
    ) -> Writer {
        Writer {
            store,
            config,
            meters,
            pending: HashMap::new(),
            pending_points: 0,
            written: HashMap::new(),
            cursor: None,
        }
    }

    /// Until every sender is gone; then writes what is left.
    pub(super) fn run(mut self, rx: &Receiver<Entry>) {
        let mut next = Instant::now() + self.config.flush_every;
        loop {
            match rx.recv_timeout(next.saturating_duration_since(Instant::now())) {
                Ok(e) => self.add(e),
                Err(RecvTimeoutError::Timeout) => {
                    self.flush(false);
                    self.prune_step(now_ms());
                    next = Instant::now() + self.config.flush_every;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.flush(true);
                    return;
                }
            }
        }
    }

    pub(super) fn add(&mut self, e: Entry) {
        if self.pending_points >= self.config.max_pending {
            self.meters.dropped.increment(1);
            return;
        }
        self.pending_points += 1;
        self.pending
            .entry(e.id)
            .or_insert_with(|| (e.topic, Vec::new()))
            .1
            .push(e.at);
    }

    /// Appends the pending points of minutes that are over (`all`: every pending point)
    /// in one commit; the rest wait.
    pub(super) fn flush(&mut self, all: bool) {
        if self.written.len() > MAX_REMEMBERED {
            self.written.clear();
        }
        let now = now_ms();
        let mut appends = Vec::new();
        let mut waiting = HashMap::new();
        let mut points_done = 0;
        for (id, (topic, all_points)) in self.pending.drain() {
            let points: Vec<Abs> = if all {
                all_points
            } else {
                let newest = all_points.iter().map(|p| p.t).max().unwrap_or(0).max(now);
                let open = newest - newest % CHUNK_MS;
                let (done, open_points): (Vec<Abs>, Vec<Abs>) =
                    all_points.into_iter().partition(|p| p.t < open);
                if !open_points.is_empty() {
                    waiting.insert(id.clone(), (topic.clone(), open_points));
                }
                done
            };
            points_done += points.len();
            let mut rest = &points[..];
            while let Some(first) = rest.first() {
                let start = first.t - first.t % CHUNK_MS;
                let n = rest
                    .iter()
                    .position(|p| p.t - p.t % CHUNK_MS != start)
                    .unwrap_or(rest.len());
                let (group, after) = rest.split_at(n);
                let prev = self
                    .written
                    .get(&id)
                    .filter(|(chunk, last)| *chunk == start && last.t <= first.t)
                    .map(|(_, last)| *last);
                appends.push(Append {
                    id: id.to_string(),
                    start,
                    head: codec::head(&topic),
                    tail: codec::segment(prev, group),
                });
                if let Some(last) = group.last() {
                    self.written.insert(id.clone(), (start, *last));
                }
                rest = after;
            }
        }
        self.pending = waiting;
        self.pending_points -= points_done;
        let points = points_done;
        if appends.is_empty() {
            return;
        }
        match self.store.append(&appends) {
            Ok(()) => self.meters.written.increment(points as u64),
            Err(e) => {
                // What the failed commit would have continued is not on disk.
                self.written.clear();
                self.meters.errors.increment(1);
                tracing::warn!(error = %e, points, "history points not stored");
            }
        }
    }

    /// Deletes the records wholly older than the retention of the next drivers.
    pub(super) fn prune_step(&mut self, now: u64) {
        let retention = u64::try_from(self.config.retention.as_millis()).unwrap_or(u64::MAX);
        let horizon = now.saturating_sub(retention);
        // A record starting before the horizon's chunk ends by the horizon.
        let before = horizon - horizon % CHUNK_MS;
        let ids = match self
            .store
            .drivers_after(self.cursor.as_deref(), self.config.prune_drivers)
        {
            Ok(ids) => ids,
            Err(e) => {
                self.meters.errors.increment(1);
                tracing::warn!(error = %e, "history pruning could not list drivers");
                return;
            }
        };
        self.cursor = ids.last().cloned();
        if ids.is_empty() || before == 0 {
            return;
        }
        match self.store.prune(&ids, before) {
            Ok(n) => self.meters.pruned.increment(n as u64),
            Err(e) => {
                self.meters.errors.increment(1);
                tracing::warn!(error = %e, "history pruning failed");
            }
        }
    }
}
