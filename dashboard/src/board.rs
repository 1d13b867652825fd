//! The board: the latest known position of every driver, shared by all browsers.
//!
//! Positions arrive from MQTT (`ingest`); each browser's bridge task asks for what changed
//! since its last batch (`batch_since`). Conflation falls out of the design: the board holds
//! one entry per driver, so a browser that missed ten fixes of a driver gets only the latest.
//! Every update bumps a version number; a browser remembers the version it has seen. The
//! board is bounded (`max_drivers`), and drivers gone for a while are evicted.

use crate::latency::LatencyWindow;
use crate::trips::StatusTimes;
use crate::viewport::Viewport;
pub use crate::visibility::Visibility;
use fleetcast_proto::filter::matches;
use fleetcast_proto::location::Status;
use fleetcast_proto::topic::{self, Kind};
use fleetcast_proto::{owntracks, Location, Presence};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
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
    latency: metrics::Histogram,
    /// Geofences, from `geofences/...`.
    pub fences: crate::fences::Fences,
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
            latency: metrics::Histogram::noop(),
            fences: crate::fences::Fences::default(),
        }
    }

    /// Also records every position's end-to-end latency on `histogram` (seconds), so the
    /// status panel and Prometheus read the same samples.
    pub fn with_latency_histogram(mut self, histogram: metrics::Histogram) -> Board {
        self.latency = histogram;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &BoardConfig {
        &self.config
    }

    /// Takes one MQTT message: a driver location, a driver status, or an OwnTracks fix.
    pub fn ingest(&self, topic: &str, body: &[u8], now_ms: u64) -> Ingested {
        let result = self.ingest_inner(topic, body, now_ms);
        match result {
            Ingested::Position { latency_ms } => {
                self.latency.record(latency_ms as f64 / 1000.0);
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
                Some(loc) => self.put(&mut inner, topic, loc, now_ms),
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
            let Ok(loc) = Location::parse(id, body, now_ms) else {
                return Ingested::Ignored;
            };
            let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
            self.put(&mut inner, topic, loc, now_ms)
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

    fn put(&self, inner: &mut Inner, topic: &str, loc: Location, now_ms: u64) -> Ingested {
        let latency_ms = now_ms.saturating_sub(loc.ts);
        inner.version += 1;
        let version = inner.version;
        let full = inner.drivers.len() >= self.config.max_drivers;
        match inner.drivers.get_mut(&loc.id) {
            Some(e) => {
                e.entered.observe(e.location.status, loc.status, now_ms);
                e.location = loc;
                e.version = version;
                e.last_seen = Instant::now();
                e.liveness = Liveness::Live;
            }
            None if full => return Ingested::Full,
            None => {
                inner.drivers.insert(
                    loc.id.clone(),
                    Entry {
                        entered: StatusTimes::first(loc.status, now_ms),
                        location: loc,
                        topic: topic.to_owned(),
                        version,
                        last_seen: Instant::now(),
                        liveness: Liveness::Live,
                    },
                );
            }
        }
        Ingested::Position { latency_ms }
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

#[cfg(test)]
mod tests {
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
}
