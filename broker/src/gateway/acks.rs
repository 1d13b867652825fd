//! The acks a session owes the router, and the ones the router owes the client.
//!
//! rumqttd drops a link whose client acks out of order or acks what was never sent, and a
//! dropped link touched again panics the router. [`AckTracker`] mirrors what the router
//! expects, so a session closes such a client itself (with its will) before the router
//! sees the ack.
//!
//! Some publishes the router sends never reach the client: MQTT 5 says to drop one larger
//! than the client's Maximum Packet Size, one of the client's own on a No Local
//! subscription, a retained one on a subscription with Retain Handling 2. The router still
//! waits for their acks, in order, so the tracker acks them itself ([`AckTracker::dropped`]):
//! as soon as every publish before them is acked, into [`AckTracker::take_for_router`].
//!
//! It also counts what is in flight each way: the client's QoS 1/2 publishes not yet
//! completed (our Receive Maximum bounds them) and ours to the client (its Receive Maximum
//! bounds those).

use rumqttd::protocol::{
    Packet, PubAck, PubAckReason, PubComp, PubCompReason, PubRec, PubRecReason, SubAck,
};
use std::collections::{HashSet, VecDeque};

/// A QoS 1/2 publish sent to the client, or dropped for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Outgoing {
    pkid: u16,
    qos2: bool,
    /// Never written: the gateway acks it to the router.
    dropped: bool,
}

/// Mirrors the router's expectations of acks, in both directions.
#[derive(Debug, Default)]
pub(super) struct AckTracker {
    /// QoS 1/2 publishes sent to the client (or dropped), awaiting PUBACK/PUBREC, in order.
    inflight: VecDeque<Outgoing>,
    /// PUBRECs the router got, awaiting PUBCOMP, in order; `true` for the gateway's own.
    pubrels: VecDeque<(u16, bool)>,
    /// The router's PUBRELs still to come, in the order of the PUBRECs; `true` for those
    /// answering the gateway's own PUBREC (never written to the client).
    rels_due: VecDeque<(u16, bool)>,
    /// QoS 1/2 publishes written to the client and not yet completed by it.
    owed_by_client: usize,
    /// QoS 2 publishes from the client whose PUBREL is still due.
    incoming_qos2: HashSet<u16>,
    /// QoS 1/2 publishes from the client the router has not yet completed.
    incoming_open: usize,
    /// The gateway's own acks for dropped publishes, for the router, in order.
    for_router: Vec<Packet>,
    /// SUBACKs waiting for the router: how many of its SUBACKs each still waits for, in
    /// the order the SUBSCRIBEs went (None: the gateway's own re-subscriptions, answered
    /// to no one).
    subacks: VecDeque<(usize, Option<SubAck>)>,
}

impl AckTracker {
    /// A publish went to the client at `qos` with `pkid`; QoS 0 asks no ack.
    pub(super) fn sent(&mut self, qos: u8, pkid: u16) {
        if qos > 0 {
            self.owed_by_client += 1;
            self.inflight.push_back(Outgoing {
                pkid,
                qos2: qos == 2,
                dropped: false,
            });
        }
    }

    /// A publish at `qos` with `pkid` was dropped for the client: the gateway acks it to
    /// the router once the publishes before it are acked.
    pub(super) fn dropped(&mut self, qos: u8, pkid: u16) {
        if qos > 0 {
            self.inflight.push_back(Outgoing {
                pkid,
                qos2: qos == 2,
                dropped: true,
            });
            self.settle();
        }
    }

    /// Acks whatever dropped publishes are now first in line.
    fn settle(&mut self) {
        while let Some(&Outgoing {
            pkid,
            qos2,
            dropped: true,
        }) = self.inflight.front()
        {
            self.inflight.pop_front();
            if qos2 {
                let rec = PubRec {
                    pkid,
                    reason: PubRecReason::Success,
                };
                self.for_router.push(Packet::PubRec(rec, None));
                self.pubrels.push_back((pkid, true));
                self.rels_due.push_back((pkid, true));
            } else {
                let ack = PubAck {
                    pkid,
                    reason: PubAckReason::Success,
                };
                self.for_router.push(Packet::PubAck(ack, None));
            }
        }
        while let Some(&(pkid, true)) = self.pubrels.front() {
            self.pubrels.pop_front();
            let comp = PubComp {
                pkid,
                reason: PubCompReason::Success,
            };
            self.for_router.push(Packet::PubComp(comp, None));
        }
    }

