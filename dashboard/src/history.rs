//! Each driver's recent track, kept compactly in memory: where a driver was at 14:05, the
//! trail of a followed driver, and the fixes a replay plays.
//!
//! Fed by the board with every fix it accepts (so history shows what the map showed). A
//! track is one absolute first point and a ring of 8-byte steps, each the difference to the
//! point before: time in milliseconds (`u16`, up to 65 s), latitude and longitude in
//! micro-degrees (`i16`, about 3.6 km), status and heading. A gap or jump too large for one
//! step is split into hidden steps that are never returned, so a time is exact and a
//! position exact to 1e-6 degree (0.11 m) whatever the history's length. Points closer than
//! `min_step` to the one before are not kept (unless the status changed). Points older than
//! `thin_after` (10 min) are thinned to one per `thin_step` (5 s): a dropped point's step is
//! merged into the next one, so what stays is still exact; the points on either side of a
//! status change and the carriers of a gap are always kept. Recent points sit in one ring,
//! thinned ones in another, so thinning only ever touches the front of the recent ring
//! (`history_memory_per_driver_hour` prints the measured bytes per driver-hour).
//!
//! Bounds: `window` (older steps are dropped as new ones come), `max_points_per_driver`,
//! `max_drivers` and `max_points` over all drivers (past it, the driver being written gives
//! up its own oldest point, so the total never grows). With a store (`serve --data`) each
//! point kept is also queued for [`crate::archive`], which keeps the whole retention.

mod slots;

use crate::archive::Archiver;
use fleetcast_proto::location::Fields;
use fleetcast_proto::{Location, Status};
pub use slots::Slot;
use slots::Slots;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// How much history is kept.
#[derive(Debug, Clone)]
pub struct HistoryConfig {
    /// How far back a track reaches; zero keeps no history.
    pub window: Duration,
    /// Points closer in time to the one before are skipped (unless the status changed).
    pub min_step: Duration,
    /// Most points (returned ones) per driver.
    pub max_points_per_driver: usize,
    /// Most drivers with a track; new ones beyond are not recorded.
    pub max_drivers: usize,
    /// Most steps over all drivers.
    pub max_points: usize,
    /// Points older than this (behind a driver's latest) are thinned; at least `window`
    /// keeps every point.
    pub thin_after: Duration,
    /// Thinned points keep one per this span (unless the status changes).
    pub thin_step: Duration,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            window: Duration::from_secs(3_600),
            min_step: Duration::from_secs(1),
            max_points_per_driver: 3_600,
            max_drivers: 100_000,
            // 320 MB of steps: 20,000 drivers at one fix every 2 s for an hour.
            max_points: 40_000_000,
            // With these an hour at 1 fix/s is 600 + 600 steps: 20,000 drivers fit the
            // 40 million points whole (24 million).
            thin_after: Duration::from_secs(600),
            thin_step: Duration::from_secs(5),
        }
    }
}

/// One point of a track, as the API returns it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Milliseconds since the epoch (the fix's `ts`).
    pub t: u64,
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// The driver's status then.
    pub status: Status,
    /// Heading, degrees (to 1.4 degrees).
    pub heading: f64,
}

/// Micro-degrees: the fixed point of every stored coordinate.
const SCALE: f64 = 1e6;
/// Steps count time in these milliseconds (1: a fix's `ts` comes back as it was).
const TICK_MS: u64 = 1;
/// A step that only carries the track across a gap or jump: not a fix.
const HIDDEN: u8 = 0x80;

/// A point in the stored units (also what the archive writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Abs {
    /// Milliseconds since the epoch, rounded down to [`TICK_MS`].
    pub(crate) t: u64,
    pub(crate) lat: i32,
    pub(crate) lon: i32,
    /// Status code, [`HIDDEN`] for a carrier step.
    pub(crate) tag: u8,
    pub(crate) heading: u8,
}

/// The difference to the point before: 8 bytes.
#[derive(Debug, Clone, Copy)]
struct Step {
    dt: u16,
    dlat: i16,
    dlon: i16,
    tag: u8,
    heading: u8,
}

#[derive(Debug)]
struct Track {
    /// Which driver's track it is: never the same for two (see [`Slot`]).
    serial: u64,
    topic: Box<str>,
    /// The oldest point; its own tag says whether it is hidden.
    first: Abs,
    /// Thinned steps, from `first` to `mid`.
    old: VecDeque<Step>,
    /// The newest thinned point (`first` while `old` is empty).
    mid: Abs,
    last: Abs,
    /// Recent steps, from `mid` to `last`.
    steps: VecDeque<Step>,
    /// Points that are not hidden (first included).
    shown: usize,
}

