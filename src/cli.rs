//! Command-line flags (clap derive) and what each subcommand runs.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use fleetcast::feed::FeedConfig;
use fleetcast::stack::{self, Metering, Stack};
use fleetcast::standalone::Standalone;
use fleetcast_broker::{Config, Listeners, DEFAULT_CONFIG};
use fleetcast_dashboard::service::DashboardOptions;
use fleetcast_loadtest::{LoadConfig, Scenario, Target};
use fleetcast_proto::process;
use fleetcast_simulator::endpoint::{ClientTls, Endpoint};
use fleetcast_simulator::fleet::{Fleet, FleetConfig, FleetSnapshot};
use fleetcast_simulator::road_graph::RoadGraph;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Log filter when `FLEETCAST_LOG` is not set. rumqttd logs routine events (a duplicate
/// client id, a link's end) at ERROR; the gateway logs those events itself, at their real
/// level, so rumqttd's own lines are off unless asked for (`FLEETCAST_LOG=rumqttd=debug`).
pub const DEFAULT_LOG: &str = "info,rumqttd=off";

/// fleetcast: self-hosted live location streaming over MQTT.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker: MQTT, MQTT over WebSocket and HTTP listeners.
    Serve(ServeArgs),
    /// Run the broker and a demo fleet driving around central Helsinki.
    Demo(DemoArgs),
    /// Run a driver fleet against any MQTT broker.
    Simulate(SimulateArgs),
    /// Run the live map and its WebSocket bridge against any MQTT broker.
    Dashboard(DashboardArgs),
    /// Load-test any MQTT broker with many simulated connections.
    Loadtest(LoadtestArgs),
    /// Print the default configuration file (copy it, edit it, pass it with --config).
    Config,
    /// Make a development CA, a server certificate and client certificates (PEM) for TLS.
    Certs(CertsArgs),
    /// Mint a signed, expiring token for the live map's WebSocket when auth is on.
    Token(TokenArgs),
    /// Hash a password for a credentials file (argon2id); reads it from stdin if not given.
    Passwd {
        /// The password (prefer stdin: arguments show in `ps`).
        password: Option<String>,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// MQTT over TCP listen address (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:1883")]
    mqtt: SocketAddr,
    /// MQTT over WebSocket listen address; clients connect to ws://ADDR/mqtt.
    #[arg(long, default_value = "127.0.0.1:8083")]
    ws: SocketAddr,
    /// HTTP listen address: the live map (/), its bridge (/ws), /healthz, /readyz.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// Configuration file (TOML); `fleetcast config` prints the defaults. The address
    /// flags above override its [listen] section.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    map: MapArgs,
    /// Keep no meters and serve no /metrics (only to measure what metrics cost).
    #[arg(long)]
    no_metrics: bool,
    /// Credentials file (TOML): accounts, argon2 password hashes, roles and topic policy;
    /// see examples/credentials.toml. Without it every client is anonymous and may use
    /// every topic, which `serve` allows only on loopback addresses.
    #[arg(long, value_name = "FILE")]
    auth: Option<PathBuf>,
    /// Serve anonymous clients on non-loopback addresses too (not recommended).
    #[arg(long)]
    allow_anonymous: bool,
    #[command(flatten)]
    tls: TlsArgs,
}

#[derive(Debug, Args)]
struct TlsArgs {
    /// MQTT over TLS listen address, served when --tls-cert and --tls-key are given.
    #[arg(long, default_value = "127.0.0.1:8883")]
    mqtts: SocketAddr,
    /// Server certificate chain (PEM). With --tls-key: MQTT over TLS on --mqtts, and
    /// wss:// and https:// on --ws and --http. `fleetcast certs --out DIR` makes a
    /// development set (DIR/server.pem, DIR/server.key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA (PEM) whose client certificates log MQTT-over-TLS clients in: the certificate's
    /// common name must be the client id and names the account (no password).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// With --tls-client-ca: MQTT over TLS takes only clients with such a certificate.
    #[arg(long, requires = "tls_client_ca")]
    tls_require_client_cert: bool,
}

#[derive(Debug, Args)]
struct TokenArgs {
    /// Credentials file with a token_secret (the one `serve --auth` uses).
    #[arg(long, value_name = "FILE")]
    auth: PathBuf,
    /// Account the token stands for; its subscribe grants decide what the map shows.
    #[arg(long)]
    account: String,
    /// How long the token is valid (e.g. 30m, 8h, 7d).
    #[arg(long, default_value = "12h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Map address to print a ready-to-open link for (on stderr).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
}

#[derive(Debug, Args)]
struct CertsArgs {
    /// Directory to write ca.pem, ca.key, server.pem, server.key (and NAME.pem/NAME.key
    /// per --client) into; an existing ca.pem/ca.key there signs the new certificates.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Host names and IP addresses the server certificate is valid for (repeat the flag).
    #[arg(long = "host", value_name = "NAME", default_values = ["localhost", "127.0.0.1", "::1"])]
    hosts: Vec<String>,
    /// Make a client certificate whose common name is this client id (repeat the flag).
    #[arg(long = "client", value_name = "CLIENT_ID")]
    clients: Vec<String>,
    /// Days the certificates are valid (the CA twice as long).
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(i64).range(1..=3650))]
    days: i64,
}

