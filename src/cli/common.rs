//! What several commands share: the lines scripts wait for ([`say`]), the way a command is
//! stopped ([`wait_for_signal`]), the runtime, and the map and client TLS flags.

use anyhow::{Context, Result};
use clap::Args;
use fleetcast_simulator::endpoint::{ClientTls, Endpoint};
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub(super) struct ClientTlsArgs {
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
    pub(super) fn for_endpoint(&self, endpoint: &Endpoint) -> Result<Option<ClientTls>> {
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
pub(super) struct MapArgs {
    /// OpenStreetMap extract (.osm.pbf) for the map (and the demo fleet); default: central
    /// Helsinki (embedded).
    #[arg(long, value_name = "FILE.osm.pbf")]
    pub(super) map: Option<PathBuf>,
    /// Online tile URL template, e.g. https://tile.example/{z}/{x}/{y}.png; without it the
    /// page uses only its embedded basemap and never leaves this server.
    #[arg(long, value_name = "URL")]
    pub(super) tiles: Option<String>,
    /// How long each driver's track is kept (in memory) for the history API, a followed
    /// driver's trail and the page's replay: seconds, or 90s, 30m, 1h; 0 keeps none.
    /// Default: [map] history_window_s (1h).
    #[arg(long, value_name = "DURATION", value_parser = seconds)]
    pub(super) history_window: Option<u64>,
    /// A browser whose view holds more drivers than this gets per-cell counts by status
    /// instead of positions; 0: never. Default: [map] aggregate_above (2000).
    #[arg(long, value_name = "N")]
    pub(super) aggregate_above: Option<usize>,
}

impl MapArgs {
    /// The `[map]` settings with these flags over them.
    pub(super) fn over(&self, map: &mut fleetcast_broker::config::Map) {
        if let Some(s) = self.history_window {
            map.history_window_s = s;
        }
        if let Some(n) = self.aggregate_above {
            map.aggregate_above = n;
        }
    }

    /// Dashboard options for `basemap` with these flags over `map`.
    pub(super) fn dashboard(
        &self,
        map: &fleetcast_broker::config::Map,
        basemap: std::sync::Arc<str>,
    ) -> fleetcast_dashboard::service::DashboardOptions {
        let mut map = map.clone();
        self.over(&mut map);
        let mut options = fleetcast_dashboard::service::DashboardOptions::new(basemap);
        options.tiles = self.tiles.clone();
        options.history.window = std::time::Duration::from_secs(map.history_window_s);
        options.bridge.aggregate_above = map.aggregate_above;
        options
    }
}

/// Seconds from `90`, `90s`, `30m` or `1h`.
fn seconds(text: &str) -> std::result::Result<u64, String> {
    let (digits, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, ""), |i| text.split_at(i));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: a number of seconds, or with s, m or h"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        _ => return Err(format!("{text:?}: the unit is s, m or h")),
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("{text:?}: too long"))
}

/// The map's OpenStreetMap extract: `--map`, or central Helsinki (embedded).
pub(super) fn map_bytes(args: &MapArgs) -> Result<std::borrow::Cow<'static, [u8]>> {
    Ok(match &args.map {
        Some(path) => std::fs::read(path)
            .with_context(|| format!("reading map {}", path.display()))?
            .into(),
        None => fleetcast_simulator::road_graph::HELSINKI_PBF.into(),
    })
}

/// What a map error names: `--map`'s file, or the embedded extract.
pub(super) fn map_name(args: &MapArgs) -> String {
    args.map.as_ref().map_or_else(
        || "the embedded Helsinki extract".to_owned(),
        |p| p.display().to_string(),
    )
}

/// The multi-threaded runtime of every command but `simulate`: `workers` threads, or
/// tokio's default (one per core, or TOKIO_WORKER_THREADS).
pub(super) fn runtime(workers: Option<usize>) -> Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        builder.worker_threads(n);
    }
    builder
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

/// One line on standard output, flushed at once (scripts wait for these lines).
pub(super) fn say(line: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub(super) async fn wait_for_signal() -> Result<()> {
    signals()?.await
}

/// Installs the Ctrl-C and SIGTERM handlers now and returns what waits for either: a
/// command installs them before its ready line, so a signal sent as soon as the line is
/// read ends it cleanly instead of by the signal's default action.
pub(super) fn signals() -> Result<impl std::future::Future<Output = Result<()>>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the Ctrl-C handler")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        Ok(())
    })
}
