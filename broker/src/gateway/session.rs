//! One client connection, from CONNECT to close: the connection loop.
//!
//! A session reads frames from its [`Transport`], has them checked (`inbound.rs`), and
//! pushes them into its rumqttd link; it writes what the router sends back
//! (`outbound.rs`). It owns what the router cannot do for a local link: the will (the
//! router never fires wills of local links), keepalive, pacing of publishers and client-id
//! takeover; the CONNECT and its refusals are `handshake.rs`'s. Every way a session ends
//! is an [`End`].

use super::backlog::Mark;
use super::codec::{Version, Violation};
use super::delivery::Delivery;
use super::frame;
use super::handshake::{self, close_within, REFUSAL_WRITE};
use super::hello::{connack, Hello, Identity};
use super::inbound::{Inbound, Tally};
use super::linger::{self, DelayedWill};
use super::transport::Transport;
use super::uplink;
use super::{Gateway, Stats, TransportKind};
use crate::cluster::ClusterHook;
use crate::durable::tap::Tap;
use crate::pacing::Pacer;
use crate::registry::Claim;
use bytes::BytesMut;
use fleetcast_proto::time::now_ms;
use futures_util::FutureExt;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::Error as ProtocolError;
use rumqttd::protocol::{LastWill, LastWillProperties, Packet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{sleep_until, timeout, Instant};
use tracing::{debug, info, Instrument};

/// Bytes asked of the socket per read while frames are coming faster than one a read.
const READ_CHUNK: usize = 16 * 1024;
/// What a read buffer holding part of a frame is grown to first: enough for a position
/// fix (~100 bytes) several times over, small beside the socket's own kernel buffers.
const READ_MIN: usize = 1024;
/// Spare room below which a buffer holding part of a frame is grown before a read.
const READ_ROOM: usize = 256;
/// Router back-log (events) past which sessions pause their reads.
const ROUTER_HIGH_WATER: usize = 16 * 1024;
/// Publishes waiting in a shared lane past which its sessions pause their reads.
const LANE_HIGH_WATER: usize = 16 * 1024;
/// How long a newcomer waits for the old owner of its client id to finish.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

/// Readies a read buffer for the next read. An empty one is let go: the transport reads
/// into an allocation of the size that came (`transport.rs`), so that a connection waiting
/// for its next packet holds no buffer (a device sending a fix a second waits nearly all
/// the time). One holding part of a frame keeps it and grows, to [`READ_MIN`] first, then a
/// chunk at a time: a flood reads [`READ_CHUNK`] at a time.
pub(super) fn make_room(buf: &mut BytesMut) {
    if buf.is_empty() {
        // Even without spare room: an emptied buffer may still hold the allocation (and
        // the shared header) that the frames split off it were read into.
        *buf = BytesMut::new();
        return;
    }
    if buf.capacity() - buf.len() >= READ_ROOM {
        return;
    }
    let grow = if buf.len() < READ_MIN {
        READ_MIN - buf.len()
    } else {
        READ_CHUNK
    };
    buf.reserve(grow.max(READ_ROOM));
}

/// Why a session ended.
#[derive(Debug)]
pub enum End {
    /// The client sent DISCONNECT.
    ClientDisconnect,
    /// The client sent an MQTT 5 DISCONNECT with a reason other than 0x00 (0x04 asks for
    /// the will; errors keep it too): close, and publish the will.
    ClientDisconnectWithWill,
    /// The client closed the socket without DISCONNECT.
    PeerClosed,
    /// Nothing heard for 1.5 x the keepalive.
    KeepAlive,
    /// The client broke the protocol: what an MQTT 5 client is told (DISCONNECT), and why.
    Protocol(Violation, String),
    /// The client published to a topic its policy does not grant.
    PolicyViolation(String),
    /// A newer connection took the client id over.
    TakenOver,
    /// The server is shutting down.
    Shutdown,
    /// The router dropped the link.
    RouterDropped,
    /// A write did not finish within the write time-out.
    WriteTimeout,
    /// The socket failed.
    Io(std::io::Error),
}

impl End {
    /// The `reason` label of `fleetcast_disconnects_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            End::ClientDisconnect => "clean",
            End::ClientDisconnectWithWill => "disconnect_with_will",
            End::PeerClosed => "peer_closed",
            End::KeepAlive => "keepalive_timeout",
            End::Protocol(..) => "protocol_error",
            End::PolicyViolation(_) => "policy_violation",
            End::TakenOver => "taken_over",
            End::Shutdown => "shutdown",
            End::RouterDropped => "router_dropped",
            End::WriteTimeout => "write_timeout",
            End::Io(_) => "io_error",
        }
    }

    /// The reason code and Reason String of the DISCONNECT an MQTT 5 client gets before
    /// the server closes: none when the client closed, or the socket is gone.
    fn notice(&self) -> Option<(u8, &str)> {
        match self {
            End::Protocol(violation, why) => Some((violation.code(), why)),
            End::TakenOver => Some((0x8E, "session taken over by a newer connection")),
            End::Shutdown => Some((0x8B, "server shutting down")),
            End::KeepAlive => Some((0x8D, "keep alive timeout")),
            End::RouterDropped => Some((0x83, "the router dropped the session")),
            _ => None,
        }
    }

    /// MQTT publishes the will when the network connection closes without DISCONNECT. On
    /// shutdown the router is going away with the process, so there is no one to tell.
    fn fires_will(&self) -> bool {
        !matches!(
            self,
            End::ClientDisconnect | End::Shutdown | End::RouterDropped
        )
    }
}

