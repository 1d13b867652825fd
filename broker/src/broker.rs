//! Starting and stopping a broker: listeners, router, gateway and HTTP, as one unit.
//!
//! [`Listeners::bind`] binds first so that the caller (the CLI's ready line, a test) learns
//! the real ports, including those picked for port 0. [`Broker::start`] then runs the
//! accept loops and the router; [`Broker::shutdown`] stops accepting, closes every client
//! and waits for their tasks, within the configured grace time.

use crate::config::Config;
use crate::durable::{Durable, StoreMeters};
use crate::gateway::{Gateway, TransportKind};
use crate::http::{self, HttpState};
use crate::listener::{self, Slots};
use crate::router::{RouterError, RouterHandle, RouterSettings};
use crate::store::Store;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// Descriptors kept free beyond the client connections: listeners, refusals, files.
const FD_RESERVE: u64 = 64;

/// Why a broker could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// A listener could not be bound.
    #[error("cannot listen for {what} on {addr}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The router could not be started.
    #[error("cannot start the router")]
    Router(#[from] RouterError),
    /// The TLS certificate, key or client CA cannot be used.
    #[error("cannot set up TLS")]
    Tls(#[from] crate::tls::TlsError),
    /// The data directory cannot be used.
    #[error("cannot open the data directory")]
    Store(#[from] crate::store::StoreError),
    /// The store's flusher thread could not be started.
    #[error("cannot start the store's flusher thread")]
    Flusher(#[source] std::io::Error),
    /// The connections' threads could not be started (`[runtime]`).
    #[error("cannot start the connection threads")]
    IoThreads(#[source] std::io::Error),
    /// The geofence file cannot be read or holds no valid fences.
    #[error("geofences file {file}: {why}")]
    Geofences {
        /// The file.
        file: String,
        /// Why.
        why: String,
    },
    /// Connections were still open when the grace time ran out.
    #[error("{0} connection tasks still running after the shutdown grace time")]
    ShutdownTimeout(usize),
}

/// Builds more HTTP routes once the gateway exists (so `/metrics` can read it).
pub type RoutesFn<'a> = Box<dyn FnOnce(&Arc<Gateway>) -> axum::Router + 'a>;

/// What [`Broker::start_with`] adds to a plain broker.
pub struct Extras<'a> {
    /// More HTTP routes for the HTTP listener.
    pub routes: RoutesFn<'a>,
    /// Where the gateway's meters are registered (`metrics::NoopRecorder` for none).
    pub recorder: &'a dyn metrics::Recorder,
    /// Accounts and topic policy (`serve --auth FILE`); None: anonymous, everything allowed.
    pub auth: Option<Arc<crate::auth::Auth>>,
}

impl std::fmt::Debug for Extras<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extras").finish_non_exhaustive()
    }
}

/// The bound listeners.
#[derive(Debug)]
pub struct Listeners {
    mqtt: TcpListener,
    ws: TcpListener,
    http: TcpListener,
    /// Bound when TLS is configured.
    mqtts: Option<TcpListener>,
}

/// Where a broker listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addrs {
    /// MQTT over TCP.
    pub mqtt: SocketAddr,
    /// MQTT over WebSocket (`ws://ADDR/mqtt`).
    pub ws: SocketAddr,
    /// HTTP.
    pub http: SocketAddr,
    /// MQTT over TLS, when TLS is on (ws and http then speak wss and https).
    pub mqtts: Option<SocketAddr>,
}

impl fmt::Display for Addrs {
    /// `mqtt=IP:PORT ws=IP:PORT http=IP:PORT`, then ` mqtts=IP:PORT` with TLS, as in the
    /// ready line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mqtt={} ws={} http={}", self.mqtt, self.ws, self.http)?;
        if let Some(mqtts) = self.mqtts {
            write!(f, " mqtts={mqtts}")?;
        }
        Ok(())
    }
}

impl Listeners {
    /// Binds the three listeners of `config.listen`.
    ///
    /// # Errors
    /// An address is in use or not local.
    pub async fn bind(config: &Config) -> Result<Listeners, BrokerError> {
        let bind = |what, addr| async move {
            listen(addr).map_err(|source| BrokerError::Bind { what, addr, source })
        };
        Ok(Listeners {
            mqtt: bind("MQTT", config.listen.mqtt).await?,
            ws: bind("MQTT over WebSocket", config.listen.ws).await?,
            http: bind("HTTP", config.listen.http).await?,
            mqtts: match config.tls.files() {
                Some(_) => Some(bind("MQTT over TLS", config.listen.mqtts).await?),
                None => None,
            },
        })
    }

    /// The bound addresses, with real ports.
    pub fn addrs(&self) -> Addrs {
        let at = |l: &TcpListener| {
            l.local_addr()
                .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
        };
        Addrs {
            mqtt: at(&self.mqtt),
            ws: at(&self.ws),
            http: at(&self.http),
            mqtts: self.mqtts.as_ref().map(at),
        }
    }
}

