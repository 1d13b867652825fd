//! One run, start to end: subscribers in first, then the publishers on their schedule, the
//! load until `--duration` (or, in a storm, until every connection is back), a drain of
//! what is still in flight, and the report.

use crate::apart::Apart;
use crate::config::{LoadConfig, Scenario};
use crate::conn;
use crate::publisher::{publisher, Signals};
use crate::report::Report;
use crate::schedule::Schedule;
use crate::series;
use crate::shared::{Phase, Progress, Shared};
use crate::subscriber::subscriber;
use crate::summary::{self, Baseline, Timeline};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant, Interval};
use tokio_util::sync::CancellationToken;

/// How long after the load a quiet subscriber is considered drained.
const QUIET: Duration = Duration::from_millis(1500);
/// Longest wait for in-flight messages after the load.
const DRAIN_MAX: Duration = Duration::from_secs(30);
/// How long after the last first connect a storm drops its connections: past the
/// per-client-id connect quota of one second.
const STORM_QUOTA_WAIT: Duration = Duration::from_millis(1100);
/// Longest wait for a subscriber's SUBACK.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long past the planned end a run goes on before it stops regardless.
const OVERRUN_MAX: Duration = Duration::from_secs(30);
/// Time between two progress calls.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The broker's address did not resolve.
    #[error("cannot resolve the broker")]
    Resolve(#[source] std::io::Error),
    /// The subscribers' thread could not be started.
    #[error("cannot start the subscribers' thread")]
    Thread(#[source] std::io::Error),
    /// A subscriber could not connect or subscribe, so nothing could be measured.
    #[error("subscriber {0} could not subscribe: {1}")]
    Subscriber(usize, String),
}

/// Runs the load; `progress` is called about every 200 ms.
///
/// # Errors
/// The broker does not resolve, or a subscriber could not subscribe.
pub async fn run(cfg: LoadConfig, progress: impl FnMut(Progress)) -> Result<Report, LoadError> {
    let mut addrs = Vec::with_capacity(1 + cfg.more_brokers.len());
    for target in std::iter::once(&cfg.broker).chain(&cfg.more_brokers) {
        addrs.push(conn::resolve(target).await.map_err(LoadError::Resolve)?);
    }
    // Subscribers run in the first worker process only.
    let subscribers = if cfg.worker.0 == 0 {
        cfg.subscribers
    } else {
        0
    };
    let shared = Arc::new(Shared::new(cfg, addrs, subscribers));
    let baseline = Baseline::now(shared.cfg.broker_pid);
    let stop_subs = CancellationToken::new();
    // Kept until the subscribers are done (`apart.rs`: publishers must not starve them).
    let apart = Apart::start("loadtest-subscribers").map_err(LoadError::Thread)?;
    let sub_tasks = match subscribe_all(&shared, subscribers, &stop_subs, &apart).await {
        Ok(tasks) => tasks,
        Err(e) => {
            stop_subs.cancel();
            return Err(e);
        }
    };
    let schedule = Schedule::new(&shared.cfg, shared.started);
    let signals = Signals {
        stop: CancellationToken::new(),
        storm: CancellationToken::new(),
    };
    let pubs: Vec<JoinHandle<()>> = schedule
        .slots()
        .map(|slot| tokio::spawn(publisher(Arc::clone(&shared), slot, signals.clone())))
        .collect();
    let mine = pubs.len() as u64;
    let mut reporter = Reporter::new(progress, shared.cfg.broker_pid);
    let loaded = load(&shared, &schedule, mine, &signals.storm, &mut reporter).await;
    signals.stop.cancel();
    for p in pubs {
        let _ = p.await;
    }
    let last_receive = drain(&shared, loaded.end, &mut reporter).await;
    stop_subs.cancel();
    for t in sub_tasks {
        let _ = t.await;
    }
    drop(apart);
    let timeline = Timeline {
        load_start: schedule.load_start,
        load_end: loaded.end,
        last_receive,
        storm_at: loaded.storm_at,
    };
    let mut report = summary::report(&shared, &timeline, baseline, mine);
    report.timeline = reporter.series.finish(&shared);
    Ok(report)
}

/// Starts the subscribers one by one, each subscribed before the next starts, on their
/// own thread.
async fn subscribe_all(
    shared: &Arc<Shared>,
    subscribers: usize,
    stop: &CancellationToken,
    apart: &Apart,
) -> Result<Vec<JoinHandle<()>>, LoadError> {
    let mut tasks = Vec::with_capacity(subscribers);
    for n in 0..subscribers {
        let (tx, rx) = tokio::sync::oneshot::channel();
        tasks.push(
            apart
                .handle()
                .spawn(subscriber(Arc::clone(shared), n, tx, stop.clone())),
        );
        match timeout(SUBSCRIBE_TIMEOUT, rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => return Err(LoadError::Subscriber(n, e)),
            _ => return Err(LoadError::Subscriber(n, "no SUBACK".into())),
        }
    }
    Ok(tasks)
}

/// Calls the caller's progress function at a steady pace, and records the run's time
/// series on the way; the run's loops wait on it.
struct Reporter<F> {
    tick: Interval,
    progress: F,
    series: series::Recorder,
}

impl<F: FnMut(Progress)> Reporter<F> {
    fn new(progress: F, broker_pid: Option<u32>) -> Self {
        Reporter {
            tick: tokio::time::interval(PROGRESS_EVERY),
            progress,
            series: series::Recorder::new(broker_pid),
        }
    }

    /// Waits for the next tick and reports the figures then, in `phase`.
    async fn next(&mut self, shared: &Shared, phase: Phase) -> Progress {
        self.tick.tick().await;
        let p = Progress {
            phase,
            ..shared.progress()
        };
        (self.progress)(p);
        self.series.tick(shared, phase);
        p
    }
}

/// How the load phase ended.
struct Loaded {
    /// When it ended.
    end: Instant,
    /// Storm: when the connections were dropped.
    storm_at: Option<Instant>,
}

/// The connect and load phases: until every connection is in and the duration is over,
/// or in a storm until every dropped connection is back (or failed for good); bounded
/// either way.
async fn load<F: FnMut(Progress)>(
    shared: &Shared,
    schedule: &Schedule,
    mine: u64,
    storm: &CancellationToken,
    reporter: &mut Reporter<F>,
) -> Loaded {
    let cfg = &shared.cfg;
    let load_end = schedule.load_start + cfg.duration;
    let hard_end = load_end + OVERRUN_MAX;
    let everyone = mine + shared.subscribers() as u64;
    let mut all_in_at: Option<Instant> = None;
    let mut storm_at = None;
    loop {
        let phase = if Instant::now() < schedule.load_start {
            Phase::Connecting
        } else {
            Phase::Load
        };
        reporter.next(shared, phase).await;
        let all_in = shared.connected.load(Ordering::Relaxed) + shared.failures() >= everyone;
        if cfg.scenario == Scenario::Storm && all_in && all_in_at.is_none() {
            all_in_at = Some(Instant::now());
        }
        // The storm waits out a strict per-client-id connect quota (AWS IoT Core's one
        // connect a second; fleetcast's when `connect_rate_per_client_id = 1`), so
        // reconnects measure the broker's recovery, not its quota.
        if all_in_at.is_some_and(|t| t.elapsed() >= STORM_QUOTA_WAIT) && storm_at.is_none() {
            storm.cancel();
            storm_at = Some(Instant::now());
        }
        let now = Instant::now();
        let done = match cfg.scenario {
            Scenario::Storm => storm_at.is_some_and(|_| {
                shared.reconnected.load(Ordering::Relaxed) + shared.failures() >= mine
            }),
            _ => now >= load_end,
        };
        if done || now >= hard_end {
            return Loaded { end: now, storm_at };
        }
    }
}

/// Lets messages still in flight (socket buffers, broker queues) arrive: waits until the
/// subscribers have been quiet for a while, within a bound. Returns when the last message
/// arrived (`load_end` if none did after it).
async fn drain<F: FnMut(Progress)>(
    shared: &Shared,
    load_end: Instant,
    reporter: &mut Reporter<F>,
) -> Instant {
    let started = Instant::now();
    let mut last_count = u64::MAX;
    let mut last_change = Instant::now();
    let mut last_receive = load_end;
    while shared.subscribers() > 0 && started.elapsed() < DRAIN_MAX {
        let p = reporter.next(shared, Phase::Drain).await;
        if p.received != last_count {
            last_count = p.received;
            last_change = Instant::now();
            last_receive = last_change;
        } else if last_change.elapsed() >= QUIET {
            break;
        }
    }
    last_receive
}
