//! `fleetcast token`: mints a browser token for the live map when `serve --auth` guards
//! its `/ws`, and prints a link to open with it.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Args)]
pub(super) struct TokenArgs {
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

/// Prints the token on stdout (for scripts) and a ready-to-open link on stderr.
pub(super) fn run(args: &TokenArgs) -> Result<()> {
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
