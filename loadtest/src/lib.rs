//! `fleetcast loadtest`: many simulated MQTT connections against any broker, and a report
//! of what it measured (throughput, latency, loss).
//!
//! The tool must cost less per connection than the broker it measures, so connections are
//! raw sockets speaking hand-written frames ([`wire`]), not one client library each.
//! Scenarios: `fleet` (N drivers at an interval + M subscribers), `throughput` (N publishers
//! as fast as the broker takes, QoS 0), `idle` (hold N connections; broker memory per
//! connection with `--broker-pid`), `storm` (connect N, drop them all at once, reconnect,
//! with or without jitter). Every run is bounded by `--duration` and stops by itself.

pub mod accounting;
pub mod conn;
pub mod report;
pub mod target;
pub mod wire;

use accounting::{new_histogram, Tally};
use conn::Conn;
use fleetcast_proto::process;
use fleetcast_proto::topic;
use hdrhistogram::Histogram;
use rand::Rng;
use report::{add_pairs, to_pairs, Quantiles, Report};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
pub use target::Target;
use tokio::time::{interval_at, sleep, timeout, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// N drivers publishing every interval, M subscribers.
    Fleet,
    /// N publishers as fast as the broker takes them (QoS 0), M subscribers.
    Throughput,
    /// Hold N idle connections.
    Idle,
    /// Connect N, drop all at once, reconnect.
    Storm,
}

impl FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Scenario, String> {
        Ok(match s {
            "fleet" => Scenario::Fleet,
            "throughput" => Scenario::Throughput,
            "idle" => Scenario::Idle,
            "storm" => Scenario::Storm,
            other => {
                return Err(format!(
                    "unknown scenario {other} (fleet, throughput, idle, storm)"
                ))
            }
        })
    }
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Fleet => "fleet",
            Scenario::Throughput => "throughput",
            Scenario::Idle => "idle",
            Scenario::Storm => "storm",
        }
    }
}

/// How to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The scenario.
    pub scenario: Scenario,
    /// The broker.
    pub broker: Target,
    /// Publishers (fleet, throughput) or connections (idle, storm).
    pub connections: usize,
    /// Connects per second.
    pub connect_rate: u32,
    /// Fleet: time between two publishes of one connection.
    pub interval: Duration,
    /// Pad payloads to at least this many bytes.
    pub payload_size: Option<usize>,
    /// QoS of publishes (fleet) and subscriptions: 0 or 1.
    pub qos: u8,
    /// Subscribers to `drivers/+/location`.
    pub subscribers: usize,
    /// Subscribe as one shared group (`$share/loadtest/...`).
    pub shared: bool,
    /// Load phase length.
    pub duration: Duration,
    /// Source addresses, used round robin (past 64k ports on loopback).
    pub source_ips: Vec<IpAddr>,
    /// The broker's pid, to report its CPU and memory.
    pub broker_pid: Option<u32>,
    /// Storm: spread reconnects randomly over N / connect-rate seconds.
    pub jitter: bool,
    /// Client id and topic prefix.
    pub id_prefix: String,
    /// This process's share: (index, of processes). Subscribers run in index 0.
    pub worker: (usize, usize),
    /// MQTT credentials.
    pub credentials: Option<(String, String)>,
}

/// Live figures for a progress display.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
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

#[derive(Debug)]
struct Shared {
    connected: AtomicU64,
    published: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    connect_us: Mutex<Histogram<u64>>,
    tallies: Vec<Arc<Mutex<Tally>>>,
    reconnected: AtomicU64,
    last_reconnect: Mutex<Option<Instant>>,
}

/// How long after the load a quiet subscriber is considered drained.
const QUIET: Duration = Duration::from_millis(1500);
/// Longest wait for in-flight messages after the load.
const DRAIN_MAX: Duration = Duration::from_secs(30);
/// How long after the last first connect a storm drops its connections: past the
/// per-client-id connect quota of one second.
const STORM_QUOTA_WAIT: Duration = Duration::from_millis(1100);

