//! What a session writes to its client: router notifications, encoded and batched.
//!
//! The router hands over one notification at a time, but a socket write per message would
//! cost a syscall (and on TLS a record) each; so whatever the link has ready is encoded
//! into one buffer, up to [`WRITE_BATCH`] bytes, and written at once within the write
//! time-out. Each publish becomes what this client is to get (`delivery.rs`); those going
//! out are recorded in the session's ack tracker, whose order the client's acks must then
//! follow, and router acks are patched on their way through.

use super::codec::{Version, Violation};
use super::delivery::{Delivery, Fate};
use super::end::End;
use super::inbound::Inbound;
use super::session::Session;
use super::transport::Transport;
use bytes::BytesMut;
use rumqttd::local::LinkRx;
use rumqttd::protocol::Packet;
use rumqttd::Notification;
use tokio::time::timeout;

/// Outgoing bytes gathered before a write.
const WRITE_BATCH: usize = 64 * 1024;
/// A write buffer larger than this is let go once written.
const WRITE_KEEP: usize = 8 * 1024;

/// What one router notification came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Routed {
    /// A publish for the client, encoded.
    Forwarded,
    /// A publish held back by the client's Receive Maximum: read nothing more for now.
    Held,
    /// The router parked the link until it is woken.
    Unscheduled,
    /// The router dropped the link: it must not be touched again.
    Dropped,
    /// Anything else: an ack encoded, a publish not for the client, or nothing to write.
    Done,
}

/// Encodes `packet` onto `buf` in `version`.
pub(super) fn encode(version: Version, packet: Packet, buf: &mut BytesMut) -> Result<(), End> {
    version
        .write(packet, buf)
        .map(|_| ())
        .map_err(|e| End::Protocol(Violation::Implementation, format!("cannot encode: {e}")))
}

/// Encodes what the router sent onto `buf` as this client is to get it, keeping the acks
/// in step.
pub(super) fn route(
    inbound: &mut Inbound,
    delivery: &mut Delivery,
    buf: &mut BytesMut,
    notification: Option<Notification>,
) -> Result<Routed, End> {
    match notification {
        // A wake-up with nothing in the buffer: not an unschedule, do not wake.
        None => Ok(Routed::Done),
        Some(Notification::Unschedule) => Ok(Routed::Unscheduled),
        Some(Notification::Disconnect(..)) => Ok(Routed::Dropped),
        Some(Notification::Forward(f)) => Ok({
            let skipped = delivery.gaps.note(&inbound.subscriptions, &f);
            delivery.behind += skipped;
            delivery.taken += super::backlog::forward_bytes(&f, skipped);
            match delivery.deliver(inbound, buf, f)? {
                Fate::Sent => Routed::Forwarded,
                Fate::Held => Routed::Held,
                Fate::Dropped => Routed::Done,
            }
        }),
        Some(other) => match Option::<Packet>::from(other) {
            // The gateway answers SUBSCRIBE (once the router has it) and UNSUBSCRIBE.
            Some(Packet::SubAck(..)) => {
                for ack in inbound.acks.router_suback() {
                    encode(inbound.version, Packet::SubAck(ack, None), buf)?;
                }
                Ok(Routed::Done)
            }
            Some(Packet::UnsubAck(..)) | None => Ok(Routed::Done),
            // The answer to the gateway's own PUBREC for a publish the client never saw.
            Some(Packet::PubRel(r, _)) if !inbound.acks.router_pubrel(r.pkid) => Ok(Routed::Done),
            Some(packet) => {
                let packet = inbound.acks.patch(packet);
                encode(inbound.version, packet, buf)?;
                Ok(Routed::Done)
            }
        },
    }
}

/// The router dropped the session's link.
struct Gone;

