//! The rider-side bridge: one task per browser WebSocket, sending batches of the latest
//! positions from the [`Board`].
//!
//! Every bound is explicit. A browser has at most one batch in flight: the board is its
//! conflated queue, so a slow browser simply gets fewer, fuller batches. A send that does
//! not finish within `send_timeout` disconnects the browser (counted as slow), and so does a
//! browser that answers no ping for `pong_timeout` (counted as dead). Nothing a browser does
//! slows the feed or other browsers. A ping from the other side is answered before the
//! socket is read again (tungstenite would otherwise queue a pong per ping for a client that
//! never reads them), within `send_timeout` like a batch.
//!
//! A view holding more than `aggregate_above` drivers gets per-cell counts instead of
//! positions ([`crate::cells`]); the followed driver is always sent as a position.

use crate::board::{Board, View, Visibility};
use crate::cells::CellCache;
use crate::protocol::{ClientMessage, ServerMessage};
use crate::viewport::Viewport;
use axum::extract::ws::{Message, WebSocket};
use fleetcast_proto::time::{now_ms, unix_now};
use futures_util::SinkExt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::{interval, timeout, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// How the bridge treats browsers.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// Time between batches.
    pub batch_interval: Duration,
    /// Time between pings.
    pub ping_interval: Duration,
    /// A browser silent (no pong, no message) this long is dropped.
    pub pong_timeout: Duration,
    /// A batch not written within this long drops the browser.
    pub send_timeout: Duration,
    /// Most positions in one batch (the rest follow in the next).
    pub max_batch_positions: usize,
    /// Most browsers at once.
    pub max_clients: usize,
    /// Margin around a viewport, as a fraction of its size.
    pub viewport_margin: f64,
    /// A view holding more drivers than this gets cells instead of positions; 0: never.
    pub aggregate_above: usize,
    /// Most cells in one message (a view spans at most 48 x 48: only a browser without a
    /// viewport could have more).
    pub max_cells: usize,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            batch_interval: Duration::from_millis(200),
            ping_interval: Duration::from_secs(10),
            pong_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(10),
            max_batch_positions: 25_000,
            max_clients: 1_000,
            viewport_margin: 0.2,
            aggregate_above: 2_000,
            max_cells: 8_192,
        }
    }
}

/// Bridge counters.
#[derive(Debug, Default)]
pub struct BridgeStats {
    /// Browsers connected now.
    pub clients: AtomicUsize,
    /// Batches sent.
    pub batches: AtomicU64,
    /// Positions sent.
    pub positions: AtomicU64,
    /// Changed drivers not sent because outside a viewport or filter.
    pub filtered_out: AtomicU64,
    /// Browsers dropped for a send that did not finish in time.
    pub slow_disconnects: AtomicU64,
    /// Browsers dropped for not answering pings.
    pub dead_disconnects: AtomicU64,
    /// Browsers refused because `max_clients` were connected.
    pub refused: AtomicU64,
    /// Cells messages sent (views over `aggregate_above`).
    pub cells: AtomicU64,
    /// Bytes of text sent to browsers (every message).
    pub bytes: AtomicU64,
}

/// The bridge: the board, its browsers and their bounds.
#[derive(Debug)]
pub struct Bridge {
    /// Latest positions.
    pub board: Arc<Board>,
    /// Bounds.
    pub config: BridgeConfig,
    /// Counters.
    pub stats: BridgeStats,
    slots: Arc<Semaphore>,
    shutdown: CancellationToken,
    batch_positions: metrics::Histogram,
    cells: CellCache,
}

enum Exit {
    Closed,
    /// The browser's token expired: closed, it must come back with a new one.
    Expired,
    Slow,
    Dead,
    Shutdown,
}

impl Bridge {
    /// A bridge over `board`; browsers are closed when `shutdown` is cancelled.
    pub fn new(board: Arc<Board>, config: BridgeConfig, shutdown: CancellationToken) -> Bridge {
        Bridge {
            slots: Arc::new(Semaphore::new(config.max_clients)),
            cells: CellCache::new(config.batch_interval, config.max_cells),
            board,
            config,
            stats: BridgeStats::default(),
            shutdown,
            batch_positions: metrics::Histogram::noop(),
        }
    }

    /// Also records the positions of every batch on `histogram`.
    pub fn with_batch_histogram(mut self, histogram: metrics::Histogram) -> Bridge {
        self.batch_positions = histogram;
        self
    }

