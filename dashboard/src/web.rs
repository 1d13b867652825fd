//! The dashboard's HTTP routes: the map page and its vendored files (embedded in the
//! binary), the basemap, the page's configuration, and the `/ws` bridge endpoint.
//!
//! The page loads nothing from outside 127.0.0.1 unless the user passes `--tiles`: the
//! Content-Security-Policy says so to the browser as well.

use crate::board::Visibility;
use crate::bridge::Bridge;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use fleetcast_proto::time::unix_now;
use serde::Serialize;
use std::sync::Arc;

/// A file served from the binary.
struct Asset {
    path: &'static str,
    mime: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $mime:literal, $file:literal) => {
        Asset {
            path: $path,
            mime: $mime,
            body: include_bytes!(concat!("../web/", $file)),
        }
    };
}

const ASSETS: &[Asset] = &[
    asset!("/", "text/html; charset=utf-8", "index.html"),
    asset!("/app.js", "text/javascript; charset=utf-8", "app.js"),
    asset!("/app.css", "text/css; charset=utf-8", "app.css"),
    asset!("/cells.js", "text/javascript; charset=utf-8", "cells.js"),
    asset!("/replay.js", "text/javascript; charset=utf-8", "replay.js"),
    asset!("/share.js", "text/javascript; charset=utf-8", "share.js"),
    asset!("/share.css", "text/css; charset=utf-8", "share.css"),
    asset!(
        "/vendor/leaflet/leaflet.js",
        "text/javascript; charset=utf-8",
        "vendor/leaflet-1.9.4/leaflet.js"
    ),
    asset!(
        "/vendor/leaflet/leaflet.css",
        "text/css; charset=utf-8",
        "vendor/leaflet-1.9.4/leaflet.css"
    ),
    asset!(
        "/vendor/leaflet/LICENSE",
        "text/plain; charset=utf-8",
        "vendor/leaflet-1.9.4/LICENSE"
    ),
    asset!(
        "/vendor/leaflet/images/layers.png",
        "image/png",
        "vendor/leaflet-1.9.4/images/layers.png"
    ),
    asset!(
        "/vendor/leaflet/images/layers-2x.png",
        "image/png",
        "vendor/leaflet-1.9.4/images/layers-2x.png"
    ),
    asset!(
        "/vendor/leaflet/images/marker-icon.png",
        "image/png",
        "vendor/leaflet-1.9.4/images/marker-icon.png"
    ),
    asset!(
        "/vendor/leaflet/images/marker-icon-2x.png",
        "image/png",
        "vendor/leaflet-1.9.4/images/marker-icon-2x.png"
    ),
    asset!(
        "/vendor/leaflet/images/marker-shadow.png",
        "image/png",
        "vendor/leaflet-1.9.4/images/marker-shadow.png"
    ),
];

/// What the page learns at start (`GET /config.json`).
#[derive(Debug, Clone, Serialize)]
pub struct PageConfig {
    /// Online tile URL template, when the user asked for one (`--tiles`).
    pub tiles: Option<String>,
    /// Map credit.
    pub attribution: String,
    /// Milliseconds between batches.
    pub batch_ms: u64,
}

/// What the routes read.
#[derive(Debug, Clone)]
pub struct DashboardState {
    /// The bridge behind `/ws`.
    pub bridge: Arc<Bridge>,
    /// The basemap GeoJSON.
    pub basemap: Arc<str>,
    /// The page's configuration.
    pub page: Arc<PageConfig>,
    /// When set, `/ws` needs a browser token, and the verifier says what it may see.
    pub tokens: Option<Arc<dyn TokenVerifier>>,
}

/// Checks a browser token: the dashboard knows no accounts, so whoever owns them (the
/// broker's credentials file, wired in by `fleetcast serve`) answers for it.
pub trait TokenVerifier: Send + Sync + std::fmt::Debug {
    /// What the token's holder may see, checked at `now` (unix seconds).
    ///
    /// # Errors
    /// Why the token is refused (sent to the browser with the 401).
    fn verify(&self, token: &str, now: u64) -> Result<Visibility, Refusal>;
}

/// Why a browser token is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// It was good and has ended (expired, revoked, or its ride is over): a share link's
    /// page answers 410 Gone.
    pub gone: bool,
    /// What to tell the browser.
    pub why: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.why)
    }
}

