//! `fleetcast completions SHELL`: the shell completion script for every command and flag,
//! generated from the same clap definitions the binary parses with (clap_complete), on
//! standard output.

use anyhow::Result;
use clap::{Args, CommandFactory};
use clap_complete::Shell;
use std::io::Write;

#[derive(Debug, Args, Clone)]
pub(super) struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    shell: Shell,
}

/// Prints the completion script for `args.shell`.
///
/// # Errors
/// Standard output could not be written.
pub(super) fn run(args: &CompletionsArgs) -> Result<()> {
    let mut command = super::Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "fleetcast", &mut script);
    std::io::stdout().lock().write_all(&script)?;
    Ok(())
}
