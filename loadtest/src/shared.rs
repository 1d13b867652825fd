//! What every task of one run shares: the settings, the broker's address, and the counters
//! they all add to (connects, publishes, failures, each subscriber's tally), from which
//! both the live [`Progress`] and the final report are read.
//!
//! One `Arc<Shared>` per task instead of one argument per piece: the tasks are spawned by
//! the thousand and each needs all of it.

use crate::accounting::{new_histogram, Tally};
use crate::config::LoadConfig;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use tokio::time::Instant;

/// Where a run is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Phase {
    /// Subscribers and publishers connecting (before the load starts).
    #[default]
    Connecting,
    /// The load itself.
    Load,
    /// Publishers stopped; waiting for messages still in flight.
    Drain,
}

impl Phase {
    /// The word a progress line shows.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Connecting => "connecting",
            Phase::Load => "load",
            Phase::Drain => "drain",
        }
    }
}

/// Live figures for a progress display.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    /// The run's phase.
    pub phase: Phase,
    /// Connections up.
    pub connected: u64,
    /// Published so far.
    pub published: u64,
    /// Received so far.
    pub received: u64,
    /// 99th percentile latency so far, ms.
    pub p99_ms: f64,
    /// Seconds since start.
    pub elapsed_s: f64,
}

/// One connection counted as open while this lives (see [`Shared::open`]).
#[derive(Debug)]
pub(crate) struct Open<'a>(&'a AtomicU64);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One run's settings and counters.
#[derive(Debug)]
pub(crate) struct Shared {
    pub cfg: LoadConfig,
    /// The brokers (`broker`, then `more_brokers`), resolved once for every connection.
    pub addrs: Vec<SocketAddr>,
    /// When the run started (before the subscribers connect).
    pub started: Instant,
    pub connected: AtomicU64,
    /// Connections open now (each held by an [`Open`]).
    open: AtomicU64,
    pub published: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    connect_us: Mutex<Histogram<u64>>,
    /// One per subscriber of this process.
    tallies: Vec<Mutex<Tally>>,
    pub reconnected: AtomicU64,
    last_reconnect: Mutex<Option<Instant>>,
    /// Subscribers whose connection ended before the run stopped them.
    pub subscribers_dropped: AtomicU64,
}

/// A lock that a panicked holder did not spoil: every counter stays readable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// The brokers' addresses, comma-separated, for messages.
    pub fn addrs_text(&self) -> String {
        let all: Vec<String> = self.addrs.iter().map(ToString::to_string).collect();
        all.join(",")
    }

    /// Fresh counters, with a tally for each of `subscribers`.
    pub fn new(cfg: LoadConfig, addrs: Vec<SocketAddr>, subscribers: usize) -> Shared {
        Shared {
            cfg,
            addrs,
            started: Instant::now(),
            connected: AtomicU64::new(0),
            open: AtomicU64::new(0),
            published: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
            connect_us: Mutex::new(new_histogram()),
            tallies: (0..subscribers)
                .map(|_| Mutex::new(Tally::default()))
                .collect(),
            reconnected: AtomicU64::new(0),
            last_reconnect: Mutex::new(None),
            subscribers_dropped: AtomicU64::new(0),
        }
    }

    /// Subscribers in this process.
    pub fn subscribers(&self) -> usize {
        self.tallies.len()
    }

    /// Counts a failure of kind `kind` (a connect error, a lost connection); true for the
    /// first of its kind (to be logged).
    pub fn error(&self, kind: String) -> bool {
        let mut errors = lock(&self.errors);
        let n = errors.entry(kind).or_insert(0);
        *n += 1;
        *n == 1
    }

    /// Failures so far, of every kind.
    pub fn failures(&self) -> u64 {
        lock(&self.errors).values().sum()
    }

    /// Failures so far by kind.
    pub fn errors(&self) -> BTreeMap<String, u64> {
        lock(&self.errors).clone()
    }

    /// Counts a connection that got its CONNACK `us` microseconds after it started.
    pub fn connected_in(&self, us: u64) {
        let _ = lock(&self.connect_us).record(us.max(1));
        self.connected.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection as open until the returned guard is dropped.
    pub fn open(&self) -> Open<'_> {
        self.open.fetch_add(1, Ordering::Relaxed);
        Open(&self.open)
    }

    /// Connections open now.
    pub fn open_now(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Connect times so far, microseconds.
    pub fn connect_us(&self) -> Histogram<u64> {
        lock(&self.connect_us).clone()
    }

    /// Counts a storm reconnect, now.
    pub fn reconnected_now(&self) {
        self.reconnected.fetch_add(1, Ordering::Relaxed);
        *lock(&self.last_reconnect) = Some(Instant::now());
    }

    /// When the last storm reconnect happened.
    pub fn last_reconnect(&self) -> Option<Instant> {
        *lock(&self.last_reconnect)
    }

    /// Records in subscriber `n`'s tally message `seq` of `publisher`, `latency_us` late.
    pub fn record(&self, n: usize, publisher: u32, seq: u64, latency_us: u64) {
        if let Some(t) = self.tallies.get(n) {
            lock(t).record(publisher, seq, latency_us);
        }
    }

    /// Every subscriber's tally added up.
    pub fn tally(&self) -> Tally {
        let mut all = Tally::default();
        for t in &self.tallies {
            all.merge(&lock(t));
        }
        all
    }

    /// Every latency recorded so far (microseconds) and the duplicates, over all subscribers.
    pub fn latency_and_duplicates(&self) -> (Histogram<u64>, u64) {
        let mut latency = new_histogram();
        let mut duplicates = 0;
        for t in &self.tallies {
            let t = lock(t);
            let _ = latency.add(&t.latency_us);
            duplicates += t.duplicates;
        }
        (latency, duplicates)
    }

    /// The figures a progress display shows, now.
    pub fn progress(&self) -> Progress {
        let mut received = 0;
        let mut p99 = 0.0;
        for t in &self.tallies {
            let t = lock(t);
            received += t.received;
            if !t.latency_us.is_empty() {
                p99 = f64::max(p99, t.latency_us.value_at_quantile(0.99) as f64 / 1000.0);
            }
        }
        Progress {
            phase: Phase::default(),
            connected: self.connected.load(Ordering::Relaxed),
            published: self.published.load(Ordering::Relaxed),
            received,
            p99_ms: p99,
            elapsed_s: self.started.elapsed().as_secs_f64(),
        }
    }
}
