//! `fleetcast loadtest`: the flags, a live progress line, and the table and JSON file at
//! the end; running the load, and spreading it over `--procs` worker processes, is
//! `fleetcast_loadtest`'s.

use super::progress;
use anyhow::{Context, Result};
use clap::Args;
use fleetcast_loadtest::workers::{self, Workers};
use fleetcast_loadtest::{LoadConfig, Report, Scenario, Target};
use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Args, Clone)]
pub(super) struct LoadtestArgs {
    /// fleet (drivers at an interval + subscribers), throughput (as fast as the broker
    /// takes, QoS 0), idle (hold connections), storm (drop all, reconnect).
    #[arg(long, default_value = "fleet")]
    scenario: Scenario,
    /// Broker URL: mqtt://HOST:PORT or ws://HOST:PORT/mqtt. Several, comma-separated (a
    /// cluster's nodes): publishers and subscribers are each spread over them in turn.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883", value_delimiter = ',')]
    broker: Vec<Target>,
    /// Publishers (fleet, throughput) or connections (idle, storm).
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Connects per second.
    #[arg(long, default_value_t = 1000)]
    connect_rate: u32,
    /// Fleet: time between two publishes of one connection (0 = idle connections).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Pad each payload (a real location JSON) to at least this many bytes.
    #[arg(long)]
    payload_size: Option<usize>,
    /// QoS of publishes and subscriptions (0 or 1; throughput publishes at 0).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
    /// Subscribers to drivers/+/location (probes that measure loss and latency).
    #[arg(long, default_value_t = 1)]
    subscribers: usize,
    /// Subscribe as one shared group ($share/loadtest/drivers/+/location).
    #[arg(long)]
    shared: bool,
    /// Length of the load phase (after connecting).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Keep-alive asked for in every CONNECT; a connection with nothing to send for half
    /// of it sends a PINGREQ (a broker closes one silent for 1.5 times it).
    #[arg(long, default_value = "60s", value_parser = keep_alive)]
    keep_alive: Duration,
    /// Source addresses, e.g. 127.0.0.1-127.0.0.50 (past 64k ports on loopback).
    #[arg(long, value_name = "FIRST-LAST")]
    source_ips: Option<String>,
    /// Write the report as JSON to this file.
    #[arg(long, value_name = "FILE.json")]
    report: Option<PathBuf>,
    /// Write the report as a self-contained HTML page (charts over time) to this file.
    #[arg(long, value_name = "FILE.html")]
    html: Option<PathBuf>,
    /// A local broker's pid: report its CPU and memory (idle: memory per connection).
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Storm: spread reconnects randomly over connections / connect-rate seconds.
    #[arg(long)]
    jitter: bool,
    /// Fleet: publish retained (as drivers publish their position), e.g. to measure what
    /// `serve --data` costs.
    #[arg(long)]
    retain: bool,
    /// Worker processes to spread connections over (each has its own open-files limit).
    #[arg(long, default_value_t = 1)]
    procs: usize,
    /// MQTT username.
    #[arg(long)]
    username: Option<String>,
    /// MQTT password.
    #[arg(long)]
    password: Option<String>,
    /// Internal: run as worker INDEX of --procs, printing a JSON report.
    #[arg(long, hide = true)]
    worker: Option<usize>,
}

/// Runs the load test: in this process, over worker processes, or as one of them.
pub(super) async fn loadtest(args: LoadtestArgs) -> Result<()> {
    let procs = args.procs.max(1);
    let config = load_config(&args, procs)?;
    warn_if_over_fd_limit(&args, procs);
    if args.worker.is_some() {
        // A worker: its report goes to the parent on stdout, as JSON.
        let report = fleetcast_loadtest::run(config, |_| {}).await?;
        println!("{}", workers::encode(&report)?);
        return Ok(());
    }
    let report = if procs > 1 {
        in_workers(procs).await?
    } else {
        with_progress_line(config).await?
    };
    print!("{report}");
    write_html(args.html.as_deref(), &report, &parameters(&args, procs))?;
    write_report(args.report.as_deref(), report)
}

