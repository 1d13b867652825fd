//! `fleetcast serve` and `fleetcast demo`: the broker with its map (and, for the demo, a
//! fleet driving on it) until Ctrl-C or SIGTERM. Prints the ready line scripts and tests
//! wait for: `fleetcast ready mqtt=... ws=... http=...`.

use super::common::{map_bytes, map_name, say, signals, MapArgs};
use anyhow::{Context, Result};
use clap::Args;
use fleetcast::stack::{self, Metering, Stack};
use fleetcast_broker::auth::Auth;
use fleetcast_broker::{Addrs, Config, Listeners};
use fleetcast_simulator::fleet::{Fleet, FleetConfig};
use fleetcast_simulator::road_graph::RoadGraph;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Args)]
pub(super) struct ServeArgs {
    /// MQTT over TCP listen address (port 0 picks a free port); when not given, --config's
    /// [listen] mqtt [default: 127.0.0.1:1883]
    #[arg(long, value_name = "ADDR")]
    mqtt: Option<SocketAddr>,
    /// MQTT over WebSocket listen address, ws://ADDR/mqtt; when not given, --config's
    /// [listen] ws [default: 127.0.0.1:8083]
    #[arg(long, value_name = "ADDR")]
    ws: Option<SocketAddr>,
    /// HTTP listen address: the live map (/), its bridge (/ws), /metrics, /healthz, /readyz;
    /// when not given, --config's [listen] http [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// Configuration file (TOML); `fleetcast config` prints the defaults. A flag given on
    /// the command line wins over the file; the file wins over the built-in defaults.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    map: MapArgs,
    /// Keep no meters and serve no /metrics (only to measure what metrics cost).
    #[arg(long)]
    no_metrics: bool,
    /// Worker threads of the tokio runtime serving HTTP, the map and the rest (and, with
    /// --io-threads 0, the connections); 0: one per core. The router has threads of its
    /// own. When not given, --config's [runtime] workers [default: the cores the
    /// connection threads leave, at least one]
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Threads client connections run on, each connection on one of them for its whole
    /// life; 0: connections run on the --workers runtime. When not given, --config's
    /// [runtime] io_threads [default: one per two cores, at least one]
    #[arg(long, value_name = "N")]
    io_threads: Option<usize>,
    /// Data directory: retained messages (every driver's last position and presence) and
    /// persistent sessions survive a restart or a kill -9 (at most the last
    /// [storage] flush_interval_ms plus one commit is lost). The directory must hold only
    /// fleetcast's store; one fleetcast at a time. When not given, --config's [storage] dir;
    /// none: state in memory only [default for `demo`: $XDG_DATA_HOME/fleetcast/demo,
    /// i.e. ~/.local/share/fleetcast/demo]
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Credentials file (TOML): accounts, argon2 password hashes, roles and topic policy;
    /// see examples/credentials.toml. Without it every client is anonymous and may use
    /// every topic, which `serve` allows only on loopback addresses.
    #[arg(long, value_name = "FILE")]
    auth: Option<PathBuf>,
    /// Serve anonymous clients on non-loopback addresses too (not recommended).
    #[arg(long)]
    allow_anonymous: bool,
    /// Geofences (GeoJSON FeatureCollection of Polygons with properties.name): entries and
    /// exits on geofences/{name}/events, and /api/geofences; when not given, --config's
    /// [geofences] file [default: none, geofences off]
    #[arg(long, value_name = "FILE")]
    geofences: Option<PathBuf>,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[derive(Debug, Args)]
pub(super) struct ClusterArgs {
    /// Join a cluster over these NATS servers (nats://HOST:PORT, comma-separated;
    /// nats-server 2.11+ with JetStream); when not given, --config's [cluster] servers
    /// [default: none, a node on its own]
    #[arg(long, value_name = "URLS", value_delimiter = ',')]
    cluster: Vec<String>,
    /// This node's name in the cluster, printed at the end of the ready line as
    /// ` node=NAME`; when not given, --config's [cluster] node [default: host name and
    /// process id]
    #[arg(long, value_name = "NAME")]
    node: Option<String>,
}

#[derive(Debug, Args)]
pub(super) struct TlsArgs {
    /// MQTT over TLS listen address, served when TLS is on (--tls-cert and --tls-key, or
    /// [tls] in --config); when not given, --config's [listen] mqtts [default:
    /// 127.0.0.1:8883]
    #[arg(long, value_name = "ADDR")]
    mqtts: Option<SocketAddr>,
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
pub(super) struct DemoArgs {
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
    /// Keep the demo's state in memory only (by default it is kept in --data, or
    /// $XDG_DATA_HOME/fleetcast/demo, so a restarted demo shows every car at once).
    #[arg(long, conflicts_with = "data")]
    no_data: bool,
}

/// Runs the broker and a demo fleet on it.
pub(super) fn demo(mut args: DemoArgs) -> Result<()> {
    if args.serve.data.is_none() && !args.no_data {
        args.serve.data = demo_data_dir();
        if args.serve.data.is_none() {
            tracing::warn!("neither XDG_DATA_HOME nor HOME is set: the demo's state stays in memory (give --data DIR)");
        }
    }
    let fleet = DemoFleet {
        drivers: args.drivers,
        seed: args.seed,
        username: args.fleet_username,
        password: args.fleet_password,
    };
    run(args.serve, Some(fleet))
}

/// Runs the broker until a signal.
pub(super) fn serve(args: ServeArgs) -> Result<()> {
    run(args, None)
}

/// The demo's fleet, from `demo`'s own flags.
struct DemoFleet {
    drivers: usize,
    seed: u64,
    username: Option<String>,
    password: Option<String>,
}

/// Reads the configuration, then runs [`serve_with`] on a runtime of the workers it asks
/// for (`[runtime] workers`): the threads are known only once the file is read.
fn run(args: ServeArgs, demo: Option<DemoFleet>) -> Result<()> {
    let config = configuration(&args)?;
    super::common::runtime(Some(config.runtime.worker_count()))?
        .block_on(serve_with(args, config, demo))
}

/// Runs the broker (and the demo fleet) until a signal, then shuts down gracefully.
async fn serve_with(args: ServeArgs, config: Config, demo: Option<DemoFleet>) -> Result<()> {
    let pbf = map_bytes(&args.map)?;
    let listeners = Listeners::bind(&config).await?;
    let dashboard = args.map.dashboard(
        &config.map,
        stack::city_basemap(&pbf)
            .with_context(|| format!("building the basemap from {}", map_name(&args.map)))?,
    );
    let metering = if args.no_metrics {
        Metering::Off
    } else {
        Metering::On
    };
    let auth = credentials(&args)?;
    if let Some(demo) = &demo {
        anyhow::ensure!(
            auth.is_none() || demo.username.is_some(),
            "demo --auth needs the fleet's credentials, or every driver is refused: pass \
             --fleet-username and --fleet-password (examples/credentials.toml has fleet / fleet-demo)"
        );
    }
    if auth.is_none() && !args.allow_anonymous {
        refuse_public_anonymous(listeners.addrs())?;
    }
    let stack = Stack::start(listeners, config, dashboard, metering, auth).await?;
    // Before the ready line: a script may send SIGTERM as soon as it reads it.
    let signal = signals()?;
    let addrs = stack.addrs();
    match stack.broker.node() {
        Some(node) => say(&format!("fleetcast ready {addrs} node={node}"))?,
        None => say(&format!("fleetcast ready {addrs}"))?,
    }
    let fleet = match demo {
        Some(demo) => Some(start_demo(&args, demo, &pbf, addrs)?),
        None => None,
    };

    signal.await?;
    tracing::info!("shutting down");
    if let Some(fleet) = fleet {
        fleet.stop().await;
    }
    if let Err(e) = stack.shutdown().await {
        tracing::warn!(error = %e, "shutdown grace time ran out; exiting anyway");
    }
    Ok(())
}

/// Where `demo` keeps its state unless told otherwise: `$XDG_DATA_HOME/fleetcast/demo`,
/// or `~/.local/share/fleetcast/demo` (the XDG default).
fn demo_data_dir() -> Option<PathBuf> {
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    let base = std::env::var_os("XDG_DATA_HOME")
        .and_then(absolute)
        .or_else(|| {
            std::env::var_os("HOME")
                .and_then(absolute)
                .map(|h| h.join(".local/share"))
        })?;
    Some(base.join("fleetcast").join("demo"))
}

/// The configuration file (or the defaults) with the flags applied, checked.
fn configuration(args: &ServeArgs) -> Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)
            .with_context(|| format!("reading configuration {}", path.display()))?,
        None => Config::default(),
    };
    apply(args, &mut config);
    config.validate()?;
    Ok(config)
}