/// A running broker. Dropping it cancels it without waiting; call
/// [`shutdown`](Broker::shutdown) to wait.
#[derive(Debug)]
pub struct Broker {
    addrs: Addrs,
    gateway: Arc<Gateway>,
    tracker: TaskTracker,
    grace: Duration,
    durable: Option<Arc<Durable>>,
    /// The store's tracks table, for the map's history (with a data directory).
    tracks: Option<crate::store::TrackStore>,
}

impl Broker {
    /// Starts the router, loads the data directory into it when one is configured, and
    /// serves the listeners until shut down.
    ///
    /// Must be called inside a tokio runtime. Lowers `max_connections` (with a warning) when
    /// the open-files soft limit is smaller; raising that limit is the binary's business
    /// ([`raise_open_files_limit`]), not a library's.
    ///
    /// # Errors
    /// The router's threads could not be started, or the data directory cannot be used.
    pub async fn start(listeners: Listeners, config: Config) -> Result<Broker, BrokerError> {
        Broker::start_with(
            listeners,
            config,
            Extras {
                routes: Box::new(|_| axum::Router::new()),
                recorder: &metrics::NoopRecorder,
                auth: None,
            },
        )
        .await
    }

    /// [`start`](Broker::start), with more HTTP routes served beside `/healthz` and
    /// `/readyz` (the dashboard, `/metrics`) and meters registered on a recorder.
    ///
    /// # Errors
    /// The router's threads could not be started, or the data directory cannot be used.
    pub async fn start_with(
        listeners: Listeners,
        mut config: Config,
        extras: Extras<'_>,
    ) -> Result<Broker, BrokerError> {
        let routes = extras.routes;
        let addrs = listeners.addrs();
        let (geofences, rules) = load_geofences(&config.geofences)?;
        let tls = match config.tls.files() {
            Some(files) => Some(crate::tls::Acceptors::load(&files)?),
            None => None,
        };
        config.limits.max_connections = fit_to_fd_limit(config.limits.max_connections);
        let router = RouterHandle::spawn(&RouterSettings {
            // Room for internal links (the dashboard bridge, the shared lanes) beside the
            // clients.
            max_connections: config.limits.max_connections + 32,
            max_outgoing_packet_count: config.router.max_outgoing_packet_count,
            max_segment_size: config.router.max_segment_size,
            max_segment_count: config.router.max_segment_count,
            coalesce_window: config.router.coalesce_window(),
        })?;
        // Before any listener serves: clients find the state they left.
        let restored = match config.storage.dir() {
            Some(dir) => Some(restore_state(&dir, &config, &router, extras.recorder).await?),
            None => None,
        };
        let shutdown = CancellationToken::new();
        let grace = Duration::from_millis(config.shutdown.grace_ms);
        let slots = Slots {
            connections: Arc::new(Semaphore::new(config.limits.max_connections)),
            refusals: Arc::new(Semaphore::new(config.limits.reject_slots.max(1))),
            per_source: crate::sources::PerSource::new(config.limits.max_connections_per_source),
            threads: Arc::new(
                crate::io_threads::IoThreads::exactly(
                    config.runtime.io_thread_count(),
                    config.runtime.io_coalesce(),
                )
                .map_err(BrokerError::IoThreads)?,
            ),
        };
        let http_limits = http::HttpLimits::from_limits(
            &config.limits,
            crate::meters::HttpMeters::new(extras.recorder),
        );
        let gateway = Arc::new(Gateway::new(
            config,
            router,
            shutdown.clone(),
            extras.recorder,
            extras.auth,
            tls.clone(),
            restored.as_ref().map(|r| Arc::clone(&r.durable)),
        ));
        let mut kept_fences = Vec::new();
        let tracks = restored.as_ref().map(|r| r.tracks.clone());
        let durable = restored.map(|restored| {
            for (client_id, filters, expiry) in restored.sessions {
                gateway.restored_session(&client_id, &filters, expiry);
            }
            let durable = restored.durable;
            if let Some(auth) = &gateway.auth {
                let now = fleetcast_proto::time::unix_now();
                for (id, _) in restored.revoked.iter().filter(|(_, exp)| *exp <= now) {
                    durable.revoked(id, None);
                }
                auth.keep_revocations_in(Arc::clone(&durable), restored.revoked, now);
            }
            kept_fences = restored.geofences;
            durable
        });
        let tracker = TaskTracker::new();
        let listening = Arc::new(AtomicBool::new(false));
        join_cluster(&gateway, extras.recorder, &tracker);

        tracker.spawn(listener::run(
            listeners.mqtt,
            TransportKind::Tcp,
            Arc::clone(&gateway),
            slots.clone(),
            tracker.clone(),
        ));
        if let Some(mqtts) = listeners.mqtts {
            tracker.spawn(listener::run(
                mqtts,
                TransportKind::Tls,
                Arc::clone(&gateway),
                slots.clone(),
                tracker.clone(),
            ));
        }
        tracker.spawn(listener::run(
            listeners.ws,
            TransportKind::Ws,
            Arc::clone(&gateway),
            slots,
            tracker.clone(),
        ));
        let publisher = crate::ingest::Publisher::spawn(
            Arc::clone(&gateway.router),
            shutdown.clone(),
            &tracker,
            durable.clone(),
        );
        let ingest = crate::ingest::Ingest::new(Arc::clone(&gateway), publisher.clone());
        let mut app = http::app(HttpState {
            gateway: Arc::clone(&gateway),
            listening: Arc::clone(&listening),
        })
        .merge(crate::ingest::routes(ingest))
        .merge(crate::share::routes(Arc::clone(&gateway)));
        if let Some(fences) = geofences {
            let store = durable.clone().map(|d| (d, kept_fences));
            let fences = crate::geofence::Geofences::new(rules, fences, publisher, store);
            let _ = gateway.geofences.set(Arc::clone(&fences));
            if let Some(cluster) = gateway.cluster.get() {
                // Every node follows every fix, and publishes the same events to its own
                // clients (never to the cluster: each node's subscribers get them once).
                cluster
                    .interest
                    .add(fleetcast_proto::topic::LOCATION_FILTER);
            }
            tracker.spawn(Arc::clone(&fences).run(Arc::clone(&gateway.router), shutdown.clone()));
            app = app.merge(crate::geofence::api::routes(Arc::clone(&gateway), fences));
        }
        let app = app.merge(routes(&gateway));
        tracker.spawn(http::serve_limited(
            listeners.http,
            tls.map(|t| t.web),
            app,
            shutdown.clone(),
            tracker.clone(),
            http_limits,
        ));
        listening.store(true, Ordering::Release);
        info!(%addrs, "broker started");
        Ok(Broker {
            addrs,
            gateway,
            tracker,
            grace,
            durable,
            tracks,
        })
    }

