//! `fleetcast simulate`: a driver fleet against any MQTT broker, with a summary line every
//! `--report-every` (and optionally its counters on `/metrics`) until `--duration` or a
//! signal, then a last line with the totals.

use super::common::{say, wait_for_signal, ClientTlsArgs};
use anyhow::{Context, Result};
use clap::Args;
use fleetcast::stack;
use fleetcast_proto::process::{self, Usage};
use fleetcast_simulator::endpoint::Endpoint;
use fleetcast_simulator::failure::Failures;
use fleetcast_simulator::fleet::{Fleet, FleetConfig, FleetSnapshot, FleetStats};
use fleetcast_simulator::road_graph::RoadGraph;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Args)]
pub(super) struct SimulateArgs {
    /// Broker URL: mqtt://HOST:PORT, mqtts://HOST:PORT (TLS, with --ca),
    /// ws://HOST:PORT/mqtt or wss://HOST:PORT/mqtt. Several, comma-separated (the nodes of
    /// a cluster): drivers are spread over them, and one that loses its connection tries
    /// the next.
    #[arg(
        long,
        default_value = "mqtt://127.0.0.1:1883",
        value_delimiter = ',',
        required = true
    )]
    broker: Vec<Endpoint>,
    /// Number of drivers (one MQTT connection each).
    #[arg(long, default_value_t = 100)]
    drivers: usize,
    /// Time between two positions of one driver (e.g. 1s, 500ms).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Stop after this long (e.g. 30s, 5m); without it, run until Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Seed for every random choice: the same seed replays the same fleet.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// GPS noise scale in metres, reported as `accuracy`.
    #[arg(long, default_value_t = 3.0)]
    noise: f64,
    /// Connects per second over the whole fleet (first connects and reconnects).
    #[arg(long, default_value_t = 500)]
    connect_rate: u32,
    /// OpenStreetMap extract (.osm.pbf) to drive on; default: central Helsinki (embedded).
    #[arg(long, value_name = "FILE.osm.pbf")]
    map: Option<PathBuf>,
    /// Driver id prefix; ids are PREFIX000001, PREFIX000002, ...
    #[arg(long, default_value = "drv-")]
    id_prefix: String,
    /// MQTT username; {id} is replaced by each driver's id.
    #[arg(long)]
    username: Option<String>,
    /// MQTT password; {id} is replaced by each driver's id.
    #[arg(long)]
    password: Option<String>,
    /// Time between two summary lines.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    report_every: Duration,
    /// Serve the fleet's own counters at http://ADDR/metrics (Prometheus format).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    #[command(flatten)]
    tls: ClientTlsArgs,
}

/// Runs the fleet on one thread: drivers are I/O-bound and cross-thread wake-ups cost more
/// than they give (measured with bench/simulator.sh).
pub(super) fn run(args: SimulateArgs) -> Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(simulate(args))
}

async fn simulate(args: SimulateArgs) -> Result<()> {
    let graph = match &args.map {
        Some(path) => RoadGraph::from_file(path)?,
        None => RoadGraph::helsinki()?,
    };
    let graph = Arc::new(graph);
    let config = fleet_config(&args)?;
    say(&format!(
        "simulate: broker={} drivers={} interval={} map nodes={} roads={}",
        brokers(&args),
        args.drivers,
        humantime::format_duration(args.interval),
        graph.node_count(),
        graph.edge_count()
    ))?;

    let started = Instant::now();
    let usage_at_start = process::own_usage();
    let fleet = Fleet::start(config, graph);
    let stats = Arc::clone(fleet.stats());
    let metrics = match args.metrics {
        Some(addr) => Some(serve_metrics(addr, Arc::clone(&stats)).await?),
        None => None,
    };
    let first = Window {
        at: started,
        snap: FleetSnapshot::default(),
        usage: usage_at_start,
    };
    report_until_done(&args, &stats, first).await?;
    let elapsed = started.elapsed();
    let usage_at_end = process::own_usage();
    let fleet_failures = Arc::clone(fleet.stats());
    let last = fleet.stop().await;
    let failures = fleet_failures.failures.summary();
    if let Some((stop, task)) = metrics {
        stop.cancel();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), task).await;
    }
    say(&format!(
        "simulate done: drivers={} published={} reconnects={} skipped={} dropped={} elapsed={:.1}s {}{}",
        args.drivers,
        last.published,
        last.reconnects,
        last.skipped_offline,
        last.dropped,
        elapsed.as_secs_f64(),
        usage_fields(usage_at_start, usage_at_end, elapsed),
        failures_field(&fleet_failures.failures),
    ))?;
    // Like mosquitto_sub refused, a fleet that never got in is a failed run.
    anyhow::ensure!(
        last.connects > 0 || args.drivers == 0,
        "no driver could connect to {} ({})",
        brokers(&args),
        if failures.is_empty() {
            "no answer before the end of the run".to_owned()
        } else {
            failures
        }
    );
    Ok(())
}