#[derive(Debug, Args)]
struct ClientTlsArgs {
    /// CA certificate (PEM) to trust for mqtts:// and wss:// brokers, e.g. DIR/ca.pem from
    /// `fleetcast certs`; default: the system's roots.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Client certificate (PEM) to present, with --key (client-certificate login).
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
}

impl ClientTlsArgs {
    /// The TLS settings, when the broker URL asks for TLS.
    fn for_endpoint(&self, endpoint: &Endpoint) -> Result<Option<ClientTls>> {
        if !endpoint.is_tls() {
            anyhow::ensure!(
                self.ca.is_none() && self.cert.is_none(),
                "--ca/--cert are for mqtts:// and wss:// brokers; {endpoint} is not TLS"
            );
            return Ok(None);
        }
        let client = self.cert.as_deref().zip(self.key.as_deref());
        Ok(Some(ClientTls::new(self.ca.as_deref(), client)?))
    }
}

#[derive(Debug, Args)]
struct MapArgs {
    /// OpenStreetMap extract (.osm.pbf) for the map (and the demo fleet); default: central
    /// Helsinki (embedded).
    #[arg(long, value_name = "FILE.osm.pbf")]
    map: Option<PathBuf>,
    /// Online tile URL template, e.g. https://tile.example/{z}/{x}/{y}.png; without it the
    /// page uses only its embedded basemap and never leaves this server.
    #[arg(long, value_name = "URL")]
    tiles: Option<String>,
}

