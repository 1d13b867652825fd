//! Browser tokens: signed, expiring bearer tokens for the live map's WebSocket when
//! authentication is on (`fleetcast token` mints one).
//!
//! A browser cannot send MQTT credentials and should not hold a device password, so the
//! operator mints a token for an account of the credentials file; the map passes it on
//! `/ws?token=...`, and the account's subscribe grants decide which drivers it is sent.
//!
//! Format: `base64url(claims JSON) "." base64url(HMAC-SHA256(secret, first part))`, with
//! claims `{"sub": account, "exp": unix seconds}`, and for a share link ("track my ride")
//! `"drv": driver id`, which narrows what the token shows to that one driver, `"jti"`, the
//! link's id (what a revocation names), `"iat"`, when it was made, and optionally
//! `"until"`, a driver status that ends the link once the driver enters it after `iat`.
//! The secret is the credentials file's `token_secret`; changing it revokes every token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Longest token accepted (bytes): claims are small; anything longer is not ours.
const MAX_TOKEN_LEN: usize = 1024;

/// Why a token was refused or could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not of the token's form, or too long.
    #[error("malformed token")]
    Malformed,
    /// The signature does not match: another secret, or altered.
    #[error("token signature does not match")]
    BadSignature,
    /// Past its expiry.
    #[error("token expired")]
    Expired,
    /// The credentials file has no `token_secret`.
    #[error("the credentials file has no token_secret")]
    NoSecret,
    /// The token names an account the credentials file does not have.
    #[error("no account {0}")]
    UnknownAccount(String),
    /// A share link for a driver its account may not see.
    #[error("account {0} may not see driver {1}")]
    NotVisible(String, String),
    /// A share link that was revoked before it expired.
    #[error("share link revoked")]
    Revoked,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    drv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    until: Option<String>,
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The account it stands for.
    pub account: String,
    /// When it expires (unix seconds).
    pub exp: u64,
    /// For a share link: the one driver it shows.
    pub driver: Option<String>,
    /// For a share link: its id, when it has one (links made before ids were given have
    /// none, and can only expire).
    pub link_id: Option<String>,
    /// For a share link: when it was made (unix seconds).
    pub issued_at: Option<u64>,
    /// For a share link: the driver status that ends it (`available`: the trip is over).
    pub until_status: Option<String>,
}

/// What a share link's token says beside its account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareLink {
    /// The one driver it shows.
    pub driver: String,
    /// Its id: what a revocation names.
    pub id: String,
    /// When it was made (unix seconds).
    pub issued_at: u64,
    /// When it expires (unix seconds).
    pub expires_at: u64,
    /// A driver status that ends it early once the driver enters it after `issued_at`.
    pub until_status: Option<String>,
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!())
}

/// A token for `account`, valid until `exp` (unix seconds).
pub fn mint(secret: &[u8], account: &str, exp: u64) -> String {
    sign(
        secret,
        &Claims {
            sub: account.to_owned(),
            exp,
            drv: None,
            jti: None,
            iat: None,
            until: None,
        },
    )
}

/// A share link's token: `account`'s view narrowed to `link`'s driver, until it expires.
pub fn mint_share(secret: &[u8], account: &str, link: &ShareLink) -> String {
    sign(
        secret,
        &Claims {
            sub: account.to_owned(),
            exp: link.expires_at,
            drv: Some(link.driver.clone()),
            jti: Some(link.id.clone()),
            iat: Some(link.issued_at),
            until: link.until_status.clone(),
        },
    )
}

fn sign(secret: &[u8], claims: &Claims) -> String {
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let mut m = mac(secret);
    m.update(body.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
    format!("{body}.{sig}")
}

/// The account a valid token names, and when the token expires (unix seconds).
///
/// # Errors
/// Malformed, signed with another secret, or expired at `now` (unix seconds).
pub fn verify(secret: &[u8], token: &str, now: u64) -> Result<(String, u64), TokenError> {
    verify_claims(secret, token, now).map(|v| (v.account, v.exp))
}

/// Everything a valid token says.
///
/// # Errors
/// As [`verify`].
pub fn verify_claims(secret: &[u8], token: &str, now: u64) -> Result<Verified, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let (body, sig) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| TokenError::Malformed)?;
    let mut m = mac(secret);
    m.update(body.as_bytes());
    // Constant-time comparison.
    m.verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
    let claims: Claims = URL_SAFE_NO_PAD
        .decode(body)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(TokenError::Malformed)?;
    if claims.exp <= now {
        return Err(TokenError::Expired);
    }
    Ok(Verified {
        account: claims.sub,
        exp: claims.exp,
        driver: claims.drv,
        link_id: claims.jti,
        issued_at: claims.iat,
        until_status: claims.until,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_until_it_expires() {
        let t = mint(b"secret", "rider-1", 1_000);
        assert_eq!(verify(b"secret", &t, 999), Ok(("rider-1".into(), 1_000)));
        assert_eq!(verify(b"secret", &t, 1_000), Err(TokenError::Expired));
    }

    #[test]
    fn a_share_token_names_its_driver() {
        let link = ShareLink {
            driver: "drv-000001".into(),
            id: "l1".into(),
            issued_at: 900,
            expires_at: 1_000,
            until_status: Some("available".into()),
        };
        let t = mint_share(b"secret", "partner-1", &link);
        let v = verify_claims(b"secret", &t, 999).expect("valid");
        assert_eq!(v.driver.as_deref(), Some("drv-000001"));
        assert_eq!(v.link_id.as_deref(), Some("l1"));
        assert_eq!(v.issued_at, Some(900));
        assert_eq!(v.until_status.as_deref(), Some("available"));
        assert_eq!(verify(b"secret", &t, 999), Ok(("partner-1".into(), 1_000)));
        assert_eq!(
            verify_claims(b"secret", &mint(b"secret", "a", 9), 0).map(|v| v.driver),
            Ok(None)
        );
    }

    #[test]
    fn altered_or_foreign_tokens_are_refused() {
        let t = mint(b"secret", "rider-1", 1_000);
        assert_eq!(verify(b"other", &t, 0), Err(TokenError::BadSignature));
        // Claims swapped for another account's, signature kept.
        let forged_body = URL_SAFE_NO_PAD.encode(br#"{"sub":"bridge","exp":1000}"#);
        let sig = t.split_once('.').map(|(_, s)| s).unwrap_or_default();
        assert_eq!(
            verify(b"secret", &format!("{forged_body}.{sig}"), 0),
            Err(TokenError::BadSignature)
        );
        for junk in ["", ".", "abc", "a.b.c", &"x".repeat(2_000)] {
            assert!(verify(b"secret", junk, 0).is_err(), "{junk}");
        }
    }
}