fn status_code(s: Status) -> u8 {
    match s {
        Status::Available => 0,
        Status::ToPickup => 1,
        Status::OnTrip => 2,
    }
}

fn status_of(code: u8) -> Status {
    match code & !HIDDEN {
        1 => Status::ToPickup,
        2 => Status::OnTrip,
        _ => Status::Available,
    }
}

fn fixed(deg: f64) -> i32 {
    // Valid fixes are within +-180 degrees: 1.8e8 fits an i32.
    (deg * SCALE).round() as i32
}

fn heading_code(h: f64) -> u8 {
    ((h.rem_euclid(360.0) / 360.0 * 256.0).round() as u32 % 256) as u8
}

impl Abs {
    fn of(loc: &Fields<'_>) -> Abs {
        Abs {
            t: loc.ts / TICK_MS * TICK_MS,
            lat: fixed(loc.lat),
            lon: fixed(loc.lon),
            tag: status_code(loc.status),
            heading: heading_code(loc.heading),
        }
    }

    fn after(self, s: Step) -> Abs {
        Abs {
            t: self.t + u64::from(s.dt) * TICK_MS,
            lat: self.lat + i32::from(s.dlat),
            lon: self.lon + i32::from(s.dlon),
            tag: s.tag,
            heading: s.heading,
        }
    }

    pub(crate) fn point(self) -> Point {
        Point {
            t: self.t,
            lat: f64::from(self.lat) / SCALE,
            lon: f64::from(self.lon) / SCALE,
            status: status_of(self.tag),
            heading: f64::from(self.heading) * 360.0 / 256.0,
        }
    }

    fn hidden(self) -> bool {
        self.tag & HIDDEN != 0
    }
}

/// Moves `from` toward `to` by at most one step's range on each axis.
fn step_toward(from: Abs, to: Abs) -> Step {
    let ticks = (to.t - from.t) / TICK_MS;
    let dt = ticks.min(u64::from(u16::MAX)) as u16;
    let clamp = |d: i32| d.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
    let (dlat, dlon) = (clamp(to.lat - from.lat), clamp(to.lon - from.lon));
    let exact = u64::from(dt) == ticks
        && i32::from(dlat) == to.lat - from.lat
        && i32::from(dlon) == to.lon - from.lon;
    Step {
        dt,
        dlat,
        dlon,
        tag: if exact { to.tag } else { to.tag | HIDDEN },
        heading: to.heading,
    }
}

impl Track {
    fn new(serial: u64, topic: &str, first: Abs) -> Track {
        Track {
            serial,
            topic: topic.into(),
            first,
            old: VecDeque::new(),
            mid: first,
            last: first,
            steps: VecDeque::new(),
            shown: 1,
        }
    }

    /// Appends `next` (not older than the last point); returns the steps added.
    fn push(&mut self, next: Abs) -> usize {
        let mut added = 0;
        loop {
            let s = step_toward(self.last, next);
            self.last = self.last.after(s);
            self.steps.push_back(s);
            added += 1;
            if s.tag & HIDDEN == 0 {
                self.shown += 1;
                return added;
            }
        }
    }

    /// Drops the oldest point; returns the steps removed (0 when only one point is left).
    fn pop_front(&mut self) -> usize {
        let (s, recent) = match self.old.pop_front() {
            Some(s) => (s, false),
            None => match self.steps.pop_front() {
                Some(s) => (s, true),
                None => return 0,
            },
        };
        if !self.first.hidden() {
            self.shown -= 1;
        }
        self.first = self.first.after(s);
        if recent {
            self.mid = self.first;
        }
        1
    }

    /// Moves recent points older than `horizon` into the thinned ring, dropping those
    /// within `step_ms` of the thinned point before (same status, no gap carried); returns
    /// the steps removed.
    fn thin(&mut self, horizon: u64, step_ms: u64) -> usize {
        let mut removed = 0;
        while self.steps.len() >= 2 {
            let (c, d) = (self.steps[0], self.steps[1]);
            let at = self.mid.after(c);
            if at.t >= horizon {
                break;
            }
            let status = |tag: u8| tag & !HIDDEN;
            let droppable = !at.hidden()
                && at.t - self.mid.t < step_ms
                && status(self.mid.tag) == at.tag
                && status(d.tag) == at.tag;
            // The merged step must still fit one step: else the point stays.
            let merged = droppable
                .then(|| {
                    Some(Step {
                        dt: c.dt.checked_add(d.dt)?,
                        dlat: c.dlat.checked_add(d.dlat)?,
                        dlon: c.dlon.checked_add(d.dlon)?,
                        tag: d.tag,
                        heading: d.heading,
                    })
                })
                .flatten();
            self.steps.pop_front();
            match merged {
                Some(m) => {
                    self.steps[0] = m;
                    self.shown -= 1;
                    removed += 1;
                }
                None => {
                    self.old.push_back(c);
                    self.mid = at;
                }
            }
        }
        removed
    }

