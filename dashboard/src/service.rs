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

/// Messages the feed takes in one batch (what one lock of the board covers; a stream given
/// to [`Dashboard::feed_batches`] should yield no more), and in a row before it looks at
/// the stop and lets other tasks run.
pub const FEED_RUN: usize = 256;

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
    /// dashboard stops (a tracked task). Topics that are not UTF-8 are skipped. What is
    /// ready is taken in batches of up to FEED_RUN ([`Board::ingest_batch`]: one lock of
    /// the board for the batch, not one a message).
    pub fn feed<S>(&self, messages: S)
    where
        S: Stream<Item = (Bytes, Bytes)> + Send + 'static,
    {
        self.feed_batches(messages.ready_chunks(FEED_RUN));
    }

    /// As [`feed`](Self::feed), from a stream that yields what it has in batches (an
    /// in-process link: `LocalSubscriber::next_batch`).
    pub fn feed_batches<S>(&self, batches: S)
    where
        S: Stream<Item = Vec<(Bytes, Bytes)>> + Send + 'static,
    {
        let board = Arc::clone(&self.board);
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            let mut batches = std::pin::pin!(batches);
            let mut stopped = std::pin::pin!(stop.cancelled());
            let mut run = 0;
            loop {
                // The stop is looked at only when no batch is ready and every FEED_RUN
                // messages, when the task also yields, so that a flood never holds its
                // worker (a stream that is always ready never returns to the scheduler
                // by itself). A cancellation future polled before every message, as
                // `take_until` does, takes two locks a message (0.3% of the broker's
                // samples on the 5,000-driver fleet).
                let next = tokio::select! {
                    biased;
                    b = batches.next() => b,
                    () = &mut stopped => None,
                };
                let Some(batch) = next else { break };
                board.ingest_batch(&batch, now_ms());
                run += batch.len();
                if run >= FEED_RUN {
                    run = 0;
                    if stop.is_cancelled() {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
            }
        });
    }

    /// Calls `f` every `period` until the dashboard stops (a tracked task): upkeep that
    /// what serves the dashboard needs for as long as it runs, such as draining the
    /// metrics recorder's histograms.
    pub fn every(&self, period: Duration, f: impl Fn() + Send + 'static) {
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => f(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use fleetcast_proto::{Location, Status};

    fn fix(seq: u64) -> (Bytes, Bytes) {
        let body = serde_json::to_vec(&Location {
            id: "drv-1".into(),
            lat: 60.17,
            lon: 24.94,
            heading: 0.0,
            speed: 1.0,
            accuracy: 3.0,
            status: Status::Available,
            seq,
            ts: now_ms(),
        })
        .expect("json");
        (Bytes::from_static(b"drivers/drv-1/location"), body.into())
    }

    /// A feed whose stream is never empty (a flood) still lands on the board and ends
    /// when the dashboard stops: the stop is looked at between runs of messages, not only
    /// when the stream waits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_feed_that_never_waits_fills_the_board_and_ends_with_the_dashboard() {
        let d = Dashboard::new(
            DashboardOptions::new(Arc::from("{}")),
            &metrics::NoopRecorder,
        );
        let mut seq = 0;
        d.feed(futures_util::stream::repeat_with(move || {
            seq += 1;
            fix(seq)
        }));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while d.board.version() < 10 * FEED_RUN as u64 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the feed put nothing"
            );
            tokio::task::yield_now().await;
        }
        assert_eq!(d.board.online(), 1);
        tokio::time::timeout(Duration::from_secs(10), d.shutdown())
            .await
            .expect("the feed ended with the dashboard");
    }

    /// Upkeep runs once a period, first after one period, and not after the stop.
    #[tokio::test(start_paused = true)]
    async fn upkeep_runs_every_period_until_the_dashboard_stops() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let d = Dashboard::new(
            DashboardOptions::new(Arc::from("{}")),
            &metrics::NoopRecorder,
        );
        let calls = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&calls);
        d.every(Duration::from_secs(1), move || {
            counted.fetch_add(1, Ordering::Relaxed);
        });
        tokio::time::sleep(Duration::from_millis(3_500)).await;
        assert_eq!(calls.load(Ordering::Relaxed), 3);
        d.shutdown().await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(calls.load(Ordering::Relaxed), 3);
    }
}
