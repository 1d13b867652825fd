//! How a session ends: every way it can ([`End`]), what its end needs of the CONNECT
//! ([`Ending`]), and the closing steps (the will, the link released, the socket closed,
//! what outlives the connection).

use super::codec::{Version, Violation};
use super::handshake::{close_within, REFUSAL_WRITE};
use super::hello::Hello;
use super::linger::{self, DelayedWill};
use super::session::Session;
use super::transport::Transport;
use super::{Gateway, Stats, TransportKind};
use crate::cluster::ClusterHook;
use crate::registry::Claim;
use rumqttd::protocol::{LastWill, LastWillProperties};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::time::timeout;
use tracing::{debug, info};

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

/// What a session's end needs of its CONNECT; the rest of it (~300 bytes) is let go once
/// answered.
pub(super) struct Ending {
    pub(super) client_id: String,
    /// The will and its properties, boxed: few clients leave one, and it is ~200 bytes.
    pub(super) will: Option<Box<(LastWill, Option<LastWillProperties>)>>,
    pub(super) keep_alive: u16,
    pub(super) clean_start: bool,
    pub(super) session_expiry: u32,
}

impl Ending {
    pub(super) fn of(hello: Box<Hello>) -> Ending {
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
pub(super) struct Live<T> {
    pub(super) session: Session<T>,
    /// What the end needs of the CONNECT.
    pub(super) ending: Ending,
    /// The client id, held until the task ends.
    pub(super) claim: Claim,
    pub(super) span: tracing::Span,
    /// What ended the session before it was served (the CONNACK could not be written).
    pub(super) unanswered: Option<End>,
}

impl<T: Transport> Live<T> {
    /// Counts the end, fires the will when due, releases the link, closes the socket, and
    /// keeps what outlives the connection.
    pub(super) async fn close(&mut self, end: End) {
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

impl<T: Transport> Session<T> {
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

/// Counts a connection closed.
fn closed(gw: &Gateway, kind: TransportKind) {
    gw.stats.open(kind).fetch_sub(1, Ordering::Relaxed);
    Stats::kind_meters(&gw.meters, kind).0.decrement(1.0);
}