#[derive(Debug, Args, Clone)]
struct LoadtestArgs {
    /// fleet (drivers at an interval + subscribers), throughput (as fast as the broker
    /// takes, QoS 0), idle (hold connections), storm (drop all, reconnect).
    #[arg(long, default_value = "fleet")]
    scenario: Scenario,
    /// Broker URL: mqtt://HOST:PORT or ws://HOST:PORT/mqtt.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    broker: Endpoint,
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
    /// Source addresses, e.g. 127.0.0.1-127.0.0.50 (past 64k ports on loopback).
    #[arg(long, value_name = "FIRST-LAST")]
    source_ips: Option<String>,
    /// Write the report as JSON to this file.
    #[arg(long, value_name = "FILE.json")]
    report: Option<PathBuf>,
    /// A local broker's pid: report its CPU and memory (idle: memory per connection).
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Storm: spread reconnects randomly over connections / connect-rate seconds.
    #[arg(long)]
    jitter: bool,
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

#[derive(Debug, Args)]
struct DashboardArgs {
    /// Broker URL to read positions from: mqtt://HOST:PORT or ws://HOST:PORT/mqtt.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    broker: Endpoint,
    /// HTTP listen address: the live map (/), its bridge (/ws), /healthz.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// MQTT client id of the bridge.
    #[arg(long, default_value = "fleetcast-dashboard")]
    client_id: String,
    /// MQTT username.
    #[arg(long)]
    username: Option<String>,
    /// MQTT password.
    #[arg(long)]
    password: Option<String>,
    /// Credentials file whose token_secret and accounts guard /ws: browsers then need a
    /// token from `fleetcast token` and see what its account may subscribe to.
    #[arg(long, value_name = "FILE")]
    auth: Option<PathBuf>,
    #[command(flatten)]
    tls: ClientTlsArgs,
    #[command(flatten)]
    map: MapArgs,
}

#[derive(Debug, Args)]
struct DemoArgs {
    #[command(flatten)]
    serve: ServeArgs,
    /// Drivers in the demo fleet.
    #[arg(long, default_value_t = 200)]
    drivers: usize,
    /// Seed for the fleet's random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// MQTT username of the demo fleet (needed with --auth, e.g. `fleet` in
    /// examples/credentials.toml); {id} is replaced by each driver's id.
    #[arg(long)]
    fleet_username: Option<String>,
    /// MQTT password of the demo fleet; {id} is replaced by each driver's id.
    #[arg(long)]
    fleet_password: Option<String>,
}

#[derive(Debug, Args)]
struct SimulateArgs {
    /// Broker URL: mqtt://HOST:PORT or ws://HOST:PORT/mqtt.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    broker: Endpoint,
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

/// Runs the parsed command.
///
/// # Errors
/// Whatever stopped the command, with context for the user.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => runtime()?.block_on(serve(args, None)),
        Command::Demo(args) => {
            let fleet = DemoFleet {
                drivers: args.drivers,
                seed: args.seed,
                username: args.fleet_username,
                password: args.fleet_password,
            };
            runtime()?.block_on(serve(args.serve, Some(fleet)))
        }
        // One thread: drivers are I/O-bound and cross-thread wake-ups cost more than
        // they give (measured with bench/simulator.sh).
        Command::Dashboard(args) => runtime()?.block_on(dashboard(args)),
        Command::Loadtest(args) => runtime()?.block_on(loadtest(args)),
        Command::Simulate(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the tokio runtime")?
            .block_on(simulate(args)),
        Command::Config => {
            print!("{DEFAULT_CONFIG}");
            Ok(())
        }
        Command::Token(args) => {
            let auth = fleetcast_broker::auth::Auth::from_file(&args.auth)?;
            let token = auth.mint_token(
                &args.account,
                fleetcast_proto::time::unix_now(),
                args.ttl.as_secs().max(1),
            )?;
            println!("{token}");
            eprintln!(
                "open {}/?token={token} (valid for {})",
                args.url.trim_end_matches('/'),
                humantime::format_duration(args.ttl)
            );
            Ok(())
        }
        Command::Certs(args) => {
            let written = fleetcast::certs::make(&fleetcast::certs::CertsRequest {
                out: args.out,
                hosts: args.hosts,
                clients: args.clients,
                days: args.days,
            })?;
            for path in written {
                println!("wrote {}", path.display());
            }
            Ok(())
        }
        Command::Passwd { password } => {
            let password = match password {
                Some(p) => p,
                None => {
                    let mut line = String::new();
                    std::io::stdin()
                        .read_line(&mut line)
                        .context("reading the password")?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            anyhow::ensure!(!password.is_empty(), "empty password");
            println!("{}", fleetcast_broker::auth::hash_password(&password)?);
            Ok(())
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("starting the tokio runtime")
}

struct DemoFleet {
    drivers: usize,
    seed: u64,
    username: Option<String>,
    password: Option<String>,
}

async fn serve(args: ServeArgs, demo: Option<DemoFleet>) -> Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)
            .with_context(|| format!("reading configuration {}", path.display()))?,
        None => Config::default(),
    };
    config.listen.mqtt = args.mqtt;
    config.listen.ws = args.ws;
    config.listen.http = args.http;
    config.listen.mqtts = args.tls.mqtts;
    if let (Some(cert), Some(key)) = (&args.tls.tls_cert, &args.tls.tls_key) {
        config.tls.cert = cert.display().to_string();
        config.tls.key = key.display().to_string();
    }
    if let Some(ca) = &args.tls.tls_client_ca {
        config.tls.client_ca = ca.display().to_string();
    }
    if args.tls.tls_require_client_cert {
        config.tls.require_client_cert = true;
    }
    config.validate()?;

    let pbf = map_bytes(&args.map)?;
    let listeners = Listeners::bind(&config).await?;
    let dashboard = DashboardOptions {
        tiles: args.map.tiles.clone(),
        ..DashboardOptions::new(stack::city_basemap(&pbf).context("building the basemap")?)
    };
    let metering = if args.no_metrics {
        Metering::Off
    } else {
        Metering::On
    };
    let auth = match &args.auth {
        Some(path) => Some(Arc::new(fleetcast_broker::auth::Auth::from_file(path)?)),
        None => None,
    };
    if auth.as_ref().is_some_and(|a| !a.has_token_secret()) {
        tracing::warn!(
            "the credentials file has no token_secret: the map's /ws refuses every browser"
        );
    }
    if auth.is_none() && !args.allow_anonymous {
        let addrs = listeners.addrs();
        let listening = [
            ("--mqtt", Some(addrs.mqtt)),
            ("--ws", Some(addrs.ws)),
            ("--http", Some(addrs.http)),
            ("--mqtts", addrs.mqtts),
        ];
        for (what, addr) in listening.into_iter().filter_map(|(w, a)| a.map(|a| (w, a))) {
            anyhow::ensure!(
                addr.ip().is_loopback(),
                "refusing to serve anonymous clients on {addr} ({what} is not a loopback address): \
                 pass --auth FILE (see examples/credentials.toml) or --allow-anonymous"
            );
        }
    }
    let stack = Stack::start(listeners, config, dashboard, metering, auth).await?;
    let addrs = stack.addrs();
    say(&format!("fleetcast ready {addrs}"))?;

    let needs_token = args.auth.is_some();
    let fleet = match demo {
        Some(demo) => {
            let graph = Arc::new(RoadGraph::from_pbf(&pbf).context("loading the demo map")?);
            // Connect to our own listener, on loopback when it is bound to every address.
            let mut target = addrs.mqtt;
            if target.ip().is_unspecified() {
                target.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            let mut fleet_config = FleetConfig::new(
                format!("mqtt://{target}")
                    .parse()
                    .context("demo broker URL")?,
                demo.drivers,
            );
            fleet_config.seed = demo.seed;
            fleet_config.username = demo.username;
            fleet_config.password = demo.password;
            // Informational: a closed stdout must not stop the demo.
            let _ =
                say(&format!(
                "demo: {} drivers on {} ({} road nodes), topics drivers/+/location, map http://{}/",
                demo.drivers,
                if args.map.map.is_some() { "your map" } else { "central Helsinki" },
                graph.node_count(),
                addrs.http
            ));
            if needs_token {
                let _ =
                    say("demo: the map needs a token: fleetcast token --auth FILE --account NAME");
            }
            Some(Fleet::start(fleet_config, graph))
        }
        None => None,
    };

    wait_for_signal().await?;
    tracing::info!("shutting down");
    if let Some(fleet) = fleet {
        fleet.stop().await;
    }
    if let Err(e) = stack.shutdown().await {
        tracing::warn!(error = %e, "shutdown grace time ran out; exiting anyway");
    }
    Ok(())
}

async fn simulate(args: SimulateArgs) -> Result<()> {
    let graph = match &args.map {
        Some(path) => RoadGraph::from_file(path)?,
        None => RoadGraph::helsinki()?,
    };
    let graph = Arc::new(graph);
    let mut config = FleetConfig::new(args.broker.clone(), args.drivers);
    config.interval = args.interval;
    config.seed = args.seed;
    config.noise_m = args.noise;
    config.connect_rate = args.connect_rate;
    config.id_prefix = args.id_prefix;
    config.username = args.username;
    config.password = args.password;
    config.tls = args.tls.for_endpoint(&args.broker)?;
    say(&format!(
        "simulate: broker={} drivers={} interval={} map nodes={} roads={}",
        args.broker,
        args.drivers,
        humantime::format_duration(args.interval),
        graph.node_count(),
        graph.edge_count()
    ))?;

    let started = Instant::now();
    let usage_at_start = process::own_usage();
    let fleet = Fleet::start(config, graph);
    let stats = Arc::clone(fleet.stats());
    if let Some(addr) = args.metrics {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for metrics on {addr}"))?;
        say(&format!(
            "simulate: metrics at http://{}/metrics",
            listener.local_addr()?
        ))?;
        let app = stack::fleet_metrics_route(Arc::clone(&stats))?;
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "metrics listener failed");
            }
        });
    }
    let deadline = args.duration.map(|d| started + d);
    let mut ticker = tokio::time::interval_at(started + args.report_every, args.report_every);
    let mut previous = (started, FleetSnapshot::default(), usage_at_start);
    let signal = wait_for_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            r = &mut signal => { r?; break; }
            _ = sleep_until_opt(deadline) => break,
            _ = ticker.tick() => {
                let now = Instant::now();
                let snap = stats.snapshot();
                let window = now - previous.0;
                let rate = (snap.published - previous.1.published) as f64 / window.as_secs_f64();
                let usage = process::own_usage();
                say(&format!(
                    "simulate: t={:.0}s connected={}/{} published/s={rate:.1} reconnects={} skipped={} dropped={} {}",
                    (now - started).as_secs_f64(),
                    snap.connected,
                    args.drivers,
                    snap.reconnects,
                    snap.skipped_offline,
                    snap.dropped,
                    usage_fields(previous.2, usage, window),
                ))?;
                previous = (now, snap, usage);
            }
        }
    }
    let elapsed = started.elapsed();
    let usage_at_end = process::own_usage();
    let last = fleet.stop().await;
    say(&format!(
        "simulate done: drivers={} published={} reconnects={} skipped={} dropped={} elapsed={:.1}s {}",
        args.drivers,
        last.published,
        last.reconnects,
        last.skipped_offline,
        last.dropped,
        elapsed.as_secs_f64(),
        usage_fields(usage_at_start, usage_at_end, elapsed),
    ))
}

