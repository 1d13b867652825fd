//! `fleetcast share`: a "track my ride" link for one driver, for a rider's phone.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Args)]
pub(super) struct ShareArgs {
    /// Credentials file with a token_secret (the one `serve --auth` uses).
    #[arg(long, value_name = "FILE")]
    auth: PathBuf,
    /// The driver the link shows, and nothing else.
    #[arg(long, value_name = "ID")]
    driver: String,
    /// How long the link works (e.g. 30m, 2h); after it, the page says the ride is over
    /// (410 Gone).
    #[arg(long = "for", value_name = "DURATION", default_value = "30m", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// An account the link speaks for (it must be allowed to see the driver); without it
    /// the link is the operator's, who holds the token secret.
    #[arg(long)]
    account: Option<String>,
    /// End the link early when the driver next enters this status after now (e.g.
    /// `available`: the trip is over); one of available, to_pickup, on_trip.
    #[arg(long, value_name = "STATUS", value_parser = fleetcast_broker::auth::parse_status)]
    until_status: Option<fleetcast_proto::location::Status>,
    /// Where the map is served, to print the link with.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    base: String,
}

/// Prints the link on stdout.
pub(super) fn run(args: &ShareArgs) -> Result<()> {
    let auth = fleetcast_broker::auth::Auth::from_file(&args.auth)?;
    let (token, link) = auth.mint_share(
        args.account.as_deref(),
        &args.driver,
        fleetcast_proto::time::unix_now(),
        args.ttl.as_secs().max(1),
        args.until_status,
    )?;
    let base = args.base.trim_end_matches('/');
    println!("{base}/t/{token}");
    let until = args
        .until_status
        .map(|s| format!(", or until it is {}", s.as_str()))
        .unwrap_or_default();
    eprintln!(
        "a link to {} for {}{until} (id {}); revoke it with \
         curl -X DELETE -u ADMIN {base}/api/share/{token}",
        args.driver,
        humantime::format_duration(args.ttl),
        link.id,
    );
    Ok(())
}