    fn points(&self) -> impl Iterator<Item = Abs> + '_ {
        let mut at = self.first;
        std::iter::once(self.first)
            .chain(self.old.iter().chain(self.steps.iter()).map(move |s| {
                at = at.after(*s);
                at
            }))
            .filter(|a| !a.hidden())
    }

    fn len(&self) -> usize {
        self.old.len() + self.steps.len()
    }
}

#[derive(Debug, Default)]
struct Inner {
    tracks: Slots,
    /// Steps held over all tracks.
    steps: usize,
}

/// Every driver's recent track.
#[derive(Debug)]
pub struct History {
    config: HistoryConfig,
    inner: Mutex<Inner>,
    /// With a store (`--data`), every point kept is also queued for it.
    archive: OnceLock<Arc<Archiver>>,
}

/// [`History`] held locked while a batch of fixes is recorded ([`History::batch`]).
pub struct Batch<'a> {
    history: &'a History,
    inner: MutexGuard<'a, Inner>,
}

impl Batch<'_> {
    /// As [`History::record`].
    pub fn record(&mut self, topic: &str, loc: &Location) {
        self.record_at(topic, &loc.fields(), &mut None);
    }

    /// As [`History::record`], going to the driver's track through `slot`, its slot as
    /// last seen (None: not known yet), which is updated when it moved or was made.
    pub fn record_at(&mut self, topic: &str, fix: &Fields<'_>, slot: &mut Option<Slot>) {
        if let Some(kept) = self.history.keep(&mut self.inner, topic, fix, slot) {
            if let Some(a) = self.history.archive.get() {
                a.offer(fix.id, topic, kept);
            }
        }
    }
}

/// One driver's points in a time range.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// Driver id.
    pub id: String,
    /// Its location topic (what a viewer must be allowed to see).
    pub topic: String,
    /// Oldest first.
    pub points: Vec<Point>,
}

impl History {
    /// Empty.
    pub fn new(config: HistoryConfig) -> History {
        History {
            config,
            inner: Mutex::new(Inner::default()),
            archive: OnceLock::new(),
        }
    }

    /// The bounds.
    pub fn config(&self) -> &HistoryConfig {
        &self.config
    }

    /// From now on every point kept is also written to `archive` (once; later calls are
    /// ignored).
    pub fn archive_to(&self, archive: Arc<Archiver>) {
        let _ = self.archive.set(archive);
    }

    /// The store side, when there is one.
    pub fn archive(&self) -> Option<&Arc<Archiver>> {
        self.archive.get()
    }

    /// Records a fix the board accepted on `topic`. Fixes older than the driver's last are
    /// not history (a late retransmission): skipped.
    pub fn record(&self, topic: &str, loc: &Location) {
        self.batch().record(topic, loc);
    }

