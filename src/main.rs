//! The `fleetcast` command: parses flags, installs logging, raises the open-files limit and
//! hands over to the commands in `cli/`; everything else lives in the library crates.

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
    // One descriptor per client (or per simulated driver): the soft limit is the ceiling,
    // so every command starts with it raised to the hard limit. Done here, once, because
    // a process-wide setting is the binary's business, not a library's.
    if let Err(e) = fleetcast_broker::raise_open_files_limit() {
        tracing::warn!(error = %e, "cannot raise the open-files limit");
    }
    match cli::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleetcast: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
