//! The checks every packet from a client passes before the router sees it.
//!
//! The router punishes what it does not expect by dropping the link (and a dropped link
//! touched again panics it), and it knows nothing of accounts. So topic and filter rules,
//! the account's policy, location validation, the subscription quota and the order of
//! acks are all checked here first, and some packets are answered here instead. Nothing
//! here does I/O: answers go into the session's write buffer and counts into a [`Tally`]
//! for its meters, so that the fuzz target (`decode.rs`) runs these very checks.

use super::acks::AckTracker;
use super::codec::{Version, Violation};
use super::frame::{self, TopicError};
use super::hello::Identity;
use super::outbound::encode;
use super::session::End;
use super::subscriptions::Subscriptions;
pub(super) use super::tally::Tally;
use crate::config::Limits;
use crate::throttle::Throttle;
use bytes::{Bytes, BytesMut};
use fleetcast_proto::location as validation;
use fleetcast_proto::time::unix_now;
use rumqttd::protocol::{
    DisconnectReasonCode, Packet, PubAck, PubAckReason, PubComp, PubCompReason, PubRec,
    PubRecReason, Publish, PublishProperties, SubAck, Subscribe,
};
use tracing::{info, warn};

/// What the gateway makes of a PUBLISH, before anything is done about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Not a topic name MQTT allows (not UTF-8, wildcards, `$`, empty): the client broke
    /// the protocol.
    BadTopic(TopicError),
    /// The policy does not grant the topic.
    Denied,
    /// A location that failed validation.
    Invalid(validation::Invalid),
    /// For the router.
    Accept,
}

/// The client's side of a session: who it is, what it holds, and which acks are due.
#[derive(Debug)]
pub(super) struct Inbound {
    version: Version,
    identity: Identity,
    /// Acks due both ways; the session's outbound side records what it sends here.
    pub(super) acks: AckTracker,
    /// Filters held now.
    pub(super) subscriptions: Subscriptions,
    validate_locations: bool,
    /// Milliseconds since the epoch, for location timestamps.
    clock: fn() -> u64,
}

