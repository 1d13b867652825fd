//! `fleetcast dashboard`: the live map and its WebSocket bridge on their own, fed by any
//! MQTT broker, until a signal. Prints `fleetcast dashboard ready http=... broker=...`.

use super::common::{map_bytes, map_name, say, wait_for_signal, ClientTlsArgs, MapArgs};
use anyhow::{Context, Result};
use clap::Args;
use fleetcast::feed::FeedConfig;
use fleetcast::stack;
use fleetcast::standalone::Standalone;
use fleetcast_dashboard::service::DashboardOptions;
use fleetcast_simulator::endpoint::Endpoint;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Args)]
pub(super) struct DashboardArgs {
    /// Broker URL to read positions from: mqtt://HOST:PORT, mqtts://HOST:PORT (TLS, with
    /// --ca), ws://HOST:PORT/mqtt or wss://HOST:PORT/mqtt.
    /// Several, comma-separated (a cluster's nodes): a lost connection moves on to the next.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883", value_delimiter = ',')]
    broker: Vec<Endpoint>,
    /// HTTP listen address: the live map (/), its bridge (/ws), /metrics, /healthz, /readyz.
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
    /// Serve the map to anyone on a non-loopback --http address without --auth (not
    /// recommended: every browser then sees every driver).
    #[arg(long)]
    allow_anonymous: bool,
    #[command(flatten)]
    tls: ClientTlsArgs,
    #[command(flatten)]
    map: MapArgs,
}

/// Serves the map until a signal.
pub(super) async fn dashboard(args: DashboardArgs) -> Result<()> {
    // The same rule as `serve`: an open map only where only this machine can reach it.
    anyhow::ensure!(
        args.http.ip().is_loopback() || args.auth.is_some() || args.allow_anonymous,
        "refusing to serve the map to anonymous browsers on {} (not a loopback address): \
         pass --auth FILE (browsers then need a token) or --allow-anonymous",
        args.http
    );
    let pbf = map_bytes(&args.map)?;
    let auth = match &args.auth {
        Some(path) => Some(Arc::new(fleetcast_broker::auth::Auth::from_file(path)?)),
        None => None,
    };
    let tokens = auth
        .as_ref()
        .map(|a| Arc::new(fleetcast::access::BrowserTokens::new(Arc::clone(a))) as _);
    let logins = auth
        .as_ref()
        .map(|a| Arc::new(fleetcast::access::AccountLogins::new(Arc::clone(a))) as _);
    let options = DashboardOptions {
        tokens,
        logins,
        ..args.map.dashboard(
            &fleetcast_broker::config::Map::default(),
            stack::city_basemap(&pbf)
                .with_context(|| format!("building the basemap from {}", map_name(&args.map)))?,
        )
    };
    let listener = tokio::net::TcpListener::bind(args.http)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", args.http))?;
    let (first, more) = args.broker.split_first().context("--broker needs a URL")?;
    let brokers: Vec<String> = args.broker.iter().map(ToString::to_string).collect();
    let feed = FeedConfig {
        broker: first.clone(),
        more_brokers: more.to_vec(),
        client_id: args.client_id,
        credentials: args
            .username
            .map(|u| (u, args.password.unwrap_or_default())),
        tls: args.tls.for_endpoint(first)?,
    };
    let server = Standalone::start(listener, options, feed)?;
    say(&format!(
        "fleetcast dashboard ready http={} broker={}",
        server.addr(),
        brokers.join(",")
    ))?;
    wait_for_signal().await?;
    server.shutdown().await;
    Ok(())
}
