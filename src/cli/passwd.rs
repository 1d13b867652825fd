//! `fleetcast passwd`: hashes a password (argon2id) for a credentials file.

use anyhow::{Context, Result};

/// Hashes `password`, or the first line of stdin without it (arguments show in `ps`).
pub(super) fn run(password: Option<String>) -> Result<()> {
    let password = match password {
        Some(p) => p,
        None => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the password")?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    anyhow::ensure!(!password.is_empty(), "empty password");
    println!("{}", fleetcast_broker::auth::hash_password(&password)?);
    Ok(())
}
