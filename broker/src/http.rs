//! The HTTP listener's routes: liveness and readiness (more arrive with the dashboard and
//! metrics), and the accept loop that serves them (bounded, with a header time-out, over
//! TLS when it is on).

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

/// How long a TLS handshake, and then a request's headers, may take.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// HTTP connections open at once (the map's 1,000 browsers, health checks, scrapes); past
/// it new ones are closed at once rather than holding descriptors the MQTT listeners need.
const HTTP_CONNECTIONS: usize = 2_048;

/// Serves `app` (HTTP/1.1 with upgrades, for the dashboard's WebSocket), over TLS when
/// `tls` is given, until `shutdown`; each connection runs on `tracker` and is dropped at
/// shutdown. Unlike `axum::serve`, connections are bounded and a client must send its
/// headers within [`HEADER_TIMEOUT`], so idle sockets cannot pile up.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    shutdown: tokio_util::sync::CancellationToken,
    tracker: tokio_util::task::TaskTracker,
) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(HTTP_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => continue,
                }
            }
        };
        let Ok(slot) = std::sync::Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!("HTTP connection limit reached; closing a new connection");
            continue;
        };
        let tls = tls.clone();
        let app = app.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let _slot = slot;
            match tls {
                None => serve_connection(stream, app, &shutdown).await,
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream));
                    let tls = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        r = handshake => match r {
                            Ok(Ok(tls)) => tls,
                            _ => return,
                        },
                    };
                    serve_connection(tls, app, &shutdown).await
                }
            }
        });
    }
}

async fn serve_connection<S>(io: S, app: Router, shutdown: &tokio_util::sync::CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let conn =
        builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(app));
    tokio::select! {
        _ = shutdown.cancelled() => {}
        r = conn => if let Err(e) = r {
            tracing::debug!(error = %e, "HTTP connection ended with an error");
        },
    }
}