/// The one place flags go into the configuration: a flag given on the command line wins,
/// one not given leaves the file's value (or the built-in default) alone.
fn apply(args: &ServeArgs, config: &mut Config) {
    let listen = &mut config.listen;
    for (flag, slot) in [
        (args.mqtt, &mut listen.mqtt),
        (args.ws, &mut listen.ws),
        (args.http, &mut listen.http),
        (args.tls.mqtts, &mut listen.mqtts),
    ] {
        if let Some(addr) = flag {
            *slot = addr;
        }
    }
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
    if let Some(dir) = &args.data {
        config.storage.dir = dir.display().to_string();
    }
    if !args.cluster.cluster.is_empty() {
        config.cluster.servers = args.cluster.cluster.clone();
    }
    if let Some(node) = &args.cluster.node {
        config.cluster.node = node.clone();
    }
    if let Some(file) = &args.geofences {
        config.geofences.file = file.display().to_string();
    }
    if let Some(n) = args.io_threads {
        config.runtime.io_threads = Some(n);
    }
    if let Some(n) = args.workers {
        config.runtime.workers = Some(n);
    }
    args.map.over(&mut config.map);
}

/// The `--auth` credentials file, if given; warns when it cannot sign browser tokens.
fn credentials(args: &ServeArgs) -> Result<Option<Arc<Auth>>> {
    let Some(path) = &args.auth else {
        return Ok(None);
    };
    let auth = Arc::new(Auth::from_file(path)?);
    if !auth.has_token_secret() {
        tracing::warn!(
            "the credentials file has no token_secret: the map's /ws refuses every browser"
        );
    }
    Ok(Some(auth))
}

/// Without credentials every client may do everything: only on loopback addresses.
fn refuse_public_anonymous(addrs: Addrs) -> Result<()> {
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
    Ok(())
}

/// Starts the demo fleet against our own MQTT listener and says so.
fn start_demo(args: &ServeArgs, demo: DemoFleet, pbf: &[u8], addrs: Addrs) -> Result<Fleet> {
    let graph = Arc::new(
        RoadGraph::from_pbf(pbf)
            .with_context(|| format!("loading the demo map {}", map_name(&args.map)))?,
    );
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
    let kept = match &args.data {
        Some(dir) => format!("state kept in {}", dir.display()),
        None => "state in memory".to_owned(),
    };
    let _ = say(&format!(
        "demo: {} drivers on {} ({} road nodes), topics drivers/+/location, map http://{}/, {kept}",
        demo.drivers,
        if args.map.map.is_some() {
            "your map"
        } else {
            "central Helsinki"
        },
        graph.node_count(),
        addrs.http
    ));
    if args.auth.is_some() {
        let _ = say("demo: the map needs a token: fleetcast token --auth FILE --account NAME");
    }
    Ok(Fleet::start(fleet_config, graph))
}