/// `cpu=P% rss=NMiB`: this process's CPU over `window` (percent of one core) and its RSS.
fn usage_fields(
    before: Option<process::Usage>,
    after: Option<process::Usage>,
    window: Duration,
) -> String {
    match (before, after) {
        (Some(a), Some(b)) => format!(
            "cpu={:.1}% rss={:.1}MiB",
            process::cpu_percent(a, b, window),
            b.rss_bytes as f64 / (1024.0 * 1024.0)
        ),
        _ => "cpu=n/a rss=n/a".to_owned(),
    }
}

async fn dashboard(args: DashboardArgs) -> Result<()> {
    let pbf = map_bytes(&args.map)?;
    let tokens = match &args.auth {
        Some(path) => Some(Arc::new(fleetcast::access::BrowserTokens::new(Arc::new(
            fleetcast_broker::auth::Auth::from_file(path)?,
        ))) as _),
        None => None,
    };
    let options = DashboardOptions {
        tiles: args.map.tiles.clone(),
        tokens,
        ..DashboardOptions::new(stack::city_basemap(&pbf).context("building the basemap")?)
    };
    let listener = tokio::net::TcpListener::bind(args.http)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", args.http))?;
    let feed = FeedConfig {
        broker: args.broker.clone(),
        client_id: args.client_id,
        credentials: args
            .username
            .map(|u| (u, args.password.unwrap_or_default())),
        tls: args.tls.for_endpoint(&args.broker)?,
    };
    let server = Standalone::start(listener, options, feed)?;
    say(&format!(
        "fleetcast dashboard ready http={} broker={}",
        server.addr(),
        args.broker
    ))?;
    wait_for_signal().await?;
    server.shutdown().await;
    Ok(())
}

