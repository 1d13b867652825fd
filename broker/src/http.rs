//! The HTTP listener's routes: liveness and readiness (more arrive with the dashboard and
//! metrics), and the accept loop that serves them (bounded in all and per source address,
//! with a header time-out, over TLS when it is on).

use crate::config::Limits;
use crate::gateway::Gateway;
use crate::meters::HttpMeters;
use crate::sources::PerSource;
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

/// How many HTTP connections may be open, and where refusals are counted.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Connections open at once (the map's 1,000 browsers, health checks, scrapes); past it
    /// new ones are closed at once rather than holding descriptors the MQTT listeners need.
    pub max_connections: usize,
    /// Connections one source address may hold (0: no limit): without it, one address
    /// sending slow partial requests holds every slot, and `/healthz` answers no one.
    pub per_source: usize,
    /// Refusals by reason.
    pub meters: HttpMeters,
}

impl HttpLimits {
    /// `[limits]`'s `http_*` bounds, refusals counted on `meters`.
    pub fn from_limits(limits: &Limits, meters: HttpMeters) -> HttpLimits {
        HttpLimits {
            max_connections: limits.http_max_connections,
            per_source: limits.http_connections_per_source,
            meters,
        }
    }
}

/// The common name of the client certificate an HTTPS connection presented (verified
/// against `[tls] client_ca`), as a request extension.
#[derive(Debug, Clone)]
pub struct ClientCertificate(pub String);

/// [`serve_limited`] with the default bounds and no meters (the standalone dashboard).
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    shutdown: tokio_util::sync::CancellationToken,
    tracker: tokio_util::task::TaskTracker,
) {
    let limits =
        HttpLimits::from_limits(&Limits::default(), HttpMeters::new(&metrics::NoopRecorder));
    serve_limited(listener, tls, app, shutdown, tracker, limits).await
}

/// Serves `app` (HTTP/1.1 with upgrades, for the dashboard's WebSocket), over TLS when
/// `tls` is given, until `shutdown`; each connection runs on `tracker` and is dropped at
/// shutdown. Unlike `axum::serve`, connections are bounded, in all and per source, and a
/// client must send its headers within [`HEADER_TIMEOUT`], so idle sockets cannot pile up.
pub async fn serve_limited(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    shutdown: tokio_util::sync::CancellationToken,
    tracker: tokio_util::task::TaskTracker,
    limits: HttpLimits,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let per_source = PerSource::new(limits.per_source);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => continue,
                }
            }
        };
        // Closed at once, before a task or a read: a refusal must cost the flood nothing.
        let Some(hold) = per_source.try_hold(peer.ip()) else {
            limits.meters.source_limit.increment(1);
            tracing::debug!(%peer, "HTTP connections per source reached; closing a new one");
            continue;
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            limits.meters.server_full.increment(1);
            tracing::debug!("HTTP connection limit reached; closing a new connection");
            continue;
        };
        let tls = tls.clone();
        // Handlers that need the peer (HTTP publishing: login limits per address) read it
        // as axum's ConnectInfo.
        let app = app
            .clone()
            .layer(axum::Extension(axum::extract::ConnectInfo(peer)));
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let _held = (slot, hold);
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
                    // A verified client certificate's common name: the device's account
                    // for HTTP publishing (HTTPS with `[tls] client_ca`).
                    let cn = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .and_then(crate::tls::common_name);
                    let app = match cn {
                        Some(cn) => app.layer(axum::Extension(ClientCertificate(cn))),
                        None => app,
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
