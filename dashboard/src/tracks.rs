//! The history API, on the map's HTTP server:
//!
//! - `GET /api/drivers/{id}/track?since=..&until=..`: one driver's fixes in a time range as
//!   a GeoJSON Feature: a LineString (a Point for one fix, `null` for none) and, in
//!   `properties.times`, each point's time (ms since the epoch), with `status` per point.
//! - `GET /api/replay?since=..&until=..&bbox=W,S,E,N&step_ms=..`: every driver seen inside
//!   the box during the range, each thinned to one point per `step_ms`, for the page's
//!   replay: `{"since","until","step_ms","truncated","drivers":[{"id","points":[[t,lat,lon,status,heading],..]}]}`
//!   (`status`: 0 available, 1 to pickup, 2 on trip). At most [`MAX_REPLAY_DRIVERS`]
//!   drivers and [`MAX_REPLAY_POINTS`] points; `truncated` says when that cut it.
//!
//! `since`/`until` are RFC 3339 or milliseconds; by default the history window up to now.
//! Without accounts anyone may ask (the map then serves loopback only). With them
//! (`--auth`): a browser token (`?token=` or `Authorization: Bearer`, as `/ws` takes) or an
//! account's HTTP Basic credentials ([`ViewerLogin`]); either way only drivers whose
//! location topic the account could subscribe to.

use crate::board::Visibility;
use crate::history::{History, Point, Trace};
use crate::timestamp::parse_ms;
use crate::web::TokenVerifier;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use fleetcast_proto::time::{now_ms, unix_now};
use fleetcast_proto::Status;
use serde::Deserialize;
use serde_json::{json, Value};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

/// Most drivers in one replay answer.
pub const MAX_REPLAY_DRIVERS: usize = 5_000;
/// Most points in one replay answer (about 6 MB of JSON).
pub const MAX_REPLAY_POINTS: usize = 200_000;

/// Why credentials were not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LoginRefused {
    /// Wrong or unknown.
    #[error("bad credentials")]
    Denied,
    /// Not checked: too many failures from this address or for this account.
    #[error("too many failed logins")]
    Held,
}

/// A boxed future, as a trait object can return one.
pub type LoginFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Visibility, LoginRefused>> + Send + 'a>>;

/// Checks an account's HTTP Basic credentials: the dashboard knows no accounts, so whoever
/// owns them (the broker, with its failed-login limits) answers.
pub trait ViewerLogin: Send + Sync + std::fmt::Debug {
    /// What the account may see, when `password` is its password.
    fn login<'a>(&'a self, peer: IpAddr, user: &'a str, password: &'a str) -> LoginFuture<'a>;
}

/// What the routes read.
#[derive(Debug, Clone)]
pub struct TrackState {
    /// The tracks.
    pub history: Arc<History>,
    /// Browser tokens, when the map takes them.
    pub tokens: Option<Arc<dyn TokenVerifier>>,
    /// Basic credentials, when the map has accounts.
    pub logins: Option<Arc<dyn ViewerLogin>>,
}

/// `/api/drivers/{id}/track` and `/api/replay`.
pub fn routes(state: TrackState) -> Router {
    Router::new()
        .route("/api/drivers/:id/track", get(track))
        .route("/api/replay", get(replay))
        .with_state(state)
}

#[derive(Debug, Deserialize)]
struct Range {
    since: Option<String>,
    until: Option<String>,
    token: Option<String>,
    bbox: Option<String>,
    step_ms: Option<u64>,
}