/// Serves one connection until it ends; logs inside, returns nothing.
///
/// The steps before serving (handshake, claim, link, CONNACK) and after (will, link
/// released, close) are boxed, each run once: room for them would otherwise sit in every
/// connection's task while it serves. What the task keeps is then the session's state and
/// its wait (`footprint.rs`), and no copies of the arguments an `async fn` would keep.
pub fn run<T: Transport>(
    io: T,
    gw: Arc<Gateway>,
    peer: SocketAddr,
    kind: TransportKind,
    connect_deadline: Instant,
) -> impl Future<Output = ()> + Send {
    Box::pin(open(io, gw, peer, kind, connect_deadline)).then(|mut live| async move {
        // Borrowed in place, never moved: a move would keep room for a second copy.
        let Some(live) = live.as_mut() else { return };
        let end = match live.unanswered.take() {
            Some(end) => end,
            None => {
                let serving = live
                    .session
                    .serve(live.ending.keep_alive, live.claim.kicked());
                serving.instrument(live.span.clone()).await
            }
        };
        let span = live.span.clone();
        Box::pin(live.close(end).instrument(span)).await;
    })
}

/// The handshake, then the session's start; None once a refusal or a close is done.
async fn open<T: Transport>(
    mut io: T,
    gw: Arc<Gateway>,
    peer: SocketAddr,
    kind: TransportKind,
    connect_deadline: Instant,
) -> Option<Live<T>> {
    let mut rbuf = BytesMut::new();
    // Boxed, so that the session's start keeps no room for them once past (the
    // handshake's checks and a refusal's writes outweigh what a session holds).
    let handshake = Box::pin(handshake::handshake(
        &mut io,
        &gw,
        peer,
        &mut rbuf,
        connect_deadline,
    ));
    let (hello, identity) = match handshake.await {
        Ok(accepted) => accepted,
        Err(rejected) => {
            Box::pin(handshake::refuse(io, &gw, peer, kind, rejected)).await;
            return None;
        }
    };
    // At DEBUG: a span lives as long as its connection, and the log's record of one (its
    // fields, formatted, in the subscriber's slab) costs ~400 bytes a connection. The
    // session's own INFO and WARN lines name the client id themselves.
    let span = tracing::debug_span!("session", client_id = %hello.client_id, %peer, transport = kind.as_str());
    let start = Session::start(io, gw, hello, identity, rbuf, kind);
    let mut live = start.instrument(span.clone()).await?;
    live.span = span;
    Some(live)
}

/// What a session's end needs of its CONNECT; the rest of it (~300 bytes) is let go once
/// answered.
struct Ending {
    client_id: String,
    /// The will and its properties, boxed: few clients leave one, and it is ~200 bytes.
    will: Option<Box<(LastWill, Option<LastWillProperties>)>>,
    keep_alive: u16,
    clean_start: bool,
    session_expiry: u32,
}