    /// The gateway's own acks due to the router, in the order they must follow the
    /// client's.
    pub(super) fn take_for_router(&mut self) -> Vec<Packet> {
        std::mem::take(&mut self.for_router)
    }

    /// QoS 1/2 publishes the client has not completed yet (its Receive Maximum bounds them).
    pub(super) fn owed_by_client(&self) -> usize {
        self.owed_by_client
    }

    /// The client's PUBACK: whether it acks the oldest publish in flight.
    pub(super) fn puback(&mut self, pkid: u16) -> bool {
        match self.inflight.front() {
            Some(o) if o.pkid == pkid && !o.qos2 => {
                self.inflight.pop_front();
                self.owed_by_client = self.owed_by_client.saturating_sub(1);
                self.settle();
                true
            }
            _ => false,
        }
    }

    /// The client's PUBREC: whether it acks the oldest publish in flight. If so, its
    /// PUBCOMP is due next.
    pub(super) fn pubrec(&mut self, pkid: u16) -> bool {
        match self.inflight.front() {
            Some(o) if o.pkid == pkid && o.qos2 => {
                self.inflight.pop_front();
                self.pubrels.push_back((pkid, false));
                self.rels_due.push_back((pkid, false));
                self.settle();
                true
            }
            _ => false,
        }
    }

    /// The client's PUBCOMP: whether it completes the oldest PUBREC forwarded.
    pub(super) fn pubcomp(&mut self, pkid: u16) -> bool {
        if self.pubrels.front() != Some(&(pkid, false)) {
            return false;
        }
        self.pubrels.pop_front();
        self.owed_by_client = self.owed_by_client.saturating_sub(1);
        self.settle();
        true
    }

    /// A PUBREL from the router: whether it is for the client (not the answer to a PUBREC
    /// the gateway sent for a dropped publish).
    pub(super) fn router_pubrel(&mut self, pkid: u16) -> bool {
        match self.rels_due.front() {
            Some(&(p, dropped)) if p == pkid => {
                self.rels_due.pop_front();
                !dropped
            }
            // Not one we know of: the client decides what it is.
            _ => true,
        }
    }

    /// A QoS 1/2 publish from the client went to the router; a QoS 2 one now waits for
    /// its PUBREL.
    pub(super) fn received(&mut self, qos: u8, pkid: u16) {
        if qos == 2 {
            self.incoming_qos2.insert(pkid);
        }
        if qos > 0 {
            self.incoming_open += 1;
        }
    }

    /// The client's QoS 1/2 publishes the router has not completed.
    pub(super) fn incoming_open(&self) -> usize {
        self.incoming_open
    }

    /// The client's PUBREL: whether the router waits for it. Otherwise it is a resend for a
    /// message already completed (or one the gateway refused), which the gateway answers.
    pub(super) fn pubrel(&mut self, pkid: u16) -> bool {
        self.incoming_qos2.remove(&pkid)
    }

    /// A SUBACK to send once the router has taken `router_subacks` SUBSCRIBEs sent before
    /// it: a client that publishes on receiving its SUBACK must find the router already
    /// subscribed, or a retained message published at that moment reaches it twice (once
    /// retained, once live). Returns the SUBACKs due now, in order.
    pub(super) fn suback_after(
        &mut self,
        router_subacks: usize,
        ack: Option<SubAck>,
    ) -> Vec<SubAck> {
        self.subacks.push_back((router_subacks, ack));
        self.due_subacks()
    }

    /// The router acked one SUBSCRIBE: the SUBACKs now due, in order.
    pub(super) fn router_suback(&mut self) -> Vec<SubAck> {
        if let Some((left, _)) = self.subacks.front_mut() {
            *left = left.saturating_sub(1);
        }
        self.due_subacks()
    }

    fn due_subacks(&mut self) -> Vec<SubAck> {
        let mut due = Vec::new();
        while let Some((0, _)) = self.subacks.front() {
            if let Some((_, Some(ack))) = self.subacks.pop_front() {
                due.push(ack);
            }
        }
        due
    }

