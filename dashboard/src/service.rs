//! The dashboard as one unit: board, bridge, basemap and routes, plus the sweeper that
//! marks silent drivers stale. `fleetcast serve` mounts its routes on the broker's HTTP
//! listener and feeds it in-process; `fleetcast dashboard` feeds it from any broker.

use crate::basemap::{self, BasemapError};
use crate::board::{Board, BoardConfig};
use crate::bridge::{Bridge, BridgeConfig};
use crate::meters::DashboardMeters;
use crate::web::{self, DashboardState, PageConfig};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How to build a dashboard.
#[derive(Debug, Clone)]
pub struct DashboardOptions<'a> {
    /// The city's `.osm.pbf`, for the basemap.
    pub map_pbf: &'a [u8],
    /// Online tile URL template (`--tiles`); None keeps the page offline.
    pub tiles: Option<String>,
    /// Board bounds.
    pub board: BoardConfig,
    /// Bridge bounds.
    pub bridge: BridgeConfig,
    /// With accounts, `/ws` takes only browsers with a valid token (`fleetcast token`),
    /// and each sees what its account may subscribe to.
    pub auth: Option<Arc<fleetcast_broker::auth::Auth>>,
}

impl DashboardOptions<'_> {
    /// The embedded city and default bounds, offline.
    pub fn offline() -> DashboardOptions<'static> {
        DashboardOptions {
            map_pbf: fleetcast_simulator::road_graph::HELSINKI_PBF,
            tiles: None,
            board: BoardConfig::default(),
            bridge: BridgeConfig::default(),
            auth: None,
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
    /// Prometheus meters (copy counts with `meters.export` before rendering).
    pub meters: DashboardMeters,
    router: axum::Router,
    stop: CancellationToken,
}

impl Dashboard {
    /// Builds the basemap and the routes and starts the stale sweeper (needs a runtime).
    ///
    /// # Errors
    /// The map data is not valid PBF.
    pub fn new(
        options: DashboardOptions<'_>,
        recorder: &dyn metrics::Recorder,
    ) -> Result<Dashboard, BasemapError> {
        let basemap: Arc<str> = basemap::geojson(options.map_pbf)?.into();
        let meters = DashboardMeters::new(recorder);
        let stop = CancellationToken::new();
        let board =
            Arc::new(Board::new(options.board).with_latency_histogram(meters.latency.clone()));
        let batch_ms = u64::try_from(options.bridge.batch_interval.as_millis()).unwrap_or(200);
        let bridge = Arc::new(
            Bridge::new(Arc::clone(&board), options.bridge, stop.clone())
                .with_batch_histogram(meters.batch_positions.clone()),
        );
        let router = web::app(DashboardState {
            bridge: Arc::clone(&bridge),
            auth: options.auth,
            basemap,
            page: Arc::new(PageConfig {
                tiles: options.tiles,
                attribution: "(c) OpenStreetMap contributors, ODbL".to_owned(),
                batch_ms,
            }),
        });
        let sweep_board = Arc::clone(&board);
        let sweep_stop = stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = sweep_stop.cancelled() => break,
                    _ = tick.tick() => sweep_board.sweep(std::time::Instant::now()),
                }
            }
        });
        Ok(Dashboard {
            board,
            bridge,
            meters,
            router,
            stop,
        })
    }

    /// The HTTP routes (`/`, `/ws`, ...).
    pub fn router(&self) -> axum::Router {
        self.router.clone()
    }

    /// Closes every browser and stops the sweeper.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}