fn answer(status: StatusCode, message: &str) -> Response {
    let mut r = (status, Json(json!({ "message": message }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        let realm = HeaderValue::from_static("Basic realm=\"fleetcast\"");
        r.headers_mut().insert(header::WWW_AUTHENTICATE, realm);
    }
    r
}

impl TrackState {
    /// Who is asking and for what range: both endpoints' checks, in their order.
    async fn admit(
        &self,
        peer: IpAddr,
        headers: &HeaderMap,
        q: &Range,
    ) -> Result<(Option<Visibility>, (u64, u64)), Response> {
        let viewer = self.viewer(peer, headers, q.token.as_deref()).await?;
        let range = self
            .range(q)
            .map_err(|why| answer(StatusCode::BAD_REQUEST, &why))?;
        Ok((viewer, range))
    }

    /// Who is asking: Ok(None) when the map has no accounts (everything visible).
    async fn viewer(
        &self,
        peer: IpAddr,
        headers: &HeaderMap,
        token: Option<&str>,
    ) -> Result<Option<Visibility>, Response> {
        if self.tokens.is_none() && self.logins.is_none() {
            return Ok(None);
        }
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let bearer = authorization.and_then(|v| v.strip_prefix("Bearer "));
        if let (Some(tokens), Some(token)) = (&self.tokens, token.or(bearer)) {
            return match tokens.verify(token, unix_now()) {
                Ok(v) => Ok(Some(v)),
                Err(e) => Err(answer(StatusCode::UNAUTHORIZED, &e.why)),
            };
        }
        let basic = authorization.and_then(basic_credentials);
        match (&self.logins, basic) {
            (Some(logins), Some((user, password))) => {
                match logins.login(peer, &user, &password).await {
                    Ok(v) => Ok(Some(v)),
                    Err(LoginRefused::Held) => Err(answer(
                        StatusCode::TOO_MANY_REQUESTS,
                        "too many failed logins",
                    )),
                    Err(LoginRefused::Denied) => Err(answer(
                        StatusCode::UNAUTHORIZED,
                        "an account's credentials or a token are needed",
                    )),
                }
            }
            _ => Err(answer(
                StatusCode::UNAUTHORIZED,
                "an account's credentials or a token are needed",
            )),
        }
    }

    /// `since..=until` from the query: the history window up to now by default.
    ///
    /// # Errors
    /// What is wrong with them (a 400's message).
    fn range(&self, q: &Range) -> Result<(u64, u64), String> {
        let now = now_ms();
        let window = u64::try_from(self.history.config().window.as_millis()).unwrap_or(u64::MAX);
        let at = |v: &Option<String>, default: u64, name: &str| {
            match v {
            None => Ok(default),
            Some(text) => parse_ms(text).ok_or_else(|| {
                format!("{name} must be RFC 3339 (2026-12-03T14:05:00Z) or milliseconds since the epoch")
            }),
        }
        };
        let since = at(&q.since, now.saturating_sub(window), "since")?;
        let until = at(&q.until, now, "until")?;
        if since > until {
            return Err("since is after until".to_owned());
        }
        Ok((since, until))
    }
}

/// HTTP Basic `user:password`.
fn basic_credentials(v: &str) -> Option<(String, String)> {
    let encoded = v.strip_prefix("Basic ")?;
    let decoded = base64_decode(encoded.trim())?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Standard base64 with padding (what browsers and curl send for Basic).
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let bytes = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in bytes {
        acc = (acc << 6) | u32::from(value(c)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Available => "available",
        Status::ToPickup => "to_pickup",
        Status::OnTrip => "on_trip",
    }
}

/// A GeoJSON Feature of one driver's points.
pub fn feature(id: &str, range: (u64, u64), points: &[Point]) -> Value {
    let coordinates: Vec<[f64; 2]> = points.iter().map(|p| [p.lon, p.lat]).collect();
    let geometry = match coordinates.len() {
        0 => Value::Null,
        1 => json!({ "type": "Point", "coordinates": coordinates[0] }),
        _ => json!({ "type": "LineString", "coordinates": coordinates }),
    };
    json!({
        "type": "Feature",
        "geometry": geometry,
        "properties": {
            "id": id,
            "since": range.0,
            "until": range.1,
            "times": points.iter().map(|p| p.t).collect::<Vec<_>>(),
            "status": points.iter().map(|p| status_name(p.status)).collect::<Vec<_>>(),
        },
    })
}

async fn track(
    State(state): State<TrackState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    Query(q): Query<Range>,
    headers: HeaderMap,
) -> Response {
    let (viewer, range) = match state.admit(peer.ip(), &headers, &q).await {
        Ok(admitted) => admitted,
        Err(r) => return r,
    };
    let memory = state.history.trace(&id, range.0, range.1);
    let stored = match older_from_store(&state, &id, range).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "history store read failed");
            return answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                "history store unreadable",
            );
        }
    };
    let trace = match (stored, memory) {
        (None, None) => return answer(StatusCode::NOT_FOUND, "no history for this driver"),
        (Some(t), None) | (None, Some(t)) => t,
        (Some(mut older), Some(recent)) => {
            older.points.extend(recent.points);
            Trace {
                topic: recent.topic,
                ..older
            }
        }
    };
    // The same answer as an unknown driver: an account learns nothing of others' drivers.
    if !viewer.as_ref().is_none_or(|v| v.may_see(&trace.topic)) {
        return answer(StatusCode::NOT_FOUND, "no history for this driver");
    }
    let mut r = Json(feature(&id, range, &trace.points)).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/geo+json"),
    );
    r
}

