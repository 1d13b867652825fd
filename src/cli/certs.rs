//! `fleetcast certs`: a development CA, server and client certificates for TLS; the flags
//! here, the making in the library (`fleetcast::certs`), where the tests use it too.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub(super) struct CertsArgs {
    /// Directory to write ca.pem, ca.key, server.pem, server.key (and NAME.pem/NAME.key
    /// per --client) into; an existing ca.pem/ca.key there signs the new certificates.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Host names and IP addresses the server certificate is valid for (repeat the flag).
    #[arg(long = "host", value_name = "NAME", default_values = ["localhost", "127.0.0.1", "::1"])]
    hosts: Vec<String>,
    /// Make a client certificate whose common name is this client id (repeat the flag).
    #[arg(long = "client", value_name = "CLIENT_ID")]
    clients: Vec<String>,
    /// Days the certificates are valid (the CA twice as long).
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(i64).range(1..=3650))]
    days: i64,
}

/// Writes the files and names each on stdout.
pub(super) fn run(args: CertsArgs) -> Result<()> {
    let written = fleetcast::certs::make(&fleetcast::certs::CertsRequest {
        out: args.out,
        hosts: args.hosts,
        clients: args.clients,
        days: args.days,
    })?;
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(())
}
