//! `POST /api/share?driver=ID&for=SECONDS[&until=STATUS]`: a "track my ride" link made by
//! an account, for a driver that account may see (HTTP Basic credentials, checked as an
//! MQTT login is). It answers `{"url":"/t/TOKEN","token":..,"id":..,"expires":UNIX_S}`;
//! the page itself is the dashboard's (`/t/{token}`). With `until=available` the link also
//! ends when the driver next becomes available (the trip is over).
//!
//! `DELETE /api/share/{token}`: revokes one link before its expiry, by its account or an
//! administrator; its page then answers 410 and an open page is closed within a batch.
//! Without a credentials file there are no tokens: 404.

use crate::auth::Refused;
use crate::auth::{Auth, RevokeError};
use crate::gateway::Gateway;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, post};
use axum::{Json, Router};
use fleetcast_proto::time::unix_now;
use fleetcast_proto::token::TokenError;
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;

/// The longest a link made over the API works (seconds): a day.
const MAX_TTL_S: u64 = 86_400;

/// The route, with `gateway`'s accounts.
pub fn routes(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/api/share", post(share))
        .route("/api/share/:token", delete(revoke))
        .with_state(gateway)
}

#[derive(Debug, Deserialize)]
struct ShareQuery {
    driver: String,
    /// Seconds; 30 minutes by default.
    #[serde(rename = "for", default = "half_hour")]
    ttl_s: u64,
    /// A driver status that ends the link early (`available`).
    until: Option<String>,
}

fn half_hour() -> u64 {
    1_800
}

type Answer = (StatusCode, Json<Value>);

fn say(code: StatusCode, message: &str) -> Answer {
    (code, Json(json!({ "message": message })))
}

/// The accounts, and the one whose HTTP Basic credentials came with the request (checked
/// as an MQTT login is, failed-login back-off included).
async fn account<'a>(
    gw: &'a Gateway,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<(&'a Auth, String), Answer> {
    let Some(auth) = &gw.auth else {
        return Err(say(
            StatusCode::NOT_FOUND,
            "share links need a credentials file",
        ));
    };
    let login = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(crate::ingest::basic_credentials);
    let needed = || {
        say(
            StatusCode::UNAUTHORIZED,
            "an account's credentials are needed",
        )
    };
    let Some((user, password)) = login else {
        return Err(needed());
    };
    match auth
        .check_from(&gw.logins, peer.ip(), &user, Some((&user, &password)))
        .await
    {
        Ok(_) => Ok((auth, user)),
        Err(Refused::Held(_)) => Err(say(StatusCode::TOO_MANY_REQUESTS, "too many failed logins")),
        Err(Refused::Denied(_)) => Err(needed()),
    }
}

async fn share(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<ShareQuery>,
    headers: HeaderMap,
) -> Answer {
    let (auth, user) = match account(&gw, peer, &headers).await {
        Ok(found) => found,
        Err(refused) => return refused,
    };
    let until = match q.until.as_deref().map(crate::auth::parse_status) {
        None => None,
        Some(Ok(status)) => Some(status),
        Some(Err(why)) => return say(StatusCode::BAD_REQUEST, &why),
    };
    let now = unix_now();
    let ttl = q.ttl_s.clamp(1, MAX_TTL_S);
    match auth.mint_share(Some(&user), &q.driver, now, ttl, until) {
        Ok((token, link)) => (
            StatusCode::OK,
            Json(json!({
                "url": format!("/t/{token}"),
                "token": token,
                "id": link.id,
                "expires": link.expires_at,
            })),
        ),
        Err(TokenError::NotVisible(..)) => say(
            StatusCode::FORBIDDEN,
            "this account may not see that driver",
        ),
        Err(TokenError::NoSecret) => say(
            StatusCode::NOT_FOUND,
            "the credentials file has no token_secret",
        ),
        Err(e) => say(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

async fn revoke(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Answer {
    let (auth, user) = match account(&gw, peer, &headers).await {
        Ok(found) => found,
        Err(refused) => return refused,
    };
    match auth.revoke(&token, Some(&user), unix_now()) {
        Ok(id) => (
            StatusCode::OK,
            Json(json!({ "message": "revoked", "id": id })),
        ),
        Err(RevokeError::Invalid(TokenError::Expired | TokenError::Revoked)) => {
            say(StatusCode::GONE, "this link has ended already")
        }
        Err(RevokeError::Invalid(TokenError::NoSecret)) => say(
            StatusCode::NOT_FOUND,
            "the credentials file has no token_secret",
        ),
        Err(e @ RevokeError::NotYours) => say(StatusCode::FORBIDDEN, &e.to_string()),
        Err(e @ RevokeError::Full) => say(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        Err(e) => say(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}
