//! The argon2 work of a password check: against an account's PHC hash, or, for a username
//! that does not exist, against nothing at the same cost.
//!
//! Answering an unknown username at once would tell a prober which usernames exist (a
//! wrong password takes ~30 ms, an unknown user 0.1 ms). So an unknown username's password
//! is hashed too, with the accounts' own parameters and a salt no account has, and the
//! result thrown away.
//!
//! Each check runs in memory its thread keeps ([`Scratch`], `m` KiB: 19 MiB for
//! `fleetcast passwd`'s hashes) instead of allocating it: freed, those 19 MiB stayed in
//! whichever malloc arena took them, and a flood of checks spread them over every arena
//! (resident memory grew by ~230-350 MiB). Kept, they cost `auth_concurrency` x `m` once.

use argon2::password_hash::{Output, PasswordHash};
use argon2::{Algorithm, Argon2, Block, Params};
use std::hash::{BuildHasher, RandomState};

/// argon2's working memory, kept by a check thread from one check to the next.
pub type Scratch = Vec<Block>;

/// argon2 set up as the PHC string `p` says (its algorithm, version and parameters).
fn argon_for(p: &PasswordHash<'_>) -> Option<Argon2<'static>> {
    let algorithm = Algorithm::try_from(p.algorithm).ok()?;
    let version = match p.version {
        Some(v) => argon2::Version::try_from(v).ok()?,
        None => argon2::Version::default(),
    };
    Some(Argon2::new(algorithm, version, Params::try_from(p).ok()?))
}

/// Hashes into `out` with `scratch` as the working memory (grown when too small; argon2
/// overwrites every block it reads, so what a previous check left there does not matter).
fn hash_into(
    argon: &Argon2<'_>,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
    scratch: &mut Scratch,
) -> bool {
    let need = argon.params().block_count();
    if scratch.len() < need {
        scratch.resize(need, Block::default());
    }
    argon
        .hash_password_into_with_memory(password, salt, out, &mut scratch[..])
        .is_ok()
}

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
        let argon = parsed.as_ref().and_then(argon_for).unwrap_or_default();
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
    pub(crate) fn check(&self, password: &str, scratch: &mut Scratch) -> bool {
        let mut out = vec![0u8; self.out_len];
        hash_into(
            &self.argon,
            password.as_bytes(),
            &self.salt,
            &mut out,
            scratch,
        );
        false
    }
}

/// Whether `password` matches the PHC string `hash` (false when unreadable): what
/// argon2's `verify_password` does, in `scratch`, compared in constant time.
pub(crate) fn verify(hash: &str, password: &str, scratch: &mut Scratch) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(argon), Some(salt), Some(expected)) = (argon_for(&parsed), parsed.salt, parsed.hash)
    else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    hash_into(&argon, password.as_bytes(), salt, &mut out, scratch)
        && Output::new(&out).is_ok_and(|o| o == expected)
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
        assert!(!decoy.check("anything", &mut Vec::new()));
        let fallback = Decoy::like(Some("not a hash"));
        assert_eq!(fallback.argon.params().m_cost(), Params::DEFAULT_M_COST);
    }

    #[test]
    fn verify_agrees_with_argon2_and_reuses_its_memory() {
        let hash = crate::auth::hash_password("s3cret").expect("hash");
        let mut scratch = Vec::new();
        assert!(verify(&hash, "s3cret", &mut scratch));
        let kept = scratch.len();
        assert_eq!(kept, 19_456, "m = 19 MiB of 1 KiB blocks");
        assert!(!verify(&hash, "s3cret!", &mut scratch));
        assert!(
            verify(&hash, "s3cret", &mut scratch),
            "what a check left does not matter"
        );
        assert_eq!(scratch.len(), kept);
        assert!(!verify("not a hash", "s3cret", &mut scratch));
    }
}
