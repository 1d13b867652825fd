//! The way from a session to the router: its own link, or a shared one until it needs its
//! own.
//!
//! A rumqttd link costs ~27 KB and a router wake-up per notification; most devices (a
//! driver's phone) only publish positions at QoS 0 or 1 on a clean session, for which
//! they need no answer from the router (the gateway acks a QoS 1 publish once it is in a
//! lane). Such a session starts without a link: its publishes go through one of the
//! shared lanes (`router/lanes.rs`), batched with other devices'. It builds its own link
//! when it first sends anything else (SUBSCRIBE, UNSUBSCRIBE, a QoS 2 PUBLISH): then it
//! needs the router's answers. A session the router keeps
//! (Clean Start 0, an expiry, or an id the router still holds a session for) gets its
//! link at CONNECT as before. Ordering holds across the switch: the lane's
//! notifications and the link build go through the same FIFO channel into the router.
//!
//! What a link-less session does not need: client-id takeover is the gateway's registry
//! (no router link to drop), its will is published through its lane, it has no acks due
//! and nothing to release at the end.

use super::codec::Refuse;
use super::end::End;
use super::handshake::REFUSAL_WRITE;
use super::hello::Hello;
use super::linger;
use super::session::Session;
use super::transport::Transport;
use super::Gateway;
use bytes::BytesMut;
use rumqttd::local::{LinkError, LinkRx, LinkTx};
use rumqttd::protocol::Packet;
use rumqttd::Notification;
use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use tokio::time::timeout;
use tracing::warn;

/// Lanes are given out round-robin; a session keeps its lane for its life.
static NEXT_LANE: AtomicUsize = AtomicUsize::new(0);

/// The lane for a new session.
pub(super) fn next_lane() -> usize {
    NEXT_LANE.fetch_add(1, Ordering::Relaxed)
}

/// Client ids the router keeps a session for between connections (persistent sessions
/// that ended, restored ones). A clean session with such an id needs a link at CONNECT,
/// because building it is what discards the router's old session. One entry per session
/// the router keeps, so bounded as the router's sessions are.
#[derive(Debug, Default)]
pub struct HeldSessions {
    inner: Mutex<HashSet<String>>,
}

impl HeldSessions {
    /// The router keeps a session for `client_id` after its connection.
    pub(crate) fn hold(&self, client_id: &str) {
        self.lock().insert(client_id.to_owned());
    }

