//! The device gateway: what fleetcast adds in front of the rumqttd router.
//!
//! - [`frame`]: reading the CONNECT's protocol level by hand, so each client is answered
//!   in its own version, and the topic/filter rules the router would otherwise punish by
//!   dropping the link.
//! - [`codec`]: MQTT 3.1.1 and 5 through rumqttd's codecs, guarded, and CONNACK codes.
//! - [`transport`]: TCP and WebSocket behind one byte-stream interface.
//! - [`session`]: one client connection from CONNECT to close (the connection loop), with
//!   - `handshake`: reading and checking the CONNECT, quotas, credentials, refusals;
//!   - `hello` and `connect_rules`: what a CONNECT, its MQTT 5 properties and its will
//!     may ask for, pure;
//!   - `inbound` and `publishes`: the checks on every packet a client sends (topics,
//!     policy, validation, Topic Aliases via `aliases`), pure;
//!   - `subscriptions`: the filters held, their quota and MQTT 5 options;
//!   - `acks`: the ack order the router expects, and the gateway's own acks for publishes
//!     a client never saw;
//!   - `outbound` and `delivery`: router notifications made into what this client takes
//!     (options, Receive Maximum, Maximum Packet Size, aliases), batched and written;
//!   - `marks`: what a publish carries through the router for No Local and Retain As
//!     Published;
//!   - `linger`: session expiry and delayed wills.
//! - [`decode`]: the parsing and those checks as one pure function, for the fuzz target.

mod acks;
mod aliases;
mod backlog;
pub mod codec;
mod connect_rules;
pub mod decode;
mod delivery;
pub mod end;
mod footprint;
pub mod frame;
pub(crate) mod gaps;
mod handshake;
mod hello;
mod inbound;
mod intake;
pub mod linger;
mod marks;
mod outbound;
mod publishes;
pub mod session;
mod subscriptions;
mod tally;
pub mod transport;
mod uplink;
#[cfg(test)]
mod wire;

use crate::config::Config;
use crate::durable::tap::Tap;
use crate::meters::GatewayMeters;
use crate::pacing::Pacer;
use crate::registry::Registry;
use crate::router::RouterHandle;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// How a client reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// MQTT over TCP.
    Tcp,
    /// MQTT over WebSocket (wss when TLS is on).
    Ws,
    /// MQTT over TLS.
    Tls,
}

impl TransportKind {
    /// The label used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Tcp => "tcp",
            TransportKind::Ws => "ws",
            TransportKind::Tls => "tls",
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
    /// Subscribers behind in the router's log, which their topics' publishers wait for.
    pub(crate) backlogs: Arc<backlog::Backlogs>,
    /// Cancelled when the server shuts down ([`Gateway::stop`]).
    pub shutdown: CancellationToken,
    /// Connection counts read back by health checks.
    pub stats: Stats,
    /// Prometheus meters.
    pub meters: GatewayMeters,
    /// Accounts and their grants; None lets every client in and allows every topic.
    pub auth: Option<Arc<crate::auth::Auth>>,
    /// Connect rates per client id and over all clients.
    pub connects: crate::quota::ConnectQuota,
    /// Failed-login limits and the password check line.
    pub logins: crate::guard::LoginGuard,
    /// TLS acceptors, when TLS is on.
    pub tls: Option<crate::tls::Acceptors>,
    /// Filters of persistent sessions between their connections.
    pub persistent_filters: PersistentFilters,
    /// The data directory's state, when there is one (`serve --data`).
    pub durable: Option<Arc<crate::durable::Durable>>,
    /// Sessions and delayed wills outliving their connections.
    pub lingering: linger::Lingering,
    /// Geofences, when they are on (set once at start).
    pub geofences: std::sync::OnceLock<Arc<crate::geofence::Geofences>>,
    /// Subscriptions held with MQTT 5 Retain As Published, live or kept for a persistent
    /// session: while there are any, retained publishes are marked as such.
    retain_as_published: std::sync::atomic::AtomicI64,
    /// The cluster this node belongs to (`[cluster]`), set once at start; unset: alone.
    pub cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
    /// Client ids the router keeps a session for between connections.
    pub(crate) held_sessions: uplink::HeldSessions,
}

pub use subscriptions::HeldFilters;

/// The subscription filters (and their MQTT 5 options) each persistent session held when
/// its connection ended. The router keeps the filters for the next connection, so the
/// gateway must too, or a client could pass `max_subscriptions_per_connection` by
/// reconnecting, and the options would be lost. One entry per persistent client id, as
/// many as the router keeps sessions for, each at most that limit of filters.
#[derive(Debug, Default)]
pub struct PersistentFilters {
    inner: std::sync::Mutex<std::collections::HashMap<String, HeldFilters>>,
}

impl PersistentFilters {
    /// Takes what `client_id` held (empty when nothing was kept).
    pub fn take(&self, client_id: &str) -> HeldFilters {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(client_id)
            .unwrap_or_default()
    }

    /// Keeps what `client_id` holds until its next connection.
    pub fn keep(&self, client_id: &str, filters: HeldFilters) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if filters.is_empty() {
            inner.remove(client_id);
        } else {
            inner.insert(client_id.to_owned(), filters);
        }
    }
}

/// Open connections, kept where the gateway itself can read them (metrics handles are
/// write-only).
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections open over TCP (past CONNECT).
    pub open_tcp: AtomicUsize,
    /// Connections open over WebSocket (past CONNECT).
    pub open_ws: AtomicUsize,
    /// Connections open over MQTT over TLS (past CONNECT).
    pub open_tls: AtomicUsize,
}

