//! From a finished run's counters and clock readings to its [`Report`]: rates over the
//! right windows, loss against what should have arrived, and what the run cost this
//! process and the broker.

use crate::config::Scenario;
use crate::report::{expected_of, to_pairs, Quantiles, Report};
use crate::shared::Shared;
use fleetcast_proto::process::{self, Usage};
use std::sync::atomic::Ordering;
use tokio::time::Instant;

/// Bytes in a MiB.
const MIB: f64 = 1_048_576.0;

/// When a run's phases began and ended.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeline {
    /// Publishing started.
    pub load_start: Instant,
    /// Publishing stopped.
    pub load_end: Instant,
    /// The last message arrived (`load_end` if none did after it).
    pub last_receive: Instant,
    /// Storm: the connections were dropped.
    pub storm_at: Option<Instant>,
}

/// This process's and the broker's resource use when the run started.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Baseline {
    own: Option<Usage>,
    broker: Option<Usage>,
}

impl Baseline {
    /// Reads them now; the broker's only with its pid.
    pub fn now(broker_pid: Option<u32>) -> Baseline {
        Baseline {
            own: process::own_usage(),
            broker: broker_pid.and_then(process::usage),
        }
    }
}

impl Timeline {
    /// When the rates' windows open: the load's start, or its end if it ended first.
    fn from(&self) -> Instant {
        self.load_start.min(self.load_end)
    }
}

/// Seconds from `a` to `b`, never zero (rates divide by it).
fn secs(a: Instant, b: Instant) -> f64 {
    b.saturating_duration_since(a).as_secs_f64().max(1e-9)
}

/// The report of a run whose `mine` connections (publishers, or idle/storm connections)
/// ran in this process.
pub(crate) fn report(shared: &Shared, t: &Timeline, start: Baseline, mine: u64) -> Report {
    let cfg = &shared.cfg;
    let load_secs = secs(t.from(), t.load_end);
    let mut report = Report {
        scenario: cfg.scenario.name().to_owned(),
        broker: std::iter::once(&cfg.broker)
            .chain(&cfg.more_brokers)
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
        connections: cfg.connections,
        subscribers: cfg.subscribers,
        shared_subscription: cfg.shared,
        qos: cfg.qos,
        duration_s: load_secs,
        ..Report::default()
    };
    add_counts(&mut report, shared, t, load_secs);
    let end = Baseline::now(cfg.broker_pid);
    add_costs(&mut report, start, end, shared.started.elapsed());
    report.broker_kib_per_connection = match (cfg.scenario, start.broker, end.broker) {
        (Scenario::Idle, Some(a), Some(b)) if mine > 0 => {
            Some((b.rss_bytes as f64 - a.rss_bytes as f64) / 1024.0 / mine as f64)
        }
        _ => None,
    };
    report
}

/// Connects, messages, loss and latency.
fn add_counts(r: &mut Report, shared: &Shared, t: &Timeline, load_secs: f64) {
    let tally = shared.tally();
    let connect_us = shared.connect_us();
    let published = shared.published.load(Ordering::Relaxed);
    let expected = expected_of(published, shared.subscribers(), shared.cfg.shared);
    r.connected = shared.connected.load(Ordering::Relaxed);
    r.connect_errors = shared.errors();
    r.connect_ms = Quantiles::of_us(&connect_us);
    r.published = published;
    r.expected = expected;
    r.received = tally.received;
    r.lost = expected.saturating_sub(tally.distinct());
    r.duplicates = tally.duplicates;
    r.out_of_order = tally.out_of_order;
    r.subscribers_dropped = shared.subscribers_dropped.load(Ordering::Relaxed);
    r.latency_ms = Quantiles::of_us(&tally.latency_us);
    r.published_per_s = published as f64 / load_secs;
    // Over the time messages kept arriving, which runs past the load when the broker (or
    // its pacing) is slower than the publishers.
    r.received_per_s = tally.received as f64 / secs(t.from(), t.last_receive.max(t.load_end));
    r.reconnect_all_s = match (t.storm_at, shared.last_reconnect()) {
        (Some(a), Some(b)) => Some((b - a).as_secs_f64()),
        _ => None,
    };
    r.latency_us_pairs = to_pairs(&tally.latency_us);
    r.connect_us_pairs = to_pairs(&connect_us);
}

/// CPU over `wall` and memory at the end, of this process and (with its pid) the broker.
fn add_costs(r: &mut Report, start: Baseline, end: Baseline, wall: std::time::Duration) {
    r.own_cpu_percent = match (start.own, end.own) {
        (Some(a), Some(b)) => process::cpu_percent(a, b, wall),
        _ => 0.0,
    };
    r.own_rss_mib = end.own.map_or(0.0, |u| u.rss_bytes as f64 / MIB);
    r.broker_cpu_percent = match (start.broker, end.broker) {
        (Some(a), Some(b)) => Some(process::cpu_percent(a, b, wall)),
        _ => None,
    };
    r.broker_rss_mib = end.broker.map(|u| u.rss_bytes as f64 / MIB);
}
