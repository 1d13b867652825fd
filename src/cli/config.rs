//! `fleetcast config`: prints the default configuration file, the starting point for a
//! `serve --config FILE` of one's own.

use anyhow::Result;
use fleetcast_broker::DEFAULT_CONFIG;

/// Prints the defaults, comments included.
pub(super) fn run() -> Result<()> {
    print!("{DEFAULT_CONFIG}");
    Ok(())
}
