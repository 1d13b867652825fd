//! From a connection's first bytes to a session, or to a refusal: the socket side of
//! the CONNECT.
//!
//! Everything here happens before a router link exists, because a link costs the router a
//! slot and a refused client must not get one: reading the CONNECT within the connect
//! time-out, the checks of [`super::hello`], the connect-rate quotas, and the account's
//! credentials (argon2, on its own threads, behind the failed-login limits and the fair
//! line of [`crate::guard`]), all within the connect time-out. A refusal is answered in
//! the client's own version when MQTT allows an answer, and closed quietly otherwise,
//! within a bound: a peer that reads nothing must not hold the connection's slot.

use super::codec::{Refuse, Version};
use super::frame::{self, ConnectKind};
use super::hello::{admit, check_hello, denied, username, Hello, Identity, Refusal};
use super::intake::make_room;
use super::transport::{Transport, PRE_CONNECT_BUDGET};
use super::{Gateway, TransportKind};
use crate::auth::Refused;
use crate::guard::Hold;
use crate::meters::REFUSAL_REASONS;
use crate::quota::IdRefusal;
use crate::throttle::Throttle;
use bytes::BytesMut;
use fleetcast_proto::time::now_ms;
use fleetcast_proto::time::unix_now;
use rumqttd::protocol::Error as ProtocolError;
use rumqttd::protocol::Packet;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::{timeout, timeout_at, Instant};
use tracing::info;

/// Time allowed to write a refusal CONNACK.
pub(super) const REFUSAL_WRITE: Duration = Duration::from_secs(1);

/// A refusal, with the client id the CONNECT named when it got that far (for the log).
#[derive(Debug)]
pub(super) struct Rejected {
    /// What to answer and count.
    pub(super) refusal: Refusal,
    /// The CONNECT's client id, once it was read.
    pub(super) client_id: Option<String>,
}

/// Reads and checks the CONNECT, applies the connect quotas and authenticates: everything
/// between accept and a router link, in that order (the cheap refusals first).
pub(super) async fn handshake<T: Transport>(
    io: &mut T,
    gw: &Gateway,
    peer: SocketAddr,
    rbuf: &mut BytesMut,
    connect_deadline: Instant,
) -> Result<(Box<Hello>, Identity), Rejected> {
    let max = gw.config.limits.max_packet_size;
    let hello = match timeout_at(connect_deadline, read_connect(io, rbuf, max)).await {
        Err(_) => Err(Refusal::Close(
            "connect_timeout",
            "no CONNECT within the connect timeout".into(),
        )),
        Ok(r) => r.and_then(|(packet, version)| {
            check_hello(packet, version, &gw.config.limits, now_ms())
        }),
    }
    .map_err(|refusal| Rejected {
        refusal,
        client_id: None,
    })?;
    let certificate = io.peer_common_name();
    match admit_hello(gw, &hello, peer, certificate.as_deref(), connect_deadline).await {
        // Boxed: a CONNECT's will and properties are ~300 bytes that every connection's task
        // would otherwise keep room for (several times, as it is moved down the calls).
        Ok(identity) => Ok((Box::new(hello), identity)),
        Err(refusal) => Err(Rejected {
            refusal,
            client_id: Some(hello.client_id),
        }),
    }
}

/// The connect quotas and the credentials for a well-formed CONNECT.
async fn admit_hello(
    gw: &Gateway,
    hello: &Hello,
    peer: SocketAddr,
    certificate: Option<&str>,
    connect_deadline: Instant,
) -> Result<Identity, Refusal> {
    if !gw.connects.admit_any(Instant::now()) {
        return Err(too_often(hello.version, "global connect rate exceeded"));
    }
    // The time-out runs to the CONNACK: a wait for a password check counts, so a flood of
    // guesses cannot hold a connection (and its slot) past it.
    let authorized = timeout_at(connect_deadline, authorize(gw, hello, peer, certificate));
    let late = Refusal::Answer(
        Refuse::Unavailable,
        hello.version,
        "connect_timeout",
        "credentials not checked within the connect timeout",
    );
    let identity = authorized.await.unwrap_or(Err(late))?;
    match gw.connects.admit_id(&hello.client_id, Instant::now()) {
        Ok(()) => {}
        Err(IdRefusal::Rate) => {
            return Err(too_often(
                hello.version,
                "this client id connected sooner than connect_rate_per_client_id allows",
            ))
        }
        Err(IdRefusal::Flapping) => {
            return Err(Refusal::Answer(
                Refuse::ConnectRate,
                hello.version,
                "flapping",
                "this client id connects too often (flapping): refused for a while",
            ))
        }
    }
    Ok(identity)
}

/// Refused for connecting too often (this client id, or all clients together).
fn too_often(version: Version, why: &'static str) -> Refusal {
    Refusal::Answer(Refuse::ConnectRate, version, "connect_rate", why)
}

