//! The board: the latest known position of every driver, shared by all browsers.
//!
//! Positions arrive from MQTT (`ingest`); each browser's bridge task asks for what changed
//! since its last batch (`batch_since`). Conflation falls out of the design: the board holds
//! one entry per driver, so a browser that missed ten fixes of a driver gets only the latest.
//! Every update bumps a version number; a browser remembers the version it has seen. The
//! board is bounded (`max_drivers`), and drivers gone for a while are evicted.

use crate::history::{History, Slot};
use crate::latency::LatencyWindow;
use crate::latency_histogram::LatencyHistogram;
use crate::trips::StatusTimes;
use crate::viewport::Viewport;
pub use crate::visibility::Visibility;
use fleetcast_proto::filter::matches;
use fleetcast_proto::location::{Fields, Fix, Status};
use fleetcast_proto::topic::{self, Kind};
use fleetcast_proto::{owntracks, Location, Presence};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How the board judges drivers.
#[derive(Debug, Clone)]
pub struct BoardConfig {
    /// A driver silent this long is sent as gone (stale).
    pub stale_after: Duration,
    /// A gone driver is forgotten after this long.
    pub forget_after: Duration,
    /// Most drivers held; new ones beyond are ignored and counted.
    pub max_drivers: usize,
}

impl Default for BoardConfig {
    fn default() -> Self {
        BoardConfig {
            stale_after: Duration::from_secs(30),
            forget_after: Duration::from_secs(600),
            max_drivers: 100_000,
        }
    }
}

/// Why a driver left the map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GoneReason {
    /// Its status topic said `offline` (its last will, or a clean stop).
    Offline,
    /// Nothing heard for `stale_after`.
    Stale,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Liveness {
    Live,
    Gone(GoneReason),
}

#[derive(Debug)]
struct Entry {
    location: Location,
    topic: String,
    version: u64,
    last_seen: Instant,
    liveness: Liveness,
    /// When it last entered each status (ends share links made `--until-status`).
    entered: StatusTimes,
    /// Where its history is, as last seen.
    track: Option<Slot>,
}

#[derive(Debug, Default)]
struct Inner {
    version: u64,
    drivers: HashMap<String, Entry>,
    /// Counter per OwnTracks device, which has no `seq` of its own.
    owntracks_seq: HashMap<String, u64>,
}

/// What one browser wants to see.
#[derive(Debug, Clone)]
pub struct View {
    /// Topic filters; a driver is sent if its location topic matches one.
    pub filters: Vec<String>,
    /// Only drivers inside (with the margin already applied); None = everywhere.
    pub viewport: Option<Viewport>,
    /// Always sent, wherever it is.
    pub follow: Option<String>,
    /// What the viewer may see at all (a browser token's account); None: everything.
    pub allowed: Option<Visibility>,
}

impl Default for View {
    fn default() -> Self {
        View {
            filters: vec![
                topic::LOCATION_FILTER.to_owned(),
                topic::OWNTRACKS_FILTER.to_owned(),
            ],
            viewport: None,
            follow: None,
            allowed: None,
        }
    }
}

/// A driver that left.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gone {
    /// Driver id.
    pub id: String,
    /// Why.
    pub reason: GoneReason,
}

/// What changed for one browser since its last batch.
#[derive(Debug, Default)]
pub struct Changes {
    /// Latest positions of drivers that moved (or appeared) in view.
    pub positions: Vec<Location>,
    /// Drivers that went offline or stale.
    pub gone: Vec<Gone>,
    /// Changed drivers outside the view or filters (for the filter hit ratio).
    pub filtered_out: usize,
    /// The board version these changes bring the browser up to.
    pub version: u64,
}

/// Numbers the page's status panel shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PanelStats {
    /// Drivers live now.
    pub online: usize,
    /// Positions received per second (last window).
    pub msgs_per_s: f64,
    /// Median end-to-end latency, ms (`ts` to bridge receive).
    pub p50_ms: f64,
    /// 99th percentile end-to-end latency, ms.
    pub p99_ms: f64,
}

/// What an ingested message turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    /// A position, with its end-to-end latency in ms (clamped at 0).
    Position {
        /// `now - ts`.
        latency_ms: u64,
    },
    /// A presence change.
    Presence,
    /// Not understood (bad JSON, other topics); counted.
    Ignored,
    /// A new driver beyond `max_drivers`.
    Full,
}