impl Shared {
    fn error(&self, kind: String) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(kind)
            .or_insert(0) += 1;
    }
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The broker's address did not resolve.
    #[error("cannot resolve the broker")]
    Resolve(#[source] std::io::Error),
    /// A subscriber could not connect or subscribe, so nothing could be measured.
    #[error("subscriber {0} could not subscribe: {1}")]
    Subscriber(usize, String),
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The error kind a failed connect is counted under.
fn kind_of(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(24) | Some(23) => "fd_limit".into(),
        Some(99) => "no_source_port".into(),
        Some(111) => "refused".into(),
        _ => match e.kind() {
            std::io::ErrorKind::TimedOut => "timeout".into(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof => {
                "closed".into()
            }
            _ => "io".into(),
        },
    }
}

/// Opens a connection and waits for CONNACK 0; records the time or the error kind.
async fn dial(
    cfg: &LoadConfig,
    addr: SocketAddr,
    index: usize,
    id: &str,
    shared: &Shared,
) -> Option<(Conn, Vec<u8>)> {
    let source = (!cfg.source_ips.is_empty()).then(|| cfg.source_ips[index % cfg.source_ips.len()]);
    let t0 = Instant::now();
    let attempt = async {
        let mut c = Conn::open(&cfg.broker, addr, source)
            .await
            .map_err(|e| kind_of(&e))?;
        let creds = cfg
            .credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()));
        c.send(&wire::connect(id, 60, creds))
            .await
            .map_err(|e| kind_of(&e))?;
        let mut buf = Vec::with_capacity(64);
        loop {
            match wire::next_frame(&buf) {
                Ok(Some((wire::Frame::ConnAck(0), n))) => {
                    buf.drain(..n);
                    return Ok((c, buf));
                }
                Ok(Some((wire::Frame::ConnAck(code), _))) => return Err(format!("connack_{code}")),
                Ok(Some(_)) | Err(_) => return Err("protocol".to_owned()),
                Ok(None) => {}
            }
            match c.recv(&mut buf).await {
                Ok(0) => return Err("closed".to_owned()),
                Ok(_) => {}
                Err(e) => return Err(kind_of(&e)),
            }
        }
    };
    match timeout(Duration::from_secs(10), attempt).await {
        Ok(Ok(ok)) => {
            let us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
            let _ = shared
                .connect_us
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .record(us.max(1));
            shared.connected.fetch_add(1, Ordering::Relaxed);
            Some(ok)
        }
        Ok(Err(kind)) => {
            shared.error(kind);
            None
        }
        Err(_) => {
            shared.error("timeout".to_owned());
            None
        }
    }
}