    /// Serves one browser until it leaves, is dropped, or the server stops.
    /// `allowed` limits the drivers sent to what a browser token's account may see.
    pub async fn serve(self: Arc<Self>, mut socket: WebSocket, allowed: Option<Visibility>) {
        let Ok(_slot) = Arc::clone(&self.slots).try_acquire_owned() else {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            let _ = socket.send(Message::Close(None)).await;
            return;
        };
        self.stats.clients.fetch_add(1, Ordering::Relaxed);
        let exit = self.run(&mut socket, allowed).await;
        self.stats.clients.fetch_sub(1, Ordering::Relaxed);
        match exit {
            Exit::Slow => {
                self.stats.slow_disconnects.fetch_add(1, Ordering::Relaxed);
                debug!("browser dropped: batch not taken in time");
            }
            Exit::Dead => {
                self.stats.dead_disconnects.fetch_add(1, Ordering::Relaxed);
                debug!("browser dropped: no pong");
            }
            Exit::Shutdown | Exit::Expired => {
                let _ = timeout(Duration::from_secs(1), socket.send(Message::Close(None))).await;
            }
            Exit::Closed => {}
        }
    }

    async fn run(&self, socket: &mut WebSocket, allowed: Option<Visibility>) -> Exit {
        let hello = ServerMessage::Hello {
            server: "fleetcast",
            batch_ms: u64::try_from(self.config.batch_interval.as_millis()).unwrap_or(u64::MAX),
            stale_after_s: self.board.config().stale_after.as_secs(),
        };
        if !self.send(socket, &hello).await.unwrap_or(false) {
            return Exit::Closed;
        }
        let mut view = View {
            allowed,
            ..View::default()
        };
        let mut seen = 0u64;
        let mut fences_seen = 0u64;
        // What the last cells message sent held, while the view is aggregated.
        let mut cells_sent: Option<u64> = None;
        let mut last_stats: Option<Instant> = None;
        let mut heard = Instant::now();
        let mut batches = interval(self.config.batch_interval);
        batches.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut pings = interval(self.config.ping_interval);
        pings.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return Exit::Shutdown,
                _ = batches.tick() => {
                    if view.allowed.as_ref().is_some_and(|a| a.expired(unix_now())) {
                        return Exit::Expired;
                    }
                    if let Some((fences, events)) = self.board.fences.since(&mut fences_seen, view.allowed.as_ref()) {
                        let msg = ServerMessage::Fences { fences: &fences, events: &events };
                        match self.send(socket, &msg).await {
                            Ok(true) => {}
                            Ok(false) => return Exit::Closed,
                            Err(()) => return Exit::Slow,
                        }
                    }
                    let stats_due = last_stats.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
                    if let Some((text, digest)) = self.cells_message(&view, stats_due) {
                        if cells_sent != Some(digest) || stats_due {
                            match self.send_text(socket, text).await {
                                Ok(true) => {}
                                Ok(false) => return Exit::Closed,
                                Err(()) => return Exit::Slow,
                            }
                            self.stats.cells.fetch_add(1, Ordering::Relaxed);
                            cells_sent = Some(digest);
                        }
                        if stats_due {
                            last_stats = Some(Instant::now());
                        }
                        continue;
                    }
                    if cells_sent.take().is_some() {
                        // Zoomed back in: every driver in view, one by one again.
                        seen = 0;
                    }
                    let changes = self.board.changes_since(seen, &view, self.config.max_batch_positions);
                    self.stats.filtered_out.fetch_add(changes.filtered_out as u64, Ordering::Relaxed);
                    if changes.positions.is_empty() && changes.gone.is_empty() && !stats_due {
                        seen = changes.version;
                        continue;
                    }
                    let stats = stats_due.then(|| self.board.panel());
                    let batch = ServerMessage::Batch {
                        t: now_ms(),
                        positions: &changes.positions,
                        gone: &changes.gone,
                        stats,
                    };
                    match self.send(socket, &batch).await {
                        Ok(true) => {}
                        Ok(false) => return Exit::Closed,
                        Err(()) => return Exit::Slow,
                    }
                    if stats_due {
                        last_stats = Some(Instant::now());
                    }
                    // A capped batch leaves the rest for the next one.
                    if changes.positions.len() < self.config.max_batch_positions {
                        seen = changes.version;
                    }
                    self.stats.batches.fetch_add(1, Ordering::Relaxed);
                    self.batch_positions.record(changes.positions.len() as f64);
                    self.stats.positions.fetch_add(changes.positions.len() as u64, Ordering::Relaxed);
                }
                _ = pings.tick() => {
                    if heard.elapsed() > self.config.pong_timeout {
                        return Exit::Dead;
                    }
                    match timeout(self.config.send_timeout, socket.send(Message::Ping(Vec::new()))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return Exit::Closed,
                        Err(_) => return Exit::Slow,
                    }
                }
                incoming = socket.recv() => {
                    let Some(Ok(message)) = incoming else { return Exit::Closed };
                    heard = Instant::now();
                    match self.on_message(message, &mut view, socket).await {
                        // A new view: resend everything it covers.
                        Ok(true) => seen = 0,
                        Ok(false) => {}
                        Err(exit) => return exit,
                    }
                }
            }
        }
    }

    /// Handles a message from the browser: Ok(true) when its view changed, Err when the
    /// browser is to be dropped.
    async fn on_message(
        &self,
        message: Message,
        view: &mut View,
        socket: &mut WebSocket,
    ) -> Result<bool, Exit> {
        match message {
            Message::Text(text) => self.apply(view, &text, socket).await.ok_or(Exit::Closed),
            Message::Close(_) => Err(Exit::Closed),
            Message::Ping(_) => {
                // The pong is queued: write it before reading on, so a client that never
                // reads its pongs is stopped by TCP rather than buffered.
                match timeout(self.config.send_timeout, SinkExt::flush(socket)).await {
                    Ok(Ok(())) => Ok(false),
                    Ok(Err(_)) => Err(Exit::Closed),
                    Err(_) => Err(Exit::Slow),
                }
            }
            Message::Binary(_) | Message::Pong(_) => Ok(false),
        }
    }

    /// Applies a browser message. Some(true) when the view changed, None when the socket
    /// failed while answering an error.
    async fn apply(&self, view: &mut View, text: &str, socket: &mut WebSocket) -> Option<bool> {
        let parsed = serde_json::from_str::<ClientMessage>(text);
        let result = match parsed {
            Ok(ClientMessage::Subscribe { filters }) if filters.len() <= 16 => {
                view.filters = filters;
                Ok(())
            }
            Ok(ClientMessage::Subscribe { .. }) => Err("at most 16 filters".to_owned()),
            Ok(ClientMessage::Viewport { bbox: None }) => {
                view.viewport = None;
                Ok(())
            }
            Ok(ClientMessage::Viewport { bbox: Some(b) }) => match Viewport::from_bbox(b) {
                Some(v) => {
                    view.viewport = Some(v.with_margin(self.config.viewport_margin));
                    Ok(())
                }
                None => Err("bbox must be [west, south, east, north], finite".to_owned()),
            },
            Ok(ClientMessage::Follow { id }) => {
                view.follow = id;
                Ok(())
            }
            Err(e) => Err(format!("bad message: {e}")),
        };
        match result {
            Ok(()) => Some(true),
            Err(message) => {
                let answer = ServerMessage::Error { message };
                match self.send(socket, &answer).await {
                    Ok(true) => Some(false),
                    _ => None,
                }
            }
        }
    }

    /// The cells message for `view`, when it holds more than `aggregate_above` drivers,
    /// with a digest of what it holds (not resent while that is the same).
    fn cells_message(&self, view: &View, stats_due: bool) -> Option<(String, u64)> {
        if self.config.aggregate_above == 0 {
            return None;
        }
        let (census, grid) = self.cells.census(&self.board, view);
        if census.drivers <= self.config.aggregate_above {
            return None;
        }
        let follow = self.board.followed(view);
        let digest = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            for c in &census.cells {
                (c.0.to_bits(), c.1.to_bits(), c.2, c.3, c.4).hash(&mut h);
            }
            follow.as_ref().map(|f| (f.seq, f.ts, &f.id)).hash(&mut h);
            grid.hash(&mut h);
            h.finish()
        };
        let (dx, dy) = grid.size();
        let message = ServerMessage::Cells {
            t: now_ms(),
            size: [dx, dy],
            drivers: census.drivers,
            cells: &census.cells,
            follow: follow.as_ref(),
            stats: stats_due.then(|| self.board.panel()),
        };
        serde_json::to_string(&message).ok().map(|t| (t, digest))
    }

    /// Ok(true) sent, Ok(false) socket closed, Err(()) not sent in time.
    async fn send(&self, socket: &mut WebSocket, message: &ServerMessage<'_>) -> Result<bool, ()> {
        let Ok(text) = serde_json::to_string(message) else {
            return Ok(false);
        };
        self.send_text(socket, text).await
    }

    /// [`Bridge::send`] for a message already made.
    async fn send_text(&self, socket: &mut WebSocket, text: String) -> Result<bool, ()> {
        self.stats
            .bytes
            .fetch_add(text.len() as u64, Ordering::Relaxed);
        match timeout(self.config.send_timeout, socket.send(Message::Text(text))).await {
            Ok(Ok(())) => Ok(true),
            Ok(Err(_)) => Ok(false),
            Err(_) => Err(()),
        }
    }
}