    /// The data directory's tracks table (None without one): the map's history writes
    /// and reads it. The store file stays open while a handle exists, so the holder drops
    /// it before the broker is started again on the same directory.
    pub fn track_store(&self) -> Option<crate::store::TrackStore> {
        self.tracks.clone()
    }

    /// Where the broker listens.
    pub fn addrs(&self) -> Addrs {
        self.addrs
    }

    /// An in-process subscriber to `filters`, named `fleetcast:{name}`.
    ///
    /// # Errors
    /// The router refused the link.
    pub async fn local_subscriber(
        &self,
        name: &str,
        filters: &[&str],
    ) -> Result<crate::local::LocalSubscriber, RouterError> {
        if let Some(cluster) = self.gateway.cluster.get() {
            // Held as long as the broker runs, as the in-process subscribers are.
            filters.iter().for_each(|f| cluster.interest.add(f));
        }
        crate::local::LocalSubscriber::new(&self.gateway.router, name, filters).await
    }

    /// This node's name in its cluster; None when it is not in one.
    pub fn node(&self) -> Option<&str> {
        self.gateway.cluster.get().map(|c| c.node())
    }

    /// Waits until the node has joined its cluster and mirrored the retained messages
    /// (at once without a cluster).
    ///
    /// # Errors
    /// Not ready within `cluster.startup_timeout_ms`.
    pub async fn cluster_ready(&self) -> Result<(), crate::cluster::ClusterError> {
        match self.gateway.cluster.get() {
            Some(cluster) => cluster.ready().await,
            None => Ok(()),
        }
    }

    /// The shared gateway state (counters, registry).
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// Stops accepting, disconnects every client and waits for their tasks, at most the
    /// configured grace time.
    ///
    /// # Errors
    /// [`BrokerError::ShutdownTimeout`] when tasks were still running at the deadline.
    pub async fn shutdown(mut self) -> Result<(), BrokerError> {
        self.gateway.stop();
        self.tracker.close();
        let drained = tokio::time::timeout(self.grace, self.tracker.wait()).await;
        // Flushed last, after every session has reported its end; a commit blocks, so not
        // on a tokio worker.
        if let Some(durable) = self.durable.take() {
            let _ = tokio::task::spawn_blocking(move || durable.close()).await;
        }
        self.tracks = None;
        if drained.is_err() {
            return Err(BrokerError::ShutdownTimeout(self.tracker.len()));
        }
        info!("broker stopped");
        Ok(())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.gateway.stop();
        if let Some(durable) = &self.durable {
            // Without waiting: the flusher writes once more and releases the store.
            durable.stop();
        }
    }
}

