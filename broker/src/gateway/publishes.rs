//! The checks a client's PUBLISH passes before the router sees it, and the answers to the
//! ones it does not.
//!
//! In order: the MQTT 5 properties (a Topic Alias is resolved first, as the topic is what
//! everything after judges; a Subscription Identifier or a wildcard Response Topic is a
//! protocol error; anything that looks like the gateway's own marks is removed), our
//! Receive Maximum, the topic name, the account's policy, the location rules, and a
//! Payload Format Indicator of 1 on a payload that is not UTF-8. What passes goes to the
//! router with its properties (marked for No Local and Retain As Published when a
//! session needs it, see `marks.rs`); what does not is acked here with MQTT 5's reason
//! code, or closes a 3.1.1 connection where 3.1.1 has no way to say no.

use super::aliases::AliasError;
use super::codec::{Version, Violation};
use super::end::End;
use super::frame::{self, TopicError};
use super::inbound::{Inbound, Tally, GRANTED_MAX};
use super::marks;
use super::outbound::encode;
use crate::throttle::Throttle;
use bytes::{Bytes, BytesMut};
use fleetcast_proto::location as validation;
use fleetcast_proto::time::unix_now;
use rumqttd::protocol::{
    Packet, PubAck, PubAckProperties, PubAckReason, PubRec, PubRecProperties, PubRecReason,
    Publish, PublishProperties,
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
    /// Payload Format Indicator 1 (UTF-8) on a payload that is not.
    NotUtf8,
    /// For the router.
    Accept,
}

impl Inbound {
    /// What becomes of a PUBLISH to `topic` carrying `payload`, in the order it is checked.
    pub(super) fn verdict(&mut self, topic: &[u8], payload: &[u8]) -> Verdict {
        if self.granted.as_deref() != Some(topic) {
            if let Some(e) = frame::topic_name_error(topic) {
                return Verdict::BadTopic(e);
            }
            if !self.identity.may_publish(topic) {
                return Verdict::Denied;
            }
            if topic.len() <= GRANTED_MAX {
                let granted = self.granted.get_or_insert_with(Vec::new);
                granted.clear();
                granted.extend_from_slice(topic);
            }
        }
        if !self.validate_locations {
            return Verdict::Accept;
        }
        match validation::check(topic, payload, self.now_ms()) {
            Ok(()) => Verdict::Accept,
            Err(why) => Verdict::Invalid(why),
        }
    }

    /// Resolves the Topic Alias and checks what a client may not put in a PUBLISH's
    /// properties.
    fn properties(&mut self, p: &mut Publish, props: &mut PublishProperties) -> Result<(), End> {
        let protocol = |why: &str| End::Protocol(Violation::Protocol, why.to_owned());
        if let Some(alias) = props.topic_alias.take() {
            self.aliases
                .resolve(&mut p.topic, alias)
                .map_err(|e| match e {
                    AliasError::Protocol(why) => protocol(why),
                    AliasError::AboveMaximum => End::Protocol(
                        Violation::TopicAlias,
                        "Topic Alias above the maximum granted".to_owned(),
                    ),
                })?;
        }
        if !props.subscription_identifiers.is_empty() {
            return Err(protocol("Subscription Identifier in PUBLISH"));
        }
        if props
            .response_topic
            .as_ref()
            .is_some_and(|t| frame::topic_name_error(t.as_bytes()).is_some())
        {
            return Err(protocol("Response Topic is not a topic name"));
        }
        marks::scrub(props);
        Ok(())
    }

