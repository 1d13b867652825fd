//! The dashboard as one unit: board, bridge, basemap and routes, plus the sweeper that
//! marks silent drivers stale. `fleetcast serve` mounts its routes on the broker's HTTP
//! listener and feeds it in-process; `fleetcast dashboard` feeds it from any broker.
//!
//! What the dashboard does not own comes in through small interfaces: positions as a stream
//! of (topic, payload) ([`Dashboard::feed`]), browser tokens through a
//! [`TokenVerifier`], and the basemap as GeoJSON text.

use crate::board::{Board, BoardConfig};
use crate::bridge::{Bridge, BridgeConfig};
use crate::history::{History, HistoryConfig};
use crate::meters::DashboardMeters;
use crate::tracks::{self, TrackState, ViewerLogin};
use crate::web::{self, DashboardState, PageConfig, TokenVerifier};
use bytes::Bytes;
use fleetcast_proto::time::now_ms;
use futures_util::{Stream, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How to build a dashboard.
#[derive(Debug, Clone)]
pub struct DashboardOptions {
    /// The basemap, GeoJSON (`fleetcast_simulator::basemap` derives it from a city's
    /// `.osm.pbf`).
    pub basemap: Arc<str>,
    /// Online tile URL template (`--tiles`); None keeps the page offline.
    pub tiles: Option<String>,
    /// Board bounds.
    pub board: BoardConfig,
    /// Bridge bounds.
    pub bridge: BridgeConfig,
    /// When set, `/ws` takes only browsers with a valid token (`fleetcast token`), and
    /// each sees what the verifier says its account may subscribe to.
    pub tokens: Option<Arc<dyn TokenVerifier>>,
    /// How much of each driver's track is kept (`--history-window`).
    pub history: HistoryConfig,
    /// When set, the history API also takes accounts' HTTP Basic credentials.
    pub logins: Option<Arc<dyn ViewerLogin>>,
}

impl DashboardOptions {
    /// `basemap` with default bounds, offline, no tokens.
    pub fn new(basemap: Arc<str>) -> DashboardOptions {
        DashboardOptions {
            basemap,
            tiles: None,
            board: BoardConfig::default(),
            bridge: BridgeConfig::default(),
            tokens: None,
            history: HistoryConfig::default(),
            logins: None,
        }
    }
}

/// A built dashboard.
#[derive(Debug)]
pub struct Dashboard {
    /// Latest positions.
    pub board: Arc<Board>,
    /// The browsers' bridge.
    pub bridge: Arc<Bridge>,
    /// Every driver's recent track.
    pub history: Arc<History>,
    /// Prometheus meters (copy counts with `meters.export` before rendering).
    pub meters: DashboardMeters,
    router: axum::Router,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Dashboard {
    /// Builds the routes and starts the stale sweeper (needs a runtime).
    pub fn new(options: DashboardOptions, recorder: &dyn metrics::Recorder) -> Dashboard {
        let meters = DashboardMeters::new(recorder);
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let history = Arc::new(History::new(options.history));
        let board = Arc::new(
            Board::new(options.board)
                .with_latency_histogram(meters.latency.clone())
                .with_history(Arc::clone(&history)),
        );
        let batch_ms = u64::try_from(options.bridge.batch_interval.as_millis()).unwrap_or(200);
        let bridge = Arc::new(
            Bridge::new(Arc::clone(&board), options.bridge, stop.clone())
                .with_batch_histogram(meters.batch_positions.clone()),
        );
        let track_routes = tracks::routes(TrackState {
            history: Arc::clone(&history),
            tokens: options.tokens.clone(),
            logins: options.logins,
        });
        let router = web::app(DashboardState {
            bridge: Arc::clone(&bridge),
            tokens: options.tokens,
            basemap: options.basemap,
            page: Arc::new(PageConfig {
                tiles: options.tiles,
                attribution: "(c) OpenStreetMap contributors, ODbL".to_owned(),
                batch_ms,
            }),
        })
        .merge(track_routes);
        let sweep_board = Arc::clone(&board);
        let sweep_history = Arc::clone(&history);
        let sweep_stop = stop.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            for n in 0u64.. {
                tokio::select! {
                    _ = sweep_stop.cancelled() => break,
                    _ = tick.tick() => sweep_board.sweep(std::time::Instant::now()),
                }
                // Tracks of drivers silent for the whole window: a full pass, so rarely.
                if n % 60 == 0 {
                    sweep_history.sweep(now_ms());
                }
            }
        });
        Dashboard {
            board,
            bridge,
            history,
            meters,
            router,
            stop,
            tasks,
        }
    }

    /// Puts every (topic, payload) of `messages` on the board until the stream ends or the
    /// dashboard stops (a tracked task). Topics that are not UTF-8 are skipped.
    pub fn feed<S>(&self, messages: S)
    where
        S: Stream<Item = (Bytes, Bytes)> + Send + 'static,
    {
        let board = Arc::clone(&self.board);
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            let mut messages = std::pin::pin!(messages.take_until(stop.cancelled_owned()));
            while let Some((topic, body)) = messages.next().await {
                if let Ok(topic) = std::str::from_utf8(&topic) {
                    board.ingest(topic, &body, now_ms());
                }
            }
        });
    }

    /// The HTTP routes (`/`, `/ws`, ...).
    pub fn router(&self) -> axum::Router {
        self.router.clone()
    }

    /// Closes every browser, stops the sweeper and the feeds, and waits for them.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}
