//! The standalone dashboard (`fleetcast dashboard`): the map and its bridge on their own
//! HTTP port, fed by an MQTT client from any broker (fleetcast, mosquitto, ...).
//!
//! A library function, so tests run it in-process on a port-0 listener, exactly as the
//! command runs it.

use crate::feed::{self, FeedConfig};
use crate::stack::{self, StackError};
use axum::http::StatusCode;
use fleetcast_dashboard::service::{Dashboard, DashboardOptions};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long shutdown waits for the feed and the HTTP connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// A running standalone dashboard.
#[derive(Debug)]
pub struct Standalone {
    addr: SocketAddr,
    dashboard: Dashboard,
    connected: Arc<AtomicBool>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Standalone {
    /// Serves the dashboard on `listener` (`/`, `/ws`, `/metrics`, `/healthz`, `/readyz`)
    /// and starts the feed from `feed`'s broker.
    ///
    /// # Errors
    /// The listener has no address, or the metrics exporter rejected its settings.
    pub fn start(
        listener: TcpListener,
        options: DashboardOptions,
        feed: FeedConfig,
    ) -> Result<Standalone, StackError> {
        let addr = listener.local_addr().map_err(StackError::Listener)?;
        let recorder = stack::prometheus()?;
        let dashboard = Dashboard::new(options, &recorder);
        let connected = Arc::new(AtomicBool::new(false));
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(feed::run(
            feed,
            Arc::clone(&dashboard.board),
            Arc::clone(&connected),
            stop.clone(),
        ));
        let health = Arc::clone(&connected);
        let app = dashboard
            .router()
            .merge(stack::metrics_route(&recorder, &dashboard, None))
            .route("/healthz", axum::routing::get(|| async { "ok\n" }))
            .route(
                "/readyz",
                axum::routing::get(move || {
                    let up = health.load(Ordering::Relaxed);
                    async move {
                        if up {
                            (StatusCode::OK, "feed connected\n")
                        } else {
                            (StatusCode::SERVICE_UNAVAILABLE, "feed not connected\n")
                        }
                    }
                }),
            );
        // The same bounded loop as `serve`'s HTTP port (connection cap, header time-out).
        tasks.spawn(fleetcast_broker::http::serve(
            listener,
            None,
            app,
            stop.clone(),
            tasks.clone(),
        ));
        Ok(Standalone {
            addr,
            dashboard,
            connected,
            stop,
            tasks,
        })
    }

    /// Where the page is served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the feed is connected to its broker now.
    pub fn feed_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Closes browsers, the feed and the HTTP server, waiting at most a few seconds.
    pub async fn shutdown(self) {
        self.dashboard.shutdown().await;
        self.stop.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.tasks.wait()).await;
    }
}
