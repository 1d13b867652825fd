//! Command-line flags (clap derive) and which command runs: one file per command, each
//! with its flags and what it runs; [`common`] holds what several share (the ready line,
//! signals, the runtime, map and client TLS flags).

mod certs;
mod common;
mod completions;
mod config;
mod dashboard;
mod loadtest;
mod passwd;
mod progress;
mod serve;
mod share;
mod simulate;
mod token;

use anyhow::Result;
use clap::{Parser, Subcommand};

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
    Serve(serve::ServeArgs),
    /// Run the broker and a demo fleet driving around central Helsinki.
    Demo(serve::DemoArgs),
    /// Run a driver fleet against any MQTT broker.
    Simulate(simulate::SimulateArgs),
    /// Run the live map and its WebSocket bridge against any MQTT broker.
    Dashboard(dashboard::DashboardArgs),
    /// Load-test any MQTT broker with many simulated connections.
    Loadtest(loadtest::LoadtestArgs),
    /// Print the default configuration file (copy it, edit it, pass it with --config).
    Config,
    /// Make a development CA, a server certificate and client certificates (PEM) for TLS.
    Certs(certs::CertsArgs),
    /// Mint a signed, expiring token for the live map's WebSocket when auth is on.
    Token(token::TokenArgs),
    /// Make a "track my ride" link: a page for a rider's phone showing one driver, until
    /// it expires.
    Share(share::ShareArgs),
    /// Hash a password for a credentials file (argon2id); reads it from stdin if not given.
    Passwd {
        /// The password (prefer stdin: arguments show in `ps`).
        password: Option<String>,
    },
    /// Print a shell completion script (bash, zsh, fish, ...) on standard output.
    Completions(completions::CompletionsArgs),
}

/// Runs the parsed command.
///
/// # Errors
/// Whatever stopped the command, with context for the user.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => serve::serve(args),
        Command::Demo(args) => serve::demo(args),
        Command::Dashboard(args) => common::runtime(None)?.block_on(dashboard::dashboard(args)),
        Command::Loadtest(args) => common::runtime(None)?.block_on(loadtest::loadtest(args)),
        Command::Simulate(args) => simulate::run(args),
        Command::Config => config::run(),
        Command::Token(args) => token::run(&args),
        Command::Share(args) => share::run(&args),
        Command::Certs(args) => certs::run(args),
        Command::Passwd { password } => passwd::run(password),
        Command::Completions(args) => completions::run(&args),
    }
}
