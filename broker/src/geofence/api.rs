//! The geofence API: `GET /api/geofences` (a FeatureCollection, each with its count),
//! `PUT /api/geofences/{name}` (a GeoJSON Feature) and `DELETE /api/geofences/{name}`.
//!
//! With a credentials file only an account with the role `admin` may use it, with HTTP
//! Basic credentials checked as an MQTT login is (the same failed-login back-off per
//! address); without one, anyone may (`serve` then listens on loopback only).

use super::{geojson, Geofences};
use crate::auth::Refused;
use crate::gateway::Gateway;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;

/// A fence's GeoJSON may be this large.
const MAX_BODY: usize = 1 << 20;

#[derive(Debug, Clone)]
struct Api {
    gateway: Arc<Gateway>,
    fences: Arc<Geofences>,
}

/// The routes, over `fences`, with `gateway`'s accounts.
pub fn routes(gateway: Arc<Gateway>, fences: Arc<Geofences>) -> Router {
    Router::new()
        .route("/api/geofences", get(list))
        .route(
            "/api/geofences/:name",
            axum::routing::put(put).delete(delete),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(Api { gateway, fences })
}

fn answer(status: StatusCode, message: &str) -> Response {
    let mut r = (status, Json(json!({ "message": message }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        let realm = HeaderValue::from_static("Basic realm=\"fleetcast\"");
        r.headers_mut().insert(header::WWW_AUTHENTICATE, realm);
    }
    r
}

impl Api {
    /// Lets an administrator through (anyone without a credentials file).
    async fn admin(&self, peer: SocketAddr, headers: &HeaderMap) -> Result<(), Response> {
        let Some(auth) = &self.gateway.auth else {
            return Ok(());
        };
        let login = headers
            .get(header::AUTHORIZATION)
            .and_then(crate::ingest::basic_credentials);
        let Some((user, password)) = login else {
            return Err(answer(
                StatusCode::UNAUTHORIZED,
                "an admin's credentials are needed",
            ));
        };
        let checked = auth
            .check_from(
                &self.gateway.logins,
                peer.ip(),
                &user,
                Some((&user, &password)),
            )
            .await;
        match checked {
            Ok(_) if auth.is_admin(&user) => Ok(()),
            Ok(_) => Err(answer(
                StatusCode::FORBIDDEN,
                "this account is not an admin",
            )),
            Err(Refused::Held(_)) => Err(answer(
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed logins; try again later",
            )),
            Err(Refused::Denied(_)) => Err(answer(
                StatusCode::UNAUTHORIZED,
                "an admin's credentials are needed",
            )),
        }
    }
}

async fn list(
    State(api): State<Api>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = api.admin(peer, &headers).await {
        return r;
    }
    let features = api.fences.features();
    Json(json!({ "type": "FeatureCollection", "features": features })).into_response()
}

async fn put(
    State(api): State<Api>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = api.admin(peer, &headers).await {
        return r;
    }
    let mut feature: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return answer(StatusCode::BAD_REQUEST, &format!("not JSON: {e}")),
    };
    // The path names the fence, whatever the body says.
    if let Some(props) = feature
        .as_object_mut()
        .map(|o| o.entry("properties").or_insert_with(|| json!({})))
    {
        if let Some(p) = props.as_object_mut() {
            p.insert("name".into(), json!(name));
        }
    }
    match geojson::feature(&feature) {
        Ok(fence) => {
            api.fences.set(fence);
            answer(StatusCode::OK, "OK")
        }
        Err(e) => answer(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

async fn delete(
    State(api): State<Api>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = api.admin(peer, &headers).await {
        return r;
    }
    if api.fences.remove(&name) {
        answer(StatusCode::OK, "OK")
    } else {
        answer(StatusCode::NOT_FOUND, "no such geofence")
    }
}