impl Ending {
    fn of(hello: Box<Hello>) -> Ending {
        let Hello {
            client_id,
            will,
            will_properties,
            keep_alive,
            clean_start,
            session_expiry,
            ..
        } = *hello;
        Ending {
            client_id,
            will: will.map(|w| Box::new((w, will_properties))),
            keep_alive,
            clean_start,
            session_expiry,
        }
    }
}

/// A session being served, and what its end needs.
struct Live<T> {
    session: Session<T>,
    /// What the end needs of the CONNECT.
    ending: Ending,
    /// The client id, held until the task ends.
    claim: Claim,
    span: tracing::Span,
    /// What ended the session before it was served (the CONNACK could not be written).
    unanswered: Option<End>,
}

impl<T: Transport> Live<T> {
    /// Counts the end, fires the will when due, releases the link, closes the socket, and
    /// keeps what outlives the connection.
    async fn close(&mut self, end: End) {
        let gw = Arc::clone(&self.session.gw);
        gw.meters.disconnect(end.reason()).increment(1);
        let session = &mut self.session;
        let expiry = session.inbound.session_expiry;
        let (will, will_properties) = match self.ending.will.take() {
            Some(will) => (Some(will.0), will.1),
            None => (None, None),
        };
        let will = session.finish(end, will, will_properties, expiry).await;
        session.tap.close(expiry);
        session.outlive(&self.ending, expiry, will).await;
        closed(&gw, session.kind);
    }
}

/// A connection past its handshake, with its router link or lane (`uplink.rs`).
pub(super) struct Session<T> {
    pub(super) io: T,
    pub(super) version: Version,
    pub(super) gw: Arc<Gateway>,
    kind: TransportKind,
    /// The session's own router link (both ends), once it has one (`uplink.rs`).
    pub(super) tx: Option<LinkTx>,
    pub(super) rx: Option<LinkRx>,
    /// The shared lane its publishes take while it has no link of its own.
    pub(super) lane: usize,
    rbuf: BytesMut,
    pub(super) wbuf: BytesMut,
    pacer: Pacer,
    /// The client's side: identity, subscriptions, acks due.
    pub(super) inbound: Inbound,
    /// What the client takes of what the router sends.
    pub(super) delivery: Delivery,
    /// Set once the router has dropped the link: it must not be touched again.
    pub(super) router_gone: bool,
    pub(super) tap: Tap,
    /// Cluster hook: publishes and filter changes for the router go to the other nodes
    /// too (`ClusterHook::copy`); None without a cluster.
    cluster: Option<crate::cluster::Member>,
}

/// What the frames of one read came to.
struct Frames {
    /// Checked packets for the router, in order.
    batch: Vec<Packet>,
    tally: Tally,
    /// What ended the session, if a frame did; the frames before it still count.
    end: Option<End>,
    /// How long reads pause for the publish quotas (zero: no pause).
    wait: Duration,
    /// Whole packets parsed (keepalive counts packets, not bytes).
    packets: usize,
}

/// What woke a serving session.
enum Wake {
    /// A quota pause is over: the frames it held back are due.
    Resume,
    /// The subscriber held for made room, or the hold reached its bound (`backlog.rs`).
    Room,
    /// The router sent something (or the link failed). Boxed: a notification is 816
    /// bytes, which would otherwise be kept in every connection's task.
    Router(Box<Result<Option<rumqttd::Notification>, rumqttd::local::LinkError>>),
    /// The socket read (bytes, end of stream or an error).
    Read(std::io::Result<usize>),
    /// The keep-alive timer went off: the session ends unless a packet came since it was
    /// set.
    KeepAlive,
}

/// What handling the bytes read came to.
struct Progress {
    /// How long reads pause for the publish quotas, if they do.
    pause: Option<Duration>,
    /// The subscriber behind that reads hold for, if one is too far behind
    /// (`backlog.rs`).
    hold: Option<Arc<Mark>>,
    /// Whether a whole packet was among them: only that counts as hearing from the client
    /// (MQTT: "a Control Packet"), or a PUBLISH dripped a byte at a time would keep a
    /// connection alive forever.
    heard: bool,
}

