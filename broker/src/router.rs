//! The embedded rumqttd router and the two threads that talk to it.
//!
//! rumqttd's local links are how the gateway hands packets over without spending a
//! socket per client (the open-files limit here is 20,000 per process). Two sharp edges
//! shape this module:
//! - `LinkBuilder::build()` blocks its thread until the router answers, so links are built
//!   on one dedicated builder thread, asked over a bounded channel and answering over a
//!   oneshot, instead of blocking tokio's workers.
//! - `LinkTx::send()` is `async` but does a blocking send into the router's bounded(1000)
//!   channel. Links are therefore given our own unbounded channel, drained into the
//!   router by a forwarder thread. Its depth is the router's back-log, which sessions read
//!   to pause their socket reads ([`RouterHandle::backlog`]), so the queue stays bounded by
//!   the high-water mark plus one batch per connection.
//!
//! Devices that only publish share a few links (`lanes.rs`) instead of a link each. Those
//! few send straight into the router's channel, only while it has room, so the bulk of a
//! fleet's publishes skip the forwarder's wake-up.
//!
//! The router's event type is private to rumqttd, so its sender cannot be named: it is
//! only ever held inside generic functions and closures.

mod lanes;

/// The shared links' coalescing window unless configured otherwise.
pub const DEFAULT_WINDOW: std::time::Duration = lanes::WINDOW;

pub use lanes::LaneGone;
use lanes::Lanes;
use rumqttd::local::{LinkBuilder, LinkError, LinkRx, LinkTx};
use rumqttd::{Notification, Router, RouterConfig};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;

/// A built link: what the gateway pushes packets into, what it reads from, and the
/// router's CONNACK notification.
pub type Link = (LinkTx, LinkRx, Notification);

/// Link builds waiting for the builder thread; past this a connect is refused as busy.
const BUILD_QUEUE: usize = 4_096;
/// Free slots in the router's bounded(1000) channel below which a lane leaves its
/// data for the router to take before it next blocks, instead of risking a blocking send.
const ROOM_MARGIN: usize = 64;

/// Why a link could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// The builder queue is full (a connect storm beyond [`BUILD_QUEUE`]).
    #[error("router busy: {BUILD_QUEUE} connects already queued")]
    Busy,
    /// The router or the builder thread is gone.
    #[error("router stopped")]
    Stopped,
    /// The router refused the link (full, or an id it rejects).
    #[error("router refused the connection")]
    Refused(#[source] Box<LinkError>),
    /// A thread could not be started.
    #[error("cannot start the {0} thread")]
    Spawn(&'static str, #[source] std::io::Error),
}

struct BuildRequest {
    client_id: String,
    clean_session: bool,
    reply: tokio::sync::oneshot::Sender<Result<Link, LinkError>>,
}

/// Settings for [`RouterHandle::spawn`].
#[derive(Debug, Clone)]
pub struct RouterSettings {
    /// Links the router accepts.
    pub max_connections: usize,
    /// Packets queued per client before the router waits for it.
    pub max_outgoing_packet_count: u64,
    /// Commit-log segment size (bytes).
    pub max_segment_size: usize,
    /// Segments kept per topic.
    pub max_segment_count: usize,
    /// The shared links' coalescing window under load (`router/lanes.rs`); None: off.
    pub coalesce_window: Option<std::time::Duration>,
}

/// The running router: builds links and reports its back-log. Cheap to share by `Arc`.
pub struct RouterHandle {
    builds: mpsc::SyncSender<BuildRequest>,
    backlog: Box<dyn Fn() -> usize + Send + Sync>,
    alive: Box<dyn Fn() -> bool + Send + Sync>,
    /// The shared links of devices that only publish.
    lanes: Arc<Lanes>,
}

impl std::fmt::Debug for RouterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterHandle")
            .field("backlog", &(self.backlog)())
            .field("alive", &(self.alive)())
            .finish()
    }
}

