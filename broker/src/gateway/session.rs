//! One client connection, from CONNECT to close.
//!
//! A session reads frames from its [`Transport`], checks them, and pushes them into its
//! rumqttd link; it writes what the router sends back. It owns what the router cannot do
//! for a local link: the will (the router never fires wills of local links), keepalive,
//! the CONNECT time-out, pacing of publishers, client-id takeover, and the ack and filter
//! checks whose violation would make the router drop the link (after which touching the
//! link again panics the router). Every way a session ends is an [`End`].

use super::codec::{Refuse, Version};
use super::frame::{self, ConnectKind};
use super::transport::Transport;
use super::{Gateway, Stats, TransportKind};
use crate::auth::Denial;
use crate::pacing::Pacer;
use crate::policy::Grants;
use crate::validation;
use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::Error as ProtocolError;
use rumqttd::protocol::{
    ConnAck, ConnAckProperties, ConnectReturnCode, Disconnect, DisconnectReasonCode, LastWill,
    Packet, PubAck, PubAckReason, PubComp, PubCompReason, PubRec, PubRecReason, Publish, SubAck,
    SubscribeReasonCode, UnsubAck, UnsubAckReason,
};
use rumqttd::Notification;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{sleep_until, timeout, timeout_at, Instant};
use tracing::{debug, info, warn};

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 * 1024;
/// Outgoing bytes gathered before a write.
const WRITE_BATCH: usize = 64 * 1024;
/// Router back-log (events) past which sessions pause their reads.
const ROUTER_HIGH_WATER: usize = 16 * 1024;
/// How long a newcomer waits for the old owner of its client id to finish.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);
/// Time allowed to write a refusal CONNACK.
const REFUSAL_WRITE: Duration = Duration::from_secs(1);

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
    /// The client broke the protocol.
    Protocol(String),
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
            End::Protocol(_) => "protocol_error",
            End::PolicyViolation(_) => "policy_violation",
            End::TakenOver => "taken_over",
            End::Shutdown => "shutdown",
            End::RouterDropped => "router_dropped",
            End::WriteTimeout => "write_timeout",
            End::Io(_) => "io_error",
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

/// A checked CONNECT.
struct Hello {
    version: Version,
    client_id: String,
    /// Whether the broker made the id up (MQTT 5 then says so in the CONNACK).
    assigned_id: bool,
    clean_session: bool,
    keep_alive: u16,
    will: Option<LastWill>,
    login: Option<rumqttd::protocol::Login>,
}

/// Who a session is, for the topic policy.
struct Identity {
    client_id: String,
    username: String,
    /// None when no credentials file is in force: every topic is allowed.
    grants: Option<Arc<Grants>>,
}

impl Identity {
    fn may_publish(&self, topic: &[u8]) -> bool {
        match (&self.grants, std::str::from_utf8(topic)) {
            (None, _) => true,
            (Some(g), Ok(t)) => g.may_publish(t, &self.client_id, &self.username),
            (Some(_), Err(_)) => false,
        }
    }

    fn may_subscribe(&self, filter: &str) -> bool {
        self.grants
            .as_ref()
            .is_none_or(|g| g.may_subscribe(filter, &self.client_id, &self.username))
    }
}

