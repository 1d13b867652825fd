//! The argon2 work of a password check: against an account's PHC hash, or, for a username
//! that does not exist, against nothing at the same cost.
//!
//! Answering an unknown username at once would tell a prober which usernames exist (a
//! wrong password takes ~30 ms, an unknown user 0.1 ms). So an unknown username's password
//! is hashed too, with the accounts' own parameters and a salt no account has, and the
//! result thrown away.

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params};
use std::hash::{BuildHasher, RandomState};

/// argon2 with the accounts' parameters and a salt no account has: an unknown username's
/// password is hashed with it, as long as a known one's, and compared with nothing.
#[derive(Clone)]
pub(crate) struct Decoy {
    argon: Argon2<'static>,
    salt: [u8; 16],
    out_len: usize,
}

impl std::fmt::Debug for Decoy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoy").finish_non_exhaustive()
    }
}

impl Decoy {
    /// The parameters of `hash` (argon2's defaults, those of `fleetcast passwd`, when it
    /// cannot be read).
    pub(crate) fn like(hash: Option<&str>) -> Decoy {
        let parsed = hash.and_then(|h| PasswordHash::new(h).ok());
        let argon = parsed
            .as_ref()
            .and_then(|p| {
                let algorithm = Algorithm::try_from(p.algorithm).ok()?;
                let version = argon2::Version::try_from(p.version?).ok()?;
                Some(Argon2::new(algorithm, version, Params::try_from(p).ok()?))
            })
            .unwrap_or_default();
        let out_len = argon
            .params()
            .output_len()
            .unwrap_or(Params::DEFAULT_OUTPUT_LEN);
        let mut salt = [0u8; 16];
        let digest = RandomState::new();
        for (i, chunk) in salt.chunks_mut(8).enumerate() {
            chunk.copy_from_slice(&digest.hash_one(i).to_le_bytes());
        }
        Decoy {
            argon,
            salt,
            out_len,
        }
    }

    /// Hashes `password` as a check against a real hash would; never a match.
    pub(crate) fn check(&self, password: &str) -> bool {
        let mut out = vec![0u8; self.out_len];
        let _ = self
            .argon
            .hash_password_into(password.as_bytes(), &self.salt, &mut out);
        false
    }
}

/// Whether `password` matches the PHC string `hash` (argon2; false when unreadable).
pub(crate) fn verify(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decoy_hashes_with_the_accounts_parameters() {
        let light =
            "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$V8jQF6eUYg2KLyb3rHRylH1dEjGjZVTUUDqsZpDw/CI";
        let decoy = Decoy::like(Some(light));
        assert_eq!(decoy.argon.params().m_cost(), 8);
        assert_eq!(decoy.argon.params().t_cost(), 1);
        assert_eq!(decoy.out_len, 32);
        assert!(!decoy.check("anything"));
        let fallback = Decoy::like(Some("not a hash"));
        assert_eq!(fallback.argon.params().m_cost(), Params::DEFAULT_M_COST);
    }
}
