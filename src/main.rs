//! The `fleetcast` command: parses flags, installs logging, raises the open-files limit and
//! hands over to the commands in `cli/`; everything else lives in the library crates.

mod cli;

use clap::Parser;

/// mimalloc, not glibc's malloc: a publish is allocated on a connection thread and freed on
/// the router's or the map's, and glibc served every such allocation from its arena's bins
/// (`_int_malloc`, `malloc_consolidate`, `unlink_chunk`: about 9% of the connection
/// thread's samples under 10,000 drivers). Built without its transparent-huge-page advice
/// (`no_thp`): with it, a broker holding nothing started at 68 MiB resident, not 36.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