/// Why the handshake did not produce a session.
enum Refusal {
    /// Answer with this CONNACK code in this version, then close; the meter reason and a
    /// note for the log.
    Answer(Refuse, Version, &'static str, &'static str),
    /// Close without an answer (not MQTT, malformed, closed); the meter reason and why.
    Close(&'static str, String),
}

static AUTO_ID: AtomicU64 = AtomicU64::new(1);

/// Serves one connection until it ends; logs inside, returns nothing.
pub async fn run<T: Transport>(
    mut io: T,
    gw: Arc<Gateway>,
    peer: SocketAddr,
    kind: TransportKind,
    connect_deadline: Instant,
) {
    let max = gw.config.limits.max_packet_size;
    let mut rbuf = BytesMut::with_capacity(1024);
    let hello = match timeout_at(connect_deadline, read_connect(&mut io, &mut rbuf, max)).await {
        Err(_) => Err(Refusal::Close(
            "connect_timeout",
            "no CONNECT within the connect timeout".into(),
        )),
        Ok(r) => r.and_then(|(packet, version)| check_hello(packet, version, &gw)),
    };
    let hello = match hello {
        Ok(h) => h,
        Err(refusal) => return refuse(io, &gw, peer, kind, refusal).await,
    };
    if !gw.connects.admit_any(Instant::now()) {
        let refusal = Refusal::Answer(
            Refuse::ConnectRate,
            hello.version,
            "connect_rate",
            "global connect rate exceeded",
        );
        return refuse(io, &gw, peer, kind, refusal).await;
    }
    let certificate = io.peer_common_name();
    let identity = match authorize(&gw, &hello, certificate.as_deref()).await {
        Ok(identity) => identity,
        Err(refusal) => return refuse(io, &gw, peer, kind, refusal).await,
    };
    if !gw.connects.admit_id(&hello.client_id, Instant::now()) {
        let refusal = Refusal::Answer(
            Refuse::ConnectRate,
            hello.version,
            "connect_rate",
            "this client id connected less than a second ago",
        );
        return refuse(io, &gw, peer, kind, refusal).await;
    }
    let span = tracing::info_span!("session", client_id = %hello.client_id, %peer, transport = kind.as_str());
    let _enter = span.enter();
    drop(_enter);
    let session = Session::start(io, gw, hello, identity, rbuf, kind);
    tracing::Instrument::instrument(session, span).await;
}

async fn refuse<T: Transport>(
    mut io: T,
    gw: &Gateway,
    peer: SocketAddr,
    kind: TransportKind,
    refusal: Refusal,
) {
    match refusal {
        Refusal::Answer(code, version, reason, why) => {
            gw.meters.refusal(reason).increment(1);
            debug!(%peer, transport = kind.as_str(), why, version = version.as_str(), "connect refused");
            let mut b = BytesMut::from(&code.connack(version)[..]);
            let _ = timeout(REFUSAL_WRITE, io.write_from(&mut b)).await;
        }
        Refusal::Close(reason, why) => {
            gw.meters.refusal(reason).increment(1);
            debug!(%peer, transport = kind.as_str(), why, "connect dropped")
        }
    }
    close_within(&mut io).await;
}

/// Closes a stream, giving up after [`REFUSAL_WRITE`]: TLS and WebSocket closes flush, and
/// a peer that reads nothing would hold them (and the connection's slot) forever.
async fn close_within<T: Transport>(io: &mut T) {
    let _ = timeout(REFUSAL_WRITE, io.close()).await;
}

async fn read_connect<T: Transport>(
    io: &mut T,
    rbuf: &mut BytesMut,
    max: usize,
) -> Result<(Packet, Version), Refusal> {
    loop {
        let version = match frame::inspect_connect(rbuf, max) {
            Ok(ConnectKind::Incomplete) => None,
            Ok(ConnectKind::V311) => Some(Version::V311),
            Ok(ConnectKind::V5) => Some(Version::V5),
            Ok(ConnectKind::Unsupported) => {
                return Err(Refusal::Answer(
                    Refuse::ProtocolVersion,
                    Version::V311,
                    "unsupported_protocol",
                    "unsupported protocol version",
                ))
            }
            Err(e) => return Err(Refusal::Close("malformed_connect", e.to_string())),
        };
        if let Some(version) = version {
            match version.read(rbuf, max) {
                Ok(packet) => return Ok((packet, version)),
                Err(ProtocolError::InsufficientBytes(_)) => {}
                Err(e) => {
                    return Err(Refusal::Close(
                        "malformed_connect",
                        format!("bad CONNECT: {e}"),
                    ))
                }
            }
        }
        if rbuf.capacity() - rbuf.len() < 512 {
            rbuf.reserve(READ_CHUNK);
        }
        match io.read_into(rbuf).await {
            Ok(0) => {
                return Err(Refusal::Close(
                    "malformed_connect",
                    "closed before CONNECT".into(),
                ))
            }
            Ok(_) => {}
            Err(e) => return Err(Refusal::Close("malformed_connect", e.to_string())),
        }
    }
}

/// Logs a dropped location at most once a second, process-wide: a client sending garbage
/// at a high rate must not flood the logs.
fn log_invalid(topic: &[u8], why: validation::Invalid) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if LAST.swap(now, Ordering::Relaxed) != now {
        warn!(topic = %String::from_utf8_lossy(topic), reason = ?why, "invalid location dropped (this is logged at most once a second)");
    }
}

