//! The device gateway: what fleetcast adds in front of the rumqttd router.
//!
//! - [`frame`]: reading the CONNECT by hand, so MQTT 5 and 3.1 clients get a CONNACK reason
//!   code instead of a dropped socket, and the topic/filter rules the router would
//!   otherwise punish by dropping the link.
//! - [`transport`]: TCP and WebSocket behind one byte-stream interface.
//! - [`session`]: one client connection from CONNECT to close.

pub mod frame;
pub mod session;
pub mod transport;

use crate::config::Config;
use crate::pacing::Pacer;
use crate::registry::Registry;
use crate::router::RouterHandle;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// How a client reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// MQTT over TCP.
    Tcp,
    /// MQTT over WebSocket.
    Ws,
}

impl TransportKind {
    /// The label used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Tcp => "tcp",
            TransportKind::Ws => "ws",
        }
    }
}

/// State every connection shares.
#[derive(Debug)]
pub struct Gateway {
    /// The configuration in force.
    pub config: Config,
    /// The router links are built on.
    pub router: Arc<RouterHandle>,
    /// Client-id ownership.
    pub registry: Arc<Registry>,
    /// Ingest pacing over all connections.
    pub global_pacer: Pacer,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
    /// Counters read by health checks and logs.
    pub stats: Stats,
}

/// Gateway-wide counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections open over TCP (past CONNECT).
    pub open_tcp: AtomicUsize,
    /// Connections open over WebSocket (past CONNECT).
    pub open_ws: AtomicUsize,
    /// PUBLISH packets taken from clients.
    pub publishes_in: AtomicU64,
    /// Socket writes to clients (each carries one or more packets).
    pub writes_out: AtomicU64,
    /// Wills published for connections that ended without DISCONNECT.
    pub wills_published: AtomicU64,
    /// Connections refused with a CONNACK code or closed for a protocol error.
    pub refused: AtomicU64,
}

impl Stats {
    pub(crate) fn open(&self, kind: TransportKind) -> &AtomicUsize {
        match kind {
            TransportKind::Tcp => &self.open_tcp,
            TransportKind::Ws => &self.open_ws,
        }
    }

    /// Connections open now, over every transport.
    pub fn open_total(&self) -> usize {
        self.open_tcp.load(Ordering::Relaxed) + self.open_ws.load(Ordering::Relaxed)
    }
}

impl Gateway {
    /// Shared state for one server.
    pub fn new(config: Config, router: Arc<RouterHandle>, shutdown: CancellationToken) -> Self {
        let rate = config.limits.publish_rate_global;
        Gateway {
            // A tenth of a second of burst keeps the global rate smooth.
            global_pacer: Pacer::new(rate, (rate / 10).max(1)),
            config,
            router,
            registry: Arc::new(Registry::default()),
            shutdown,
            stats: Stats::default(),
        }
    }
}
