//! What a session writes to its client: router notifications, encoded and batched.
//!
//! The router hands over one notification at a time, but a socket write per message would
//! cost a syscall (and on TLS a record) each; so whatever the link has ready is encoded
//! into one buffer, up to [`WRITE_BATCH`] bytes, and written at once within the write
//! time-out. Publishes going out are recorded in the [`AckTracker`], whose order the
//! client's acks must then follow, and router acks are patched on their way through.

use super::acks::AckTracker;
use super::codec::{Version, Violation};
use super::frame;
use super::session::{End, Session};
use super::transport::Transport;
use bytes::BytesMut;
use futures_util::FutureExt;
use rumqttd::protocol::Packet;
use rumqttd::Notification;
use tokio::time::timeout;

/// Outgoing bytes gathered before a write.
const WRITE_BATCH: usize = 64 * 1024;

/// What one router notification came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Routed {
    /// A publish for the client, encoded.
    Forwarded,
    /// The router parked the link until it is woken.
    Unscheduled,
    /// The router dropped the link: it must not be touched again.
    Dropped,
    /// Anything else: an ack encoded, or nothing to write.
    Done,
}

/// Encodes `packet` onto `buf` in `version`.
pub(super) fn encode(version: Version, packet: Packet, buf: &mut BytesMut) -> Result<(), End> {
    version
        .write(packet, buf)
        .map(|_| ())
        .map_err(|e| End::Protocol(Violation::Implementation, format!("cannot encode: {e}")))
}

/// Encodes what the router sent onto `buf`, keeping `acks` in step.
pub(super) fn route(
    version: Version,
    buf: &mut BytesMut,
    acks: &mut AckTracker,
    notification: Option<Notification>,
) -> Result<Routed, End> {
    match notification {
        // A wake-up with nothing in the buffer: not an unschedule, do not wake.
        None => Ok(Routed::Done),
        Some(Notification::Unschedule) => Ok(Routed::Unscheduled),
        Some(Notification::Disconnect(..)) => Ok(Routed::Dropped),
        Some(Notification::Forward(f)) => {
            let at = buf.len();
            encode(version, Packet::Publish(f.publish, None), buf)?;
            // rumqttd keeps the QoS and packet id private: read them off what was written.
            if let Some((qos, pkid)) = frame::publish_qos_pkid(&buf[at..]) {
                acks.sent(qos, pkid);
            }
            Ok(Routed::Forwarded)
        }
        Some(other) => match Option::<Packet>::from(other) {
            // The gateway answered the UNSUBSCRIBE itself.
            Some(Packet::UnsubAck(..)) | None => Ok(Routed::Done),
            Some(packet) => {
                encode(version, acks.patch(packet), buf)?;
                Ok(Routed::Done)
            }
        },
    }
}

impl<T: Transport> Session<T> {
    /// Handles what the router sent, gathering what else is ready into one write.
    pub(super) async fn on_router(
        &mut self,
        first: Result<Option<Notification>, rumqttd::local::LinkError>,
    ) -> Result<(), End> {
        let mut next = Some(first);
        let mut unscheduled = false;
        // Counted once per batch: a shared atomic per message costs measurable throughput.
        let mut forwarded = 0u64;
        while let Some(item) = next.take() {
            let (seen, at) = (self.tap.seen(&item), self.wbuf.len());
            let routed = match item {
                Ok(n) => route(self.version, &mut self.wbuf, &mut self.inbound.acks, n)?,
                Err(_) => Routed::Dropped,
            };
            self.tap.sent(seen, &self.wbuf[at..]);
            match routed {
                Routed::Dropped => {
                    self.router_gone = true;
                    return Err(End::RouterDropped);
                }
                Routed::Forwarded => forwarded += 1,
                Routed::Unscheduled => unscheduled = true,
                Routed::Done => {}
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

    /// Writes out the buffer within the write time-out.
    pub(super) async fn flush(&mut self) -> Result<(), End> {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::wire;
    use rumqttd::protocol::{Disconnect, DisconnectReasonCode};
    use rumqttd::Forward;

    /// A publish as the router would forward it, at `qos` with `pkid`.
    fn forward(qos: u8, pkid: u16) -> Notification {
        let bytes = wire::publish(Version::V311, qos, pkid, "a/b", "x");
        let Packet::Publish(publish, _) = wire::read(Version::V311, &bytes) else {
            panic!("not a PUBLISH");
        };
        Notification::Forward(Forward {
            cursor: None,
            size: 0,
            publish,
            properties: None,
        })
    }

    #[test]
    fn forwarded_publishes_are_written_and_their_acks_awaited() {
        for version in [Version::V311, Version::V5] {
            let mut buf = BytesMut::new();
            let mut acks = AckTracker::default();
            for (qos, pkid) in [(0, 0), (1, 7), (2, 8)] {
                let routed = route(version, &mut buf, &mut acks, Some(forward(qos, pkid)));
                assert_eq!(routed.ok(), Some(Routed::Forwarded));
            }
            assert_eq!(frame::publish_qos_pkid(&buf), Some((0, 0)));
            assert!(acks.puback(7));
            assert!(acks.pubrec(8));
            assert!(!acks.puback(9), "QoS 0 is not awaited");
        }
    }

    #[test]
    fn what_the_router_says_of_the_link_is_passed_on() {
        let mut buf = BytesMut::new();
        let mut acks = AckTracker::default();
        let mut route = |n| route(Version::V5, &mut buf, &mut acks, n).ok();
        assert_eq!(route(None), Some(Routed::Done));
        assert_eq!(
            route(Some(Notification::Unschedule)),
            Some(Routed::Unscheduled)
        );
        let bye = Disconnect {
            reason_code: DisconnectReasonCode::NormalDisconnection,
        };
        assert_eq!(
            route(Some(Notification::Disconnect(bye, None))),
            Some(Routed::Dropped)
        );
        assert!(buf.is_empty(), "nothing of these is for the client");
    }
}
