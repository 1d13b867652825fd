//! The `fleetcast` command: parses flags, installs logging and signal handling, and hands
//! over to the library crates. Everything else lives in `broker/` (and, as they arrive,
//! `simulator/` and `dashboard/`).

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLEETCAST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cli::DEFAULT_LOG)),
        )
        .init();
    match cli::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleetcast: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
