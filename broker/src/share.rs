//! `POST /api/share?driver=ID&for=SECONDS`: a "track my ride" link made by an account, for
//! a driver that account may see (HTTP Basic credentials, checked as an MQTT login is).
//! It answers `{"url":"/t/TOKEN","token":..,"expires":UNIX_S}`; the page itself is the
//! dashboard's (`/t/{token}`). Without a credentials file there are no tokens: 404.

use crate::auth::Refused;
use crate::gateway::Gateway;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
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
        .with_state(gateway)
}

#[derive(Debug, Deserialize)]
struct ShareQuery {
    driver: String,
    /// Seconds; 30 minutes by default.
    #[serde(rename = "for", default = "half_hour")]
    ttl_s: u64,
}

fn half_hour() -> u64 {
    1_800
}

async fn share(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<ShareQuery>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    let say = |code: StatusCode, message: &str| (code, Json(json!({ "message": message })));
    let Some(auth) = &gw.auth else {
        return say(StatusCode::NOT_FOUND, "share links need a credentials file");
    };
    let login = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(crate::ingest::basic_credentials);
    let Some((user, password)) = login else {
        return say(
            StatusCode::UNAUTHORIZED,
            "an account's credentials are needed",
        );
    };
    match auth
        .check_from(&gw.logins, peer.ip(), &user, Some((&user, &password)))
        .await
    {
        Ok(_) => {}
        Err(Refused::Held(_)) => {
            return say(StatusCode::TOO_MANY_REQUESTS, "too many failed logins")
        }
        Err(Refused::Denied(_)) => {
            return say(
                StatusCode::UNAUTHORIZED,
                "an account's credentials are needed",
            )
        }
    }
    let now = unix_now();
    let ttl = q.ttl_s.clamp(1, MAX_TTL_S);
    match auth.mint_share(Some(&user), &q.driver, now, ttl) {
        Ok(token) => (
            StatusCode::OK,
            Json(json!({ "url": format!("/t/{token}"), "token": token, "expires": now + ttl })),
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
