//! Device identity: accounts from a TOML credentials file (`serve --auth FILE`), each with
//! an argon2 password hash, a client-id pattern and a role whose [`Grants`] decide what it
//! may publish and subscribe to. See `examples/credentials.toml`.
//!
//! argon2 is slow on purpose (tens of ms). Verifications run on threads of their own, in the
//! line [`crate::guard`] keeps (failure limits, fairness between sources), and a password
//! that verified is remembered as a keyed 64-bit digest, so a reconnecting device costs a
//! hash, not an argon2 run. Only successes are remembered: a cache hit needs the right
//! password, so it tells a guesser nothing it did not know.
//!
//! A username that does not exist costs the same as a wrong password for one that does:
//! the same line, the same failure counts, and an argon2 run with the accounts' own
//! parameters on a decoy salt. Otherwise the answer's delay (0.1 ms against 30 ms) tells
//! which usernames exist.

use crate::guard::{GuardSettings, Hold, LoginGuard};
use crate::hashing::{verify, Decoy};
use crate::policy::Grants;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::Argon2;
use fleetcast_proto::token;
use serde::Deserialize;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

mod links;
pub use links::{parse_status, RevokeError, TokenAccess, MAX_REVOKED};

/// A credentials file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Unreadable.
    #[error("cannot read credentials file {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML for this schema.
    #[error("invalid credentials file")]
    Parse(#[from] toml::de::Error),
    /// An account is wrong (unknown role, bad hash, duplicate user).
    #[error("invalid credentials file: {0}")]
    Invalid(String),
    /// Hashing failed.
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    /// Signs browser tokens (`fleetcast token`); none: the map's WebSocket takes no token.
    token_secret: Option<String>,
    #[serde(default)]
    account: Vec<AccountSpec>,
    #[serde(default)]
    roles: HashMap<String, Grants>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountSpec {
    username: String,
    password_hash: String,
    role: String,
    /// Client ids this account may use: exact, `prefix*`, or `*`; default: the username.
    client_id: Option<String>,
    #[serde(default)]
    publish: Vec<String>,
    #[serde(default)]
    subscribe: Vec<String>,
}

#[derive(Debug)]
struct Account {
    client_id: String,
    hash: String,
    grants: Arc<Grants>,
    /// Role `admin`: may change what the broker serves (geofences).
    admin: bool,
}

/// Why a CONNECT was not authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// No username/password given.
    NoCredentials,
    /// Unknown user or wrong password.
    BadCredentials,
    /// The account may not use this client id.
    ClientIdNotAllowed,
}

/// Why a guarded check refused a CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The credentials were checked and turned down.
    Denied(Denial),
    /// The password was not checked: back-off, or no room in the line.
    Held(Hold),
}

impl From<Denial> for Refused {
    fn from(d: Denial) -> Refused {
        Refused::Denied(d)
    }
}

impl From<Hold> for Refused {
    fn from(h: Hold) -> Refused {
        Refused::Held(h)
    }
}

/// The loaded accounts.
#[derive(Debug)]
pub struct Auth {
    accounts: HashMap<String, Account>,
    token_secret: Option<Vec<u8>>,
    verified: Mutex<HashMap<String, u64>>,
    digest_key: RandomState,
    /// What an unknown username's password is hashed with.
    decoy: Decoy,
    /// The line [`Auth::check`] uses outside a broker: no failure limits.
    own_guard: OnceLock<LoginGuard>,
    /// argon2 verifications run so far (what the cache saves is visible in tests).
    argon_runs: std::sync::atomic::AtomicU64,
    /// Share links revoked before their expiry.
    revoked: links::Revocations,
}

/// Hashes a password for a credentials file (argon2id, random salt, PHC string).
///
/// # Errors
/// Only if the hasher fails.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

fn client_id_allowed(pattern: &str, client_id: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => client_id.starts_with(prefix),
        None => pattern == client_id,
    }
}

