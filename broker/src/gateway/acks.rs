//! The acks a session owes the router, and the ones the router owes the client.
//!
//! rumqttd drops a link whose client acks out of order or acks what was never sent, and a
//! dropped link touched again panics the router. [`AckTracker`] mirrors what the router
//! expects, so a session closes such a client itself (with its will) before the router
//! sees the ack. It also remembers the SUBSCRIBE filters the gateway refused: the router
//! never saw them, so its SUBACK lacks their codes until [`AckTracker::patch`] puts them back.

use rumqttd::protocol::{Packet, SubscribeReasonCode};
use std::collections::{HashMap, HashSet, VecDeque};

/// Positions in a SUBSCRIBE of the filters the gateway refused, with the code of each.
pub(super) type Denied = Vec<(usize, SubscribeReasonCode)>;

/// Mirrors the router's expectations of acks, in both directions.
#[derive(Debug, Default)]
pub(super) struct AckTracker {
    /// QoS 1/2 publishes sent to the client, awaiting PUBACK/PUBREC, in order.
    inflight: VecDeque<u16>,
    /// PUBRECs forwarded, awaiting the client's PUBCOMP, in order.
    pubrels: VecDeque<u16>,
    /// QoS 2 publishes from the client whose PUBREL is still due.
    incoming_qos2: HashSet<u16>,
    /// SUBSCRIBE pkid -> the filters the gateway refused in it.
    denied_filters: HashMap<u16, Denied>,
}

impl AckTracker {
    /// A publish went to the client at `qos` with `pkid`; QoS 0 asks no ack.
    pub(super) fn sent(&mut self, qos: u8, pkid: u16) {
        if qos > 0 {
            self.inflight.push_back(pkid);
        }
    }

    /// The client's PUBACK: whether it acks the oldest publish in flight.
    pub(super) fn puback(&mut self, pkid: u16) -> bool {
        self.inflight.pop_front() == Some(pkid)
    }

    /// The client's PUBREC: whether it acks the oldest publish in flight. If so, its
    /// PUBCOMP is due next.
    pub(super) fn pubrec(&mut self, pkid: u16) -> bool {
        if self.inflight.pop_front() != Some(pkid) {
            return false;
        }
        self.pubrels.push_back(pkid);
        true
    }

    /// The client's PUBCOMP: whether it completes the oldest PUBREC forwarded.
    pub(super) fn pubcomp(&mut self, pkid: u16) -> bool {
        self.pubrels.pop_front() == Some(pkid)
    }

    /// A QoS 2 publish from the client went to the router, which now waits for its PUBREL.
    pub(super) fn received_qos2(&mut self, pkid: u16) {
        self.incoming_qos2.insert(pkid);
    }

    /// The client's PUBREL: whether the router waits for it. Otherwise it is a resend for a
    /// message already completed (or one the gateway refused), which the gateway answers.
    pub(super) fn pubrel(&mut self, pkid: u16) -> bool {
        self.incoming_qos2.remove(&pkid)
    }

    /// Some filters of SUBSCRIBE `pkid` were refused; the rest went to the router.
    pub(super) fn refused_filters(&mut self, pkid: u16, denied: Denied) {
        if !denied.is_empty() {
            self.denied_filters.insert(pkid, denied);
        }
    }

    /// Rewrites router acks into their 3.1.1 form (no properties) and re-inserts refused
    /// filters into the SUBACK at their places.
    pub(super) fn patch(&mut self, packet: Packet) -> Packet {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttd::protocol::{QoS, SubAck, SubAckProperties};

    #[test]
    fn acks_must_come_in_the_order_publishes_went_out() {
        let mut t = AckTracker::default();
        t.sent(0, 0);
        t.sent(1, 1);
        t.sent(2, 2);
        // QoS 0 is not waited for: the first ack due is pkid 1's.
        assert!(t.puback(1));
        assert!(t.pubrec(2));
        assert!(t.pubcomp(2));
        assert!(!t.puback(3), "nothing is in flight any more");
        assert!(!t.pubcomp(2), "completed already");
    }

    #[test]
    fn an_ack_out_of_order_is_refused() {
        let mut t = AckTracker::default();
        t.sent(1, 1);
        t.sent(1, 2);
        assert!(!t.puback(2));
        let mut t = AckTracker::default();
        t.sent(2, 5);
        assert!(!t.pubcomp(5), "PUBCOMP before PUBREC");
        assert!(!t.pubrec(6));
    }

    #[test]
    fn a_pubrel_is_due_once_per_qos2_publish_received() {
        let mut t = AckTracker::default();
        t.received_qos2(9);
        assert!(t.pubrel(9));
        assert!(!t.pubrel(9), "a resend is answered by the gateway");
        assert!(!t.pubrel(10));
    }

    #[test]
    fn refused_filters_go_back_into_the_suback_at_their_places() {
        let mut t = AckTracker::default();
        t.refused_filters(4, vec![(0, SubscribeReasonCode::NotAuthorized)]);
        t.refused_filters(4, Vec::new());
        t.refused_filters(
            7,
            vec![
                (1, SubscribeReasonCode::Failure),
                (3, SubscribeReasonCode::QuotaExceeded),
            ],
        );
        let suback = |pkid, return_codes| {
            Packet::SubAck(
                SubAck { pkid, return_codes },
                Some(SubAckProperties {
                    reason_string: None,
                    user_properties: vec![],
                }),
            )
        };
        let granted = SubscribeReasonCode::Success(QoS::AtLeastOnce);
        let Packet::SubAck(ack, None) = t.patch(suback(7, vec![granted, granted])) else {
            panic!("not a SUBACK without properties");
        };
        assert_eq!(
            ack.return_codes,
            [
                granted,
                SubscribeReasonCode::Failure,
                granted,
                SubscribeReasonCode::QuotaExceeded
            ]
        );
        // Taken once: a later SUBACK with the same pkid is the router's own.
        let Packet::SubAck(ack, _) = t.patch(suback(7, vec![granted])) else {
            panic!("not a SUBACK");
        };
        assert_eq!(ack.return_codes, [granted]);
        let Packet::SubAck(ack, _) = t.patch(suback(4, vec![granted])) else {
            panic!("not a SUBACK");
        };
        assert_eq!(
            ack.return_codes,
            [SubscribeReasonCode::NotAuthorized, granted]
        );
    }
}