/// The run the flags describe (this process's share of it with `--worker`).
fn load_config(args: &LoadtestArgs, procs: usize) -> Result<LoadConfig> {
    let (broker, more) = args.broker.split_first().context("--broker needs a URL")?;
    // A driver publishing less often than its keep-alive would be closed by the broker.
    anyhow::ensure!(
        args.scenario != Scenario::Fleet || args.interval < args.keep_alive,
        "--interval {} is not shorter than --keep-alive {}: raise --keep-alive",
        humantime::format_duration(args.interval),
        humantime::format_duration(args.keep_alive)
    );
    // A fleet that never publishes is idle connections, and reported as such.
    let scenario = if args.interval.is_zero() && args.scenario == Scenario::Fleet {
        Scenario::Idle
    } else {
        args.scenario
    };
    Ok(LoadConfig {
        scenario,
        broker: broker.clone(),
        more_brokers: more.to_vec(),
        connections: args.connections,
        connect_rate: args.connect_rate,
        interval: args.interval,
        payload_size: args.payload_size,
        qos: args.qos,
        subscribers: args.subscribers,
        shared: args.shared,
        duration: args.duration,
        keep_alive: args.keep_alive,
        source_ips: args
            .source_ips
            .as_deref()
            .map(source_ips)
            .transpose()?
            .unwrap_or_default(),
        broker_pid: args.broker_pid,
        jitter: args.jitter,
        retain: args.retain,
        id_prefix: "lt-".to_owned(),
        worker: (args.worker.unwrap_or(0), procs),
        credentials: args
            .username
            .clone()
            .map(|u| (u, args.password.clone().unwrap_or_default())),
    })
}

/// `--keep-alive`: whole seconds from 1 s to 65,535 s (a CONNECT holds a 16-bit count of
/// seconds; 0 would turn the broker's check off, which a load test must not do unasked).
fn keep_alive(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d.subsec_nanos() != 0 || !(1..=u64::from(u16::MAX)).contains(&d.as_secs()) {
        return Err("whole seconds from 1s to 65535s".to_owned());
    }
    Ok(d)
}

/// `--source-ips FIRST-LAST` (IPv4, at most 65,536).
fn source_ips(spec: &str) -> Result<Vec<IpAddr>> {
    let (a, b) = spec.split_once('-').unwrap_or((spec, spec));
    let a: Ipv4Addr = a.trim().parse().context("--source-ips: first address")?;
    let b: Ipv4Addr = b.trim().parse().context("--source-ips: last address")?;
    let (a, b) = (u32::from(a), u32::from(b));
    anyhow::ensure!(
        a <= b && b - a < 65_536,
        "--source-ips: FIRST-LAST, at most 65,536 addresses"
    );
    Ok((a..=b).map(|n| Ipv4Addr::from(n).into()).collect())
}

/// Says (without stopping) when one process would need more descriptors than it may open.
fn warn_if_over_fd_limit(args: &LoadtestArgs, procs: usize) {
    let limit = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft);
    let need = (args.connections / procs + args.subscribers + 64) as u64;
    if need > limit {
        eprintln!(
            "loadtest: {} connections in one process need about {need} descriptors, over this machine's open-files limit of {limit}: use --procs {} (or more)",
            args.connections / procs,
            (args.connections as u64).div_ceil(limit.saturating_sub(100).max(1))
        );
    }
}

/// Runs `procs` copies of this command as workers and merges their reports.
async fn in_workers(procs: usize) -> Result<Report> {
    let exe = std::env::current_exe().context("finding this program")?;
    // Same arguments, one worker each; the parent alone writes --report and --html.
    let mut passed: Vec<OsString> = std::env::args_os().skip(1).collect();
    for flag in ["--report", "--html"] {
        strip_flag(&mut passed, flag);
    }
    let workers = Workers::spawn(&exe, &passed, procs)?;
    eprintln!("loadtest: {procs} worker processes running");
    Ok(workers.report().await?)
}

/// Removes `flag VALUE` and `flag=VALUE` from `args`.
fn strip_flag(args: &mut Vec<OsString>, flag: &str) {
    let with_value = format!("{flag}=");
    if let Some(i) = args.iter().position(|a| a == flag) {
        args.drain(i..(i + 2).min(args.len()));
    }
    args.retain(|a| !a.to_string_lossy().starts_with(&with_value));
}