    /// Rewrites router acks into their 3.1.1 form (no properties); a PUBACK or PUBCOMP
    /// completes one of the client's publishes.
    pub(super) fn patch(&mut self, packet: Packet) -> Packet {
        match packet {
            Packet::PubAck(a, _) => {
                self.incoming_open = self.incoming_open.saturating_sub(1);
                Packet::PubAck(a, None)
            }
            Packet::PubComp(a, _) => {
                self.incoming_open = self.incoming_open.saturating_sub(1);
                Packet::PubComp(a, None)
            }
            Packet::PubRec(a, _) => Packet::PubRec(a, None),
            Packet::PubRel(a, _) => Packet::PubRel(a, None),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_must_come_in_the_order_publishes_went_out() {
        let mut t = AckTracker::default();
        t.sent(0, 0);
        t.sent(1, 1);
        t.sent(2, 2);
        assert_eq!(t.owed_by_client(), 2);
        // QoS 0 is not waited for: the first ack due is pkid 1's.
        assert!(t.puback(1));
        assert!(t.pubrec(2));
        assert_eq!(t.owed_by_client(), 1, "QoS 2 is owed until PUBCOMP");
        assert!(t.pubcomp(2));
        assert_eq!(t.owed_by_client(), 0);
        assert!(!t.puback(3), "nothing is in flight any more");
        assert!(!t.pubcomp(2), "completed already");
        assert!(t.take_for_router().is_empty());
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
        assert!(!t.puback(5), "a PUBACK for a QoS 2 publish");
    }

    #[test]
    fn dropped_publishes_are_acked_to_the_router_in_their_turn() {
        let mut t = AckTracker::default();
        t.dropped(1, 1);
        // Nothing before it: acked at once.
        assert!(matches!(&t.take_for_router()[..], [Packet::PubAck(a, None)] if a.pkid == 1));
        t.sent(1, 2);
        t.dropped(1, 3);
        t.dropped(2, 4);
        assert!(t.take_for_router().is_empty(), "pkid 2 is acked first");
        assert!(t.puback(2));
        let acks = t.take_for_router();
        assert!(
            matches!(
                &acks[..],
                [Packet::PubAck(a, _), Packet::PubRec(r, _), Packet::PubComp(c, _)]
                    if (a.pkid, r.pkid, c.pkid) == (3, 4, 4)
            ),
            "{acks:?}"
        );
        // The router's PUBREL answering the gateway's PUBREC is not the client's.
        assert!(!t.router_pubrel(4));
        assert_eq!(t.owed_by_client(), 0);
    }

    #[test]
    fn a_dropped_qos2_publish_waits_for_the_pubcomp_before_it() {
        let mut t = AckTracker::default();
        t.sent(2, 1);
        t.dropped(2, 2);
        assert!(t.pubrec(1));
        assert!(matches!(&t.take_for_router()[..], [Packet::PubRec(r, _)] if r.pkid == 2));
        assert!(t.router_pubrel(1), "the client's own");
        assert!(!t.router_pubrel(2));
        assert!(t.pubcomp(1));
        assert!(matches!(&t.take_for_router()[..], [Packet::PubComp(c, _)] if c.pkid == 2));
    }

    #[test]
    fn a_suback_waits_for_the_router_and_keeps_its_place() {
        let ack = |pkid| SubAck {
            pkid,
            return_codes: vec![],
        };
        let mut t = AckTracker::default();
        assert!(
            t.suback_after(1, None).is_empty(),
            "a resumed session's renewal"
        );
        assert!(t.suback_after(2, Some(ack(1))).is_empty());
        assert!(
            t.suback_after(0, Some(ack(2))).is_empty(),
            "behind SUBACK 1"
        );
        assert!(t.router_suback().is_empty(), "the renewal's");
        assert!(t.router_suback().is_empty());
        let due: Vec<u16> = t.router_suback().iter().map(|a| a.pkid).collect();
        assert_eq!(due, [1, 2]);
        assert_eq!(
            t.suback_after(0, Some(ack(3))).len(),
            1,
            "nothing ahead: at once"
        );
    }

    #[test]
    fn a_pubrel_is_due_once_per_qos2_publish_received() {
        let mut t = AckTracker::default();
        t.received(2, 9);
        t.received(1, 3);
        assert_eq!(t.incoming_open(), 2);
        assert!(t.pubrel(9));
        assert!(!t.pubrel(9), "a resend is answered by the gateway");
        assert!(!t.pubrel(10));
        let ack = PubAck {
            pkid: 3,
            reason: PubAckReason::Success,
        };
        t.patch(Packet::PubAck(ack, None));
        assert_eq!(t.incoming_open(), 1);
    }
}