impl RouterHandle {
    /// Starts the router thread, the forwarder thread and the link builder thread.
    ///
    /// The router thread cannot be stopped (rumqttd has no shutdown); it blocks idle once
    /// every link is gone and ends with the process.
    ///
    /// # Errors
    /// A thread could not be spawned.
    pub fn spawn(settings: &RouterSettings) -> Result<Arc<RouterHandle>, RouterError> {
        // Every field set explicitly: RouterConfig::default() has max_connections 0 and
        // a zero segment size, which panics the router.
        let config = RouterConfig {
            max_connections: settings.max_connections,
            max_outgoing_packet_count: settings.max_outgoing_packet_count,
            max_segment_size: settings.max_segment_size,
            max_segment_count: settings.max_segment_count,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        };
        // The lanes' side of the coalescing window (`router/lanes.rs`): named once built.
        let polled = rumqttd::Polled::new(settings.coalesce_window, lanes::QUIET_WINDOWS);
        let router_tx = Router::new(0, config).with_polled(polled.clone()).spawn();

        // Item type inferred from LinkBuilder::new below: rumqttd's private event.
        let (link_tx, link_rx) = flume::unbounded();
        let forward_to = router_tx.clone();
        thread::Builder::new()
            .name("fleetcast-forward".into())
            .spawn(move || {
                // Ends when every link and the builder have dropped their senders.
                while let Ok(event) = link_rx.recv() {
                    if forward_to.send(event).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| RouterError::Spawn("forwarder", e))?;

        let (builds, requests) = mpsc::sync_channel::<BuildRequest>(BUILD_QUEUE);
        let builder_tx = link_tx.clone();
        thread::Builder::new()
            .name("fleetcast-linkbuild".into())
            .spawn(move || {
                while let Ok(req) = requests.recv() {
                    let built = LinkBuilder::new(&req.client_id, builder_tx.clone())
                        .clean_session(req.clean_session)
                        .build();
                    // The asking session is gone (its client closed while waiting). A link
                    // dropped without Disconnect keeps its router slot forever: free it.
                    if let Err(Ok((mut tx, _rx, _))) = req.reply.send(built) {
                        // Our sender is unbounded, so this future is ready at once.
                        let _ = futures_util::FutureExt::now_or_never(tx.send(disconnect_packet()));
                    }
                }
            })
            .map_err(|e| RouterError::Spawn("link builder", e))?;

        // Built here, where the router's sender can be named by inference; the router
        // answers each at once (nothing else is queued yet). Straight on the router's
        // channel: a lane notifies only when that channel has room (so a push never blocks
        // a tokio worker) and otherwise leaves it for the router to take before it next
        // blocks, which saves each notification the forwarder's wake-up.
        let mut shared = Vec::new();
        for i in 0..Lanes::wanted() {
            let (tx, rx, _) = LinkBuilder::new(&format!("fleetcast:lane:{i}"), router_tx.clone())
                .clean_session(true)
                .build()
                .map_err(|e| RouterError::Refused(Box::new(e)))?;
            shared.push((tx, rx));
        }
        let depth = link_tx;
        let probe = router_tx.clone();
        // Room to spare for what the forwarder and the other lanes may send between this
        // look and the send.
        let room =
            Box::new(move || probe.len() + ROOM_MARGIN < probe.capacity().unwrap_or(usize::MAX));
        Ok(Arc::new(RouterHandle {
            lanes: Lanes::new(shared, polled, room),
            builds,
            backlog: Box::new(move || depth.len()),
            alive: Box::new(move || !router_tx.is_disconnected()),
        }))
    }

    /// Builds a link for a client whose CONNECT the gateway has accepted.
    ///
    /// # Errors
    /// [`RouterError::Busy`] when too many builds are queued, [`RouterError::Refused`] when
    /// the router declines, [`RouterError::Stopped`] when it is gone.
    pub async fn connect(&self, client_id: &str, clean_session: bool) -> Result<Link, RouterError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let req = BuildRequest {
            client_id: client_id.to_owned(),
            clean_session,
            reply,
        };
        self.builds.try_send(req).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => RouterError::Busy,
            mpsc::TrySendError::Disconnected(_) => RouterError::Stopped,
        })?;
        match answer.await {
            Ok(Ok(link)) => Ok(link),
            Ok(Err(e)) => Err(RouterError::Refused(Box::new(e))),
            Err(_) => Err(RouterError::Stopped),
        }
    }

    /// Hands QoS 0 and 1 publishes of a device without a link of its own (the gateway acks
    /// the QoS 1 ones: the router answers nothing on a lane) to the router through
    /// shared link `lane` (any number: taken modulo the lanes), leaving `batch` empty with
    /// its room kept for the caller's next. Returns the log bytes waiting in that lane,
    /// for back-pressure. `early`: a flood may notify the router before the coalescing
    /// window ends (`router/lanes.rs`).
    ///
    /// # Errors
    /// [`LaneGone`] when the router dropped the lane.
    pub fn push_shared(
        &self,
        lane: usize,
        batch: &mut Vec<rumqttd::protocol::Packet>,
        early: bool,
    ) -> Result<usize, LaneGone> {
        self.lanes.push(lane, batch, early)
    }

    /// Log bytes waiting in shared link `lane` for the router to take.
    pub fn waiting_shared(&self, lane: usize) -> usize {
        self.lanes.waiting(lane)
    }

    /// Sends the router what waits in shared link `lane`, before a device that used it
    /// builds a link of its own (so its earlier publishes stay ahead of its later ones).
    ///
    /// # Errors
    /// [`LaneGone`] when the router dropped the lane.
    pub fn flush_shared(&self, lane: usize) -> Result<(), LaneGone> {
        self.lanes.flush_one(lane).map(|_| ())
    }

    /// Events queued for the router that it has not taken yet.
    pub fn backlog(&self) -> usize {
        (self.backlog)()
    }

    /// Whether the router thread still takes events.
    pub fn is_alive(&self) -> bool {
        (self.alive)()
    }
}

/// Pushes `last` into a link and notifies the router; false when the router is gone.
/// `LinkTx::send` is `async` but never waits on a link built on our unbounded channel
/// (the forwarder drains it), so it is polled once instead of awaited: there is no future
/// for a caller to box or keep room for. A lane's link sends into the router's bounded
/// channel and can block while it is full: `lanes.rs` looks for room first.
pub(crate) fn send_now(tx: &mut LinkTx, last: rumqttd::protocol::Packet) -> bool {
    matches!(
        futures_util::FutureExt::now_or_never(tx.send(last)),
        Some(Ok(_))
    )
}

/// Bytes `packet` takes in the router's logs: rumqttd's `Storage::size` of a publish
/// (topic, payload and 4), nothing for other packets.
pub(crate) fn log_bytes(packet: &rumqttd::protocol::Packet) -> usize {
    match packet {
        rumqttd::protocol::Packet::Publish(p, _) => 4 + p.topic.len() + p.payload.len(),
        _ => 0,
    }
}

/// The packet that tells the router a link is finished.
pub(crate) fn disconnect_packet() -> rumqttd::protocol::Packet {
    rumqttd::protocol::Packet::Disconnect(
        rumqttd::protocol::Disconnect {
            reason_code: rumqttd::protocol::DisconnectReasonCode::NormalDisconnection,
        },
        None,
    )
}