/// Runs in this process with a live progress display (phase, counts, rates, p99).
async fn with_progress_line(config: LoadConfig) -> Result<Report> {
    let mut display = progress::Display::new();
    let report = fleetcast_loadtest::run(config, |p| display.update(p)).await?;
    display.finish();
    Ok(report)
}

/// Writes `--report FILE`: the figures as JSON, without the raw histograms (those are for
/// merging workers).
fn write_report(path: Option<&Path>, report: Report) -> Result<()> {
    let Some(path) = path else {
        return Ok(());
    };
    let report = Report {
        latency_us_pairs: Vec::new(),
        connect_us_pairs: Vec::new(),
        ..report
    };
    std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

/// The run's settings as the HTML report lists them: every flag with its value.
fn parameters(args: &LoadtestArgs, procs: usize) -> Vec<(&'static str, String)> {
    let or_none = |v: Option<String>| v.unwrap_or_else(|| "none".to_owned());
    vec![
        ("--scenario", args.scenario.name().to_owned()),
        ("--broker", brokers(&args.broker)),
        ("--connections", args.connections.to_string()),
        ("--connect-rate", format!("{}/s", args.connect_rate)),
        (
            "--interval",
            humantime::format_duration(args.interval).to_string(),
        ),
        (
            "--payload-size",
            args.payload_size.map_or_else(
                || "real location JSON".to_owned(),
                |n| format!("at least {n} bytes"),
            ),
        ),
        ("--qos", args.qos.to_string()),
        ("--subscribers", args.subscribers.to_string()),
        ("--shared", args.shared.to_string()),
        (
            "--duration",
            humantime::format_duration(args.duration).to_string(),
        ),
        (
            "--keep-alive",
            humantime::format_duration(args.keep_alive).to_string(),
        ),
        ("--procs", procs.to_string()),
        ("--source-ips", or_none(args.source_ips.clone())),
        (
            "--broker-pid",
            or_none(args.broker_pid.map(|p| p.to_string())),
        ),
        ("--jitter", args.jitter.to_string()),
        ("--retain", args.retain.to_string()),
        ("--username", or_none(args.username.clone())),
    ]
}

/// Writes `--html FILE`: the report as a self-contained page with charts over time.
fn write_html(path: Option<&Path>, report: &Report, parameters: &[(&str, String)]) -> Result<()> {
    let Some(path) = path else {
        return Ok(());
    };
    let page = fleetcast_loadtest::html::render(report, parameters);
    std::fs::write(path, page).with_context(|| format!("writing {}", path.display()))
}

/// The `--broker` URLs as given.
fn brokers(targets: &[Target]) -> String {
    let urls: Vec<String> = targets.iter().map(ToString::to_string).collect();
    urls.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_get_neither_output_file() {
        let mut args: Vec<OsString> = [
            "--report",
            "r.json",
            "--procs",
            "2",
            "--html=r.html",
            "--duration",
            "1s",
        ]
        .map(OsString::from)
        .into();
        strip_flag(&mut args, "--report");
        strip_flag(&mut args, "--html");
        assert_eq!(
            args,
            ["--procs", "2", "--duration", "1s"].map(OsString::from)
        );
    }

    #[test]
    fn a_keep_alive_is_whole_seconds_a_connect_can_hold() {
        assert_eq!(keep_alive("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(keep_alive("65535s"), Ok(Duration::from_secs(65_535)));
        for bad in ["0s", "1500ms", "65536s", "soon"] {
            assert!(keep_alive(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_fleet_interval_must_be_shorter_than_the_keep_alive() {
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            args: LoadtestArgs,
        }
        let args = |extra: &[&str]| {
            let mut argv = vec!["loadtest", "--broker", "mqtt://127.0.0.1:1883"];
            argv.extend_from_slice(extra);
            <Flags as clap::Parser>::try_parse_from(argv)
                .expect("flags")
                .args
        };
        assert!(load_config(&args(&["--interval", "59s"]), 1).is_ok());
        let err = load_config(&args(&["--interval", "60s"]), 1).expect_err("as long");
        assert!(err.to_string().contains("raise --keep-alive"), "{err}");
        assert!(load_config(&args(&["--interval", "90s", "--keep-alive", "120s"]), 1).is_ok());
        // Throughput ignores the interval.
        assert!(load_config(&args(&["--scenario", "throughput", "--interval", "2m"]), 1).is_ok());
    }
}
