//! The checks every packet from a client passes before the router sees it.
//!
//! The router punishes what it does not expect by dropping the link (and a dropped link
//! touched again panics it), and it knows nothing of accounts. So topic and filter rules,
//! the account's policy, location validation, the subscription quota and the order of
//! acks are all checked here first, and some packets are answered here instead (PINGREQ,
//! UNSUBSCRIBE, refused PUBLISHes, and SUBSCRIBE once the router has it; `publishes.rs`
//! has the PUBLISH checks).
//! Nothing here does I/O: answers go into the session's write buffer, packets for the
//! router into a batch, and counts into a [`Tally`] for its meters, so that the fuzz
//! target (`decode.rs`) runs these very checks.

use super::acks::AckTracker;
use super::aliases;
use super::codec::{Version, Violation};
use super::end::End;
use super::frame;
use super::hello::{Identity, Takes};
use super::outbound::encode;
use super::subscriptions::Subscriptions;
pub(super) use super::tally::Tally;
use crate::config::Limits;
use bytes::BytesMut;
use rumqttd::protocol::{
    DisconnectProperties, DisconnectReasonCode, Packet, PubComp, PubCompReason, Subscribe,
    SubscribeProperties,
};

/// The client's side of a session: who it is, what it holds, and which acks are due.
#[derive(Debug)]
pub(super) struct Inbound {
    pub(super) version: Version,
    pub(super) identity: Identity,
    /// Acks due both ways; the session's outbound side records what it sends here.
    pub(super) acks: AckTracker,
    /// Filters held now, with their options.
    pub(super) subscriptions: Subscriptions,
    /// Topic Aliases the client set.
    pub(super) aliases: aliases::Incoming,
    pub(super) validate_locations: bool,
    /// Milliseconds since the epoch, for location timestamps.
    pub(super) clock: fn() -> u64,
    /// `clock`'s reading for the frames of the current read, 0 until a location needs it:
    /// read once per read, not once per publish (a flood reads hundreds at a time).
    now_ms: u64,
    /// Our Receive Maximum: the client's QoS 1/2 publishes in flight at most.
    pub(super) receive_maximum: u16,
    /// Seconds the session outlives the connection; an MQTT 5 DISCONNECT may change it.
    pub(super) session_expiry: u32,
    max_session_expiry: u32,
    /// Whether the client welcomes Reason Strings on acks.
    pub(super) problem_info: bool,
    /// Whether retained publishes are marked as such for Retain As Published (some
    /// session holds such a subscription); the session refreshes it before each read.
    pub(super) mark_retained: bool,
    /// The last topic name a PUBLISH passed the topic and policy checks with (at most
    /// [`GRANTED_MAX`] bytes): a device publishes to the same topic every time, and an
    /// account's grants do not change during a session, so the same name passes again
    /// unchecked. The checks (UTF-8, wildcards, the grants' patterns) were about 7% of the
    /// connection thread under a 1 -> 1 flood.
    pub(super) granted: Option<Vec<u8>>,
    /// Whether the packets read go through a shared lane (the session has no router link
    /// of its own, `uplink.rs`): then the gateway acks a QoS 1 publish itself, as soon as
    /// it is in the lane (the router answers nothing on one). Set by the session before
    /// each read; the first packet that only a link of its own can carry (anything but a
    /// QoS 0 or 1 publish) ends it for the rest of the read.
    pub(super) lane: bool,
    /// How many of the read's packets for the router the lane carries: those before the
    /// first that needs a link of its own (`Session::submit` splits the batch there).
    pub(super) lane_len: usize,
}

/// The longest topic name [`Inbound::granted`] keeps, so that what a session keeps stays
/// small: the fleet's topics are about 25 bytes.
pub(super) const GRANTED_MAX: usize = 128;

impl Inbound {
    /// Starts a new read: the clock is read again when a location is checked, and the
    /// packets go through a lane if `lane` (the session has no link of its own).
    pub(super) fn new_read(&mut self, lane: bool) {
        self.now_ms = 0;
        self.lane = lane;
        self.lane_len = 0;
    }

    /// `clock`'s reading for this read.
    pub(super) fn now_ms(&mut self) -> u64 {
        if self.now_ms == 0 {
            self.now_ms = (self.clock)();
        }
        self.now_ms
    }

    /// A new session's state under `limits`. Locations are checked against `clock`
    /// (`fleetcast_proto::time::now_ms` for a session; the fuzz target's must stand still).
    pub(super) fn new(
        version: Version,
        identity: Identity,
        limits: &Limits,
        clock: fn() -> u64,
    ) -> Inbound {
        Inbound {
            version,
            identity,
            acks: AckTracker::default(),
            subscriptions: Subscriptions::new(limits.max_subscriptions_per_connection),
            aliases: aliases::Incoming::new(match version {
                Version::V5 => limits.topic_alias_maximum,
                Version::V311 => 0,
            }),
            validate_locations: limits.validate_locations,
            clock,
            now_ms: 0,
            receive_maximum: limits.receive_maximum,
            session_expiry: 0,
            max_session_expiry: limits.max_session_expiry_secs,
            problem_info: Takes::ANYTHING.problem_info,
            mark_retained: false,
            granted: None,
            lane: false,
            lane_len: 0,
        }
    }