    pub(super) fn publish(
        &mut self,
        mut p: Publish,
        mut props: Option<PublishProperties>,
        header: Option<(u8, u16)>,
        out: &mut BytesMut,
        tally: &mut Tally,
        to_router: &mut Vec<Packet>,
    ) -> Result<(), End> {
        if let Some(pr) = props.as_mut() {
            self.properties(&mut p, pr)?;
        }
        let qos = header.map_or(0, |(q, _)| q);
        if self.version == Version::V5
            && qos > 0
            && self.acks.incoming_open() >= usize::from(self.receive_maximum)
        {
            let why = "more QoS 1/2 publishes in flight than the Receive Maximum";
            return Err(End::Protocol(Violation::ReceiveMaximum, why.to_owned()));
        }
        let mut verdict = self.verdict(&p.topic, &p.payload);
        let utf8_said = props
            .as_ref()
            .is_some_and(|pr| pr.payload_format_indicator == Some(1));
        if verdict == Verdict::Accept && utf8_said && std::str::from_utf8(&p.payload).is_err() {
            verdict = Verdict::NotUtf8;
        }
        let reserved = matches!(verdict, Verdict::BadTopic(TopicError::Reserved));
        if reserved || !matches!(verdict, Verdict::BadTopic(_)) {
            // Received, so charged to the quota, granted or not.
            tally.publishes += 1;
        }
        let (refusal, why) = match verdict {
            Verdict::Accept => {
                match header {
                    // Through a lane, whose publishes the router does not ack: the gateway
                    // does, once the read's batch is in the lane (the write buffer is
                    // flushed after the push, `intake.rs`).
                    Some((1, pkid)) if self.lane => {
                        let ack = PubAck {
                            pkid,
                            reason: PubAckReason::Success,
                        };
                        encode(self.version, Packet::PubAck(ack, None), out)?;
                    }
                    Some((q, pkid)) => self.acks.received(q, pkid),
                    None => {}
                }
                // Exact-size copies: a slice would pin the whole read buffer in the router.
                (p.topic, p.payload) = own_copy(&p.topic, &p.payload);
                let origin = self
                    .subscriptions
                    .any_no_local()
                    .then(|| self.identity.client_id());
                marks::mark(&mut props, origin, p.retain && self.mark_retained);
                if self.version == Version::V311 {
                    props = None;
                }
                to_router.push(Packet::Publish(p, props));
                return Ok(());
            }
            // A `$` topic is well-formed MQTT: the server keeps such topics to itself
            // (rumqttd drops a link that subscribes to one), so it is refused like a topic
            // the policy does not grant, and the connection stays, as mosquitto keeps it.
            Verdict::BadTopic(TopicError::Reserved) => {
                tally.invalid_topic += 1;
                log_reserved(&p.topic);
                (
                    PubAckReason::TopicNameInvalid,
                    "topics starting with $ are the server's".to_owned(),
                )
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
            Verdict::Denied => {
                tally.policy_denied += 1;
                log_denied(&p.topic);
                if self.version == Version::V311 {
                    // MQTT 3.1.1 has no negative PUBACK: the connection is closed.
                    let topic = String::from_utf8_lossy(&p.topic).into_owned();
                    return Err(End::PolicyViolation(topic));
                }
                (
                    PubAckReason::NotAuthorized,
                    "topic not granted to this account".to_owned(),
                )
            }
            Verdict::Invalid(why) => {
                // Dropped, counted, the connection kept; the publisher still gets its ack
                // (3.1.1 has no negative one) so it does not resend.
                tally.invalid_payload += 1;
                log_invalid(&p.topic, why);
                (
                    PubAckReason::PayloadFormatInvalid,
                    format!("invalid location: {why}"),
                )
            }
            Verdict::NotUtf8 => {
                tally.invalid_payload += 1;
                let why = "Payload Format Indicator 1 on a payload that is not UTF-8";
                (PubAckReason::PayloadFormatInvalid, why.to_owned())
            }
        };
        let why = (self.problem_info).then_some(why);
        if let Some(ack) = publish_refusal(self.version, header, refusal, why) {
            encode(self.version, ack, out)?;
        }
        Ok(())
    }
}

/// The ack of a publish that was dropped: with `reason` (and the Reason String `why`, if
/// the client welcomes one) in MQTT 5, as a success in 3.1.1 (it has no negative ack, and
/// a publisher told nothing would resend forever). None at QoS 0, which has no ack.
pub(super) fn publish_refusal(
    version: Version,
    header: Option<(u8, u16)>,
    reason: PubAckReason,
    why: Option<String>,
) -> Option<Packet> {
    let v5 = version == Version::V5;
    let why = why.filter(|_| v5);
    match header {
        Some((1, pkid)) => {
            let reason = if v5 { reason } else { PubAckReason::Success };
            let props = why.map(|w| PubAckProperties {
                reason_string: Some(w),
                user_properties: Vec::new(),
            });
            Some(Packet::PubAck(PubAck { pkid, reason }, props))
        }
        Some((2, pkid)) => {
            let reason = match (v5, reason) {
                (false, _) => PubRecReason::Success,
                (true, PubAckReason::NotAuthorized) => PubRecReason::NotAuthorized,
                (true, PubAckReason::TopicNameInvalid) => PubRecReason::TopicNameInvalid,
                (true, _) => PubRecReason::PayloadFormatInvalid,
            };
            let props = why.map(|w| PubRecProperties {
                reason_string: Some(w),
                user_properties: Vec::new(),
            });
            Some(Packet::PubRec(PubRec { pkid, reason }, props))
        }
        _ => None,
    }
}

/// Copies of `topic` and `payload` in one allocation of their exact size, shared by both.
///
/// Why one: a `Bytes` made from a `Vec` (as `Bytes::copy_from_slice` makes it) allocates
/// again the first time it is cloned, and the router clones both for every filter's log:
/// two copies were four allocations per message (two of them on the router's thread),
/// one buffer split in two is two (the buffer and the count the halves share).
fn own_copy(topic: &[u8], payload: &[u8]) -> (Bytes, Bytes) {
    let mut both = BytesMut::with_capacity(topic.len() + payload.len());
    both.extend_from_slice(topic);
    both.extend_from_slice(payload);
    let topic = both.split_to(topic.len()).freeze();
    (topic, both.freeze())
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
    use crate::gateway::wire;
    use crate::policy::Grants;

    fn open(version: Version) -> Inbound {
        let grants = Grants {
            publish: vec!["#".into()],
            subscribe: vec!["#".into()],
        };
        let limits = Config::default().limits;
        Inbound::new(version, wire::identity("c-1", grants), &limits, || 0)
    }

    /// An MQTT 5 PUBLISH of `topic` at `qos` with raw `props` (property bytes).
    fn publish(qos: u8, pkid: u16, topic: &str, props: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        wire::put_str(&mut body, topic);
        if qos > 0 {
            body.extend_from_slice(&pkid.to_be_bytes());
        }
        body.push(props.len() as u8);
        body.extend_from_slice(props);
        body.extend_from_slice(payload);
        wire::frame(0x30 | (qos << 1), body)
    }

    fn check(i: &mut Inbound, bytes: &[u8]) -> (Result<(), End>, Vec<u8>, Vec<Packet>) {
        let header = frame::publish_qos_pkid(bytes);
        let (mut out, mut to_router) = (BytesMut::new(), Vec::new());
        let packet = wire::read(i.version, bytes);
        let r = i.check(
            packet,
            header,
            &mut out,
            &mut Tally::default(),
            &mut to_router,
        );
        (r, out.to_vec(), to_router)
    }

    fn protocol(r: &Result<(), End>, want: Violation) -> bool {
        matches!(r, Err(End::Protocol(v, _)) if *v == want)
    }

    #[test]
    fn properties_go_to_the_router_and_an_alias_is_resolved_first() {
        let mut i = open(Version::V5);
        // Topic Alias 3, a user property, content type "t".
        let props = [0x23, 0, 3, 0x26, 0, 1, b'k', 0, 1, b'v', 0x03, 0, 1, b't'];
        let (r, _, sent) = check(&mut i, &publish(0, 0, "a/b", &props, b"x"));
        assert!(r.is_ok(), "{r:?}");
        let Some(Packet::Publish(p, Some(pr))) = sent.last() else {
            panic!("{sent:?}")
        };
        assert_eq!(&p.topic[..], b"a/b");
        assert_eq!(pr.topic_alias, None, "the router knows nothing of aliases");
        assert_eq!(pr.user_properties, [("k".to_owned(), "v".to_owned())]);
        assert_eq!(pr.content_type.as_deref(), Some("t"));
        let (r, _, sent) = check(&mut i, &publish(0, 0, "", &[0x23, 0, 3], b"y"));
        assert!(r.is_ok(), "{r:?}");
        assert!(matches!(sent.last(), Some(Packet::Publish(p, _)) if &p.topic[..] == b"a/b"));
        let (r, _, _) = check(&mut i, &publish(0, 0, "", &[0x23, 0, 4], b"y"));
        assert!(
            protocol(&r, Violation::Protocol),
            "alias 4 never set: {r:?}"
        );
        // 3.1.1 subscribers get none of it: the router is not even given properties.
        let mut old = open(Version::V311);
        let (_, _, sent) = check(&mut old, &wire::publish(Version::V311, 0, 0, "a/b", "x"));
        assert!(matches!(sent.last(), Some(Packet::Publish(_, None))));
    }

    #[test]
    fn what_a_client_may_not_say_in_a_publish() {
        let mut i = open(Version::V5);
        let (r, _, _) = check(&mut i, &publish(0, 0, "a", &[0x0B, 1], b"x"));
        assert!(
            protocol(&r, Violation::Protocol),
            "a Subscription Identifier: {r:?}"
        );
        let (r, _, _) = check(&mut i, &publish(0, 0, "a", &[0x08, 0, 1, b'#'], b"x"));
        assert!(
            protocol(&r, Violation::Protocol),
            "a wildcard Response Topic: {r:?}"
        );
        // Payload Format Indicator 1 on bytes that are not UTF-8: refused, not closed.
        let (r, out, sent) = check(&mut i, &publish(1, 5, "a", &[0x01, 1], b"\xff"));
        assert!(r.is_ok() && sent.is_empty(), "{r:?}");
        assert_eq!(&out[..5], [0x40, out[1], 0, 5, 0x99]);
    }

    #[test]
    fn our_receive_maximum_bounds_what_the_client_has_in_flight() {
        let mut i = open(Version::V5);
        i.receive_maximum = 2;
        for pkid in 1..=2 {
            let (r, _, _) = check(&mut i, &publish(1, pkid, "a", &[], b"x"));
            assert!(r.is_ok(), "{r:?}");
        }
        let (r, _, _) = check(&mut i, &publish(1, 3, "a", &[], b"x"));
        assert!(protocol(&r, Violation::ReceiveMaximum), "{r:?}");
        // QoS 0 is never in flight.
        let (r, _, _) = check(&mut i, &publish(0, 0, "a", &[], b"x"));
        assert!(r.is_ok(), "{r:?}");
    }

    #[test]
    fn a_disconnect_may_change_the_session_expiry_but_not_from_0() {
        let bye = |expiry: u32| {
            let mut body = vec![0x00, 5, 0x11];
            body.extend_from_slice(&expiry.to_be_bytes());
            wire::frame(0xE0, body)
        };
        let mut i = open(Version::V5);
        let (mut out, mut sent) = (BytesMut::new(), Vec::new());
        let packet = wire::read(Version::V5, &bye(60));
        let r = i.check(packet, None, &mut out, &mut Tally::default(), &mut sent);
        assert!(protocol(&r, Violation::Protocol), "{r:?}");
        i.session_expiry = 60;
        let packet = wire::read(Version::V5, &bye(0));
        let r = i.check(packet, None, &mut out, &mut Tally::default(), &mut sent);
        assert!(matches!(r, Err(End::ClientDisconnect)), "{r:?}");
        assert_eq!(i.session_expiry, 0);
    }

    #[test]
    fn topic_and_payload_are_copied_into_one_buffer_they_share() {
        let read = bytes::Bytes::from_static(b"xxdrivers/drv-1/location{\"lat\":1}yy");
        let (topic, payload) = own_copy(&read[2..24], &read[24..33]);
        assert_eq!(&topic[..], b"drivers/drv-1/location");
        assert_eq!(&payload[..], b"{\"lat\":1}");
        // One buffer: the payload starts where the topic ends, and neither points into
        // the read buffer (which it would pin).
        assert_eq!(topic.as_ptr().wrapping_add(topic.len()), payload.as_ptr());
        assert!(!read.as_ptr_range().contains(&topic.as_ptr()));
        // A clone shares the bytes: no copy.
        assert_eq!(payload.clone().as_ptr(), payload.as_ptr());
    }
}