    /// The history locked for a batch of fixes: one lock for all of them.
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            history: self,
            inner: self.inner.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }

    /// The time of driver `id`'s oldest point held in memory.
    pub fn oldest(&self, id: &str) -> Option<u64> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.tracks.get(id).map(|t| t.first.t)
    }

    fn keep(
        &self,
        inner: &mut Inner,
        topic: &str,
        fix: &Fields<'_>,
        slot: &mut Option<Slot>,
    ) -> Option<Abs> {
        if self.config.window.is_zero() || self.config.max_points_per_driver == 0 {
            return None;
        }
        let next = Abs::of(fix);
        let Some(at) = inner.tracks.find(fix.id, slot) else {
            if inner.tracks.len() >= self.config.max_drivers {
                return None;
            }
            *slot = Some(inner.tracks.insert(fix.id, topic, next)?);
            return Some(next);
        };
        let Inner { tracks, steps } = inner;
        let track = tracks.at_mut(at)?;
        let min_step = u64::try_from(self.config.min_step.as_millis()).unwrap_or(u64::MAX);
        let same_status = track.last.tag & !HIDDEN == next.tag;
        if next.t < track.last.t || (next.t - track.last.t < min_step && same_status) {
            return None;
        }
        *steps += track.push(next);
        let thin_after = u64::try_from(self.config.thin_after.as_millis()).unwrap_or(u64::MAX);
        let thin_step = u64::try_from(self.config.thin_step.as_millis()).unwrap_or(u64::MAX);
        *steps -= track.thin(next.t.saturating_sub(thin_after), thin_step);
        let window = u64::try_from(self.config.window.as_millis()).unwrap_or(u64::MAX);
        let horizon = next.t.saturating_sub(window);
        while track.first.t < horizon
            || track.shown > self.config.max_points_per_driver
            || *steps > self.config.max_points
        {
            match track.pop_front() {
                0 => break,
                n => *steps -= n,
            }
        }
        Some(next)
    }

    /// The points of driver `id` with `since <= t <= until` (ms), oldest first; None for
    /// a driver with no history.
    pub fn trace(&self, id: &str, since: u64, until: u64) -> Option<Trace> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let track = inner.tracks.get(id)?;
        Some(Trace {
            id: id.to_owned(),
            topic: track.topic.to_string(),
            points: within(track, since, until),
        })
    }

    /// The drivers `keep` accepts (given id and topic) with points in `since..=until`
    /// inside `bbox` (`[west, south, east, north]`) at some time, each thinned to one point
    /// per `step_ms`; at most `max_drivers` of them, and `max_points` points in all.
    pub fn replay(
        &self,
        window: (u64, u64),
        bbox: Option<[f64; 4]>,
        step_ms: u64,
        limits: (usize, usize),
        keep: impl Fn(&str, &str) -> bool,
    ) -> Vec<Trace> {
        let (since, until) = window;
        let (max_drivers, max_points) = limits;
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        let mut total = 0usize;
        let mut ids: Vec<&String> = inner.tracks.ids().collect();
        // A stable order, so that capped answers are the same drivers each time.
        ids.sort_unstable();
        for id in ids {
            if out.len() >= max_drivers || total >= max_points {
                break;
            }
            let Some(track) = inner.tracks.get(id) else {
                continue;
            };
            if track.last.t < since || track.first.t > until || !keep(id, &track.topic) {
                continue;
            }
            let mut points = within(track, since, until);
            let inside = |p: &Point| {
                bbox.is_none_or(|[w, s, e, n]| p.lat >= s && p.lat <= n && p.lon >= w && p.lon <= e)
            };
            if !points.iter().any(inside) {
                continue;
            }
            thin(&mut points, step_ms);
            points.truncate(max_points - total);
            total += points.len();
            out.push(Trace {
                id: id.clone(),
                topic: track.topic.to_string(),
                points,
            });
        }
        out
    }

    /// Drivers with a track, and steps held over all of them.
    pub fn size(&self) -> (usize, usize) {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (inner.tracks.len(), inner.steps)
    }

    /// Bytes the tracks hold: steps at their ring's capacity, plus each track's own record
    /// and its id and topic (the tables counted at their capacity).
    pub fn memory_bytes(&self) -> usize {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.tracks.table_bytes()
            + inner
                .tracks
                .iter()
                .map(|t| {
                    t.topic.len()
                        + (t.old.capacity() + t.steps.capacity()) * std::mem::size_of::<Step>()
                })
                .sum::<usize>()
    }

    /// Forgets drivers whose last point is older than the window at `now_ms`.
    pub fn sweep(&self, now_ms: u64) {
        let window = u64::try_from(self.config.window.as_millis()).unwrap_or(u64::MAX);
        let horizon = now_ms.saturating_sub(window);
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut dropped = 0;
        inner.tracks.retain(|t| {
            let keep = t.last.t >= horizon;
            if !keep {
                dropped += t.len();
            }
            keep
        });
        inner.steps -= dropped;
    }
}

fn within(track: &Track, since: u64, until: u64) -> Vec<Point> {
    track
        .points()
        .skip_while(|a| a.t < since)
        .take_while(|a| a.t <= until)
        .map(Abs::point)
        .collect()
}

/// Keeps the first point of every `step_ms`, and the last point.
fn thin(points: &mut Vec<Point>, step_ms: u64) {
    if step_ms == 0 || points.len() < 3 {
        return;
    }
    let last = points[points.len() - 1];
    let mut next = 0u64;
    points.retain(|p| {
        let keep = p.t >= next;
        if keep {
            next = p.t + step_ms;
        }
        keep
    });
    if points.last() != Some(&last) {
        points.push(last);
    }
}

#[cfg(test)]
mod tests;
