//! One client connection, from CONNECT to close: the connection loop.
//!
//! A session reads frames from its [`Transport`], has them checked (`intake.rs`,
//! `inbound.rs`), and pushes them into its rumqttd link or lane (`uplink.rs`); it writes
//! what the router sends back (`outbound.rs`). It owns what the router cannot do for a local link: the will (the
//! router never fires wills of local links), keepalive, pacing of publishers and client-id
//! takeover; the CONNECT and its refusals are `handshake.rs`'s. Every way a session ends
//! is an [`End`], and the closing steps are `end.rs`'s.

use super::backlog::Mark;
use super::codec::Version;
use super::delivery::Delivery;
use super::end::{End, Ending, Live};
use super::handshake::{self, close_within};
use super::hello::{connack, Hello, Identity};
use super::inbound::Inbound;
use super::intake::{make_room, room};
use super::transport::Transport;
use super::uplink;
use super::{Gateway, Stats, TransportKind};
use crate::cluster::ClusterHook;
use crate::durable::tap::Tap;
use crate::pacing::Pacer;
use bytes::BytesMut;
use fleetcast_proto::time::now_ms;
use futures_util::FutureExt;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::Packet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{sleep_until, Instant};
use tracing::{info, Instrument};

/// How long a newcomer waits for the old owner of its client id to finish.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

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

/// A connection past its handshake, with its router link or lane (`uplink.rs`).
pub(super) struct Session<T> {
    pub(super) io: T,
    pub(super) version: Version,
    pub(super) gw: Arc<Gateway>,
    pub(super) kind: TransportKind,
    /// The session's own router link (both ends), once it has one (`uplink.rs`).
    pub(super) tx: Option<LinkTx>,
    pub(super) rx: Option<LinkRx>,
    /// The shared lane its publishes take while it has no link of its own.
    pub(super) lane: usize,
    pub(super) rbuf: BytesMut,
    pub(super) wbuf: BytesMut,
    pub(super) pacer: Pacer,
    /// The client's side: identity, subscriptions, acks due.
    pub(super) inbound: Inbound,
    /// What the client takes of what the router sends.
    pub(super) delivery: Delivery,
    /// Set once the router has dropped the link: it must not be touched again.
    pub(super) router_gone: bool,
    pub(super) tap: Tap,
    /// Cluster hook: publishes and filter changes for the router go to the other nodes
    /// too (`ClusterHook::copy`); None without a cluster.
    pub(super) cluster: Option<crate::cluster::Member>,
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
        let member = session
            .gw
            .cluster_member(&claim, &hello.client_id, hello.will.as_ref());
        session.cluster = member;
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
            // Joined in `start`, with the claim's stamp.
            cluster: None,
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
            let mut again = self.inbound.subscriptions.reidentify();
            self.cluster.copy(&again);
            // The router acks these too: nobody is told.
            self.inbound.acks.suback_after(again.len(), None);
            // A router gone shows at the first read of the link.
            let _ = self.submit(&mut again, 0).await;
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
    async fn serve(&mut self, keep_alive: u16, kicked: &crate::kick::Kick) -> End {
        let keepalive =
            (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500));
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        let mut last_heard = Instant::now();
        // When reads resume, and whether the pause waits for the router.
        let mut pause_until: Option<(Instant, bool)> = None;
        // Made once, not at every wake-up: a fresh sleep joins the timer wheel (a lock)
        // and leaves it again when the select drops it. One kick for both ways of being
        // stopped (taken over, or the server shutting down: `registry.rs`), polled first
        // at every wake-up, so a flag read without a lock (`kick.rs`). One timer for
        // both deadlines (a sleep is ~100 bytes of every connection's task): the end of a
        // quota pause while paused, else the keep-alive's, which is not moved when a
        // packet is heard: when it goes off it checks the last one heard and re-arms, so
        // it fires once per keep-alive period, not once per message.
        let mut stopped = kicked.kicked();
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
            if let Some((at, _)) = pause_until {
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
                    if pause_until.is_some_and(|(at, _)| at <= Instant::now()) { Wake::Resume } else { Wake::KeepAlive }
                }
                () = room(&self.gw, hold.as_deref()), if hold.is_some() => Wake::Room,
                // Not while the client's Receive Maximum holds a publish back.
                n = uplink::next_from(&mut self.rx), if self.rx.is_some() && self.delivery.held.is_none() => Wake::Router(Box::new(n)),
                r = self.io.read_into(&mut self.rbuf), if pause_until.is_none() && hold.is_none() => Wake::Read(r),
            };
            // For the thread's pause: how much a pause gathers (`io_threads/pause.rs`).
            crate::io_threads::session_woke();
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
                    if pause_until.is_some_and(|(_, router)| router) && self.router_behind() {
                        // Not before the router has caught up: another look, nothing read.
                        pause_until = Some((Instant::now() + super::intake::ROUTER_PAUSE, true));
                        continue;
                    }
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
}

/// Counts a connection open, where health checks read it and in the meters.
fn opened(gw: &Gateway, kind: TransportKind) {
    gw.stats.open(kind).fetch_add(1, Ordering::Relaxed);
    let (gauge, connects) = Stats::kind_meters(&gw.meters, kind);
    gauge.increment(1.0);
    connects.increment(1);
}
