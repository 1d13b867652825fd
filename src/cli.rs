//! Command-line flags (clap derive) and what each subcommand runs.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use fleetcast_broker::{Broker, Config, Listeners, DEFAULT_CONFIG};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

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
    /// Run the broker with a demo fleet (the fleet arrives with the simulator).
    Demo(ServeArgs),
    /// Print the default configuration file (copy it, edit it, pass it with --config).
    Config,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// MQTT over TCP listen address (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:1883")]
    mqtt: SocketAddr,
    /// MQTT over WebSocket listen address; clients connect to ws://ADDR/mqtt.
    #[arg(long, default_value = "127.0.0.1:8083")]
    ws: SocketAddr,
    /// HTTP listen address (/healthz, /readyz).
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// Configuration file (TOML); `fleetcast config` prints the defaults. The address
    /// flags above override its [listen] section.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// Runs the parsed command.
///
/// # Errors
/// Whatever stopped the command, with context for the user.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) | Command::Demo(args) => serve(args),
        Command::Config => {
            print!("{DEFAULT_CONFIG}");
            Ok(())
        }
    }
}

fn serve(args: ServeArgs) -> Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)
            .with_context(|| format!("reading configuration {}", path.display()))?,
        None => Config::default(),
    };
    config.listen.mqtt = args.mqtt;
    config.listen.ws = args.ws;
    config.listen.http = args.http;

    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let listeners = Listeners::bind(&config).await?;
        let broker = Broker::start(listeners, config)?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "fleetcast ready {}", broker.addrs())?;
        out.flush()?;
        drop(out);

        wait_for_signal().await?;
        tracing::info!("shutting down");
        if let Err(e) = broker.shutdown().await {
            tracing::warn!(error = %e, "shutdown grace time ran out; exiting anyway");
        }
        Ok(())
    })
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