impl<T: Transport> Session<T> {
    /// Takes the client id over, builds the link and answers the CONNECT; None when the
    /// session ends before (shutdown, no link), its socket closed.
    async fn start(
        mut io: T,
        gw: Arc<Gateway>,
        hello: Box<Hello>,
        identity: Identity,
        rbuf: BytesMut,
        kind: TransportKind,
    ) -> Option<Live<T>> {
        let (claim, took_over) = gw.registry.claim(&hello.client_id, TAKEOVER_WAIT).await;
        if took_over {
            info!(client_id = %hello.client_id, transport = kind.as_str(), "client id taken over from an older connection");
        }
        // Back in time: the session and will waiting for this client stay.
        let lingered = gw.lingering.cancel(&hello.client_id);
        let held = gw.held_sessions.release(&hello.client_id) || lingered;
        if gw.shutdown.is_cancelled() {
            close_within(&mut io).await;
            return None;
        }
        let (tx, rx, session_present) = if uplink::starts_shared(&hello, held) {
            (None, None, false)
        } else {
            let Some((tx, rx, present)) = uplink::link(&mut io, &gw, &hello).await else {
                close_within(&mut io).await;
                return None;
            };
            (Some(tx), Some(rx), present)
        };
        let mut session = Session::new(io, gw, &hello, identity, rbuf, kind, (tx, rx));
        session.resume(&hello, session_present).await;
        let connack = connack(&hello, session_present, &session.gw.config.limits);
        opened(&session.gw, kind);
        let unanswered = session.answer(connack).await.err();
        Some(Live {
            session,
            ending: Ending::of(hello),
            claim,
            span: tracing::Span::none(),
            unanswered,
        })
    }

    /// The session's state, built outside `start` so that its parts are never held twice
    /// in the connection's task (an async fn keeps room for every local it moves).
    fn new(
        io: T,
        gw: Arc<Gateway>,
        hello: &Hello,
        identity: Identity,
        rbuf: BytesMut,
        kind: TransportKind,
        (tx, rx): (Option<LinkTx>, Option<LinkRx>),
    ) -> Session<T> {
        let rate = gw.config.limits.publish_rate_per_connection;
        let limits = &gw.config.limits;
        let mut inbound = Inbound::new(hello.version, identity, limits, now_ms);
        inbound.session_expiry = hello.session_expiry;
        inbound.problem_info = hello.takes.problem_info;
        Session {
            io,
            version: hello.version,
            kind,
            tx,
            rx,
            lane: uplink::next_lane(),
            rbuf,
            // Grown by what is written (most devices are only sent acks), shrunk after a
            // large write (`outbound.rs`).
            wbuf: BytesMut::new(),
            // A tenth of a second of burst, as for the global pacer.
            pacer: Pacer::new(rate, (rate / 10).max(1)),
            delivery: Delivery::new(hello.version, hello.takes, limits.topic_alias_maximum),
            inbound,
            router_gone: false,
            tap: gw.tap(&hello.client_id, hello.clean_start, hello.session_expiry),
            cluster: gw.cluster_member(&hello.client_id, hello.will.as_ref()),
            gw,
        }
    }

    /// Takes up what a resumed session held: the router restored its filters, so they
    /// count against the subscription limit as if taken in this connection, and an MQTT 5
    /// session's options apply again (the router forgot their identifiers: given back).
    async fn resume(&mut self, hello: &Hello, session_present: bool) {
        let kept = self.gw.persistent_filters.take(&hello.client_id);
        if !session_present {
            self.gw
                .forget_retain_as_published(kept.retain_as_published());
            return;
        }
        self.cluster.hold(kept.filters());
        self.inbound.subscriptions.restore(kept);
        if hello.version == Version::V5 {
            let again = self.inbound.subscriptions.reidentify();
            self.cluster.copy(&again);
            // The router acks these too: nobody is told.
            self.inbound.acks.suback_after(again.len(), None);
            // A router gone shows at the first read of the link.
            let _ = self.submit(again).await;
        }
    }

    /// What outlives the connection: the session for `expiry` seconds with its filters,
    /// and a delayed will; or, for a session that ends now, nothing the router kept.
    async fn outlive(&mut self, ending: &Ending, expiry: u32, will: Option<DelayedWill>) {
        let id = &ending.client_id;
        if expiry > 0 {
            self.gw.held_sessions.hold(id);
            let held = self.inbound.subscriptions.take_all();
            self.gw.persistent_filters.keep(id, held);
            linger::linger(&self.gw, id.clone(), expiry, will);
            return;
        }
        let held = self.inbound.subscriptions.take_all();
        self.gw
            .forget_retain_as_published(held.retain_as_published());
        // A session resumed (Clean Start 0) with expiry 0, or whose DISCONNECT set 0: the
        // router was told to keep it, so it is discarded now, while the id is ours.
        if !ending.clean_start || ending.session_expiry > 0 {
            linger::discard(&self.gw.router, id).await;
        }
    }