impl Stats {
    pub(crate) fn open(&self, kind: TransportKind) -> &AtomicUsize {
        match kind {
            TransportKind::Tcp => &self.open_tcp,
            TransportKind::Ws => &self.open_ws,
            TransportKind::Tls => &self.open_tls,
        }
    }

    /// The meters of a transport: (open connections gauge, connects counter).
    pub(crate) fn kind_meters(
        meters: &GatewayMeters,
        kind: TransportKind,
    ) -> (&metrics::Gauge, &metrics::Counter) {
        match kind {
            TransportKind::Tcp => (&meters.connections_tcp, &meters.connects_tcp),
            TransportKind::Ws => (&meters.connections_ws, &meters.connects_ws),
            TransportKind::Tls => (&meters.connections_tls, &meters.connects_tls),
        }
    }

    /// Connections open now, over every transport.
    pub fn open_total(&self) -> usize {
        self.open_tcp.load(Ordering::Relaxed)
            + self.open_ws.load(Ordering::Relaxed)
            + self.open_tls.load(Ordering::Relaxed)
    }
}

impl Gateway {
    /// Shuts the server down: the accept loops and everything else waiting on `shutdown`
    /// stop, and every session is kicked (sessions wait on their own kick, not on the
    /// shared token: `kick.rs`), as is every claim made from now on.
    pub fn stop(&self) {
        self.shutdown.cancel();
        self.registry.kick_all();
    }

    /// Shared state for one server; meters are registered on `recorder`. [`stop`] shuts
    /// it down.
    ///
    /// [`stop`]: Gateway::stop
    pub fn new(
        config: Config,
        router: Arc<RouterHandle>,
        shutdown: CancellationToken,
        recorder: &dyn metrics::Recorder,
        auth: Option<Arc<crate::auth::Auth>>,
        tls: Option<crate::tls::Acceptors>,
        durable: Option<Arc<crate::durable::Durable>>,
    ) -> Self {
        let rate = config.limits.publish_rate_global;
        Gateway {
            // A tenth of a second of burst keeps the global rate smooth.
            global_pacer: Pacer::new(rate, (rate / 10).max(1)),
            backlogs: Arc::new(backlog::Backlogs::new(
                config.router.max_segment_size,
                config.router.max_segment_count,
                std::time::Duration::from_millis(config.limits.behind_hold_ms),
                backlog::MAX_MARKS,
            )),
            connects: crate::quota::ConnectQuota::new(
                crate::quota::IdRules::new(
                    config.limits.connect_rate_per_client_id,
                    config.limits.flap_max_connects,
                    std::time::Duration::from_millis(config.limits.flap_window_ms),
                    std::time::Duration::from_millis(config.limits.flap_ban_ms),
                ),
                config.limits.connect_rate_global,
            ),
            logins: crate::guard::LoginGuard::new(crate::guard::GuardSettings::from_limits(
                &config.limits,
            )),
            config,
            router,
            registry: Arc::new(Registry::new()),
            shutdown,
            stats: Stats::default(),
            meters: GatewayMeters::new(recorder),
            auth,
            tls,
            persistent_filters: PersistentFilters::default(),
            durable,
            lingering: linger::Lingering::default(),
            geofences: std::sync::OnceLock::new(),
            retain_as_published: std::sync::atomic::AtomicI64::new(0),
            cluster: std::sync::OnceLock::new(),
            held_sessions: uplink::HeldSessions::default(),
        }
    }

    /// A persistent session put back into the router from the data directory: its filters
    /// count against the quota again, and it ends `expiry` seconds from now unless its
    /// client comes back (`u32::MAX`: never).
    pub fn restored_session(
        self: &Arc<Self>,
        client_id: &str,
        filters: &[(String, u8)],
        expiry: u32,
    ) {
        let held = HeldFilters::plain(filters.iter().map(|(f, _)| f.as_str()));
        self.persistent_filters.keep(client_id, held);
        self.held_sessions.hold(client_id);
        linger::linger(self, client_id.to_owned(), expiry, None);
    }

    /// The data directory's hooks for a session of `client_id` (nothing without one).
    pub(crate) fn tap(&self, client_id: &str, clean_start: bool, expiry: u32) -> Tap {
        Tap::connect(self.durable.as_ref(), client_id, clean_start, expiry)
    }

    /// Cluster hook: a new session's share of the cluster, if this node is in one.
    pub(crate) fn cluster_member(
        &self,
        claim: &crate::registry::Claim,
        client_id: &str,
        will: Option<&rumqttd::protocol::LastWill>,
    ) -> Option<crate::cluster::Member> {
        let cluster = self.cluster.get()?;
        let since = claim.since_us();
        Some(crate::cluster::Member::join(
            cluster, client_id, since, will,
        ))
    }

    /// Whether any subscription asks for Retain As Published.
    pub(crate) fn wants_retain_marks(&self) -> bool {
        self.retain_as_published.load(Ordering::Relaxed) > 0
    }

    /// Subscriptions with Retain As Published taken (or, negative, given up).
    pub(crate) fn count_retain_as_published(&self, delta: i64) {
        if delta != 0 {
            self.retain_as_published.fetch_add(delta, Ordering::Relaxed);
        }
    }

    /// `n` subscriptions with Retain As Published are gone with their session.
    pub(crate) fn forget_retain_as_published(&self, n: usize) {
        self.count_retain_as_published(-(n as i64));
    }
}