/// The shared board.
#[derive(Debug)]
pub struct Board {
    config: BoardConfig,
    inner: RwLock<Inner>,
    window: Mutex<LatencyWindow>,
    /// Messages that were not positions or presence we understood.
    pub ignored: AtomicU64,
    /// New drivers refused because the board was full.
    pub refused: AtomicU64,
    latency: Arc<LatencyHistogram>,
    /// Geofences, from `geofences/...`.
    pub fences: crate::fences::Fences,
    /// Where every accepted fix is also recorded, when history is kept.
    history: Option<Arc<History>>,
}

impl Board {
    /// An empty board.
    pub fn new(config: BoardConfig) -> Board {
        Board {
            config,
            inner: RwLock::new(Inner::default()),
            window: Mutex::new(LatencyWindow::new()),
            ignored: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            latency: Arc::new(LatencyHistogram::new()),
            fences: crate::fences::Fences::default(),
            history: None,
        }
    }

    /// Also records every accepted fix in `history`.
    pub fn with_history(mut self, history: Arc<History>) -> Board {
        self.history = Some(history);
        self
    }

    /// Also records every position's end-to-end latency on `histogram`, so the status
    /// panel and Prometheus read the same samples.
    pub fn with_latency_histogram(mut self, histogram: Arc<LatencyHistogram>) -> Board {
        self.latency = histogram;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &BoardConfig {
        &self.config
    }

    /// Takes a batch of messages in their order, each as [`Board::ingest`] does, except
    /// that drivers' fixes are read first and then put together, under one lock of the
    /// board, one of the history and one of the latency window (per fix, those locks were
    /// about a tenth of the map's time on a 10,000-driver fleet); any other message
    /// (presence, geofences, OwnTracks) puts the fixes before it first, so order holds.
    /// Every fix is read: one driver's fixes in a row may be a phone's buffered track,
    /// each for history.
    pub fn ingest_batch<T: AsRef<[u8]>, B: AsRef<[u8]>>(&self, batch: &[(T, B)], now_ms: u64) {
        let mut fixes: Vec<(&str, Fix<'_>)> = Vec::with_capacity(batch.len());
        let mut ignored = 0;
        for (topic, body) in batch {
            let Ok(topic) = std::str::from_utf8(topic.as_ref()) else {
                continue;
            };
            match topic::parse(topic).filter(|p| p.kind == Kind::Location) {
                // The gateway's rules, as in `ingest`.
                Some(p) => match Location::read(p.id, body.as_ref(), now_ms) {
                    Ok(loc) => fixes.push((topic, loc)),
                    Err(_) => ignored += 1,
                },
                None => {
                    self.put_all(&mut fixes, now_ms);
                    self.ingest(topic, body.as_ref(), now_ms);
                }
            }
        }
        self.put_all(&mut fixes, now_ms);
        if ignored > 0 {
            self.ignored.fetch_add(ignored, Ordering::Relaxed);
        }
    }

    /// Takes one MQTT message: a driver location, a driver status, or an OwnTracks fix.
    pub fn ingest(&self, topic: &str, body: &[u8], now_ms: u64) -> Ingested {
        let result = self.ingest_inner(topic, body, now_ms);
        match result {
            Ingested::Position { latency_ms } => {
                self.latency.record(latency_ms);
                self.window
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .record(latency_ms);
            }
            Ingested::Ignored => {
                self.ignored.fetch_add(1, Ordering::Relaxed);
            }
            Ingested::Full => {
                self.refused.fetch_add(1, Ordering::Relaxed);
            }
            Ingested::Presence => {}
        }
        result
    }

    fn ingest_inner(&self, topic: &str, body: &[u8], now_ms: u64) -> Ingested {
        if topic.starts_with("geofences/") {
            return match self.fences.ingest(topic, body) {
                true => Ingested::Presence,
                false => Ingested::Ignored,
            };
        }
        if topic.starts_with("owntracks/") {
            let Some((user, device)) = topic::owntracks_device(topic) else {
                return Ingested::Ignored;
            };
            let key = format!("{user}/{device}");
            let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
            let seq = {
                let s = inner.owntracks_seq.entry(key).or_insert(0);
                *s += 1;
                *s
            };
            return match owntracks::to_location(topic, body, seq, now_ms) {
                Some(loc) => self.put_one(&mut inner, topic, &loc.fields(), now_ms),
                None => Ingested::Ignored,
            };
        }
        let Some(parsed) = topic::parse(topic) else {
            return Ingested::Ignored;
        };
        let id = parsed.id;
        if parsed.kind == Kind::Location {
            // The gateway's rules, so that what it accepts is what the map shows (a
            // standalone dashboard may read a broker that checks nothing).
            let Ok(fix) = Location::read(id, body, now_ms) else {
                return Ingested::Ignored;
            };
            let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
            self.put_one(&mut inner, topic, &fix.fields(), now_ms)
        } else if parsed.kind == Kind::Status {
            let Ok(presence) = serde_json::from_slice::<Presence>(body) else {
                return Ingested::Ignored;
            };
            if !presence.is_offline() {
                return Ingested::Presence;
            }
            let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
            inner.version += 1;
            let version = inner.version;
            if let Some(e) = inner.drivers.get_mut(id) {
                if e.liveness == Liveness::Live {
                    e.liveness = Liveness::Gone(GoneReason::Offline);
                    e.version = version;
                }
            }
            Ingested::Presence
        } else {
            Ingested::Ignored
        }
    }

    /// Puts `fix` on the board (locked as `inner`) and in its history (`history`, locked
    /// by the caller after the board, when history is kept); `now` is the time for
    /// `last_seen`, read once per lock. A driver already on the board is updated in place
    /// (its entry allocates nothing), and its history reached through the slot its entry
    /// keeps.
    fn put(
        &self,
        inner: &mut Inner,
        history: Option<&mut crate::history::Batch<'_>>,
        (topic, fix): (&str, &Fields<'_>),
        now_ms: u64,
        now: Instant,
    ) -> Ingested {
        let latency_ms = now_ms.saturating_sub(fix.ts);
        inner.version += 1;
        let version = inner.version;
        if let Some(e) = inner.drivers.get_mut(fix.id) {
            if let Some(h) = history {
                h.record_at(topic, fix, &mut e.track);
            }
            e.entered.observe(e.location.status, fix.status, now_ms);
            e.location.set(fix);
            e.version = version;
            e.last_seen = now;
            e.liveness = Liveness::Live;
            return Ingested::Position { latency_ms };
        }
        // What the board refuses is not history either.
        if inner.drivers.len() >= self.config.max_drivers {
            return Ingested::Full;
        }
        let mut track = None;
        if let Some(h) = history {
            h.record_at(topic, fix, &mut track);
        }
        inner.drivers.insert(
            fix.id.to_owned(),
            Entry {
                entered: StatusTimes::first(fix.status, now_ms),
                location: Location::from(fix),
                topic: topic.to_owned(),
                version,
                last_seen: now,
                liveness: Liveness::Live,
                track,
            },
        );
        Ingested::Position { latency_ms }
    }

    /// Puts one fix, locking the board (and then the history) for it.
    fn put_one(&self, inner: &mut Inner, topic: &str, fix: &Fields<'_>, now_ms: u64) -> Ingested {
        let mut history = self.history.as_ref().map(|h| h.batch());
        self.put(
            inner,
            history.as_mut(),
            (topic, fix),
            now_ms,
            Instant::now(),
        )
    }

    /// Puts every fix of `fixes` (emptied) under one lock of the board and one of the
    /// history, and records their latencies under one lock of the window.
    fn put_all(&self, fixes: &mut Vec<(&str, Fix<'_>)>, now_ms: u64) {
        if fixes.is_empty() {
            return;
        }
        let mut latencies = Vec::with_capacity(fixes.len());
        let mut refused = 0;
        {
            let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
            warm(&inner, fixes);
            let mut history = self.history.as_ref().map(|h| h.batch());
            let now = Instant::now();
            for (topic, fix) in fixes.drain(..) {
                let put = (topic, &fix.fields());
                match self.put(&mut inner, history.as_mut(), put, now_ms, now) {
                    Ingested::Position { latency_ms } => latencies.push(latency_ms),
                    _ => refused += 1,
                }
            }
        }
        if refused > 0 {
            self.refused.fetch_add(refused, Ordering::Relaxed);
        }
        self.latency.record_all(&latencies);
        self.window
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record_all(&latencies);
    }

    /// Whether driver `id` entered `status` at or after `since_ms` (the board's clock, ms
    /// since the epoch). A driver the board does not hold has not.
    pub fn entered_since(&self, id: &str, status: Status, since_ms: u64) -> bool {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner
            .drivers
            .get(id)
            .is_some_and(|e| e.entered.since(status, since_ms))
    }

    /// Marks silent drivers stale and forgets long-gone ones. Call about once a second.
    pub fn sweep(&self, now: Instant) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let stale_after = self.config.stale_after;
        let forget_after = self.config.forget_after;
        let mut bumped = inner.version;
        inner.drivers.retain(|_, e| {
            let silent = now.saturating_duration_since(e.last_seen);
            if silent >= forget_after {
                return false;
            }
            if e.liveness == Liveness::Live && silent >= stale_after {
                bumped += 1;
                e.version = bumped;
                e.liveness = Liveness::Gone(GoneReason::Stale);
            }
            true
        });
        inner.version = bumped;
    }

    /// What changed for a browser that has seen up to `since`. `since == 0` gives the
    /// full picture (live drivers only), as on (re)connect or a new viewport.
    pub fn changes_since(&self, since: u64, view: &View, max_positions: usize) -> Changes {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let mut out = Changes {
            version: inner.version,
            ..Changes::default()
        };
        for e in inner.drivers.values() {
            if e.version <= since {
                continue;
            }
            if !view.allowed.as_ref().is_none_or(|a| a.may_see(&e.topic)) {
                continue;
            }
            let followed = view.follow.as_deref() == Some(e.location.id.as_str());
            let wanted = view.filters.iter().any(|f| matches(f, &e.topic));
            match e.liveness {
                Liveness::Gone(reason) => {
                    // A fresh view never knew it: nothing to retract.
                    if since > 0 && (wanted || followed) {
                        out.gone.push(Gone {
                            id: e.location.id.clone(),
                            reason,
                        });
                    }
                }
                Liveness::Live => {
                    let visible = view
                        .viewport
                        .is_none_or(|v| v.contains(e.location.lat, e.location.lon));
                    if followed || (wanted && visible) {
                        if out.positions.len() < max_positions {
                            out.positions.push(e.location.clone());
                        }
                    } else {
                        out.filtered_out += 1;
                    }
                }
            }
        }
        out
    }

    /// Calls `f` with every live driver `view` shows (followed, or wanted and inside its
    /// viewport), under the read lock: the aggregation's one pass.
    pub fn visit_live(&self, view: &View, mut f: impl FnMut(&Location)) {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        for e in inner.drivers.values() {
            if e.liveness != Liveness::Live {
                continue;
            }
            let followed = view.follow.as_deref() == Some(e.location.id.as_str());
            // Cheapest test first: most drivers of a zoomed-in view fail the box.
            let inside = || {
                view.viewport
                    .is_none_or(|v| v.contains(e.location.lat, e.location.lon))
            };
            let shown = followed || (inside() && view.filters.iter().any(|f| matches(f, &e.topic)));
            if shown && view.allowed.as_ref().is_none_or(|a| a.may_see(&e.topic)) {
                f(&e.location);
            }
        }
    }

    /// The latest position of the driver `view` follows, when it is live and the viewer
    /// may see it.
    pub fn followed(&self, view: &View) -> Option<Location> {
        let id = view.follow.as_deref()?;
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let e = inner.drivers.get(id)?;
        let may = view.allowed.as_ref().is_none_or(|a| a.may_see(&e.topic));
        (may && e.liveness == Liveness::Live).then(|| e.location.clone())
    }

    /// The board's current version.
    pub fn version(&self) -> u64 {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).version
    }

    /// Drivers live now.
    pub fn online(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .drivers
            .values()
            .filter(|e| e.liveness == Liveness::Live)
            .count()
    }

    /// The numbers for the status panel.
    pub fn panel(&self) -> PanelStats {
        let online = self.online();
        let (msgs_per_s, p50_ms, p99_ms) = self
            .window
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .summary();
        PanelStats {
            online,
            msgs_per_s,
            p50_ms,
            p99_ms,
        }
    }
}

/// Reads the entries `fixes` will update, one after the other with nothing in between, so
/// that the CPU waits for their cache misses together (a fleet's next fix is another
/// driver's, whose table slot, entry and key are cold: `Board::put` was a third of the map's
/// thread under 10,000 drivers, nearly all of it two loads waiting for memory). The values
/// read are thrown away; `put` then finds them in the cache.
fn warm(inner: &Inner, fixes: &[(&str, Fix<'_>)]) {
    for (_, fix) in fixes {
        if let Some(e) = inner.drivers.get(fix.fields().id) {
            std::hint::black_box((e.version, e.last_seen, e.location.lat, e.topic.len()));
        }
    }
}

#[cfg(test)]
mod tests;