    /// Checks one client packet: what is for the router goes into `to_router`, answers
    /// into `out`; `Err` ends the session. `header` is the PUBLISH's QoS and packet id as
    /// read off the wire (rumqttd keeps them private).
    pub(super) fn check(
        &mut self,
        packet: Packet,
        header: Option<(u8, u16)>,
        out: &mut BytesMut,
        tally: &mut Tally,
        to_router: &mut Vec<Packet>,
    ) -> Result<(), End> {
        let before = to_router.len();
        let lane_carries =
            matches!(packet, Packet::Publish(..)) && header.is_none_or(|(q, _)| q < 2);
        let violation = |why: &str| Err(End::Protocol(Violation::Protocol, why.to_owned()));
        let checked = match packet {
            Packet::Publish(p, props) => self.publish(p, props, header, out, tally, to_router),
            // Packet id 0 is reserved for QoS 0 (2.3.1 both versions); rumqttd checks it only
            // in PUBLISH, and the router would ack it as if it were one.
            Packet::Subscribe(s, _) if s.pkid == 0 => violation("SUBSCRIBE with packet id 0"),
            Packet::Unsubscribe(u, _) if u.pkid == 0 => violation("UNSUBSCRIBE with packet id 0"),
            Packet::Subscribe(s, props) => self.subscribe(s, props, out, tally, to_router),
            Packet::Unsubscribe(u, _) => {
                // Answered here: the router sends one UNSUBACK per filter it removed and
                // none for a filter not held, which leaves clients waiting forever.
                let ack = self.subscriptions.release(&u, tally);
                encode(self.version, Packet::UnsubAck(ack, None), out)?;
                to_router.push(Packet::Unsubscribe(u, None));
                Ok(())
            }
            Packet::PingReq(_) => {
                out.extend_from_slice(&frame::PINGRESP);
                Ok(())
            }
            Packet::PubAck(..) | Packet::PubRec(..) | Packet::PubComp(..) | Packet::PubRel(..) => {
                self.ack(packet, out, to_router)
            }
            Packet::Disconnect(d, props) => self.disconnect(d.reason_code, props),
            Packet::Connect(..) => violation("second CONNECT"),
            _ => violation("packet a client may not send"),
        };
        if self.lane {
            if lane_carries || to_router.len() == before {
                self.lane_len = to_router.len();
            } else {
                self.lane = false;
            }
        }
        checked
    }

    /// A DISCONNECT: MQTT 5 (3.14.4) discards the will only for reason 0x00, and may change
    /// the session expiry, though not from 0 (3.14.2.2.2).
    fn disconnect(
        &mut self,
        reason: DisconnectReasonCode,
        props: Option<DisconnectProperties>,
    ) -> Result<(), End> {
        if let Some(expiry) = props.and_then(|p| p.session_expiry_interval) {
            if self.session_expiry == 0 && expiry > 0 {
                let why = "DISCONNECT sets a Session Expiry after 0 at CONNECT";
                return Err(End::Protocol(Violation::Protocol, why.to_owned()));
            }
            self.session_expiry = expiry.min(self.max_session_expiry);
        }
        match reason {
            DisconnectReasonCode::NormalDisconnection => Err(End::ClientDisconnect),
            _ => Err(End::ClientDisconnectWithWill),
        }
    }

    /// Checks an ack from the client against the order the router expects; the gateway's
    /// own acks for publishes the client never saw follow it.
    fn ack(
        &mut self,
        packet: Packet,
        out: &mut BytesMut,
        to_router: &mut Vec<Packet>,
    ) -> Result<(), End> {
        let violation = |why: &str| Err(End::Protocol(Violation::Protocol, why.to_owned()));
        let packet = match packet {
            Packet::PubAck(a, _) if self.acks.puback(a.pkid) => Packet::PubAck(a, None),
            Packet::PubAck(..) => return violation("PUBACK out of order or unsolicited"),
            Packet::PubRec(a, _) if self.acks.pubrec(a.pkid) => Packet::PubRec(a, None),
            Packet::PubRec(..) => return violation("PUBREC out of order or unsolicited"),
            Packet::PubComp(a, _) if self.acks.pubcomp(a.pkid) => Packet::PubComp(a, None),
            Packet::PubComp(..) => return violation("PUBCOMP out of order or unsolicited"),
            Packet::PubRel(a, _) if self.acks.pubrel(a.pkid) => Packet::PubRel(a, None),
            Packet::PubRel(a, _) => {
                // A PUBREL for a message already completed (a resend): answer it.
                let comp = PubComp {
                    pkid: a.pkid,
                    reason: PubCompReason::Success,
                };
                return encode(self.version, Packet::PubComp(comp, None), out);
            }
            _ => return violation("packet a client may not send"),
        };
        to_router.push(packet);
        to_router.extend(self.acks.take_for_router());
        Ok(())
    }

    fn subscribe(
        &mut self,
        s: Subscribe,
        props: Option<SubscribeProperties>,
        out: &mut BytesMut,
        tally: &mut Tally,
        to_router: &mut Vec<Packet>,
    ) -> Result<(), End> {
        let client_id = props.and_then(|p| p.id);
        if client_id == Some(0) {
            // 3.8.2.1.2; the router would drop the link for it.
            let why = "Subscription Identifier 0".to_owned();
            return Err(End::Protocol(Violation::Protocol, why));
        }
        let v5 = self.version == Version::V5;
        let taken = self
            .subscriptions
            .take(&self.identity, s, client_id, v5, tally);
        let router_subacks = taken
            .for_router
            .iter()
            .filter(|p| matches!(p, Packet::Subscribe(..)))
            .count();
        for ack in self.acks.suback_after(router_subacks, Some(taken.ack)) {
            encode(self.version, Packet::SubAck(ack, None), out)?;
        }
        to_router.extend(taken.for_router);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