/// The dashboard routes: `/`, `/app.js`, `/app.css`, `/vendor/leaflet/...`,
/// `/basemap.geojson`, `/config.json`, `/ws`.
pub fn app(state: DashboardState) -> Router {
    let mut router = Router::new();
    for asset in ASSETS {
        let csp = csp(state.page.tiles.as_deref());
        router = router.route(
            asset.path,
            get(move || async move {
                let mut r = ([(header::CONTENT_TYPE, asset.mime)], asset.body).into_response();
                if asset.path == "/" {
                    if let Ok(v) = HeaderValue::from_str(&csp) {
                        r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
                    }
                }
                r.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                r
            }),
        );
    }
    router
        .route("/basemap.geojson", get(basemap))
        .route("/config.json", get(page_config))
        .route("/ws", get(ws))
        .route("/t/:token", get(share_page))
        .with_state(state)
}

/// The "track my ride" page of a share link (`fleetcast share`): 410 Gone once the link has
/// expired, was revoked or its ride is over, 403 for one that is not ours or not a share
/// link, 404 when the map takes no tokens at all.
async fn share_page(State(state): State<DashboardState>, Path(token): Path<String>) -> Response {
    let Some(tokens) = &state.tokens else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let page = |status: StatusCode, text: &str| {
        let body = format!(
            "<!doctype html><meta charset=utf-8><meta name=viewport content=\"width=device-width\">\
             <title>Your ride</title><p style=\"font:18px system-ui;margin:2em\">{text}</p>"
        );
        let mut r = (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response();
        r.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'"),
        );
        r
    };
    match tokens.verify(&token, unix_now()) {
        Ok(v) if v.is_share_link() => {
            let mut r = (
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                include_str!("../web/share.html"),
            )
                .into_response();
            let csp = "default-src 'self'; connect-src 'self'; style-src 'self'; script-src 'self'";
            r.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(csp),
            );
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Ok(_) => page(StatusCode::FORBIDDEN, "This is not a ride link."),
        Err(e) if e.gone => page(StatusCode::GONE, "This ride is over."),
        Err(_) => page(StatusCode::FORBIDDEN, "This link is not valid."),
    }
}

/// Only this server, unless online tiles were asked for (then images from anywhere).
fn csp(tiles: Option<&str>) -> String {
    let img = if tiles.is_some() {
        "'self' data: https: http:"
    } else {
        "'self' data:"
    };
    format!("default-src 'self'; img-src {img}; connect-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self'")
}

async fn basemap(State(state): State<DashboardState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/geo+json")],
        state.basemap.to_string(),
    )
        .into_response()
}

async fn page_config(State(state): State<DashboardState>) -> Json<PageConfig> {
    Json((*state.page).clone())
}

/// `/ws?token=...` (or `Authorization: Bearer ...`): the token is checked before the
/// upgrade, so a browser without one gets 401 and never a socket.
async fn ws(
    State(state): State<DashboardState>,
    Query(query): Query<WsQuery>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let allowed = match &state.tokens {
        None => None,
        Some(tokens) => {
            let bearer = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            let Some(token) = query.token.as_deref().or(bearer) else {
                return (
                    StatusCode::UNAUTHORIZED,
                    "this map needs a token: `fleetcast token --auth FILE --account NAME`\n",
                )
                    .into_response();
            };
            match tokens.verify(token, unix_now()) {
                Ok(visibility) => Some(visibility),
                Err(e) => {
                    tracing::debug!(error = %e, "browser token refused");
                    return (StatusCode::UNAUTHORIZED, format!("{e}\n")).into_response();
                }
            }
        }
    };
    let bridge = Arc::clone(&state.bridge);
    let max = bridge.config.max_batch_positions * 200 + 1024;
    let write_buffer = max.min(1 << 20);
    upgrade
        // Browsers send small control messages only.
        .max_message_size(64 * 1024)
        .max_frame_size(64 * 1024)
        .write_buffer_size(write_buffer)
        // Past its size the buffer only grows while the socket takes nothing more: one
        // batch at most. Queued pongs can never pile up beyond it (the bridge also writes
        // each before reading on).
        .max_write_buffer_size(write_buffer + max)
        .on_upgrade(move |socket| bridge.serve(socket, allowed))
}

/// The query string of `/ws`.
#[derive(Debug, serde::Deserialize)]
struct WsQuery {
    token: Option<String>,
}

/// 404 for anything else.
pub async fn not_found() -> StatusCode {
    StatusCode::NOT_FOUND
}