impl<T: Transport> Session<T> {
    /// Handles what the router sent, gathering what else is ready into one write; stops
    /// reading the router when the client's Receive Maximum holds a publish back.
    pub(super) async fn on_router(
        &mut self,
        first: Result<Option<Notification>, rumqttd::local::LinkError>,
    ) -> Result<(), End> {
        // The link's error dropped at once: the loop's item stays a notification's size
        // (`LinkError` may hold a router event: its `Result` is 816 bytes, against 248).
        let mut next = Some(first.map_err(|_| Gone));
        let mut unscheduled = false;
        // Counted once per batch: a shared atomic per message costs measurable throughput.
        let mut forwarded = 0u64;
        while let Some(item) = next.take() {
            let seen = self.tap.seen(item.as_ref().ok().and_then(Option::as_ref));
            let at = self.wbuf.len();
            let routed = match item {
                Ok(n) => route(&mut self.inbound, &mut self.delivery, &mut self.wbuf, n)?,
                Err(Gone) => Routed::Dropped,
            };
            self.tap
                .sent(seen, &self.wbuf[at..], routed == Routed::Held);
            match routed {
                Routed::Dropped => {
                    self.router_gone = true;
                    return Err(End::RouterDropped);
                }
                Routed::Forwarded => forwarded += 1,
                Routed::Unscheduled => unscheduled = true,
                Routed::Held => break,
                Routed::Done => {}
            }
            if self.wbuf.len() < WRITE_BATCH {
                // What the link holds already; otherwise write now. Taken without a future:
                // through one, each notification was moved several times more.
                next = match self.rx.as_mut().map(LinkRx::try_next) {
                    Some(Ok(None)) | None => None,
                    Some(ready) => Some(ready.map_err(|_| Gone)),
                };
            }
        }
        self.gw.meters.messages_delivered.increment(forwarded);
        let behind = std::mem::take(&mut self.delivery.behind);
        if behind > 0 {
            self.gw
                .meters
                .drop_for("subscriber_behind")
                .increment(behind);
        }
        let taken = std::mem::take(&mut self.delivery.taken);
        if unscheduled || behind > 0 || self.delivery.marked.is_some() {
            self.note_backlog(taken, unscheduled, behind > 0);
        }
        let too_large = std::mem::take(&mut self.delivery.too_large);
        if too_large > 0 {
            self.gw
                .meters
                .drop_for("too_large_for_client")
                .increment(too_large);
        }
        self.send_own_acks().await?;
        if unscheduled {
            // The router parked this link: its buffer is empty now (what it held is in
            // the write buffer), so it may fill it again while this write goes out. Woken
            // after the write, the router sat idle for this link during every write (a
            // 1 -> 1 flood's subscriber). What waits stays bounded: the write buffer, then
            // the link's buffer until the router parks the link again.
            let Some(rx) = self.rx.as_mut() else {
                return self.flush().await;
            };
            if rx.wake().await.is_err() {
                self.router_gone = true;
                return Err(End::RouterDropped);
            }
        }
        self.flush().await
    }

    /// Keeps this session's mark as a subscriber behind (`backlog.rs`) up to date: made
    /// when the router `parked` it (it filled the link's buffer, so it had more) or
    /// `skipped` messages for it, told what it took, dropped once it has caught up.
    fn note_backlog(&mut self, taken: i64, parked: bool, skipped: bool) {
        let board = &self.gw.backlogs;
        let now = tokio::time::Instant::now();
        let caught_up = match &mut self.delivery.marked {
            Some(m) => !board.took(m, taken, parked, now),
            None => {
                if parked || skipped {
                    let filters = self.inbound.subscriptions.own_filters();
                    self.delivery.marked = board.mark(filters).map(Box::new);
                }
                false
            }
        };
        if caught_up {
            self.delivery.marked = None;
        }
    }

    /// Sends the publish the client's Receive Maximum held back, once its acks allow,
    /// and whatever the router has ready after it.
    pub(super) async fn release_held(&mut self) -> Result<(), End> {
        if !self.delivery.may_send(&self.inbound) {
            return Ok(());
        }
        match self.delivery.held.take() {
            Some(f) => self.on_router(Ok(Some(Notification::Forward(*f)))).await,
            None => Ok(()),
        }
    }

