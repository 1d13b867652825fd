//! The filters one connection holds, and which new ones it may take.
//!
//! The router takes any filter it can parse, as many as it is sent, and drops the link on
//! one it cannot; it knows nothing of accounts. So each filter of a SUBSCRIBE is checked
//! here against MQTT's rules, the account's policy and `max_subscriptions_per_connection`,
//! and only the ones that pass reach the router. The set held is what the quota counts;
//! a persistent session's set outlives the connection (see [`super::PersistentFilters`]),
//! as the router's does, so that reconnecting does not reset the count.

use super::acks::Denied;
use super::frame;
use super::hello::Identity;
use super::inbound::Tally;
use rumqttd::protocol::{Filter, SubscribeReasonCode, UnsubAck, UnsubAckReason, Unsubscribe};
use std::collections::HashSet;

/// The filters a connection holds now, at most `max` of them.
#[derive(Debug)]
pub(super) struct Subscriptions {
    held: HashSet<String>,
    max: usize,
}

impl Subscriptions {
    /// None held, at most `max`.
    pub(super) fn new(max: usize) -> Subscriptions {
        Subscriptions {
            held: HashSet::new(),
            max,
        }
    }

    /// Holds what a resumed session held: the router restored those filters.
    pub(super) fn restore(&mut self, held: HashSet<String>) {
        self.held = held;
    }

    /// Gives up what is held, for the next connection of a persistent session.
    pub(super) fn take_all(&mut self) -> HashSet<String> {
        std::mem::take(&mut self.held)
    }

    /// Why `identity` may not hold `filter` on top of what is held, in MQTT 5's words; None
    /// if it may. A filter already held is renewed, so it does not count again.
    pub(super) fn refusal(&self, identity: &Identity, filter: &str) -> Option<SubscribeReasonCode> {
        if !frame::valid_topic_filter(filter) {
            Some(SubscribeReasonCode::TopicFilterInvalid)
        } else if !identity.may_subscribe(filter) {
            Some(SubscribeReasonCode::NotAuthorized)
        } else if !self.held.contains(filter) && self.held.len() >= self.max {
            Some(SubscribeReasonCode::QuotaExceeded)
        } else {
            None
        }
    }

    /// Keeps in `filters` those `identity` may hold, and holds them from now on; returns
    /// the places and codes of the others. MQTT 5 (`v5`) says why; 3.1.1 has only 0x80.
    pub(super) fn take(
        &mut self,
        identity: &Identity,
        filters: &mut Vec<Filter>,
        v5: bool,
        tally: &mut Tally,
    ) -> Denied {
        let mut denied = Vec::new();
        let mut i = 0;
        filters.retain(|f| {
            let refusal = self.refusal(identity, &f.path);
            match refusal {
                None => {
                    self.held.insert(f.path.clone());
                    tally.subscriptions += 1;
                }
                Some(code) => {
                    tally.subscriptions_refused += 1;
                    let code = if v5 {
                        code
                    } else {
                        SubscribeReasonCode::Failure
                    };
                    denied.push((i, code));
                }
            }
            i += 1;
            refusal.is_none()
        });
        denied
    }

    /// Lets go of the filters of `u`, saying for each whether it was held. Answered by the
    /// gateway: the router sends one UNSUBACK per filter it removed and none for a filter
    /// not held, which leaves clients waiting forever.
    pub(super) fn release(&mut self, u: &Unsubscribe) -> UnsubAck {
        let reasons = u
            .filters
            .iter()
            .map(|f| match self.held.remove(f) {
                true => UnsubAckReason::Success,
                false => UnsubAckReason::NoSubscriptionExisted,
            })
            .collect();
        UnsubAck {
            pkid: u.pkid,
            reasons,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::wire;
    use crate::policy::Grants;
    use rumqttd::protocol::{QoS, RetainForwardRule};

    fn identity(grants: Grants) -> Identity {
        wire::identity("rider-1", grants)
    }

    fn filters(paths: &[&str]) -> Vec<Filter> {
        paths
            .iter()
            .map(|p| Filter {
                path: (*p).to_owned(),
                qos: QoS::AtLeastOnce,
                nolocal: false,
                preserve_retain: false,
                retain_forward_rule: RetainForwardRule::OnEverySubscribe,
            })
            .collect()
    }

    #[test]
    fn refused_filters_are_named_at_their_places() {
        let rider = identity(Grants::rider());
        for (v5, codes) in [
            (
                true,
                [
                    SubscribeReasonCode::TopicFilterInvalid,
                    SubscribeReasonCode::NotAuthorized,
                ],
            ),
            (false, [SubscribeReasonCode::Failure; 2]),
        ] {
            let mut s = Subscriptions::new(50);
            let mut tally = Tally::default();
            let mut f = filters(&["drivers/+/location", "a/#/b", "#", "drivers/+/status"]);
            let denied = s.take(&rider, &mut f, v5, &mut tally);
            assert_eq!(denied, [(1, codes[0]), (2, codes[1])]);
            let kept: Vec<_> = f.iter().map(|f| f.path.as_str()).collect();
            assert_eq!(kept, ["drivers/+/location", "drivers/+/status"]);
            assert_eq!((tally.subscriptions, tally.subscriptions_refused), (2, 2));
        }
    }

    #[test]
    fn the_quota_counts_each_filter_held_once() {
        let service = identity(Grants::service());
        let mut s = Subscriptions::new(2);
        let mut tally = Tally::default();
        let denied = s.take(
            &service,
            &mut filters(&["drivers/a/#", "drivers/b/#"]),
            true,
            &mut tally,
        );
        assert!(denied.is_empty());
        assert_eq!(
            s.refusal(&service, "drivers/c/#"),
            Some(SubscribeReasonCode::QuotaExceeded)
        );
        assert_eq!(s.refusal(&service, "drivers/a/#"), None, "a renewal");
        let u = Unsubscribe {
            pkid: 3,
            filters: vec!["drivers/a/#".into(), "drivers/z/#".into()],
        };
        let ack = s.release(&u);
        assert_eq!(ack.pkid, 3);
        assert_eq!(
            ack.reasons,
            [
                UnsubAckReason::Success,
                UnsubAckReason::NoSubscriptionExisted
            ]
        );
        assert_eq!(s.refusal(&service, "drivers/c/#"), None);
    }

    #[test]
    fn a_resumed_session_counts_what_it_held_before() {
        let service = identity(Grants::service());
        let mut s = Subscriptions::new(1);
        s.restore(HashSet::from(["drivers/#".to_owned()]));
        assert_eq!(
            s.refusal(&service, "owntracks/#"),
            Some(SubscribeReasonCode::QuotaExceeded)
        );
        assert_eq!(s.take_all(), HashSet::from(["drivers/#".to_owned()]));
        assert_eq!(s.refusal(&service, "owntracks/#"), None);
    }
}