/// With a store: the part of `range` older than what memory holds of driver `id`.
async fn older_from_store(
    state: &TrackState,
    id: &str,
    (since, until): (u64, u64),
) -> Result<Option<Trace>, crate::archive::ArchiveError> {
    let Some(archive) = state.history.archive().cloned() else {
        return Ok(None);
    };
    let until = match state.history.oldest(id) {
        Some(oldest) if oldest <= since => return Ok(None),
        Some(oldest) => until.min(oldest - 1),
        None => until,
    };
    let id = id.to_owned();
    // The store's reads block on the disk.
    tokio::task::spawn_blocking(move || archive.trace(&id, (since, until), now_ms()))
        .await
        .map_err(|e| crate::archive::ArchiveError(e.to_string()))?
}

async fn replay(
    State(state): State<TrackState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<Range>,
    headers: HeaderMap,
) -> Response {
    let (viewer, range) = match state.admit(peer.ip(), &headers, &q).await {
        Ok(admitted) => admitted,
        Err(r) => return r,
    };
    let bbox = match q.bbox.as_deref().map(parse_bbox) {
        None => None,
        Some(Some(b)) => Some(b),
        Some(None) => {
            return answer(
                StatusCode::BAD_REQUEST,
                "bbox must be west,south,east,north (finite)",
            )
        }
    };
    let step_ms = q.step_ms.unwrap_or(1_000);
    let traces: Vec<Trace> = state.history.replay(
        range,
        bbox,
        step_ms,
        (MAX_REPLAY_DRIVERS + 1, MAX_REPLAY_POINTS + 1),
        |_, topic| viewer.as_ref().is_none_or(|v| v.may_see(topic)),
    );
    let points: usize = traces.iter().map(|t| t.points.len()).sum();
    let truncated = traces.len() > MAX_REPLAY_DRIVERS || points > MAX_REPLAY_POINTS;
    let drivers: Vec<Value> = traces
        .iter()
        .take(MAX_REPLAY_DRIVERS)
        .map(|t| {
            let points: Vec<Value> = t
                .points
                .iter()
                .map(|p| {
                    let code = match p.status {
                        Status::Available => 0,
                        Status::ToPickup => 1,
                        Status::OnTrip => 2,
                    };
                    json!([p.t, p.lat, p.lon, code, p.heading.round()])
                })
                .collect();
            json!({ "id": t.id, "points": points })
        })
        .collect();
    Json(json!({
        "since": range.0,
        "until": range.1,
        "step_ms": step_ms,
        "truncated": truncated,
        "drivers": drivers,
    }))
    .into_response()
}

fn parse_bbox(text: &str) -> Option<[f64; 4]> {
    let v: Vec<f64> = text
        .split(',')
        .map(|s| s.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .ok()?;
    let b: [f64; 4] = v.try_into().ok()?;
    crate::viewport::Viewport::from_bbox(b).map(|_| b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_decode() {
        // "fleet:fleet-demo"
        assert_eq!(
            basic_credentials("Basic ZmxlZXQ6ZmxlZXQtZGVtbw=="),
            Some(("fleet".to_owned(), "fleet-demo".to_owned()))
        );
        assert_eq!(basic_credentials("Basic !!!"), None);
        assert_eq!(basic_credentials("Bearer x"), None);
    }

    #[test]
    fn a_feature_is_geojson() {
        let p = |t, lat, lon| Point {
            t,
            lat,
            lon,
            status: Status::OnTrip,
            heading: 0.0,
        };
        let f = feature("a", (1, 9), &[p(1, 60.0, 24.0), p(2, 60.1, 24.1)]);
        assert_eq!(f["geometry"]["type"], "LineString");
        assert_eq!(f["geometry"]["coordinates"][1][0], 24.1);
        assert_eq!(f["properties"]["times"], json!([1, 2]));
        assert_eq!(
            feature("a", (1, 9), &[p(1, 60.0, 24.0)])["geometry"]["type"],
            "Point"
        );
        assert!(feature("a", (1, 9), &[])["geometry"].is_null());
        assert_eq!(
            parse_bbox("24.9,60.1,25,60.2"),
            Some([24.9, 60.1, 25.0, 60.2])
        );
        assert_eq!(parse_bbox("24.9,60.1,25"), None);
    }
}