/// The body a load-test publisher sends: a real `Location` plus `tsu` (microseconds), for
/// sub-millisecond latency; padded with `pad` to `size`.
fn body(id: &str, seq: u64, size: Option<usize>) -> Vec<u8> {
    let ts = now_us();
    let mut s = format!(
        r#"{{"id":"{id}","lat":60.17,"lon":24.94,"heading":0,"speed":0,"accuracy":3,"status":"available","seq":{seq},"ts":{},"tsu":{ts}}}"#,
        ts / 1000
    );
    if let Some(size) = size {
        if size > s.len() + 10 {
            s.pop();
            let pad = size - s.len() - 10;
            s.push_str(r#","pad":""#);
            s.extend(std::iter::repeat_n('x', pad));
            s.push_str(r#""}"#);
        }
    }
    s.into_bytes()
}

#[derive(Deserialize)]
struct Probe {
    seq: u64,
    tsu: u64,
}

/// The publisher index in `drivers/{prefix}{index}/location`.
fn publisher_of(topic: &[u8], prefix: &str) -> Option<u32> {
    let topic = std::str::from_utf8(topic).ok()?;
    let id = topic.strip_prefix("drivers/")?.strip_suffix("/location")?;
    id.strip_prefix(prefix)?.parse().ok()
}

async fn subscriber(
    cfg: Arc<LoadConfig>,
    addr: SocketAddr,
    n: usize,
    shared: Arc<Shared>,
    ready: tokio::sync::oneshot::Sender<Result<(), String>>,
    stop: CancellationToken,
) {
    let id = format!("{}sub-{n}", cfg.id_prefix);
    let Some((mut conn, mut buf)) = dial(&cfg, addr, n, &id, &shared).await else {
        let _ = ready.send(Err("connect failed".into()));
        return;
    };
    let filter = if cfg.shared {
        "$share/loadtest/drivers/+/location"
    } else {
        topic::LOCATION_FILTER
    };
    if conn
        .send(&wire::subscribe(filter, cfg.qos, 1))
        .await
        .is_err()
    {
        let _ = ready.send(Err("subscribe not sent".into()));
        return;
    }
    let tally = Arc::clone(&shared.tallies[n]);
    let mut ready = Some(ready);
    let mut acks = Vec::new();
    loop {
        let mut consumed = 0;
        loop {
            match wire::next_frame(&buf[consumed..]) {
                Ok(Some((frame, len))) => {
                    match frame {
                        wire::Frame::SubAck(code) => {
                            if let Some(r) = ready.take() {
                                let _ = r.send(if code == 0x80 {
                                    Err("SUBACK 0x80".into())
                                } else {
                                    Ok(())
                                });
                            }
                        }
                        wire::Frame::Publish {
                            qos,
                            pkid,
                            topic,
                            payload,
                        } => {
                            if qos > 0 {
                                wire::puback(&mut acks, pkid);
                            }
                            if let (Some(p), Ok(probe)) = (
                                publisher_of(topic, &cfg.id_prefix),
                                serde_json::from_slice::<Probe>(payload),
                            ) {
                                let late = now_us().saturating_sub(probe.tsu);
                                tally
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .record(p, probe.seq, late);
                            }
                        }
                        _ => {}
                    }
                    consumed += len;
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        buf.drain(..consumed);
        if !acks.is_empty() {
            if conn.send(&acks).await.is_err() {
                return;
            }
            acks.clear();
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            r = conn.recv(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
    let _ = conn.send(&wire::DISCONNECT).await;
}

/// Keeps a connection open and quiet until `stop`, answering nothing but pings.
async fn hold(mut conn: Conn, mut buf: Vec<u8>, stop: &CancellationToken) {
    let mut ping = tokio::time::interval(Duration::from_secs(30));
    ping.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ping.tick() => if conn.send(&wire::PINGREQ).await.is_err() { return },
            r = conn.recv(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(_) => buf.clear(),
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn publisher(
    cfg: Arc<LoadConfig>,
    addr: SocketAddr,
    index: usize,
    shared: Arc<Shared>,
    connect_at: Instant,
    first_tick: Instant,
    stop: CancellationToken,
    storm: CancellationToken,
) {
    let id = format!("{}{index:06}", cfg.id_prefix);
    tokio::select! {
        _ = stop.cancelled() => return,
        _ = tokio::time::sleep_until(connect_at) => {}
    }
    let Some((mut conn, mut buf)) = dial(&cfg, addr, index, &id, &shared).await else {
        return;
    };
    match cfg.scenario {
        Scenario::Idle => return hold(conn, buf, &stop).await,
        Scenario::Storm => {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = hold(conn, buf, &storm) => {}
            }
            // Dropped abruptly (no DISCONNECT), as when a network fails.
            if cfg.jitter {
                let window = cfg.connections as f64 / f64::from(cfg.connect_rate.max(1));
                let wait = rand::rng().random_range(0.0..window.max(0.001));
                sleep(Duration::from_secs_f64(wait)).await;
            }
            let Some((conn, buf)) = dial(&cfg, addr, index, &id, &shared).await else {
                return;
            };
            shared.reconnected.fetch_add(1, Ordering::Relaxed);
            *shared
                .last_reconnect
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            return hold(conn, buf, &stop).await;
        }
        Scenario::Fleet | Scenario::Throughput => {}
    }
    let topic = topic::location_topic(&id);
    let mut out = Vec::with_capacity(256);
    let mut seq = 0u64;
    let mut pkid = 0u16;
    if cfg.scenario == Scenario::Throughput {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(first_tick) => {}
        }
        loop {
            out.clear();
            for _ in 0..32 {
                seq += 1;
                wire::publish(&mut out, &topic, &body(&id, seq, cfg.payload_size), 0, 0);
            }
            tokio::select! {
                _ = stop.cancelled() => { seq -= 32; break }
                r = conn.send(&out) => if r.is_err() { shared.error("lost_connection".into()); seq -= 32; break },
            }
            shared.published.fetch_add(32, Ordering::Relaxed);
            buf.clear();
        }
        let _ = seq;
    } else {
        let mut ticker = interval_at(first_tick, cfg.interval.max(Duration::from_millis(1)));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticker.tick() => {
                    seq += 1;
                    out.clear();
                    if cfg.qos > 0 {
                        pkid = pkid % 65_535 + 1;
                    }
                    wire::publish(&mut out, &topic, &body(&id, seq, cfg.payload_size), cfg.qos, pkid);
                    if conn.send(&out).await.is_err() {
                        shared.error("lost_connection".into());
                        return;
                    }
                    shared.published.fetch_add(1, Ordering::Relaxed);
                }
                r = conn.recv(&mut buf) => match r {
                    Ok(0) | Err(_) => { shared.error("lost_connection".into()); return }
                    // PUBACKs and PINGRESPs: nothing to do with them.
                    Ok(_) => buf.clear(),
                }
            }
        }
    }
    let _ = timeout(Duration::from_secs(1), conn.send(&wire::DISCONNECT)).await;
}

/// Runs the load; `progress` is called about every 200 ms.
///
/// # Errors
/// The broker does not resolve, or a subscriber could not subscribe.
pub async fn run(cfg: LoadConfig, mut progress: impl FnMut(Progress)) -> Result<Report, LoadError> {
    let addr = conn::resolve(&cfg.broker)
        .await
        .map_err(LoadError::Resolve)?;
    let (worker, workers) = cfg.worker;
    let subscribers = if worker == 0 { cfg.subscribers } else { 0 };
    let shared = Arc::new(Shared {
        connected: AtomicU64::new(0),
        published: AtomicU64::new(0),
        errors: Mutex::new(BTreeMap::new()),
        connect_us: Mutex::new(new_histogram()),
        tallies: (0..subscribers)
            .map(|_| Arc::new(Mutex::new(Tally::default())))
            .collect(),
        reconnected: AtomicU64::new(0),
        last_reconnect: Mutex::new(None),
    });
    let cfg = Arc::new(cfg);
    let started = Instant::now();
    let own_start = process::own_usage();
    let broker_start = cfg.broker_pid.and_then(process::usage);

    let stop_subs = CancellationToken::new();
    let mut sub_tasks = Vec::new();
    for n in 0..subscribers {
        let (tx, rx) = tokio::sync::oneshot::channel();
        sub_tasks.push(tokio::spawn(subscriber(
            Arc::clone(&cfg),
            addr,
            n,
            Arc::clone(&shared),
            tx,
            stop_subs.clone(),
        )));
        match timeout(Duration::from_secs(15), rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => return Err(LoadError::Subscriber(n, e)),
            _ => return Err(LoadError::Subscriber(n, "no SUBACK".into())),
        }
    }

    let stop = CancellationToken::new();
    let storm = CancellationToken::new();
    // The rate is for the whole run: each of several processes takes its share, and its
    // publishers connect one spacing apart, in order.
    let spacing =
        Duration::from_secs_f64(1.0 / f64::from((cfg.connect_rate / workers.max(1) as u32).max(1)));
    let connect_start = Instant::now();
    // Publishing starts once the last connect is due (so connecting does not compete with
    // the measured load), or 2 s in with several processes (their subscribers may lag).
    let connect_time = Duration::from_secs_f64(
        cfg.connections as f64 / f64::from(cfg.connect_rate.max(1)) / workers as f64,
    );
    let load_start = started
        + connect_time
        + Duration::from_secs(if workers > 1 { 2 } else { 0 })
        + Duration::from_millis(200);
    let mut pubs = Vec::new();
    for (ordinal, index) in (worker..cfg.connections)
        .step_by(workers.max(1))
        .enumerate()
    {
        let phase = cfg.interval.mul_f64((index % 1000) as f64 / 1000.0);
        pubs.push(tokio::spawn(publisher(
            Arc::clone(&cfg),
            addr,
            index,
            Arc::clone(&shared),
            connect_start + spacing.mul_f64(ordinal as f64),
            load_start + phase,
            stop.clone(),
            storm.clone(),
        )));
    }
    let mine = pubs.len() as u64;

    let mut report_tick = tokio::time::interval(Duration::from_millis(200));
    let snapshot = |shared: &Shared| {
        let mut received = 0;
        let mut p99 = 0.0;
        for t in &shared.tallies {
            let t = t.lock().unwrap_or_else(|p| p.into_inner());
            received += t.received;
            if !t.latency_us.is_empty() {
                p99 = f64::max(p99, t.latency_us.value_at_quantile(0.99) as f64 / 1000.0);
            }
        }
        Progress {
            connected: shared.connected.load(Ordering::Relaxed),
            published: shared.published.load(Ordering::Relaxed),
            received,
            p99_ms: p99,
            elapsed_s: started.elapsed().as_secs_f64(),
        }
    };
    // Connect phase: until everyone connected or failed (bounded by the duration as well).
    let hard_end = load_start + cfg.duration + Duration::from_secs(30);
    let mut storm_at = None;
    let mut all_in_at: Option<Instant> = None;
    let load_end = loop {
        report_tick.tick().await;
        progress(snapshot(&shared));
        let done = shared.connected.load(Ordering::Relaxed)
            + shared
                .errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .sum::<u64>();
        let all_in = done >= mine + subscribers as u64;
        if cfg.scenario == Scenario::Storm && all_in && all_in_at.is_none() {
            all_in_at = Some(Instant::now());
        }
        // The storm waits out the broker's per-client-id connect quota (fleetcast's and
        // AWS IoT Core's default: one connect per second), so reconnects measure the
        // broker's recovery, not its quota.
        if all_in_at.is_some_and(|t| t.elapsed() >= STORM_QUOTA_WAIT) && storm_at.is_none() {
            storm.cancel();
            storm_at = Some(Instant::now());
        }
        let now = Instant::now();
        let end = match cfg.scenario {
            // Every connection back (or failed for good).
            Scenario::Storm => storm_at.map(|_| {
                let failed: u64 = shared
                    .errors
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .values()
                    .sum();
                shared.reconnected.load(Ordering::Relaxed) + failed >= mine
            }),
            _ => Some(now >= load_start + cfg.duration),
        };
        if end == Some(true) || now >= hard_end {
            break now;
        }
    };
    stop.cancel();
    for p in pubs {
        let _ = p.await;
    }
    // Let messages still in flight (socket buffers, broker queues) arrive: wait until the
    // subscribers have been quiet for a while, within a bound.
    let drain_started = Instant::now();
    let mut last_count = u64::MAX;
    let mut last_change = Instant::now();
    let mut last_receive = load_end;
    while subscribers > 0 && drain_started.elapsed() < DRAIN_MAX {
        report_tick.tick().await;
        let p = snapshot(&shared);
        progress(p);
        if p.received != last_count {
            last_count = p.received;
            last_change = Instant::now();
            last_receive = last_change;
        } else if last_change.elapsed() >= QUIET {
            break;
        }
    }
    stop_subs.cancel();
    for t in sub_tasks {
        let _ = t.await;
    }

    let load_secs = (load_end - load_start.min(load_end))
        .as_secs_f64()
        .max(1e-9);
    let own_end = process::own_usage();
    let broker_end = cfg.broker_pid.and_then(process::usage);
    let wall = started.elapsed();
    let mut tally = Tally::default();
    for t in &shared.tallies {
        tally.merge(&t.lock().unwrap_or_else(|p| p.into_inner()));
    }
    let published = shared.published.load(Ordering::Relaxed);
    let expected = expected_of(published, subscribers, cfg.shared);
    let connect_us = shared
        .connect_us
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let broker_kib_per_connection = match (cfg.scenario, broker_start, broker_end) {
        (Scenario::Idle, Some(a), Some(b)) if mine > 0 => {
            Some((b.rss_bytes as f64 - a.rss_bytes as f64) / 1024.0 / mine as f64)
        }
        _ => None,
    };
    let connect_errors = shared
        .errors
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let reconnect_all_s = match (
        storm_at,
        *shared
            .last_reconnect
            .lock()
            .unwrap_or_else(|p| p.into_inner()),
    ) {
        (Some(a), Some(b)) => Some((b - a).as_secs_f64()),
        _ => None,
    };
    Ok(Report {
        scenario: cfg.scenario.name().to_owned(),
        broker: cfg.broker.to_string(),
        connections: cfg.connections,
        subscribers: cfg.subscribers,
        shared_subscription: cfg.shared,
        qos: cfg.qos,
        duration_s: load_secs,
        connected: shared.connected.load(Ordering::Relaxed),
        connect_errors,
        connect_ms: Quantiles::of_us(&connect_us),
        published,
        expected,
        received: tally.received,
        lost: expected.saturating_sub(tally.distinct()),
        duplicates: tally.duplicates,
        out_of_order: tally.out_of_order,
        latency_ms: Quantiles::of_us(&tally.latency_us),
        published_per_s: published as f64 / load_secs,
        // Over the time messages kept arriving, which runs past the load when the broker
        // (or its pacing) is slower than the publishers.
        received_per_s: tally.received as f64
            / (last_receive.max(load_end) - load_start.min(load_end))
                .as_secs_f64()
                .max(1e-9),
        reconnect_all_s,
        own_cpu_percent: match (own_start, own_end) {
            (Some(a), Some(b)) => process::cpu_percent(a, b, wall),
            _ => 0.0,
        },
        own_rss_mib: own_end.map_or(0.0, |u| u.rss_bytes as f64 / 1048576.0),
        broker_cpu_percent: match (broker_start, broker_end) {
            (Some(a), Some(b)) => Some(process::cpu_percent(a, b, wall)),
            _ => None,
        },
        broker_rss_mib: broker_end.map(|u| u.rss_bytes as f64 / 1048576.0),
        broker_kib_per_connection,
        latency_us_pairs: to_pairs(&tally.latency_us),
        connect_us_pairs: to_pairs(&connect_us),
    })
}

/// Messages the subscribers should receive: each one gets every message, or the shared
/// group gets each once.
fn expected_of(published: u64, subscribers: usize, shared: bool) -> u64 {
    match (subscribers, shared) {
        (0, _) => 0,
        (_, true) => published,
        (n, false) => published * n as u64,
    }
}

/// Combines the reports of worker processes into one.
pub fn merge(parts: &[Report]) -> Option<Report> {
    let first = parts.first()?;
    let mut out = first.clone();
    let mut latency = new_histogram();
    let mut connect = new_histogram();
    let (mut published, mut connected, mut cpu, mut rss) = (0, 0, 0.0, 0.0);
    let mut errors = BTreeMap::new();
    for p in parts {
        published += p.published;
        connected += p.connected;
        cpu += p.own_cpu_percent;
        rss += p.own_rss_mib;
        add_pairs(&mut latency, &p.latency_us_pairs);
        add_pairs(&mut connect, &p.connect_us_pairs);
        for (k, v) in &p.connect_errors {
            *errors.entry(k.clone()).or_insert(0) += v;
        }
        out.duration_s = out.duration_s.max(p.duration_s);
    }
    // Subscribers ran in the first worker only; expectations follow the total published.
    out.expected = expected_of(published, first.subscribers, first.shared_subscription);
    out.published = published;
    out.connected = connected;
    out.connect_errors = errors;
    out.lost = out.expected.saturating_sub(out.received - out.duplicates);
    out.latency_ms = Quantiles::of_us(&latency);
    out.connect_ms = Quantiles::of_us(&connect);
    out.published_per_s = published as f64 / out.duration_s.max(1e-9);
    out.own_cpu_percent = cpu;
    out.own_rss_mib = rss;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_parse_and_pad() {
        let b = body("lt-000001", 7, Some(300));
        assert!(b.len() >= 300 && b.len() < 320, "{}", b.len());
        let p: Probe = serde_json::from_slice(&b).expect("json");
        assert_eq!(p.seq, 7);
        let loc: fleetcast_proto::Location = serde_json::from_slice(&b).expect("a real Location");
        assert_eq!(loc.id, "lt-000001");
        assert_eq!(publisher_of(b"drivers/lt-000042/location", "lt-"), Some(42));
        assert_eq!(publisher_of(b"drivers/drv-000042/location", "lt-"), None);
    }
}