    /// Writes the CONNACK, then what the session was owed before a restart (`Tap`).
    async fn answer(&mut self, connack: Packet) -> Result<(), End> {
        super::outbound::encode(self.version, connack, &mut self.wbuf)?;
        let v5 = self.version == Version::V5;
        self.tap
            .replay(v5, &mut self.wbuf, |pkid| self.inbound.acks.sent(1, pkid));
        self.flush().await
    }

    /// Reads, checks and forwards the client's packets and writes the router's until
    /// something ends the session.
    async fn serve(
        &mut self,
        keep_alive: u16,
        kicked: &tokio_util::sync::CancellationToken,
    ) -> End {
        let keepalive =
            (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500));
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        let mut last_heard = Instant::now();
        let mut pause_until: Option<Instant> = None;
        // Made once, not at every wake-up: a fresh cancellation future joins its token's
        // waiter list (a lock) and a fresh sleep the timer wheel (another), then both
        // leave again when the select drops them. One token for both ways of being
        // stopped (it is a child of the shutdown token, `registry.rs`): its lock is this
        // session's alone, where the shutdown token's is every session's. One timer for
        // both deadlines (a sleep is ~100 bytes of every connection's task): the end of a
        // quota pause while paused, else the keep-alive's, which is not moved when a
        // packet is heard: when it goes off it checks the last one heard and re-arms, so
        // it fires once per keep-alive period, not once per message.
        let mut stopped = std::pin::pin!(kicked.cancelled());
        let mut timer = std::pin::pin!(sleep_until(keepalive.map_or(far, |k| last_heard + k)));
        let mut hold: Option<Arc<Mark>> = None;
        // Packets read along with the CONNECT (3.1.1 3.1.4 lets a client send them before
        // the CONNACK) are served now: no more bytes may ever come to wake the loop.
        if !self.rbuf.is_empty() {
            match self.on_client_bytes().await {
                Ok(p) => (pause_until, hold) = self.heard(p, &mut last_heard),
                Err(end) => return end,
            }
        }
        loop {
            if let Some(at) = pause_until {
                if timer.deadline() != at {
                    timer.as_mut().reset(at);
                }
            }
            make_room(&mut self.rbuf);
            if self.rx.is_none() && self.wbuf.is_empty() && self.wbuf.capacity() > 0 {
                // A session without a link is only ever written acks and PINGRESPs: its
                // write buffer is let go between them, as the read buffer is.
                self.wbuf = BytesMut::new();
            }
            // What woke the session is handled after the select, once its futures are
            // dropped: the task then never holds them and a handler's state together.
            let wake = tokio::select! {
                biased;
                () = &mut stopped => {
                    return if self.gw.shutdown.is_cancelled() { End::Shutdown } else { End::TakenOver };
                }
                // Before the router's stream: a steady flow of messages out must not keep a
                // paused client's buffered frames (acks, pings) waiting. The keep-alive is
                // not checked while paused or held: the client may be sending, held back by
                // TCP.
                () = &mut timer, if pause_until.is_some() || (keepalive.is_some() && hold.is_none()) => {
                    if pause_until.is_some_and(|at| at <= Instant::now()) { Wake::Resume } else { Wake::KeepAlive }
                }
                () = room(&self.gw, hold.as_deref()), if hold.is_some() => Wake::Room,
                // Not while the client's Receive Maximum holds a publish back.
                n = uplink::next_from(&mut self.rx), if self.rx.is_some() && self.delivery.held.is_none() => Wake::Router(Box::new(n)),
                r = self.io.read_into(&mut self.rbuf), if pause_until.is_none() && hold.is_none() => Wake::Read(r),
            };
            match wake {
                Wake::Router(n) => {
                    // Boxed: a device that only publishes never comes here, and room for it
                    // would sit in every connection's task (`footprint.rs`).
                    if let Err(end) = Box::pin(self.on_router(*n)).await {
                        return end;
                    }
                    continue;
                }
                Wake::KeepAlive => {
                    let due = keepalive.map_or(far, |k| last_heard + k);
                    if due <= Instant::now() && pause_until.is_none() && hold.is_none() {
                        return End::KeepAlive;
                    }
                    timer.as_mut().reset(due);
                    continue;
                }
                Wake::Read(Ok(0)) => return End::PeerClosed,
                Wake::Read(Err(e)) => return End::Io(e),
                Wake::Read(Ok(n)) => self.gw.meters.bytes_received.increment(n as u64),
                // Frames held back by the quota go first; the socket is read after.
                Wake::Resume => {
                    // The client was not read while paused: its silence was ours.
                    last_heard = last_heard.max(Instant::now());
                }
                Wake::Room => {
                    if hold
                        .as_deref()
                        .is_some_and(|m| self.gw.backlogs.still_holds(m, Instant::now()))
                    {
                        continue;
                    }
                    hold = None;
                    // The client was not read while held: its silence was ours.
                    last_heard = last_heard.max(Instant::now());
                    continue;
                }
            }
            match self.on_client_bytes().await {
                Ok(p) => (pause_until, hold) = self.heard(p, &mut last_heard),
                Err(end) => return end,
            }
        }
    }

    /// Notes a whole packet as heard; returns when reads may resume after the pause due
    /// and the subscriber they hold for, counting the pause and the hold.
    fn heard(
        &self,
        progress: Progress,
        last_heard: &mut Instant,
    ) -> (Option<Instant>, Option<Arc<Mark>>) {
        if progress.heard {
            *last_heard = Instant::now();
        }
        let paused = progress.pause.is_some() as u64 + progress.hold.is_some() as u64;
        if paused > 0 {
            self.gw.meters.pacing_pauses.increment(paused);
        }
        (
            progress.pause.map(|wait| Instant::now() + wait),
            progress.hold,
        )
    }

    /// Parses the complete frames read, checks them, and hands the batch to the router.
    /// Stops early when this connection's publish quota is used up: the rest stays in the
    /// read buffer until the returned pause is over.
    async fn on_client_bytes(&mut self) -> Result<Progress, End> {
        let now = Instant::now();
        let Frames {
            mut batch,
            tally,
            end,
            mut wait,
            packets,
        } = self.take_frames(now);
        self.tap.inbound(&mut batch);
        if tally.publishes > 0 {
            // The shared pacer is charged once per read: an atomic per message would be
            // contended by every connection.
            wait = wait.max(self.gw.global_pacer.charge(tally.publishes, now));
            // The back-log read takes the channel's lock: only reads with publishes pay.
            if self.gw.router.backlog() > ROUTER_HIGH_WATER {
                wait = wait.max(Duration::from_millis(1));
            }
        }
        tally.record(&self.gw.meters);
        self.gw.count_retain_as_published(tally.retain_as_published);
        self.cluster.copy(&batch);
        // Counted as pushed on the marks of subscribers behind, if there are any.
        let hold = if tally.publishes > 0 {
            self.gw.backlogs.pushed(&batch, now)
        } else {
            None
        };
        // Packets before a violation still go through, as they would have on their own.
        if self.submit(batch).await? > LANE_HIGH_WATER {
            wait = wait.max(Duration::from_millis(1));
        }
        if !self.wbuf.is_empty() {
            self.flush().await?;
        }
        if let Some(e) = end {
            return Err(e);
        }
        // The client's acks may have made room for what its Receive Maximum held back.
        if self.delivery.held.is_some() {
            // Boxed: only MQTT 5 clients with a Receive Maximum come here.
            Box::pin(self.release_held()).await?;
        }
        Ok(Progress {
            pause: (!wait.is_zero()).then_some(wait),
            hold,
            heard: packets > 0,
        })
    }

    /// Parses and checks frames off the read buffer until it holds no whole frame, one
    /// ends the session, or this connection's publish quota asks for a pause.
    fn take_frames(&mut self, now: Instant) -> Frames {
        let max = self.gw.config.limits.max_packet_size;
        self.inbound.mark_retained = self.gw.wants_retain_marks();
        let mut frames = Frames {
            batch: Vec::new(),
            tally: Tally::default(),
            end: None,
            wait: Duration::ZERO,
            packets: 0,
        };
        while frames.wait.is_zero() {
            let header = frame::publish_qos_pkid(&self.rbuf);
            let packet = match self.version.read(&mut self.rbuf, max) {
                Ok(p) => p,
                Err(ProtocolError::InsufficientBytes(_)) => break,
                Err(e) => {
                    self.gw.meters.drop_for("malformed_packet").increment(1);
                    let violation = match e {
                        ProtocolError::PayloadSizeLimitExceeded(_) => Violation::PacketTooLarge,
                        _ => Violation::Malformed,
                    };
                    frames.end = Some(End::Protocol(violation, e.to_string()));
                    break;
                }
            };
            frames.packets += 1;
            let before = frames.tally.publishes;
            let tally = &mut frames.tally;
            let batch = &mut frames.batch;
            if let Err(e) = self
                .inbound
                .check(packet, header, &mut self.wbuf, tally, batch)
            {
                frames.end = Some(e);
                break;
            }
            if frames.tally.publishes > before {
                // Charged one by one so that a burst read at once cannot pass the quota.
                frames.wait = self.pacer.charge(1, now);
            }
        }
        frames
    }

    /// Publishes the will when due, releases the link, closes the socket.
    /// Returns the will when it must wait for its delay (or for the end of the session,
    /// `expiry` seconds from now, if sooner).
    async fn finish(
        &mut self,
        end: End,
        will: Option<LastWill>,
        will_properties: Option<LastWillProperties>,
        expiry: u32,
    ) -> Option<DelayedWill> {
        match &end {
            End::ClientDisconnect
            | End::ClientDisconnectWithWill
            | End::PeerClosed
            | End::Shutdown => {
                debug!(reason = ?end, "session ended")
            }
            _ => {
                info!(client_id = %self.inbound.identity.client_id(), transport = self.kind.as_str(), reason = ?end, "session ended")
            }
        }
        let mut delayed = None;
        let mut due = None;
        if !self.router_gone {
            if let Some(w) = will.filter(|_| end.fires_will()) {
                let (delay, publish) = linger::will_publish(w, will_properties);
                if delay > 0 && expiry > 0 {
                    delayed = Some(DelayedWill { publish, delay });
                } else {
                    self.tap.will(&publish);
                    self.cluster.copy(std::slice::from_ref(&publish));
                    due = Some(publish);
                    self.gw.meters.wills.increment(1);
                }
            }
        }
        self.release(due).await;
        if let (Version::V5, Some((code, why))) = (self.version, end.notice()) {
            // MQTT 5 4.13: a server SHOULD say why before it closes.
            let bye = super::codec::with_reason_string(&[0xE0], &[code], why);
            self.wbuf.extend_from_slice(&bye);
        }
        if !self.wbuf.is_empty() && !matches!(end, End::WriteTimeout | End::Io(_)) {
            let _ = timeout(REFUSAL_WRITE, self.io.write_from(&mut self.wbuf)).await;
        }
        // A peer that reads nothing would hold a TLS or WebSocket close (it flushes) forever.
        if !matches!(end, End::WriteTimeout | End::Io(_)) {
            close_within(&mut self.io).await;
        }
        debug!(transport = self.kind.as_str(), "closed");
        delayed
    }
}

/// Counts a connection open, where health checks read it and in the meters.
fn opened(gw: &Gateway, kind: TransportKind) {
    gw.stats.open(kind).fetch_add(1, Ordering::Relaxed);
    let (gauge, connects) = Stats::kind_meters(&gw.meters, kind);
    gauge.increment(1.0);
    connects.increment(1);
}

/// Counts a connection closed.
fn closed(gw: &Gateway, kind: TransportKind) {
    gw.stats.open(kind).fetch_sub(1, Ordering::Relaxed);
    Stats::kind_meters(&gw.meters, kind).0.decrement(1.0);
}

/// Waits for the subscriber `hold` is for to make room, or for the hold's bound
/// (`backlog.rs`).
///
/// # Cancel safety
/// Cancel safe: it only waits.
async fn room(gw: &Gateway, hold: Option<&Mark>) {
    if let Some(m) = hold {
        gw.backlogs.room(m).await;
    }
}