impl Inbound {
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
            validate_locations: limits.validate_locations,
            clock,
        }
    }

    /// Checks one client packet: `Ok(Some)` forwards it, `Ok(None)` was answered here (into
    /// `out`), `Err` ends the session. `header` is the PUBLISH's QoS and packet id as read
    /// off the wire (rumqttd keeps them private).
    pub(super) fn check(
        &mut self,
        packet: Packet,
        header: Option<(u8, u16)>,
        out: &mut BytesMut,
        tally: &mut Tally,
    ) -> Result<Option<Packet>, End> {
        let violation = |why: &str| Err(End::Protocol(Violation::Protocol, why.to_owned()));
        match packet {
            Packet::Publish(p, props) => {
                topic_alias(props.as_ref())?;
                self.publish(p, header, out, tally)
            }
            // Packet id 0 is reserved for QoS 0 (2.3.1 both versions); rumqttd checks it only
            // in PUBLISH, and the router would ack it as if it were one.
            Packet::Subscribe(s, _) if s.pkid == 0 => violation("SUBSCRIBE with packet id 0"),
            Packet::Unsubscribe(u, _) if u.pkid == 0 => violation("UNSUBSCRIBE with packet id 0"),
            Packet::Subscribe(s, _) => self.subscribe(s, out, tally),
            Packet::Unsubscribe(u, _) => {
                // Answered here: the router sends one UNSUBACK per filter it removed and
                // none for a filter not held, which leaves clients waiting forever.
                let ack = self.subscriptions.release(&u);
                encode(self.version, Packet::UnsubAck(ack, None), out)?;
                Ok(Some(Packet::Unsubscribe(u, None)))
            }
            Packet::PingReq(_) => {
                out.extend_from_slice(&frame::PINGRESP);
                Ok(None)
            }
            Packet::PubAck(..) | Packet::PubRec(..) | Packet::PubComp(..) | Packet::PubRel(..) => {
                self.ack(packet, out)
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

    /// Checks an ack from the client against the order the router expects.
    fn ack(&mut self, packet: Packet, out: &mut BytesMut) -> Result<Option<Packet>, End> {
        let violation = |why: &str| Err(End::Protocol(Violation::Protocol, why.to_owned()));
        match packet {
            Packet::PubAck(a, _) => {
                if !self.acks.puback(a.pkid) {
                    return violation("PUBACK out of order or unsolicited");
                }
                Ok(Some(Packet::PubAck(a, None)))
            }
            Packet::PubRec(a, _) => {
                if !self.acks.pubrec(a.pkid) {
                    return violation("PUBREC out of order or unsolicited");
                }
                Ok(Some(Packet::PubRec(a, None)))
            }
            Packet::PubComp(a, _) => {
                if !self.acks.pubcomp(a.pkid) {
                    return violation("PUBCOMP out of order or unsolicited");
                }
                Ok(Some(Packet::PubComp(a, None)))
            }
            Packet::PubRel(a, _) if self.acks.pubrel(a.pkid) => Ok(Some(Packet::PubRel(a, None))),
            Packet::PubRel(a, _) => {
                // A PUBREL for a message already completed (a resend): answer it.
                let comp = PubComp {
                    pkid: a.pkid,
                    reason: PubCompReason::Success,
                };
                encode(self.version, Packet::PubComp(comp, None), out)?;
                Ok(None)
            }
            _ => violation("packet a client may not send"),
        }
    }

    /// What becomes of a PUBLISH to `topic` carrying `payload`, in the order it is checked.
    pub(super) fn verdict(&self, topic: &[u8], payload: &[u8]) -> Verdict {
        if let Some(e) = frame::topic_name_error(topic) {
            return Verdict::BadTopic(e);
        }
        if !self.identity.may_publish(topic) {
            return Verdict::Denied;
        }
        if !self.validate_locations {
            return Verdict::Accept;
        }
        match validation::check(topic, payload, (self.clock)()) {
            Ok(()) => Verdict::Accept,
            Err(why) => Verdict::Invalid(why),
        }
    }

    fn publish(
        &mut self,
        mut p: Publish,
        header: Option<(u8, u16)>,
        out: &mut BytesMut,
        tally: &mut Tally,
    ) -> Result<Option<Packet>, End> {
        let verdict = self.verdict(&p.topic, &p.payload);
        let reserved = matches!(verdict, Verdict::BadTopic(TopicError::Reserved));
        if reserved || !matches!(verdict, Verdict::BadTopic(_)) {
            // Received, so charged to the quota, granted or not.
            tally.publishes += 1;
        }
        let refusal = match verdict {
            // A `$` topic is well-formed MQTT: the server keeps such topics to itself
            // (rumqttd drops a link that subscribes to one), so it is refused like a topic
            // the policy does not grant, and the connection stays, as mosquitto keeps it.
            Verdict::BadTopic(TopicError::Reserved) => {
                tally.invalid_topic += 1;
                log_reserved(&p.topic);
                PubAckReason::TopicNameInvalid
            }
            Verdict::BadTopic(e) => {
                tally.invalid_topic += 1;
                // Never to the router: it drops the link for a topic that is not UTF-8.
                let violation = match e {
                    TopicError::Malformed => Violation::Malformed,
                    TopicError::Protocol => Violation::Protocol,
                    TopicError::Reserved => Violation::TopicName, // handled above
                };
                let why = "invalid topic name in PUBLISH".to_owned();
                return Err(End::Protocol(violation, why));
            }
            Verdict::Accept => {
                if let Some((2, pkid)) = header {
                    self.acks.received_qos2(pkid);
                }
                // Exact-size copies: a slice would pin the whole read buffer in the router.
                p.topic = Bytes::copy_from_slice(&p.topic);
                p.payload = Bytes::copy_from_slice(&p.payload);
                return Ok(Some(Packet::Publish(p, None)));
            }
            Verdict::Denied => {
                tally.policy_denied += 1;
                log_denied(&p.topic);
                if self.version == Version::V311 {
                    // MQTT 3.1.1 has no negative PUBACK: the connection is closed.
                    let topic = String::from_utf8_lossy(&p.topic).into_owned();
                    return Err(End::PolicyViolation(topic));
                }
                PubAckReason::NotAuthorized
            }
            Verdict::Invalid(why) => {
                // Dropped, counted, the connection kept; the publisher still gets its ack
                // (3.1.1 has no negative one) so it does not resend.
                tally.invalid_payload += 1;
                log_invalid(&p.topic, why);
                PubAckReason::PayloadFormatInvalid
            }
        };
        if let Some(ack) = publish_refusal(self.version, header, refusal) {
            encode(self.version, ack, out)?;
        }
        Ok(None)
    }

    fn subscribe(
        &mut self,
        mut s: Subscribe,
        out: &mut BytesMut,
        tally: &mut Tally,
    ) -> Result<Option<Packet>, End> {
        let v5 = self.version == Version::V5;
        let denied = self
            .subscriptions
            .take(&self.identity, &mut s.filters, v5, tally);
        if s.filters.is_empty() {
            let ack = SubAck {
                pkid: s.pkid,
                return_codes: denied.into_iter().map(|(_, code)| code).collect(),
            };
            encode(self.version, Packet::SubAck(ack, None), out)?;
            return Ok(None);
        }
        self.acks.refused_filters(s.pkid, denied);
        Ok(Some(Packet::Subscribe(s, None)))
    }
}

/// Refuses a PUBLISH that names a Topic Alias: the CONNACK grants none (Topic Alias
/// Maximum absent = 0), so alias 0 is a protocol error (3.3.2-8) and any other exceeds the
/// maximum (3.3.2-9, DISCONNECT 0x94). The session drops properties on their way to the
/// router, which would otherwise publish under the alias's empty or stale topic name.
fn topic_alias(props: Option<&PublishProperties>) -> Result<(), End> {
    match props.and_then(|p| p.topic_alias) {
        None => Ok(()),
        Some(0) => Err(End::Protocol(
            Violation::Protocol,
            "Topic Alias 0 in PUBLISH".to_owned(),
        )),
        Some(_) => Err(End::Protocol(
            Violation::TopicAlias,
            "Topic Alias above the maximum (0)".to_owned(),
        )),
    }
}

/// The ack of a publish that was dropped: with `reason` in MQTT 5, as a success in 3.1.1
/// (it has no negative ack, and a publisher told nothing would resend forever). None at
/// QoS 0, which has no ack.
fn publish_refusal(
    version: Version,
    header: Option<(u8, u16)>,
    reason: PubAckReason,
) -> Option<Packet> {
    let v5 = version == Version::V5;
    match header {
        Some((1, pkid)) => {
            let reason = if v5 { reason } else { PubAckReason::Success };
            Some(Packet::PubAck(PubAck { pkid, reason }, None))
        }
        Some((2, pkid)) => {
            let reason = match (v5, reason) {
                (false, _) => PubRecReason::Success,
                (true, PubAckReason::NotAuthorized) => PubRecReason::NotAuthorized,
                (true, PubAckReason::TopicNameInvalid) => PubRecReason::TopicNameInvalid,
                (true, _) => PubRecReason::PayloadFormatInvalid,
            };
            Some(Packet::PubRec(PubRec { pkid, reason }, None))
        }
        _ => None,
    }
}

/// Logs a dropped location at most once a second, process-wide: a client sending garbage
/// at a high rate must not flood the logs.
fn log_invalid(topic: &[u8], why: validation::Invalid) {
    static LINES: Throttle = Throttle::new();
    if let Some(suppressed) = LINES.admit(unix_now()) {
        warn!(topic = %String::from_utf8_lossy(topic), reason = %why, suppressed, "invalid location dropped (logged at most once a second)");
    }
}

/// Logs a publish to a `$` topic, at most once a second.
fn log_reserved(topic: &[u8]) {
    static LINES: Throttle = Throttle::new();
    if let Some(suppressed) = LINES.admit(unix_now()) {
        info!(topic = %String::from_utf8_lossy(topic), suppressed, "publish to a $ topic acknowledged and dropped (logged at most once a second)");
    }
}

/// Logs a publish the account's policy refused, at most once a second (the session's span
/// names the client).
fn log_denied(topic: &[u8]) {
    static LINES: Throttle = Throttle::new();
    if let Some(suppressed) = LINES.admit(unix_now()) {
        info!(topic = %String::from_utf8_lossy(topic), suppressed, "publish refused by the topic policy (logged at most once a second)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::gateway::wire::{self, identity, publish, subscribe, unsubscribe};
    use crate::policy::Grants;
    use rumqttd::protocol::SubscribeReasonCode;

    const NOW_MS: u64 = 1_800_000_000_000;
    const OWN: &str = "drivers/drv-1/location";

    fn inbound(version: Version, grants: Grants, limits: &Limits) -> Inbound {
        let identity = identity("drv-1", grants);
        Inbound::new(version, identity, limits, || NOW_MS)
    }

    fn driver(version: Version) -> Inbound {
        inbound(version, Grants::driver(), &Config::default().limits)
    }

    fn location(lat: f64) -> String {
        format!(
            r#"{{"id":"drv-1","lat":{lat},"lon":24.9,"heading":0,"speed":0,"accuracy":3,"status":"available","seq":1,"ts":{NOW_MS}}}"#
        )
    }

    type Checked = (Result<Option<Packet>, End>, Vec<u8>, Tally);

    /// What checking the frame `bytes` came to: the result, the answer written, the tally.
    fn check(i: &mut Inbound, bytes: &[u8]) -> Checked {
        let header = frame::publish_qos_pkid(bytes);
        let (mut out, mut tally) = (BytesMut::new(), Tally::default());
        let r = i.check(wire::read(i.version, bytes), header, &mut out, &mut tally);
        (r, out.to_vec(), tally)
    }

    /// Whether `r` ends the session as a protocol error for `why`.
    fn broke(r: &Result<Option<Packet>, End>, why: &str) -> bool {
        matches!(r, Err(End::Protocol(_, w)) if w == why)
    }

    #[test]
    fn a_drivers_own_valid_location_goes_to_the_router() {
        for version in [Version::V311, Version::V5] {
            let mut i = driver(version);
            let (r, out, tally) = check(&mut i, &publish(version, 2, 3, OWN, &location(60.1)));
            let Ok(Some(Packet::Publish(p, None))) = r else {
                panic!("{r:?}")
            };
            assert_eq!(&p.topic[..], OWN.as_bytes());
            assert!(out.is_empty());
            assert_eq!(
                tally,
                Tally {
                    publishes: 1,
                    ..Tally::default()
                }
            );
            // A QoS 2 publish forwarded: its PUBREL goes to the router too.
            assert!(i.acks.pubrel(3));
        }
    }

    #[test]
    fn a_topic_mqtt_forbids_ends_the_session_uncharged() {
        let (r, _, tally) = check(
            &mut driver(Version::V5),
            &publish(Version::V5, 0, 0, "a/+", "x"),
        );
        assert!(broke(&r, "invalid topic name in PUBLISH"), "{r:?}");
        assert_eq!(
            tally,
            Tally {
                invalid_topic: 1,
                ..Tally::default()
            }
        );
    }

    #[test]
    fn a_denied_publish_closes_a_311_session_and_is_refused_in_5() {
        let other = "drivers/drv-2/location";
        let (r, out, tally) = check(
            &mut driver(Version::V311),
            &publish(Version::V311, 1, 9, other, "x"),
        );
        assert!(
            matches!(r, Err(End::PolicyViolation(ref t)) if t == other),
            "{r:?}"
        );
        assert!(out.is_empty());
        assert_eq!((tally.publishes, tally.policy_denied), (1, 1));
        let mut i = driver(Version::V5);
        let answers = [
            vec![],
            vec![0x40, 4, 0, 9, 0x87, 0],
            vec![0x50, 4, 0, 9, 0x87, 0],
        ];
        for (qos, answer) in answers.into_iter().enumerate() {
            let (r, out, _) = check(&mut i, &publish(Version::V5, qos as u8, 9, other, "x"));
            assert!(matches!(r, Ok(None)), "{r:?}");
            assert_eq!(out, answer, "QoS {qos}");
        }
        assert!(
            !i.acks.pubrel(9),
            "a refused QoS 2 publish owes the router no PUBREL"
        );
    }

    #[test]
    fn packet_id_0_topic_aliases_and_bad_utf8_are_protocol_errors() {
        let refused = |r: &Result<Option<Packet>, End>, want: Violation| matches!(r, Err(End::Protocol(v, _)) if *v == want);
        for version in [Version::V311, Version::V5] {
            let mut i = driver(version);
            let (r, _, _) = check(&mut i, &subscribe(version, 0, &["a/b"]));
            assert!(refused(&r, Violation::Protocol), "{r:?}");
            let (r, _, _) = check(&mut i, &unsubscribe(version, 0, &["a/b"]));
            assert!(refused(&r, Violation::Protocol), "{r:?}");
        }
        for (alias, want) in [(0u16, Violation::Protocol), (1, Violation::TopicAlias)] {
            let mut body = Vec::new();
            wire::put_str(&mut body, "drivers/drv-1/status");
            body.extend_from_slice(&[3, 0x23]);
            body.extend_from_slice(&alias.to_be_bytes());
            body.push(b'x');
            let (r, _, _) = check(&mut driver(Version::V5), &wire::frame(0x30, body));
            assert!(refused(&r, want), "alias {alias}: {r:?}");
        }
        let mut body = Vec::new();
        body.extend_from_slice(&[0, 3, b'a', b'/', 0xFF, 0, b'x']);
        let (r, _, tally) = check(&mut driver(Version::V5), &wire::frame(0x30, body));
        assert!(refused(&r, Violation::Malformed), "{r:?}");
        assert_eq!((tally.publishes, tally.invalid_topic), (0, 1));
    }

    #[test]
    fn an_invalid_location_is_dropped_yet_acked() {
        let bad = location(91.0);
        for (version, qos, answer) in [
            // 3.1.1 has no negative ack: a success, or the publisher resends forever.
            (Version::V311, 1, vec![0x40, 2, 0, 4]),
            (Version::V311, 2, vec![0x50, 2, 0, 4]),
            (Version::V5, 1, vec![0x40, 4, 0, 4, 0x99, 0]),
            (Version::V5, 2, vec![0x50, 4, 0, 4, 0x99, 0]),
        ] {
            let (r, out, tally) = check(&mut driver(version), &publish(version, qos, 4, OWN, &bad));
            assert!(matches!(r, Ok(None)), "{r:?}");
            assert_eq!(out, answer, "{version:?} QoS {qos}");
            assert_eq!((tally.publishes, tally.invalid_payload), (1, 1));
        }
        let limits = Limits {
            validate_locations: false,
            ..Config::default().limits
        };
        let mut unchecked = inbound(Version::V5, Grants::driver(), &limits);
        let (r, _, _) = check(&mut unchecked, &publish(Version::V5, 0, 0, OWN, &bad));
        assert!(matches!(r, Ok(Some(_))), "{r:?}");
    }

    #[test]
    fn a_publish_is_judged_topic_first_then_policy_then_payload() {
        let i = driver(Version::V5);
        assert_eq!(
            i.verdict(b"drivers/#", b""),
            Verdict::BadTopic(TopicError::Protocol)
        );
        assert_eq!(
            i.verdict(b"drivers/\xff", b""),
            Verdict::BadTopic(TopicError::Malformed)
        );
        assert_eq!(i.verdict(b"drivers/drv-2/location", b"{}"), Verdict::Denied);
        let shape = Verdict::Invalid(validation::Invalid::Shape);
        assert_eq!(i.verdict(OWN.as_bytes(), b"{}"), shape);
        assert_eq!(i.verdict(b"drivers/drv-1/status", b"{}"), Verdict::Accept);
    }

    #[test]
    fn refused_filters_are_answered_in_each_versions_words() {
        use SubscribeReasonCode::{Failure, NotAuthorized, TopicFilterInvalid};
        for (version, denied) in [
            (Version::V5, [NotAuthorized, TopicFilterInvalid]),
            (Version::V311, [Failure; 2]),
        ] {
            let mut i = inbound(version, Grants::rider(), &Config::default().limits);
            let filters = ["#", "drivers/+/location", "a/#/b"];
            let (r, out, tally) = check(&mut i, &subscribe(version, 5, &filters));
            let Ok(Some(Packet::Subscribe(s, None))) = r else {
                panic!("{r:?}")
            };
            assert_eq!(s.filters.len(), 1);
            assert!(out.is_empty());
            assert_eq!((tally.subscriptions, tally.subscriptions_refused), (1, 2));
            let granted = SubscribeReasonCode::QoS1;
            let ack = SubAck {
                pkid: 5,
                return_codes: vec![granted],
            };
            let Packet::SubAck(ack, _) = i.acks.patch(Packet::SubAck(ack, None)) else {
                panic!("not a SUBACK")
            };
            assert_eq!(ack.return_codes, [denied[0], granted, denied[1]]);
            // Nothing left for the router: the gateway answers alone.
            let (r, out, _) = check(&mut i, &subscribe(version, 6, &["#"]));
            assert!(matches!(r, Ok(None)), "{r:?}");
            let code = if version == Version::V5 { 0x87 } else { 0x80 };
            assert_eq!(out.last(), Some(&code));
        }
    }

    #[test]
    fn unsubscribe_is_answered_here_and_still_forwarded() {
        let mut i = inbound(Version::V5, Grants::service(), &Config::default().limits);
        let (r, _, _) = check(&mut i, &subscribe(Version::V5, 1, &["drivers/a/#"]));
        assert!(matches!(r, Ok(Some(_))), "{r:?}");
        let (r, out, _) = check(
            &mut i,
            &unsubscribe(Version::V5, 2, &["drivers/a/#", "x/#"]),
        );
        assert!(matches!(r, Ok(Some(Packet::Unsubscribe(..)))), "{r:?}");
        assert_eq!(out, [0xB0, 5, 0, 2, 0, 0x00, 0x11]);
    }

    #[test]
    fn acks_from_the_client_must_follow_what_was_sent() {
        let mut i = driver(Version::V311);
        let (r, _, _) = check(&mut i, &[0x40, 2, 0, 1]);
        assert!(broke(&r, "PUBACK out of order or unsolicited"), "{r:?}");
        i.acks.sent(1, 1);
        i.acks.sent(2, 2);
        let forwarded = |c: Checked| matches!(c, (Ok(Some(_)), ref out, _) if out.is_empty());
        assert!(forwarded(check(&mut i, &[0x40, 2, 0, 1])));
        assert!(forwarded(check(&mut i, &[0x50, 2, 0, 2])));
        assert!(forwarded(check(&mut i, &[0x70, 2, 0, 2])));
        let (r, _, _) = check(&mut i, &[0x70, 2, 0, 2]);
        assert!(broke(&r, "PUBCOMP out of order or unsolicited"), "{r:?}");
        let (r, _, _) = check(&mut i, &[0x50, 2, 0, 3]);
        assert!(broke(&r, "PUBREC out of order or unsolicited"), "{r:?}");
        // A PUBREL nobody waits for is a resend: the gateway completes it.
        let (r, out, _) = check(&mut i, &[0x62, 2, 0, 8]);
        assert!(matches!(r, Ok(None)), "{r:?}");
        assert_eq!(out, [0x70, 2, 0, 8]);
    }

    #[test]
    fn pings_disconnects_and_a_second_connect() {
        let mut i = driver(Version::V5);
        let (r, out, _) = check(&mut i, &[0xC0, 0]);
        assert!(matches!(r, Ok(None)), "{r:?}");
        assert_eq!(out, frame::PINGRESP);
        let (r, _, _) = check(&mut i, &[0xE0, 0]);
        assert!(matches!(r, Err(End::ClientDisconnect)), "{r:?}");
        let (r, _, _) = check(&mut i, &[0xE0, 1, 0x04]);
        assert!(matches!(r, Err(End::ClientDisconnectWithWill)), "{r:?}");
        let (r, _, _) = check(
            &mut i,
            &wire::connect(Version::V5, true, "drv-1", None, &[]),
        );
        assert!(broke(&r, "second CONNECT"), "{r:?}");
    }
}