    /// A connection takes `client_id` (or its session was discarded); returns whether the
    /// router held a session for it.
    pub(crate) fn release(&self, client_id: &str) -> bool {
        self.lock().remove(client_id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether a new session starts on a shared lane: it starts clean, ends with its
/// connection, and the router keeps nothing for its id (`held`).
pub(super) fn starts_shared(hello: &Hello, held: bool) -> bool {
    hello.clean_start && hello.session_expiry == 0 && !held
}

/// The next notification of the session's own link; pending for ever without one.
///
/// The link's own wait (~300 bytes) is boxed, once per wait and only with a link: the
/// session's wait is in every connection's task, and most devices have no link to wait on
/// (`footprint.rs`).
pub(super) fn next_from(
    rx: &mut Option<LinkRx>,
) -> impl Future<Output = Result<Option<Notification>, LinkError>> + Send + '_ {
    let next = rx.as_mut().map(|rx| Box::pin(rx.next()));
    async move {
        match next {
            Some(next) => next.await,
            None => std::future::pending().await,
        }
    }
}

impl<T: Transport> Session<T> {
    /// Submits checked packets to the router: through the session's own link, or its lane
    /// while it has none, for the first `lane_len` of them (QoS 0 and 1 publishes whose
    /// acks the gateway wrote: `inbound.rs`); a link is built for the rest, if any. Drains
    /// `batch` (`intake.rs` keeps its room for the next read). Returns the log bytes
    /// waiting in the link or lane for the router to take, which the caller reads as
    /// back-pressure.
    pub(super) async fn submit(
        &mut self,
        batch: &mut Vec<Packet>,
        lane_len: usize,
    ) -> Result<usize, End> {
        if batch.is_empty() {
            return Ok(0);
        }
        if self.tx.is_none() {
            if lane_len >= batch.len() {
                return self.push_lane(batch);
            }
            // The lane's part first, then the link (its build flushes the lane ahead of it).
            let mut rest = batch.split_off(lane_len);
            if !batch.is_empty() {
                self.push_lane(batch)?;
            }
            // Boxed: once per session at most, not worth room in every session's task.
            Box::pin(self.own_link()).await?;
            batch.append(&mut rest);
        }
        let Some(tx) = self.tx.as_mut() else {
            return Err(End::RouterDropped);
        };
        let Some(last) = batch.pop() else {
            return Ok(0);
        };
        let waiting = {
            let mut buffer = tx.buffer();
            buffer.extend(batch.drain(..));
            // Usually just this batch: the router takes a link's whole buffer at once.
            buffer.iter().map(crate::router::log_bytes).sum::<usize>()
                + crate::router::log_bytes(&last)
        };
        if !crate::router::send_now(tx, last) {
            self.router_gone = true;
            return Err(End::RouterDropped);
        }
        Ok(waiting)
    }

    /// Pushes `batch` (QoS 0 and 1 publishes) into the session's lane.
    fn push_lane(&mut self, batch: &mut Vec<Packet>) -> Result<usize, End> {
        // Once a subscriber is no longer waited for, the window paces a flood.
        let early = !self.gw.backlogs.any_given_up();
        self.gw
            .router
            .push_shared(self.lane, batch, early)
            .map_err(|_| {
                self.router_gone = true;
                End::RouterDropped
            })
    }

    /// Log bytes waiting in the session's link or lane for the router to take.
    pub(super) fn waiting(&self) -> usize {
        match self.tx.as_ref() {
            Some(tx) => tx.buffer().iter().map(crate::router::log_bytes).sum(),
            None => self.gw.router.waiting_shared(self.lane),
        }
    }

    /// Builds the session's own link, mid-connection (clean: the session had none).
    async fn own_link(&mut self) -> Result<(), End> {
        // The lane may hold this session's publishes for up to its coalescing window:
        // they go to the router first, ahead of the link build on the same channel.
        if self.gw.router.flush_shared(self.lane).is_err() {
            self.router_gone = true;
            return Err(End::RouterDropped);
        }
        let id = self.inbound.identity.client_id();
        match self.gw.router.connect(id, true).await {
            Ok((tx, rx, _)) => {
                self.tx = Some(tx);
                self.rx = Some(rx);
                Ok(())
            }
            Err(e) => {
                self.gw.meters.refusal("router_busy").increment(1);
                warn!(client_id = %id, error = %e, "link not built");
                // Nothing may touch the router for this session now: no link, and the
                // lane must not carry what follows out of order.
                self.router_gone = true;
                Err(End::RouterDropped)
            }
        }
    }

    /// Releases the session's way to the router, after `will` if one is due.
    pub(super) async fn release(&mut self, will: Option<Packet>) {
        if self.router_gone {
            return;
        }
        self.router_gone = true;
        let Some(tx) = self.tx.as_mut() else {
            // A will is a QoS 0 publish (`linger::will_publish`): a lane carries it.
            if let Some(w) = will {
                let _ = self.gw.router.push_shared(self.lane, &mut vec![w], false);
            }
            return;
        };
        if let Some(w) = will {
            tx.buffer().push_back(w);
        }
        // Without this the router keeps the link's slot forever.
        let _ = tx.send(crate::router::disconnect_packet()).await;
    }
}

/// Builds the client's router link at CONNECT: its two ends and whether the router resumed
/// a session. When the router cannot take the link, answers CONNACK "server unavailable".
///
/// rumqttd has one flag for what MQTT 5 splits in two: its clean session both discards
/// an old session and keeps none after. A session that starts afresh (Clean Start) but
/// outlives the connection (an expiry) is therefore a persistent link built after the old
/// session was discarded; one that resumes but ends with the connection is a persistent
/// link discarded at the end (`Session::outlive`).
pub(super) async fn link<T: Transport>(
    io: &mut T,
    gw: &Gateway,
    hello: &Hello,
) -> Option<(LinkTx, LinkRx, bool)> {
    let keep = hello.session_expiry > 0;
    if hello.clean_start && keep {
        linger::discard(&gw.router, &hello.client_id).await;
    }
    let clean = hello.clean_start && !keep;
    match gw.router.connect(&hello.client_id, clean).await {
        Ok((tx, rx, notification)) => {
            let session_present = match Option::<Packet>::from(notification) {
                Some(Packet::ConnAck(ack, _)) => ack.session_present,
                _ => false,
            };
            Some((tx, rx, session_present))
        }
        Err(e) => {
            gw.meters.refusal("router_busy").increment(1);
            warn!(client_id = %hello.client_id, error = %e, "link not built");
            let refusal = Refuse::Unavailable.connack(hello.version, "router busy");
            let mut b = BytesMut::from(&refusal[..]);
            let _ = timeout(REFUSAL_WRITE, io.write_from(&mut b)).await;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_sessions_are_released_once() {
        let held = HeldSessions::default();
        held.hold("a");
        assert!(held.release("a"));
        assert!(!held.release("a"));
    }
}
