//! Browser tokens as the accounts see them, and "track my ride" share links: minting one
//! for a driver an account may see, checking one (signature, expiry, revocation), and the
//! list of links revoked before their expiry.
//!
//! Tokens are stateless (signed claims), so revoking one link means remembering its id
//! until the link would have expired anyway: the list prunes itself by expiry, is bounded
//! by [`MAX_REVOKED`], and with `serve --data` is written to the store so a restart does
//! not bring a revoked link back.

use super::Auth;
use crate::durable::Durable;
use crate::policy::Grants;
use argon2::password_hash::rand_core::{OsRng, RngCore};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use fleetcast_proto::location::Status;
use fleetcast_proto::token::{self, ShareLink, TokenError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Revoked links remembered at most (each until its own expiry).
pub const MAX_REVOKED: usize = 100_000;

/// What a valid browser token grants.
#[derive(Debug, Clone)]
pub struct TokenAccess {
    /// The account it names.
    pub account: String,
    /// The account's grants.
    pub grants: Arc<Grants>,
    /// When it expires (unix seconds).
    pub expires_at: u64,
    /// For a share link: the one driver it shows.
    pub driver: Option<String>,
    /// For a share link: its id (none for links made before links had ids).
    pub link_id: Option<String>,
    /// For a share link: when it was made (unix seconds).
    pub issued_at: u64,
    /// For a share link: the status that ends it once the driver enters it after
    /// `issued_at`.
    pub until_status: Option<Status>,
}

/// Why a link could not be revoked.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    /// Not a valid share link of ours (or not a share link at all).
    #[error("not a share link: {0}")]
    Invalid(TokenError),
    /// It has no id: made before links had ids; it can only expire.
    #[error("this link has no id; it ends when it expires")]
    NoId,
    /// The requester is neither its account nor an administrator.
    #[error("only the link's account or an administrator may revoke it")]
    NotYours,
    /// [`MAX_REVOKED`] unexpired links are revoked already.
    #[error("{MAX_REVOKED} links are revoked already")]
    Full,
}

/// Link ids revoked, each with the link's expiry (unix seconds).
#[derive(Debug, Default)]
pub(super) struct Revocations {
    ids: Mutex<HashMap<String, u64>>,
    store: OnceLock<Arc<Durable>>,
}

impl Revocations {
    fn ids(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A fresh link id: 96 random bits, base64url.
fn link_id() -> String {
    let mut bytes = [0u8; 12];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A status named in a link (`available`, `to_pickup`, `on_trip`).
///
/// # Errors
/// Not a status drivers report.
pub fn parse_status(s: &str) -> Result<Status, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| format!("unknown status {s:?}: one of available, to_pickup, on_trip"))
}

impl Auth {
    /// The account and grants a browser token names, checked at `now` (unix seconds).
    ///
    /// # Errors
    /// No `token_secret`, a bad, expired or revoked token, or an account no longer in the
    /// file.
    pub fn check_token(&self, token: &str, now: u64) -> Result<TokenAccess, TokenError> {
        let secret = self.secret()?;
        let v = token::verify_claims(secret, token, now)?;
        if v.link_id
            .as_ref()
            .is_some_and(|id| self.revoked.ids().contains_key(id))
        {
            return Err(TokenError::Revoked);
        }
        let grants = match (&v.driver, v.account.is_empty()) {
            // The operator's own share link (`fleetcast share` without --account): the
            // holder of the token secret may show any one driver.
            (Some(driver), true) => Arc::new(Grants {
                publish: Vec::new(),
                subscribe: vec![format!("drivers/{driver}/+")],
            }),
            _ => self
                .accounts
                .get(&v.account)
                .map(|a| Arc::clone(&a.grants))
                .ok_or_else(|| TokenError::UnknownAccount(v.account.clone()))?,
        };
        // A status this build does not know cannot end the link: refuse it rather than
        // show a driver for longer than its issuer meant.
        let until_status = match v.until_status.as_deref().map(parse_status) {
            None => None,
            Some(Ok(s)) => Some(s),
            Some(Err(_)) => return Err(TokenError::Malformed),
        };
        Ok(TokenAccess {
            account: v.account,
            grants,
            expires_at: v.exp,
            driver: v.driver,
            link_id: v.link_id,
            issued_at: v.issued_at.unwrap_or(0),
            until_status,
        })
    }