impl Auth {
    /// The key browser tokens and share links are signed with.
    fn secret(&self) -> Result<&[u8], token::TokenError> {
        self.token_secret
            .as_deref()
            .ok_or(token::TokenError::NoSecret)
    }
    /// Whether `username` is an account with the role `admin` (its password checked
    /// elsewhere).
    pub fn is_admin(&self, username: &str) -> bool {
        self.accounts.get(username).is_some_and(|a| a.admin)
    }

    /// Loads a credentials file.
    ///
    /// # Errors
    /// Unreadable, invalid TOML, unknown role, bad hash or duplicate username.
    pub fn from_file(path: &Path) -> Result<Auth, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Auth::from_toml(&text)
    }

    /// Parses credentials TOML.
    ///
    /// # Errors
    /// As [`Auth::from_file`].
    pub fn from_toml(text: &str) -> Result<Auth, AuthError> {
        let spec: FileSpec = toml::from_str(text)?;
        let mut roles: HashMap<String, Grants> = HashMap::from([
            ("driver".to_owned(), Grants::driver()),
            ("rider".to_owned(), Grants::rider()),
            ("service".to_owned(), Grants::service()),
            ("admin".to_owned(), Grants::admin()),
        ]);
        roles.extend(spec.roles);
        let mut accounts = HashMap::new();
        for a in spec.account {
            let role = roles.get(&a.role).ok_or_else(|| {
                AuthError::Invalid(format!("account {}: unknown role {}", a.username, a.role))
            })?;
            PasswordHash::new(&a.password_hash).map_err(|e| {
                AuthError::Invalid(format!("account {}: password_hash is not a PHC string ({e}); make one with `fleetcast passwd`", a.username))
            })?;
            let grants = role.clone().with(&Grants {
                publish: a.publish,
                subscribe: a.subscribe,
            });
            let account = Account {
                client_id: a.client_id.unwrap_or_else(|| a.username.clone()),
                hash: a.password_hash,
                admin: a.role == "admin",
                grants: Arc::new(grants),
            };
            if accounts.insert(a.username.clone(), account).is_some() {
                return Err(AuthError::Invalid(format!(
                    "username {} appears twice",
                    a.username
                )));
            }
        }
        if spec.token_secret.as_ref().is_some_and(|s| s.len() < 16) {
            return Err(AuthError::Invalid(
                "token_secret must be at least 16 characters".into(),
            ));
        }
        // The parameters most accounts have (any one's, when they differ).
        let sample = accounts
            .iter()
            .min_by_key(|(name, _)| *name)
            .map(|(_, a)| a.hash.as_str());
        Ok(Auth {
            decoy: Decoy::like(sample),
            accounts,
            token_secret: spec.token_secret.map(String::into_bytes),
            verified: Mutex::new(HashMap::new()),
            digest_key: RandomState::new(),
            own_guard: OnceLock::new(),
            argon_runs: std::sync::atomic::AtomicU64::new(0),
            revoked: links::Revocations::default(),
        })
    }

    /// Whether browser tokens can be minted and checked (`token_secret` is set).
    pub fn has_token_secret(&self) -> bool {
        self.token_secret.is_some()
    }

    /// argon2 verifications run so far.
    pub fn argon2_runs(&self) -> u64 {
        self.argon_runs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Accounts loaded.
    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    /// Whether no account is loaded.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    /// A browser token for `account`, valid for `ttl_s` seconds from `now` (unix seconds).
    ///
    /// # Errors
    /// No `token_secret` in the file, or no such account.
    pub fn mint_token(
        &self,
        account: &str,
        now: u64,
        ttl_s: u64,
    ) -> Result<String, token::TokenError> {
        let secret = self.secret()?;
        if !self.accounts.contains_key(account) {
            return Err(token::TokenError::UnknownAccount(account.to_owned()));
        }
        Ok(token::mint(secret, account, now.saturating_add(ttl_s)))
    }

    /// Grants of a client that a verified TLS certificate names: the account whose
    /// username is the certificate's common name `cn`, no password asked.
    ///
    /// # Errors
    /// No such account, or it may not use `client_id`.
    pub fn check_certificate(&self, cn: &str, client_id: &str) -> Result<Arc<Grants>, Denial> {
        let account = self.accounts.get(cn).ok_or(Denial::BadCredentials)?;
        if !client_id_allowed(&account.client_id, client_id) {
            return Err(Denial::ClientIdNotAllowed);
        }
        Ok(Arc::clone(&account.grants))
    }

    /// Checks a CONNECT's credentials; on success returns the account's grants. No failure
    /// limits: for tools and tests; the broker calls [`Auth::check_from`].
    pub async fn check(
        &self,
        client_id: &str,
        login: Option<(&str, &str)>,
    ) -> Result<Arc<Grants>, Denial> {
        let guard = self
            .own_guard
            .get_or_init(|| LoginGuard::new(GuardSettings::unlimited()));
        let anywhere = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        self.check_from(guard, anywhere, client_id, login)
            .await
            .map_err(|r| match r {
                Refused::Denied(d) => d,
                Refused::Held(_) => Denial::BadCredentials,
            })
    }

    /// Checks the credentials of a CONNECT from `source` under `guard`'s limits (see
    /// [`crate::guard`]); on success returns the account's grants.
    ///
    /// # Errors
    /// [`Refused::Held`] before any hash when the source is in back-off, the account's
    /// paced turn is far off or the line is full; [`Refused::Denied`] after.
    pub async fn check_from(
        &self,
        guard: &LoginGuard,
        source: IpAddr,
        client_id: &str,
        login: Option<(&str, &str)>,
    ) -> Result<Arc<Grants>, Refused> {
        let (user, password) = login.ok_or(Denial::NoCredentials)?;
        guard.source_may_try(source)?;
        let account = self.accounts.get(user);
        let digest = self.digest_key.hash_one((user, password));
        if let Some(a) = account.filter(|_| self.known(user, digest)) {
            return Ok(Self::allowed(a, client_id)?);
        }
        // From here on, the same steps whether the username exists or not.
        guard.account_turn(user).await?;
        let turn = guard.turn(source).await?;
        // While this waited, the source may have run out of tries, and many devices of one
        // account connecting at once (a fleet after a restart) find that the first to
        // verify has let the rest through without argon2.
        guard.source_may_try(source)?;
        if let Some(a) = account.filter(|_| self.known(user, digest)) {
            return Ok(Self::allowed(a, client_id)?);
        }
        self.argon_runs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let password = password.to_owned();
        let (ok, turn) = match account {
            Some(a) => {
                let hash = a.hash.clone();
                guard
                    .run(turn, move |scratch| verify(&hash, &password, scratch))
                    .await
            }
            None => {
                let decoy = self.decoy.clone();
                guard
                    .run(turn, move |scratch| decoy.check(&password, scratch))
                    .await
            }
        };
        let Some(account) = account.filter(|_| ok) else {
            // Counted before the turn goes: the source's next attempt sees this failure.
            guard.failed(source, user);
            drop(turn);
            return Err(Denial::BadCredentials.into());
        };
        drop(turn);
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(user.to_owned(), digest);
        Ok(Self::allowed(account, client_id)?)
    }

    /// Whether `user`'s password with this digest verified before.
    fn known(&self, user: &str, digest: u64) -> bool {
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(user)
            .is_some_and(|d| *d == digest)
    }

    fn allowed(account: &Account, client_id: &str) -> Result<Arc<Grants>, Denial> {
        if !client_id_allowed(&account.client_id, client_id) {
            return Err(Denial::ClientIdNotAllowed);
        }
        Ok(Arc::clone(&account.grants))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(hash: &str) -> String {
        format!(
            "[[account]]\nusername = \"drv-000001\"\npassword_hash = \"{hash}\"\nrole = \"driver\"\n\n\
             [[account]]\nusername = \"fleet\"\nclient_id = \"drv-*\"\npassword_hash = \"{hash}\"\nrole = \"driver\"\n"
        )
    }

    #[tokio::test]
    async fn passwords_client_ids_and_roles() {
        let hash = hash_password("s3cret").expect("hash");
        let auth = Auth::from_toml(&file(&hash)).expect("valid");
        assert_eq!(auth.len(), 2);
        let g = auth
            .check("drv-000001", Some(("drv-000001", "s3cret")))
            .await
            .expect("ok");
        assert!(g.may_publish("drivers/drv-000001/location", "drv-000001", "drv-000001"));
        // Again, from the cache.
        assert!(auth
            .check("drv-000001", Some(("drv-000001", "s3cret")))
            .await
            .is_ok());
        assert_eq!(
            auth.check("drv-000001", Some(("drv-000001", "wrong")))
                .await
                .err(),
            Some(Denial::BadCredentials)
        );
        assert_eq!(
            auth.check("drv-000001", None).await.err(),
            Some(Denial::NoCredentials)
        );
        assert_eq!(
            auth.check("drv-000002", Some(("drv-000001", "s3cret")))
                .await
                .err(),
            Some(Denial::ClientIdNotAllowed)
        );
        assert!(auth
            .check("drv-000777", Some(("fleet", "s3cret")))
            .await
            .is_ok());
        assert_eq!(
            auth.check("x", Some(("nobody", "s3cret"))).await.err(),
            Some(Denial::BadCredentials)
        );
    }

    #[tokio::test]
    async fn a_fleet_connecting_at_once_costs_two_argon2_runs_not_one_each() {
        let hash = hash_password("s3cret").expect("hash");
        let auth = Arc::new(Auth::from_toml(&file(&hash)).expect("valid"));
        let checks: Vec<_> = (0..20)
            .map(|i| {
                let auth = Arc::clone(&auth);
                tokio::spawn(async move {
                    auth.check(&format!("drv-{i:06}"), Some(("fleet", "s3cret")))
                        .await
                        .is_ok()
                })
            })
            .collect();
        for c in checks {
            assert!(c.await.expect("task"));
        }
        // Two slots: at most the two first run argon2; the rest find the password verified.
        assert!(auth.argon2_runs() <= 2, "{} runs", auth.argon2_runs());
    }

    #[tokio::test]
    async fn unknown_users_and_wrong_passwords_cost_an_argon2_run_each_and_are_not_cached() {
        let hash = hash_password("s3cret").expect("hash");
        let auth = Auth::from_toml(&file(&hash)).expect("valid");
        // The right password is cached; a wrong one after it is still hashed, every time.
        assert!(auth
            .check("drv-000001", Some(("drv-000001", "s3cret")))
            .await
            .is_ok());
        for (user, password) in [
            ("drv-000001", "wrong"),
            ("drv-000001", "wrong"),
            ("nobody", "x"),
            ("nobody", "x"),
        ] {
            let before = auth.argon2_runs();
            let started = std::time::Instant::now();
            let denied = auth.check("drv-000001", Some((user, password))).await;
            assert_eq!(denied.err(), Some(Denial::BadCredentials));
            assert_eq!(auth.argon2_runs(), before + 1, "{user}/{password}");
            // argon2 with the accounts' parameters (19 MiB, t=2) takes milliseconds.
            assert!(started.elapsed() > std::time::Duration::from_millis(2));
        }
        assert_eq!(
            auth.verified.lock().expect("lock").len(),
            1,
            "successes only"
        );
    }

    #[test]
    fn bad_files_are_refused_with_reasons() {
        let hash = hash_password("p").expect("hash");
        let unknown_role =
            format!("[[account]]\nusername = \"a\"\npassword_hash = \"{hash}\"\nrole = \"root\"\n");
        assert!(Auth::from_toml(&unknown_role)
            .expect_err("refused")
            .to_string()
            .contains("unknown role"));
        let plain = "[[account]]\nusername = \"a\"\npassword_hash = \"p\"\nrole = \"rider\"\n";
        assert!(Auth::from_toml(plain)
            .expect_err("refused")
            .to_string()
            .contains("fleetcast passwd"));
    }
}