/// Each restored persistent session: its client id, filters, and the seconds it has left.
type RestoredSessions = Vec<(String, Vec<(String, u8)>, u32)>;

/// What a data directory gave back at start.
struct Restored {
    durable: Arc<Durable>,
    tracks: crate::store::TrackStore,
    sessions: RestoredSessions,
    /// Fences changed over the API: name -> Feature, empty when deleted.
    geofences: Vec<(String, Vec<u8>)>,
    /// Revoked share links: id -> expiry.
    revoked: Vec<(String, u64)>,
}

/// Opens the data directory, loads it into the router and starts its flusher. Sessions
/// whose expiry passed while fleetcast was down are dropped.
async fn restore_state(
    dir: &std::path::Path,
    config: &Config,
    router: &RouterHandle,
    recorder: &dyn metrics::Recorder,
) -> Result<Restored, BrokerError> {
    let store = Store::open(dir)?;
    let loaded = store.load()?;
    let retained = loaded.retained.len();
    let now = fleetcast_proto::time::unix_now();
    let (live, expired): (Vec<_>, Vec<_>) = loaded
        .sessions
        .into_iter()
        .partition(|s| time_left(s, now).is_some());
    crate::restore::restore(router, loaded.retained, &live).await?;
    let sessions = live
        .iter()
        .map(|s| {
            (
                s.client_id.clone(),
                s.filters.clone(),
                time_left(s, now).unwrap_or(0),
            )
        })
        .collect();
    let expired = expired.into_iter().map(|s| s.client_id).collect();
    let tracks = store.tracks();
    let meters = StoreMeters::new(recorder);
    let settings = config.storage.settings();
    let durable =
        Durable::start(store, live, expired, settings, meters).map_err(BrokerError::Flusher)?;
    durable.loaded(retained);
    Ok(Restored {
        durable,
        tracks,
        sessions,
        geofences: loaded.geofences,
        revoked: loaded.revoked,
    })
}

/// Seconds a saved session has left (`u32::MAX`: for ever), None when it has expired. One
/// that was connected when fleetcast stopped has its whole expiry from now.
fn time_left(s: &crate::store::SavedSession, now: u64) -> Option<u32> {
    match s.expires_at {
        0 if s.expiry == 0 => None,
        0 => Some(s.expiry),
        at if at <= now => None,
        at => Some(u32::try_from(at - now).unwrap_or(u32::MAX - 1)),
    }
}

/// Starts the node's share of the cluster when `[cluster] servers` names NATS servers.
fn join_cluster(gateway: &Arc<Gateway>, recorder: &dyn metrics::Recorder, tracker: &TaskTracker) {
    let settings = &gateway.config.cluster;
    if settings.servers.is_empty() {
        return;
    }
    let cluster = Arc::new(crate::cluster::Cluster::new(settings, recorder));
    if gateway.cluster.set(Arc::clone(&cluster)).is_ok() {
        crate::cluster::start(gateway, cluster, tracker);
    }
}

/// Accept queue length: a connect storm of thousands per second must not overflow it (the
/// kernel then drops SYNs, and clients wait a 1 s retransmit). The kernel caps it at
/// `net.core.somaxconn`.
const BACKLOG: u32 = 4096;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Raises this process's open-files soft limit to its hard limit, and returns the new soft
/// limit: one descriptor per client, so the limit is the client count's ceiling.
///
/// # Errors
/// The limit cannot be read or set.
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// How many clients fit under the open-files soft limit, as `wanted` or fewer.
fn fit_to_fd_limit(wanted: usize) -> usize {
    let limit = match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((soft, _hard)) => soft,
        Err(e) => {
            warn!(error = %e, "cannot read the open-files limit");
            return wanted;
        }
    };
    let room = usize::try_from(limit.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX);
    if room < wanted {
        warn!(
            wanted,
            allowed = room,
            open_files_limit = limit,
            "limits.max_connections lowered to fit the open-files limit"
        );
        room.max(1)
    } else {
        wanted
    }
}

/// The fences of `[geofences] file` and the rule they follow; None when geofences are off.
fn load_geofences(
    g: &crate::config::Geofences,
) -> Result<(Option<Vec<crate::geofence::Fence>>, crate::geofence::Rules), BrokerError> {
    let rules = crate::geofence::Rules {
        enter_fixes: g.enter_fixes,
        exit_fixes: g.exit_fixes,
        exit_margin_m: g.exit_margin_m,
    };
    if g.file.is_empty() {
        return Ok((None, rules));
    }
    let failed = |why: String| BrokerError::Geofences {
        file: g.file.clone(),
        why,
    };
    let text = std::fs::read_to_string(&g.file).map_err(|e| failed(e.to_string()))?;
    let fences = crate::geofence::geojson::parse(&text).map_err(|e| failed(e.to_string()))?;
    Ok((Some(fences), rules))
}