/// Checks credentials (or the verified TLS client certificate's common name) and the will
/// topic against the account's policy.
async fn authorize(
    gw: &Gateway,
    hello: &Hello,
    certificate: Option<&str>,
) -> Result<Identity, Refusal> {
    if let Some(cn) = certificate {
        if cn != hello.client_id {
            return Err(Refusal::Answer(
                Refuse::NotAuthorized,
                hello.version,
                "not_authorized",
                "client id is not the certificate's common name",
            ));
        }
    }
    // A certificate login is the account its common name names.
    let username = match certificate {
        Some(cn) => cn.to_owned(),
        None => hello
            .login
            .as_ref()
            .map(|l| l.username.clone())
            .unwrap_or_default(),
    };
    let grants = match &gw.auth {
        None => None,
        Some(auth) => {
            let login = hello
                .login
                .as_ref()
                .map(|l| (l.username.as_str(), l.password.as_str()));
            let checked = match certificate {
                Some(cn) => auth.check_certificate(cn, &hello.client_id),
                None => auth.check(&hello.client_id, login).await,
            };
            match checked {
                Ok(g) => Some(g),
                Err(denial) => {
                    let code = match denial {
                        Denial::BadCredentials => Refuse::BadCredentials,
                        Denial::NoCredentials | Denial::ClientIdNotAllowed => Refuse::NotAuthorized,
                    };
                    return Err(Refusal::Answer(
                        code,
                        hello.version,
                        "not_authorized",
                        match denial {
                            Denial::NoCredentials => "no username/password",
                            Denial::BadCredentials => "wrong username or password",
                            Denial::ClientIdNotAllowed => "client id not allowed for this account",
                        },
                    ));
                }
            }
        }
    };
    let identity = Identity {
        client_id: hello.client_id.clone(),
        username,
        grants,
    };
    if let Some(w) = &hello.will {
        if !identity.may_publish(&w.topic) {
            return Err(Refusal::Answer(
                Refuse::NotAuthorized,
                hello.version,
                "not_authorized",
                "will topic not allowed by the policy",
            ));
        }
    }
    Ok(identity)
}

fn check_hello(packet: Packet, version: Version, gw: &Gateway) -> Result<Hello, Refusal> {
    let Packet::Connect(connect, properties, will, _, login) = packet else {
        return Err(Refusal::Close(
            "malformed_connect",
            "first packet is not CONNECT".into(),
        ));
    };
    if properties
        .as_ref()
        .is_some_and(|p| p.authentication_method.is_some())
    {
        return Err(Refusal::Answer(
            Refuse::BadAuthenticationMethod,
            version,
            "not_authorized",
            "MQTT 5 enhanced authentication is not supported",
        ));
    }
    // MQTT 5 keeps a session after the connection only for a session expiry above 0
    // (absent = 0). rumqttd has no expiry: any positive interval keeps it until reused.
    let persistent = !connect.clean_session
        && (version == Version::V311
            || properties
                .as_ref()
                .and_then(|p| p.session_expiry_interval)
                .is_some_and(|s| s > 0));
    let mut client_id = connect.client_id;
    let assigned_id = client_id.is_empty();
    if assigned_id {
        // A made-up id cannot be resumed: only a session that ends with the connection.
        if persistent {
            return Err(Refusal::Answer(
                Refuse::ClientId,
                version,
                "bad_client_id",
                "empty client id needs clean session",
            ));
        }
        client_id = format!("fc-auto-{}", AUTO_ID.fetch_add(1, Ordering::Relaxed));
    }
    if !frame::valid_client_id(&client_id, gw.config.limits.max_client_id_len) {
        return Err(Refusal::Answer(
            Refuse::ClientId,
            version,
            "bad_client_id",
            "client id too long, reserved, or has + # / $",
        ));
    }
    if let Some(w) = &will {
        if !frame::valid_topic_name(&w.topic) {
            return Err(Refusal::Close(
                "malformed_connect",
                "invalid will topic".into(),
            ));
        }
    }
    Ok(Hello {
        version,
        client_id,
        assigned_id,
        clean_session: !persistent,
        keep_alive: connect.keep_alive,
        will,
        login,
    })
}

