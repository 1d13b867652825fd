//! The HTTP listener's routes: liveness and readiness (more arrive with the dashboard and
//! metrics).

use crate::gateway::Gateway;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What the HTTP routes read.
#[derive(Debug, Clone)]
pub struct HttpState {
    /// The gateway whose health is reported.
    pub gateway: Arc<Gateway>,
    /// Set once every listener is bound and accepting.
    pub listening: Arc<AtomicBool>,
}

/// The body of `/readyz`.
#[derive(Debug, Serialize)]
pub struct Readiness {
    /// Whether the broker takes clients.
    pub ready: bool,
    /// Every listener is bound and accepting.
    pub listeners: bool,
    /// The router thread takes events.
    pub router: bool,
    /// Client connections open.
    pub connections: usize,
}

/// The HTTP routes.
pub fn app(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn readyz(State(state): State<HttpState>) -> (StatusCode, Json<Readiness>) {
    let listeners =
        state.listening.load(Ordering::Acquire) && !state.gateway.shutdown.is_cancelled();
    let router = state.gateway.router.is_alive();
    let body = Readiness {
        ready: listeners && router,
        listeners,
        router,
        connections: state.gateway.stats.open_total(),
    };
    let code = if body.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}