/// Counts and logs a refusal, answers it if it has an answer, and closes. The log line is
/// at INFO, at most one a second per reason (with the count left out), so an operator sees
/// bad passwords and refused ids without a flood of guesses flooding the log.
pub(super) async fn refuse<T: Transport>(
    mut io: T,
    gw: &Gateway,
    peer: SocketAddr,
    kind: TransportKind,
    rejected: Rejected,
) {
    let Rejected { refusal, client_id } = rejected;
    let reason = refusal.reason();
    gw.meters.refusal(reason).increment(1);
    let client_id = client_id.as_deref().unwrap_or("-");
    let logged = refusal_throttle(reason).admit(unix_now());
    match refusal {
        Refusal::Answer(code, version, _, why) => {
            let connack = code.connack(version, why);
            if let Some(suppressed) = logged {
                let code = connack.get(3).copied().unwrap_or(0);
                info!(%peer, %client_id, transport = kind.as_str(), version = version.as_str(), reason, why, suppressed, "connection refused with CONNACK 0x{code:02x}");
            }
            let mut b = BytesMut::from(&connack[..]);
            let _ = timeout(REFUSAL_WRITE, io.write_from(&mut b)).await;
        }
        Refusal::Close(_, why) => {
            if let Some(suppressed) = logged {
                info!(%peer, %client_id, transport = kind.as_str(), reason, why = %why, suppressed, "connection closed before CONNACK");
            }
        }
    }
    close_within(&mut io).await;
}

/// The log budget of one refusal reason (the meters' reasons; any other shares the last).
fn refusal_throttle(reason: &str) -> &'static Throttle {
    static BY_REASON: [Throttle; REFUSAL_REASONS.len() + 1] =
        [const { Throttle::new() }; REFUSAL_REASONS.len() + 1];
    let i = REFUSAL_REASONS
        .iter()
        .position(|r| *r == reason)
        .unwrap_or(REFUSAL_REASONS.len());
    &BY_REASON[i]
}

/// Closes a stream, giving up after [`REFUSAL_WRITE`]: TLS and WebSocket closes flush, and
/// a peer that reads nothing would hold them (and the connection's slot) forever.
pub(super) async fn close_within<T: Transport>(io: &mut T) {
    let _ = timeout(REFUSAL_WRITE, io.close()).await;
}

/// Reads until the first packet is whole, in the version its protocol level names.
async fn read_connect<T: Transport>(
    io: &mut T,
    rbuf: &mut BytesMut,
    max: usize,
) -> Result<(Packet, Version), Refusal> {
    let mut budget = PRE_CONNECT_BUDGET;
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
        make_room(rbuf);
        // The CONNECT's own bytes are bounded by `max`; what carries none of them by this.
        match io.read_into_within(rbuf, &mut budget).await {
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

/// The refusal for a password check that turned a CONNECT down, or was not made: a source
/// in back-off is told to come back later (3.1.1 0x03, 5: 0x9F connection rate exceeded),
/// as is one that finds no room in the line (0x03, 5: 0x88), so a device keeps its
/// credentials and retries; neither says anything about the password.
fn refused(r: Refused, version: Version) -> Refusal {
    match r {
        Refused::Denied(denial) => denied(denial, version),
        Refused::Held(Hold::Backoff) => Refusal::Answer(
            Refuse::ConnectRate,
            version,
            "auth_backoff",
            "too many failed logins from this source or for this account",
        ),
        Refused::Held(Hold::Busy) => Refusal::Answer(
            Refuse::Unavailable,
            version,
            "auth_busy",
            "no room in the password check line",
        ),
    }
}

/// Checks credentials (or the verified TLS client certificate's common name), then the
/// will topic against the account's policy.
async fn authorize(
    gw: &Gateway,
    hello: &Hello,
    peer: SocketAddr,
    certificate: Option<&str>,
) -> Result<Identity, Refusal> {
    if certificate.is_some_and(|cn| cn != hello.client_id) {
        return Err(Refusal::Answer(
            Refuse::NotAuthorized,
            hello.version,
            "not_authorized",
            "client id is not the certificate's common name",
        ));
    }
    let grants = match &gw.auth {
        None => None,
        Some(auth) => {
            let login = hello
                .login
                .as_ref()
                .map(|l| (l.username.as_str(), l.password.as_str()));
            let version = hello.version;
            let checked = match certificate {
                Some(cn) => auth
                    .check_certificate(cn, &hello.client_id)
                    .map_err(|denial| denied(denial, version)),
                None => auth
                    .check_from(&gw.logins, peer.ip(), &hello.client_id, login)
                    .await
                    .map_err(|r| refused(r, version)),
            };
            Some(checked?)
        }
    };
    admit(hello, username(hello, certificate), grants)
}