    /// Hands the router the gateway's own acks for publishes the client never saw.
    async fn send_own_acks(&mut self) -> Result<(), End> {
        let mut acks = self.inbound.acks.take_for_router();
        self.submit(&mut acks, 0).await.map(|_| ())
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
                if self.wbuf.capacity() > WRITE_KEEP {
                    // A batch for a subscriber grows it to WRITE_BATCH: not kept idle.
                    self.wbuf = BytesMut::new();
                }
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
    use crate::config::Config;
    use crate::gateway::hello::Takes;
    use crate::gateway::inbound::Tally;
    use crate::gateway::{frame, wire};
    use crate::policy::Grants;
    use rumqttd::protocol::{Disconnect, DisconnectReasonCode, PublishProperties};
    use rumqttd::Forward;

    fn session(version: Version, takes: Takes) -> (Inbound, Delivery) {
        let open = Grants {
            publish: vec!["#".into()],
            subscribe: vec!["#".into()],
        };
        let identity = wire::identity("rider-1", open);
        let limits = Config::default().limits;
        let inbound = Inbound::new(version, identity, &limits, || 0);
        (
            inbound,
            Delivery::new(version, takes, limits.topic_alias_maximum),
        )
    }

    /// A publish as the router would forward it, at `qos` with `pkid`.
    fn forward(qos: u8, pkid: u16, retain: bool, props: Option<PublishProperties>) -> Notification {
        let bytes = wire::publish(Version::V311, qos, pkid, "a/b", "x");
        let Packet::Publish(mut publish, _) = wire::read(Version::V311, &bytes) else {
            panic!("not a PUBLISH");
        };
        publish.retain = retain;
        Notification::Forward(Forward {
            cursor: None,
            size: 0,
            publish,
            properties: props,
        })
    }

    /// Subscribes `i` to `a/#` with MQTT 5 subscription options byte `options` and
    /// Subscription Identifier 7; returns the gateway's identifier for it in the router.
    fn subscribe(i: &mut Inbound, options: u8) -> usize {
        let mut body = vec![0, 1, 2, 0x0B, 7];
        wire::put_str(&mut body, "a/#");
        body.push(options);
        let packet = wire::read(Version::V5, &wire::frame(0x82, body));
        let (mut out, mut to_router) = (BytesMut::new(), Vec::new());
        i.check(
            packet,
            None,
            &mut out,
            &mut Tally::default(),
            &mut to_router,
        )
        .expect("subscribed");
        match to_router.last() {
            Some(Packet::Subscribe(_, Some(p))) => p.id.expect("the gateway's identifier"),
            other => panic!("{other:?}"),
        }
    }

    fn routed_props(router_id: usize, marks: (Option<&str>, bool)) -> Option<PublishProperties> {
        let mut props = Some(PublishProperties {
            subscription_identifiers: vec![router_id],
            ..PublishProperties::default()
        });
        crate::gateway::marks::mark(&mut props, marks.0, marks.1);
        props
    }

    /// The properties of the one MQTT 5 PUBLISH in `buf`.
    fn written(buf: &[u8]) -> (bool, Option<PublishProperties>) {
        match wire::read(Version::V5, buf) {
            Packet::Publish(p, props) => (p.retain, props),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn forwarded_publishes_are_written_and_their_acks_awaited() {
        for version in [Version::V311, Version::V5] {
            let (mut i, mut d) = session(version, Takes::ANYTHING);
            let mut buf = BytesMut::new();
            for (qos, pkid) in [(0, 0), (1, 7), (2, 8)] {
                let routed = route(
                    &mut i,
                    &mut d,
                    &mut buf,
                    Some(forward(qos, pkid, false, None)),
                );
                assert_eq!(routed.ok(), Some(Routed::Forwarded));
            }
            assert_eq!(frame::publish_qos_pkid(&buf), Some((0, 0)));
            assert!(i.acks.puback(7));
            assert!(i.acks.pubrec(8));
            assert!(!i.acks.puback(9), "QoS 0 is not awaited");
        }
    }

    #[test]
    fn what_the_router_says_of_the_link_is_passed_on() {
        let (mut i, mut d) = session(Version::V5, Takes::ANYTHING);
        let mut buf = BytesMut::new();
        let mut route = |n| route(&mut i, &mut d, &mut buf, n).ok();
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

    #[test]
    fn subscription_options_decide_what_the_client_gets() {
        // No Local (bit 2) and Retain As Published (bit 3), QoS 1.
        let (mut i, mut d) = session(Version::V5, Takes::ANYTHING);
        let id = subscribe(&mut i, 0b0000_1101);
        let mut buf = BytesMut::new();
        let own = forward(1, 1, false, routed_props(id, (Some("rider-1"), false)));
        assert_eq!(
            route(&mut i, &mut d, &mut buf, Some(own)).ok(),
            Some(Routed::Done)
        );
        assert!(buf.is_empty(), "No Local: its own publish is not sent");
        assert!(
            matches!(&i.acks.take_for_router()[..], [Packet::PubAck(a, _)] if a.pkid == 1),
            "but acked to the router"
        );
        let theirs = forward(0, 0, false, routed_props(id, (Some("drv-1"), true)));
        assert_eq!(
            route(&mut i, &mut d, &mut buf, Some(theirs)).ok(),
            Some(Routed::Forwarded)
        );
        let (retain, props) = written(&buf);
        assert!(retain, "Retain As Published puts the flag back");
        let props = props.expect("properties");
        assert_eq!(props.subscription_identifiers, [7], "the client's own id");
        assert!(
            props.user_properties.is_empty(),
            "no marks reach the client"
        );
        // Retain Handling 2 (bits 4-5): no retained message at subscribe time.
        let (mut i, mut d) = session(Version::V5, Takes::ANYTHING);
        let id = subscribe(&mut i, 0b0010_0000);
        let mut buf = BytesMut::new();
        let retained = forward(0, 0, true, routed_props(id, (None, false)));
        assert_eq!(
            route(&mut i, &mut d, &mut buf, Some(retained)).ok(),
            Some(Routed::Done)
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn the_clients_limits_hold_drop_and_alias() {
        let takes = Takes {
            receive_max: 1,
            max_packet_size: Some(20),
            topic_alias_max: 5,
            problem_info: true,
        };
        let (mut i, mut d) = session(Version::V5, takes);
        let mut buf = BytesMut::new();
        assert_eq!(
            route(&mut i, &mut d, &mut buf, Some(forward(1, 1, false, None))).ok(),
            Some(Routed::Forwarded)
        );
        let (_, props) = written(&buf);
        assert_eq!(
            props.and_then(|p| p.topic_alias),
            Some(1),
            "topic set as alias 1"
        );
        assert_eq!(
            route(&mut i, &mut d, &mut buf, Some(forward(1, 2, false, None))).ok(),
            Some(Routed::Held),
            "Receive Maximum 1: one unacked at a time"
        );
        assert!(d.held.is_some());
        assert!(i.acks.puback(1));
        assert!(d.may_send(&i));
        let Some(f) = d.held.take() else {
            unreachable!()
        };
        buf.clear();
        assert_eq!(
            route(&mut i, &mut d, &mut buf, Some(Notification::Forward(*f))).ok(),
            Some(Routed::Forwarded)
        );
        match wire::read(Version::V5, &buf) {
            Packet::Publish(p, props) => {
                assert!(p.topic.is_empty(), "the alias alone");
                assert_eq!(props.and_then(|p| p.topic_alias), Some(1));
            }
            other => panic!("{other:?}"),
        }
        assert!(i.acks.puback(2));
        // Over 20 bytes: not sent, counted, acked to the router.
        let big = PublishProperties {
            content_type: Some("application/json; charset=utf-8".into()),
            ..PublishProperties::default()
        };
        buf.clear();
        let r = route(
            &mut i,
            &mut d,
            &mut buf,
            Some(forward(1, 3, false, Some(big))),
        );
        assert_eq!(r.ok(), Some(Routed::Done));
        assert!(buf.is_empty());
        assert_eq!(d.too_large, 1);
        assert!(matches!(&i.acks.take_for_router()[..], [Packet::PubAck(a, _)] if a.pkid == 3));
    }

    #[test]
    fn a_311_client_gets_no_properties() {
        let (mut i, mut d) = session(Version::V311, Takes::ANYTHING);
        let mut buf = BytesMut::new();
        let props = PublishProperties {
            user_properties: vec![("k".into(), "v".into())],
            ..PublishProperties::default()
        };
        let r = route(
            &mut i,
            &mut d,
            &mut buf,
            Some(forward(0, 0, false, Some(props))),
        );
        assert_eq!(r.ok(), Some(Routed::Forwarded));
        assert_eq!(&buf[..], wire::publish(Version::V311, 0, 0, "a/b", "x"));
    }
}