fn map_bytes(args: &MapArgs) -> Result<std::borrow::Cow<'static, [u8]>> {
    Ok(match &args.map {
        Some(path) => std::fs::read(path)
            .with_context(|| format!("reading map {}", path.display()))?
            .into(),
        None => fleetcast_simulator::road_graph::HELSINKI_PBF.into(),
    })
}

fn source_ips(spec: &str) -> Result<Vec<std::net::IpAddr>> {
    let (a, b) = spec.split_once('-').unwrap_or((spec, spec));
    let a: std::net::Ipv4Addr = a.trim().parse().context("--source-ips: first address")?;
    let b: std::net::Ipv4Addr = b.trim().parse().context("--source-ips: last address")?;
    let (a, b) = (u32::from(a), u32::from(b));
    anyhow::ensure!(
        a <= b && b - a < 65_536,
        "--source-ips: FIRST-LAST, at most 65,536 addresses"
    );
    Ok((a..=b)
        .map(|n| std::net::Ipv4Addr::from(n).into())
        .collect())
}

async fn loadtest(args: LoadtestArgs) -> Result<()> {
    let broker = match &args.broker {
        Endpoint::Tcp { host, port } => Target::Tcp {
            host: host.clone(),
            port: *port,
        },
        Endpoint::Ws { url, port } => Target::Ws {
            url: url.clone(),
            port: *port,
        },
        Endpoint::Mqtts { .. } | Endpoint::Wss { .. } => {
            anyhow::bail!(fleetcast_loadtest::target::TargetError::Tls)
        }
    };
    let procs = args.procs.max(1);
    let config = LoadConfig {
        scenario: args.scenario,
        broker,
        connections: args.connections,
        connect_rate: args.connect_rate,
        interval: args.interval,
        payload_size: args.payload_size,
        qos: args.qos,
        subscribers: args.subscribers,
        shared: args.shared,
        duration: args.duration,
        source_ips: args
            .source_ips
            .as_deref()
            .map(source_ips)
            .transpose()?
            .unwrap_or_default(),
        broker_pid: args.broker_pid,
        jitter: args.jitter,
        id_prefix: "lt-".to_owned(),
        worker: (args.worker.unwrap_or(0), procs),
        credentials: args
            .username
            .clone()
            .map(|u| (u, args.password.clone().unwrap_or_default())),
    };
    let scenario = if args.interval.is_zero() && config.scenario == Scenario::Fleet {
        Scenario::Idle
    } else {
        config.scenario
    };
    let config = LoadConfig { scenario, ..config };
    let limit = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft);
    let need = (args.connections / procs + args.subscribers + 64) as u64;
    if need > limit {
        eprintln!(
            "loadtest: {} connections in one process need about {need} descriptors, over this machine's open-files limit of {limit}: use --procs {} (or more)",
            args.connections / procs,
            (args.connections as u64).div_ceil(limit.saturating_sub(100).max(1))
        );
    }
    if args.worker.is_some() {
        let report = fleetcast_loadtest::run(config, |_| {}).await?;
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let report = if procs > 1 {
        // Same arguments, one worker each; their JSON reports are merged.
        let exe = std::env::current_exe().context("finding this program")?;
        let mut passed: Vec<String> = std::env::args().skip(1).collect();
        if let Some(i) = passed.iter().position(|a| a == "--report") {
            passed.drain(i..(i + 2).min(passed.len()));
        }
        let mut children = Vec::new();
        for i in 0..procs {
            let child = tokio::process::Command::new(&exe)
                .args(&passed)
                .args(["--worker", &i.to_string()])
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .context("starting a worker process")?;
            children.push(child);
        }
        eprintln!("loadtest: {procs} worker processes running");
        let mut parts = Vec::new();
        for c in children {
            let out = c.wait_with_output().await?;
            anyhow::ensure!(out.status.success(), "a worker process failed");
            parts.push(serde_json::from_slice(&out.stdout).context("reading a worker's report")?);
        }
        fleetcast_loadtest::merge(&parts).context("no worker reports")?
    } else {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        let mut last = (0.0, 0u64);
        let report = fleetcast_loadtest::run(config, |p| {
            let rate = if p.elapsed_s > last.0 {
                (p.received - last.1) as f64 / (p.elapsed_s - last.0)
            } else {
                0.0
            };
            last = (p.elapsed_s, p.received);
            bar.set_message(format!(
                "{:>5.1}s connected {} published {} received {} ({rate:.0}/s) p99 {:.2} ms",
                p.elapsed_s, p.connected, p.published, p.received, p.p99_ms
            ));
            bar.tick();
        })
        .await?;
        bar.finish_and_clear();
        report
    };
    print!("{report}");
    // The raw histograms are for merging workers; the file keeps the figures.
    let report = fleetcast_loadtest::report::Report {
        latency_us_pairs: Vec::new(),
        connect_us_pairs: Vec::new(),
        ..report
    };
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// One line on standard output, flushed at once (scripts wait for these lines).
fn say(line: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn wait_for_signal() -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}