    /// A share link's token: `driver` (its location and status topics) as `account` may
    /// see it, or, with no account, as the operator who holds the token secret, for `ttl_s`
    /// seconds from `now`, ending early when the driver enters `until` after `now`.
    ///
    /// # Errors
    /// No `token_secret`, no such account, or one whose grants do not show that driver.
    pub fn mint_share(
        &self,
        account: Option<&str>,
        driver: &str,
        now: u64,
        ttl_s: u64,
        until: Option<Status>,
    ) -> Result<(String, ShareLink), TokenError> {
        let secret = self.secret()?;
        // A wildcard or a level separator would make "one driver" many.
        let one_level = !driver.is_empty() && !driver.contains(['/', '+', '#']);
        let not_visible = || {
            let who = account.unwrap_or("the operator").to_owned();
            TokenError::NotVisible(who, driver.to_owned())
        };
        if !one_level {
            return Err(not_visible());
        }
        if let Some(account) = account {
            let grants = self
                .accounts
                .get(account)
                .map(|a| &a.grants)
                .ok_or_else(|| TokenError::UnknownAccount(account.to_owned()))?;
            let topic = fleetcast_proto::topic::location_topic(driver);
            if !grants.may_subscribe(&topic, account, account) {
                return Err(not_visible());
            }
        }
        let link = ShareLink {
            driver: driver.to_owned(),
            id: link_id(),
            issued_at: now,
            expires_at: now.saturating_add(ttl_s),
            until_status: until.map(|s| s.as_str().to_owned()),
        };
        Ok((
            token::mint_share(secret, account.unwrap_or(""), &link),
            link,
        ))
    }

    /// Revokes the share link `token` at `now` for `requester` (its own account, or an
    /// administrator; `None`: the operator, who holds the credentials file). Revoking a
    /// revoked link again is not an error. Returns the link's id.
    ///
    /// # Errors
    /// Not a valid, unexpired share link with an id; not the requester's; or the list is
    /// full.
    pub fn revoke(
        &self,
        token: &str,
        requester: Option<&str>,
        now: u64,
    ) -> Result<String, RevokeError> {
        let secret = self.secret().map_err(RevokeError::Invalid)?;
        let v = token::verify_claims(secret, token, now).map_err(RevokeError::Invalid)?;
        if v.driver.is_none() {
            return Err(RevokeError::Invalid(TokenError::Malformed));
        }
        let id = v.link_id.ok_or(RevokeError::NoId)?;
        if let Some(who) = requester {
            if who != v.account && !self.is_admin(who) {
                return Err(RevokeError::NotYours);
            }
        }
        self.remember_revoked(&id, v.exp, now)?;
        if let Some(store) = self.revoked.store.get() {
            store.revoked(&id, v.exp);
        }
        Ok(id)
    }

    fn remember_revoked(&self, id: &str, exp: u64, now: u64) -> Result<(), RevokeError> {
        let mut ids = self.revoked.ids();
        if ids.len() >= MAX_REVOKED && !ids.contains_key(id) {
            ids.retain(|_, e| *e > now);
            if ids.len() >= MAX_REVOKED {
                return Err(RevokeError::Full);
            }
        }
        ids.insert(id.to_owned(), exp);
        Ok(())
    }

    /// Takes the revocations a store kept (expired ones are dropped), and writes every
    /// later one to it.
    pub fn keep_revocations_in(&self, store: Arc<Durable>, kept: Vec<(String, u64)>, now: u64) {
        for (id, exp) in kept.into_iter().filter(|(_, exp)| *exp > now) {
            if self.remember_revoked(&id, exp, now).is_err() {
                break;
            }
        }
        let _ = self.revoked.store.set(store);
    }

    /// Whether the link with id `id` was revoked.
    pub fn is_revoked(&self, id: &str) -> bool {
        self.revoked.ids().contains_key(id)
    }

    /// Revoked links remembered now.
    pub fn revoked_len(&self) -> usize {
        self.revoked.ids().len()
    }
}