/// Mirrors the router's expectations of acks, so a client that would make the router
/// drop the link is closed by us instead (safely, with its will).
#[derive(Default)]
struct AckTracker {
    /// QoS 1/2 publishes sent to the client, awaiting PUBACK/PUBREC, in order.
    inflight: VecDeque<u16>,
    /// PUBRECs forwarded, awaiting the client's PUBCOMP, in order.
    pubrels: VecDeque<u16>,
    /// QoS 2 publishes from the client whose PUBREL is still due.
    incoming_qos2: HashSet<u16>,
}

struct Session<T> {
    io: T,
    version: Version,
    gw: Arc<Gateway>,
    kind: TransportKind,
    tx: LinkTx,
    rx: LinkRx,
    rbuf: BytesMut,
    wbuf: BytesMut,
    pacer: Pacer,
    acks: AckTracker,
    /// SUBSCRIBE pkid -> positions of filters the gateway refused.
    denied_filters: HashMap<u16, Vec<(usize, SubscribeReasonCode)>>,
    /// Set once the router has dropped the link: it must not be touched again.
    router_gone: bool,
    identity: Identity,
    /// Filters held now, bounded by `max_subscriptions_per_connection`.
    subscriptions: HashSet<String>,
}

impl<T: Transport> Session<T> {
    async fn start(
        mut io: T,
        gw: Arc<Gateway>,
        hello: Hello,
        identity: Identity,
        rbuf: BytesMut,
        kind: TransportKind,
    ) {
        let (claim, took_over) = gw.registry.claim(&hello.client_id, TAKEOVER_WAIT).await;
        if took_over {
            info!("client id taken over from an older connection");
        }
        if gw.shutdown.is_cancelled() {
            return close_within(&mut io).await;
        }
        let (tx, rx, notification) = match gw
            .router
            .connect(&hello.client_id, hello.clean_session)
            .await
        {
            Ok(link) => link,
            Err(e) => {
                gw.meters.refusal("router_busy").increment(1);
                warn!(error = %e, "link not built");
                let mut b = BytesMut::from(&Refuse::Unavailable.connack(hello.version)[..]);
                let _ = timeout(REFUSAL_WRITE, io.write_from(&mut b)).await;
                return close_within(&mut io).await;
            }
        };
        let rate = gw.config.limits.publish_rate_per_connection;
        let mut session = Session {
            io,
            version: hello.version,
            kind,
            tx,
            rx,
            rbuf,
            wbuf: BytesMut::with_capacity(1024),
            // A tenth of a second of burst, as for the global pacer.
            pacer: Pacer::new(rate, (rate / 10).max(1)),
            acks: AckTracker::default(),
            denied_filters: HashMap::new(),
            router_gone: false,
            identity,
            subscriptions: HashSet::new(),
            gw,
        };
        let session_present = match Option::<Packet>::from(notification) {
            Some(Packet::ConnAck(ack, _)) => ack.session_present,
            _ => false,
        };
        // The router restores a persistent session's filters: they count against the
        // subscription limit as if taken in this connection.
        let restored = session.gw.persistent_filters.take(&hello.client_id);
        if session_present && !hello.clean_session {
            session.subscriptions = restored;
        }
        // MQTT 5 clients learn our limits up front; topic aliases stay off (absent = 0).
        let properties = (hello.version == Version::V5).then(|| ConnAckProperties {
            max_packet_size: u32::try_from(session.gw.config.limits.max_packet_size).ok(),
            assigned_client_identifier: hello.assigned_id.then(|| hello.client_id.clone()),
            subscription_identifiers_available: Some(0),
            ..ConnAckProperties::default()
        });
        let connack = Packet::ConnAck(
            ConnAck {
                session_present,
                code: ConnectReturnCode::Success,
            },
            properties,
        );
        let gw = Arc::clone(&session.gw);
        let open = gw.stats.open(kind);
        open.fetch_add(1, Ordering::Relaxed);
        let (gauge, connects) = Stats::kind_meters(&gw.meters, kind);
        gauge.increment(1.0);
        connects.increment(1);
        let end = match session.encode(connack) {
            Ok(()) => match session.flush().await {
                Ok(()) => session.serve(hello.keep_alive, claim.kicked()).await,
                Err(end) => end,
            },
            Err(end) => end,
        };
        gw.meters.disconnect(end.reason()).increment(1);
        session.finish(end, hello.will).await;
        if !hello.clean_session {
            let held = std::mem::take(&mut session.subscriptions);
            gw.persistent_filters.keep(&hello.client_id, held);
        }
        open.fetch_sub(1, Ordering::Relaxed);
        gauge.decrement(1.0);
        drop(claim);
    }

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
        let shutdown = self.gw.shutdown.clone();
        loop {
            let ka_deadline = keepalive.map_or(far, |k| last_heard + k);
            if self.rbuf.capacity() - self.rbuf.len() < 512 {
                self.rbuf.reserve(READ_CHUNK);
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return End::Shutdown,
                _ = kicked.cancelled() => return End::TakenOver,
                // Before the router's stream: a steady flow of messages out must not keep a
                // paused client's buffered frames (acks, pings) waiting.
                _ = sleep_until(pause_until.unwrap_or(far)), if pause_until.is_some() => {
                    // Frames held back by the quota go first; the socket is read after. They
                    // were received, so they count as hearing from the client.
                    last_heard = Instant::now();
                    match self.on_client_bytes().await {
                        Ok(wait) => pause_until = self.pause(wait),
                        Err(end) => return end,
                    }
                }
                n = self.rx.next() => {
                    if let Err(end) = self.on_router(n).await {
                        return end;
                    }
                }
                r = self.io.read_into(&mut self.rbuf), if pause_until.is_none() => {
                    match r {
                        Ok(0) => return End::PeerClosed,
                        Err(e) => return End::Io(e),
                        Ok(n) => self.gw.meters.bytes_received.increment(n as u64),
                    }
                    last_heard = Instant::now();
                    match self.on_client_bytes().await {
                        Ok(wait) => pause_until = self.pause(wait),
                        Err(end) => return end,
                    }
                }
                // Not while paused: the client may be sending, held back by TCP.
                _ = sleep_until(ka_deadline), if keepalive.is_some() && pause_until.is_none() => {
                    return End::KeepAlive
                }
            }
        }
    }

    /// When reads may resume after a pause of `wait`, counting the pause.
    fn pause(&self, wait: Option<Duration>) -> Option<Instant> {
        let wait = wait?;
        self.gw.meters.pacing_pauses.increment(1);
        Some(Instant::now() + wait)
    }

    /// Handles what the router sent, gathering what else is ready into one write.
    async fn on_router(
        &mut self,
        first: Result<Option<Notification>, rumqttd::local::LinkError>,
    ) -> Result<(), End> {
        let mut next = Some(first);
        let mut unscheduled = false;
        // Counted once per batch: a shared atomic per message costs measurable throughput.
        let mut forwarded = 0u64;
        while let Some(item) = next.take() {
            match item {
                Err(_) => {
                    self.router_gone = true;
                    return Err(End::RouterDropped);
                }
                // A wake-up with nothing in the buffer: not an unschedule, do not wake.
                Ok(None) => {}
                Ok(Some(Notification::Unschedule)) => unscheduled = true,
                Ok(Some(Notification::Disconnect(..))) => {
                    self.router_gone = true;
                    return Err(End::RouterDropped);
                }
                Ok(Some(Notification::Forward(f))) => {
                    forwarded += 1;
                    let at = self.wbuf.len();
                    self.encode(Packet::Publish(f.publish, None))?;
                    if let Some((qos, pkid)) = frame::publish_qos_pkid(&self.wbuf[at..]) {
                        if qos > 0 {
                            self.acks.inflight.push_back(pkid);
                        }
                    }
                }
                Ok(Some(other)) => match Option::<Packet>::from(other) {
                    // The gateway answered the UNSUBSCRIBE itself.
                    Some(Packet::UnsubAck(..)) | None => {}
                    Some(packet) => {
                        let packet = self.patch_ack(packet);
                        self.encode(packet)?;
                    }
                },
            }
            if self.wbuf.len() < WRITE_BATCH {
                // Ready at once when the link's cache holds more; otherwise write now.
                next = self.rx.next().now_or_never();
            }
        }
        self.gw.meters.messages_delivered.increment(forwarded);
        self.flush().await?;
        if unscheduled {
            // The router parked this link; tell it we wrote everything and want more.
            if self.rx.wake().await.is_err() {
                self.router_gone = true;
                return Err(End::RouterDropped);
            }
        }
        Ok(())
    }

    /// Rewrites router acks into their 3.1.1 form and re-inserts refused filters.
    fn patch_ack(&mut self, packet: Packet) -> Packet {
        match packet {
            Packet::SubAck(mut ack, _) => {
                if let Some(denied) = self.denied_filters.remove(&ack.pkid) {
                    for (i, code) in denied {
                        let at = i.min(ack.return_codes.len());
                        ack.return_codes.insert(at, code);
                    }
                }
                Packet::SubAck(ack, None)
            }
            Packet::PubAck(a, _) => Packet::PubAck(a, None),
            Packet::PubRec(a, _) => Packet::PubRec(a, None),
            Packet::PubRel(a, _) => Packet::PubRel(a, None),
            Packet::PubComp(a, _) => Packet::PubComp(a, None),
            other => other,
        }
    }

    /// Parses the complete frames read, checks them, and hands the batch to the router.
    /// Stops early when this connection's publish quota is used up: the rest stays in the
    /// read buffer until the returned pause is over. Returns the pause due, if any.
    async fn on_client_bytes(&mut self) -> Result<Option<Duration>, End> {
        let max = self.gw.config.limits.max_packet_size;
        let mut batch: Vec<Packet> = Vec::new();
        let mut publishes = 0u32;
        let mut end = None;
        let now = Instant::now();
        let mut wait = Duration::ZERO;
        while wait.is_zero() {
            let header = frame::publish_qos_pkid(&self.rbuf);
            let packet = match self.version.read(&mut self.rbuf, max) {
                Ok(p) => p,
                Err(ProtocolError::InsufficientBytes(_)) => break,
                Err(e) => {
                    self.gw.meters.drop_for("malformed_packet").increment(1);
                    end = Some(End::Protocol(e.to_string()));
                    break;
                }
            };
            let before = publishes;
            match self.check(packet, header, &mut publishes) {
                Ok(Some(p)) => batch.push(p),
                Ok(None) => {}
                Err(e) => {
                    end = Some(e);
                    break;
                }
            }
            if publishes > before {
                // Charged one by one so that a burst read at once cannot pass the quota.
                wait = self.pacer.charge(1, now);
            }
        }
        if publishes > 0 {
            // The shared pacer is charged once per read: an atomic per message would be
            // contended by every connection.
            wait = wait.max(self.gw.global_pacer.charge(publishes, now));
            // The back-log read takes the channel's lock: only reads with publishes pay.
            if self.gw.router.backlog() > ROUTER_HIGH_WATER {
                wait = wait.max(Duration::from_millis(1));
            }
        }
        if publishes > 0 {
            self.gw
                .meters
                .publishes_received
                .increment(u64::from(publishes));
        }
        // Packets before a violation still go through, as they would have on their own.
        if let Some(last) = batch.pop() {
            {
                let mut buffer = self.tx.buffer();
                buffer.extend(batch);
            }
            if self.tx.send(last).await.is_err() {
                self.router_gone = true;
                return Err(End::RouterDropped);
            }
        }
        if !self.wbuf.is_empty() {
            self.flush().await?;
        }
        match end {
            Some(e) => Err(e),
            None => Ok((!wait.is_zero()).then_some(wait)),
        }
    }

    /// Checks one client packet: `Ok(Some)` forwards it, `Ok(None)` was answered here.
    fn check(
        &mut self,
        packet: Packet,
        header: Option<(u8, u16)>,
        publishes: &mut u32,
    ) -> Result<Option<Packet>, End> {
        let violation = |why: &str| Err(End::Protocol(why.to_owned()));
        match packet {
            Packet::Publish(mut p, _) => {
                if !frame::valid_topic_name(&p.topic) {
                    self.gw.meters.drop_for("invalid_topic").increment(1);
                    return violation("invalid topic name in PUBLISH");
                }
                // Received, so charged to the quota, granted or not.
                *publishes += 1;
                if !self.identity.may_publish(&p.topic) {
                    self.gw.meters.drop_for("policy_denied").increment(1);
                    if self.version == Version::V311 {
                        // MQTT 3.1.1 has no negative PUBACK: the connection is closed.
                        return Err(End::PolicyViolation(
                            String::from_utf8_lossy(&p.topic).into_owned(),
                        ));
                    }
                    self.refuse_publish(header, PubAckReason::NotAuthorized)?;
                    return Ok(None);
                }
                let checked = if self.gw.config.limits.validate_locations {
                    let now_ms = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64);
                    validation::check(&p.topic, &p.payload, now_ms)
                } else {
                    Ok(())
                };
                if let Err(why) = checked {
                    // Dropped, counted, the connection kept; the publisher still gets its
                    // ack (3.1.1 has no negative one) so it does not resend.
                    self.gw.meters.drop_for("invalid_payload").increment(1);
                    log_invalid(&p.topic, why);
                    self.refuse_publish(header, PubAckReason::PayloadFormatInvalid)?;
                    return Ok(None);
                }
                if let Some((2, pkid)) = header {
                    self.acks.incoming_qos2.insert(pkid);
                }
                // Exact-size copies: a slice would pin the whole read buffer in the router.
                p.topic = Bytes::copy_from_slice(&p.topic);
                p.payload = Bytes::copy_from_slice(&p.payload);
                Ok(Some(Packet::Publish(p, None)))
            }
            Packet::Subscribe(mut s, _) => {
                let mut denied = Vec::new();
                let mut i = 0;
                let meters = &self.gw.meters;
                let identity = &self.identity;
                let held = &mut self.subscriptions;
                let max = self.gw.config.limits.max_subscriptions_per_connection;
                let v5 = self.version == Version::V5;
                s.filters.retain(|f| {
                    // MQTT 5 says why; 3.1.1 has only 0x80.
                    let refusal = if !frame::valid_topic_filter(&f.path) {
                        Some(SubscribeReasonCode::TopicFilterInvalid)
                    } else if !identity.may_subscribe(&f.path) {
                        Some(SubscribeReasonCode::NotAuthorized)
                    } else if !held.contains(&f.path) && held.len() >= max {
                        Some(SubscribeReasonCode::QuotaExceeded)
                    } else {
                        None
                    };
                    match refusal {
                        None => {
                            held.insert(f.path.clone());
                            meters.subscriptions.increment(1);
                        }
                        Some(code) => {
                            meters.subscriptions_refused.increment(1);
                            denied.push((
                                i,
                                if v5 {
                                    code
                                } else {
                                    SubscribeReasonCode::Failure
                                },
                            ));
                        }
                    }
                    i += 1;
                    refusal.is_none()
                });
                if s.filters.is_empty() {
                    let ack = SubAck {
                        pkid: s.pkid,
                        return_codes: denied.into_iter().map(|(_, code)| code).collect(),
                    };
                    self.encode(Packet::SubAck(ack, None))?;
                    return Ok(None);
                }
                if !denied.is_empty() {
                    self.denied_filters.insert(s.pkid, denied);
                }
                Ok(Some(Packet::Subscribe(s, None)))
            }
            Packet::Unsubscribe(u, _) => {
                // Answered here: the router sends one UNSUBACK per filter it removed and
                // none for a filter not held, which leaves clients waiting forever.
                let reasons = u
                    .filters
                    .iter()
                    .map(|f| match self.subscriptions.remove(f) {
                        true => UnsubAckReason::Success,
                        false => UnsubAckReason::NoSubscriptionExisted,
                    })
                    .collect();
                let ack = UnsubAck {
                    pkid: u.pkid,
                    reasons,
                };
                self.encode(Packet::UnsubAck(ack, None))?;
                Ok(Some(Packet::Unsubscribe(u, None)))
            }
            Packet::PingReq(_) => {
                self.wbuf.extend_from_slice(&frame::PINGRESP);
                Ok(None)
            }
            Packet::PubAck(a, _) => {
                if self.acks.inflight.pop_front() != Some(a.pkid) {
                    return violation("PUBACK out of order or unsolicited");
                }
                Ok(Some(Packet::PubAck(a, None)))
            }
            Packet::PubRec(a, _) => {
                if self.acks.inflight.pop_front() != Some(a.pkid) {
                    return violation("PUBREC out of order or unsolicited");
                }
                self.acks.pubrels.push_back(a.pkid);
                Ok(Some(Packet::PubRec(a, None)))
            }
            Packet::PubComp(a, _) => {
                if self.acks.pubrels.pop_front() != Some(a.pkid) {
                    return violation("PUBCOMP out of order or unsolicited");
                }
                Ok(Some(Packet::PubComp(a, None)))
            }
            Packet::PubRel(a, _) => {
                if self.acks.incoming_qos2.remove(&a.pkid) {
                    Ok(Some(Packet::PubRel(a, None)))
                } else {
                    // A PUBREL for a message already completed (a resend): answer it.
                    let comp = PubComp {
                        pkid: a.pkid,
                        reason: PubCompReason::Success,
                    };
                    self.encode(Packet::PubComp(comp, None))?;
                    Ok(None)
                }
            }
            // MQTT 5 (3.14.4): only reason 0x00 discards the will.
            Packet::Disconnect(d, _)
                if d.reason_code != DisconnectReasonCode::NormalDisconnection =>
            {
                Err(End::ClientDisconnectWithWill)
            }
            Packet::Disconnect(..) => Err(End::ClientDisconnect),
            Packet::Connect(..) => violation("second CONNECT"),
            _ => violation("packet a client may not send"),
        }
    }

    /// Acknowledges a publish that was dropped: with `reason` in MQTT 5, as a success in
    /// 3.1.1 (it has no negative ack, and a publisher told nothing would resend forever).
    fn refuse_publish(
        &mut self,
        header: Option<(u8, u16)>,
        reason: PubAckReason,
    ) -> Result<(), End> {
        let v5 = self.version == Version::V5;
        match header {
            Some((1, pkid)) => {
                let reason = if v5 { reason } else { PubAckReason::Success };
                self.encode(Packet::PubAck(PubAck { pkid, reason }, None))
            }
            Some((2, pkid)) => {
                let reason = match (v5, reason) {
                    (false, _) => PubRecReason::Success,
                    (true, PubAckReason::NotAuthorized) => PubRecReason::NotAuthorized,
                    (true, _) => PubRecReason::PayloadFormatInvalid,
                };
                self.encode(Packet::PubRec(PubRec { pkid, reason }, None))
            }
            _ => Ok(()),
        }
    }

    fn encode(&mut self, packet: Packet) -> Result<(), End> {
        self.version
            .write(packet, &mut self.wbuf)
            .map(|_| ())
            .map_err(|e| End::Protocol(format!("cannot encode: {e}")))
    }

    async fn flush(&mut self) -> Result<(), End> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let limit = self.gw.config.write_timeout();
        let bytes = self.wbuf.len() as u64;
        match timeout(limit, self.io.write_from(&mut self.wbuf)).await {
            Ok(Ok(())) => {
                self.gw.meters.bytes_sent.increment(bytes);
                Ok(())
            }
            Ok(Err(e)) => Err(End::Io(e)),
            Err(_) => Err(End::WriteTimeout),
        }
    }

    /// Publishes the will when due, releases the link, closes the socket.
    async fn finish(&mut self, end: End, will: Option<LastWill>) {
        match &end {
            End::ClientDisconnect
            | End::ClientDisconnectWithWill
            | End::PeerClosed
            | End::Shutdown => {
                debug!(reason = ?end, "session ended")
            }
            _ => info!(reason = ?end, "session ended"),
        }
        if !self.router_gone {
            if let Some(w) = will.filter(|_| end.fires_will()) {
                // Wills enter the router at QoS 0 (rumqttd's public constructor allows
                // no other; the link closes before an ack could come back anyway).
                // rumqttd delivers it to QoS 1 subscribers at QoS 1 all the same.
                let publish = Publish::new(w.topic, w.message, w.retain);
                self.tx.buffer().push_back(Packet::Publish(publish, None));
                self.gw.meters.wills.increment(1);
            }
            // Without this the router keeps the link's slot forever.
            let bye = Packet::Disconnect(
                Disconnect {
                    reason_code: DisconnectReasonCode::NormalDisconnection,
                },
                None,
            );
            let _ = self.tx.send(bye).await;
            self.router_gone = true;
        }
        if !self.wbuf.is_empty() && !matches!(end, End::WriteTimeout | End::Io(_)) {
            let _ = timeout(REFUSAL_WRITE, self.io.write_from(&mut self.wbuf)).await;
        }
        // A peer that reads nothing would hold a TLS or WebSocket close (it flushes) forever.
        if !matches!(end, End::WriteTimeout | End::Io(_)) {
            close_within(&mut self.io).await;
        }
        debug!(transport = self.kind.as_str(), "closed");
    }
}