/// ` failures: not_authorized=200 ...` when connections failed, else nothing.
fn failures_field(failures: &Failures) -> String {
    let summary = failures.summary();
    if summary.is_empty() {
        summary
    } else {
        format!(" failures: {summary}")
    }
}

/// The fleet the flags describe.
fn fleet_config(args: &SimulateArgs) -> Result<FleetConfig> {
    let (first, more) = args.broker.split_first().context("--broker needs a URL")?;
    let mut config = FleetConfig::new(first.clone(), args.drivers);
    config.more_brokers = more.to_vec();
    config.interval = args.interval;
    config.seed = args.seed;
    config.noise_m = args.noise;
    config.connect_rate = args.connect_rate;
    config.id_prefix = args.id_prefix.clone();
    config.username = args.username.clone();
    config.password = args.password.clone();
    config.tls = args.tls.for_endpoint(first)?;
    Ok(config)
}

/// The `--broker` URLs as given.
fn brokers(args: &SimulateArgs) -> String {
    let urls: Vec<String> = args.broker.iter().map(ToString::to_string).collect();
    urls.join(",")
}

/// Serves the fleet's counters at http://ADDR/metrics, in the background until the token
/// is cancelled; the task is returned so the command waits for it.
async fn serve_metrics(
    addr: SocketAddr,
    stats: Arc<FleetStats>,
) -> Result<(CancellationToken, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for metrics on {addr}"))?;
    say(&format!(
        "simulate: metrics at http://{}/metrics",
        listener.local_addr()?
    ))?;
    let app = stack::fleet_metrics_route(stats)?;
    let stop = CancellationToken::new();
    let done = stop.clone();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(done.cancelled_owned());
        if let Err(e) = served.await {
            tracing::warn!(error = %e, "metrics listener failed");
        }
    });
    Ok((stop, task))
}

/// The start of one summary line's window.
struct Window {
    at: Instant,
    snap: FleetSnapshot,
    usage: Option<Usage>,
}

/// A summary line every `--report-every` until `--duration` is over or a signal comes.
async fn report_until_done(args: &SimulateArgs, stats: &FleetStats, first: Window) -> Result<()> {
    let started = first.at;
    let deadline = args.duration.map(|d| started + d);
    let mut ticker = tokio::time::interval_at(started + args.report_every, args.report_every);
    let mut previous = first;
    let signal = wait_for_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            r = &mut signal => return r,
            _ = sleep_until_opt(deadline) => return Ok(()),
            _ = ticker.tick() => {
                let now = Window {
                    at: Instant::now(),
                    snap: stats.snapshot(),
                    usage: process::own_usage(),
                };
                say(&summary_line(args, started, &previous, &now, &stats.failures))?;
                previous = now;
            }
        }
    }
}

/// `simulate: t=... connected=... published/s=...` over the window from `previous` to `now`.
fn summary_line(
    args: &SimulateArgs,
    started: Instant,
    previous: &Window,
    now: &Window,
    failures: &Failures,
) -> String {
    let window = now.at - previous.at;
    let rate = (now.snap.published - previous.snap.published) as f64 / window.as_secs_f64();
    format!(
        "simulate: t={:.0}s connected={}/{} published/s={rate:.1} reconnects={} skipped={} dropped={} {}{}",
        (now.at - started).as_secs_f64(),
        now.snap.connected,
        args.drivers,
        now.snap.reconnects,
        now.snap.skipped_offline,
        now.snap.dropped,
        usage_fields(previous.usage, now.usage, window),
        failures_field(failures),
    )
}

/// `cpu=P% rss=NMiB`: this process's CPU over `window` (percent of one core) and its RSS.
fn usage_fields(before: Option<Usage>, after: Option<Usage>, window: Duration) -> String {
    match (before, after) {
        (Some(a), Some(b)) => format!(
            "cpu={:.1}% rss={:.1}MiB",
            process::cpu_percent(a, b, window),
            b.rss_bytes as f64 / (1024.0 * 1024.0)
        ),
        _ => "cpu=n/a rss=n/a".to_owned(),
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
