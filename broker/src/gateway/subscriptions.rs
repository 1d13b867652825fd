//! The filters one connection holds, with their MQTT 5 options, and which new ones it
//! may take.
//!
//! The router takes any filter it can parse, as many as it is sent, and drops the link on
//! one it cannot; it knows nothing of accounts. So each filter of a SUBSCRIBE is checked
//! here against MQTT's rules, the account's policy and `max_subscriptions_per_connection`,
//! and only the ones that pass reach the router. The set held is what the quota counts;
//! a persistent session's set outlives the connection (see [`super::PersistentFilters`]),
//! as the router's does, so that reconnecting does not reset the count.
//!
//! rumqttd ignores the subscription options (No Local, Retain As Published, Retain
//! Handling) and gives one Subscription Identifier to every filter of a SUBSCRIBE. So the
//! gateway answers the SUBACK itself, hands the router one SUBSCRIBE per filter carrying an
//! identifier of the gateway's own, and keeps the client's options and identifier beside
//! it: the identifier the router puts on each publish it forwards then names the one
//! subscription it came through (`delivery.rs` applies the options). A re-subscription
//! with Retain Handling 0 is sent to the router as UNSUBSCRIBE then SUBSCRIBE, the only way
//! to make rumqttd send the retained messages again, as MQTT asks.

use super::frame;
use super::hello::Identity;
use super::inbound::Tally;
use fleetcast_proto::filter;
use rumqttd::protocol::{
    Filter, Packet, QoS, RetainForwardRule, SubAck, Subscribe, SubscribeProperties,
    SubscribeReasonCode, UnsubAck, UnsubAckReason, Unsubscribe,
};
use std::collections::HashMap;

/// One subscription: the gateway's identifier for it in the router and what the client
/// asked of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Held {
    /// The gateway's Subscription Identifier for this filter in the router.
    pub(super) router_id: usize,
    /// The client's Subscription Identifier, put on the publishes it matches.
    pub(super) client_id: Option<usize>,
    /// MQTT 5 No Local: the client's own publishes are not sent back through it.
    pub(super) no_local: bool,
    /// MQTT 5 Retain As Published: live publishes keep the retain flag they were sent with.
    pub(super) retain_as_published: bool,
    /// MQTT 5 Retain Handling 2: no retained messages when subscribing.
    pub(super) no_retained: bool,
}

/// What a persistent session held when its connection ended, for its next connection.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HeldFilters {
    held: HashMap<String, Held>,
    next_id: usize,
}

impl HeldFilters {
    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Filters held with Retain As Published.
    pub fn retain_as_published(&self) -> usize {
        self.held.values().filter(|h| h.retain_as_published).count()
    }

    /// Filters read back from the data directory, without MQTT 5 options (not kept there).
    pub fn plain<'a>(paths: impl IntoIterator<Item = &'a str>) -> HeldFilters {
        let mut kept = HeldFilters::default();
        for path in paths {
            kept.next_id += 1;
            let held = Held {
                router_id: kept.next_id,
                client_id: None,
                no_local: false,
                retain_as_published: false,
                no_retained: false,
            };
            kept.held.insert(path.to_owned(), held);
        }
        kept
    }

    /// The filters held (cluster hook: a resumed session listens to them again).
    pub fn filters(&self) -> impl Iterator<Item = &str> {
        self.held.keys().map(String::as_str)
    }
}

/// What a SUBSCRIBE came to.
#[derive(Debug)]
pub(super) struct Taken {
    /// The SUBACK, a code per filter in order.
    pub(super) ack: SubAck,
    /// What the router is to be sent, in order.
    pub(super) for_router: Vec<Packet>,
}

/// The filters a connection holds now, at most `max` of them.
#[derive(Debug)]
pub(super) struct Subscriptions {
    held: HashMap<String, Held>,
    /// Router identifier -> filter.
    by_router_id: HashMap<usize, String>,
    next_id: usize,
    max: usize,
}

impl Subscriptions {
    /// None held, at most `max`.
    pub(super) fn new(max: usize) -> Subscriptions {
        Subscriptions {
            held: HashMap::new(),
            by_router_id: HashMap::new(),
            next_id: 0,
            max,
        }
    }

    /// Holds what a resumed session held: the router restored those filters.
    pub(super) fn restore(&mut self, kept: HeldFilters) {
        self.by_router_id = kept
            .held
            .iter()
            .map(|(f, h)| (h.router_id, f.clone()))
            .collect();
        self.held = kept.held;
        self.next_id = kept.next_id;
    }

    /// Gives up what is held, for the next connection of a persistent session.
    pub(super) fn take_all(&mut self) -> HeldFilters {
        self.by_router_id.clear();
        HeldFilters {
            held: std::mem::take(&mut self.held),
            next_id: self.next_id,
        }
    }

    /// SUBSCRIBEs that give the router back the identifiers of a resumed session's
    /// filters: rumqttd keeps a session's filters but not their identifiers. Renewing a
    /// filter the router holds sends no retained messages.
    pub(super) fn reidentify(&self) -> Vec<Packet> {
        self.held
            .iter()
            .map(|(path, h)| router_subscribe(0, filter_of(path), Some(h.router_id)))
            .collect()
    }

    /// The subscription the router forwarded a publish through, by the identifier it put
    /// on it; without one (a resumed session's first publishes may come before
    /// [`Self::reidentify`] reached the router), the first held filter matching `topic`.
    pub(super) fn through(&self, router_ids: &[usize], topic: &[u8]) -> Option<&Held> {
        if let Some(f) = router_ids.iter().find_map(|id| self.by_router_id.get(id)) {
            return self.held.get(f);
        }
        // Not checked as UTF-8 again: the router's topics passed a gateway's checks.
        self.held
            .iter()
            .find(|(f, _)| filter::matches_bytes(f.as_bytes(), topic))
            .map(|(_, h)| h)
    }

    /// The log a forward came from (the gateway's identifier of its filter), when the
    /// session can tell: by the router identifier on it (MQTT 5), or as the one filter
    /// held. None for shared subscriptions, whose members read one log in turns.
    pub(super) fn log_of(&self, router_ids: &[usize]) -> Option<usize> {
        // The router identifier is the log's: no need to look the filter up in `held`.
        let (path, id) = match router_ids.first() {
            Some(id) => (self.by_router_id.get(id)?, *id),
            None if self.held.len() == 1 => {
                self.held.iter().next().map(|(p, h)| (p, h.router_id))?
            }
            None => return None,
        };
        (!path.starts_with("$share/")).then_some(id)
    }

    /// The filters whose logs this session reads on its own (shared subscriptions, read in
    /// turns, left out), for a mark of it behind (`backlog.rs`).
    pub(super) fn own_filters(&self) -> Vec<String> {
        self.held
            .keys()
            .filter(|p| !p.starts_with("$share/"))
            .cloned()
            .collect()
    }

    /// Whether a filter with No Local is held (the session then marks its publishes).
    pub(super) fn any_no_local(&self) -> bool {
        self.held.values().any(|h| h.no_local)
    }

    /// Why `identity` may not hold `filter` on top of what is held, in MQTT 5's words; None
    /// if it may. A filter already held is renewed, so it does not count again.
    pub(super) fn refusal(&self, identity: &Identity, filter: &str) -> Option<SubscribeReasonCode> {
        if !frame::valid_topic_filter(filter) {
            Some(SubscribeReasonCode::TopicFilterInvalid)
        } else if !identity.may_subscribe(filter) {
            Some(SubscribeReasonCode::NotAuthorized)
        } else if !self.held.contains_key(filter) && self.held.len() >= self.max {
            Some(SubscribeReasonCode::QuotaExceeded)
        } else {
            None
        }
    }

    /// Takes the filters of `s` that `identity` may hold, with the client's Subscription
    /// Identifier `client_id`, and says what the client and the router are to be told.
    /// MQTT 5 (`v5`) says why a filter is refused; 3.1.1 has only 0x80.
    pub(super) fn take(
        &mut self,
        identity: &Identity,
        s: Subscribe,
        client_id: Option<usize>,
        v5: bool,
        tally: &mut Tally,
    ) -> Taken {
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut for_router = Vec::new();
        for f in s.filters {
            if let Some(code) = self.refusal(identity, &f.path) {
                tally.subscriptions_refused += 1;
                codes.push(if v5 {
                    code
                } else {
                    SubscribeReasonCode::Failure
                });
                continue;
            }
            tally.subscriptions += 1;
            codes.push(granted(f.qos));
            let renewed = self.held.get(&f.path).map(|h| h.router_id);
            if renewed.is_some() && f.retain_forward_rule == RetainForwardRule::OnEverySubscribe {
                // The router sends retained messages only for a filter it did not hold.
                let u = Unsubscribe {
                    pkid: s.pkid,
                    filters: vec![f.path.clone()],
                };
                for_router.push(Packet::Unsubscribe(u, None));
            }
            let router_id = renewed.unwrap_or_else(|| {
                self.next_id += 1;
                self.next_id
            });
            let held = Held {
                router_id,
                client_id,
                no_local: v5 && f.nolocal,
                retain_as_published: v5 && f.preserve_retain,
                no_retained: v5 && f.retain_forward_rule == RetainForwardRule::Never,
            };
            tally.retain_as_published += i64::from(held.retain_as_published)
                - i64::from(
                    self.held
                        .get(&f.path)
                        .is_some_and(|h| h.retain_as_published),
                );
            self.by_router_id.insert(router_id, f.path.clone());
            for_router.push(router_subscribe(s.pkid, f.clone(), v5.then_some(router_id)));
            self.held.insert(f.path, held);
        }
        let ack = SubAck {
            pkid: s.pkid,
            return_codes: codes,
        };
        Taken { ack, for_router }
    }

    /// Lets go of the filters of `u`, saying for each whether it was held. Answered by the
    /// gateway: the router sends one UNSUBACK per filter it removed and none for a filter
    /// not held, which leaves clients waiting forever.
    pub(super) fn release(&mut self, u: &Unsubscribe, tally: &mut Tally) -> UnsubAck {
        let reasons = u
            .filters
            .iter()
            .map(|f| match self.held.remove(f) {
                Some(h) => {
                    self.by_router_id.remove(&h.router_id);
                    tally.retain_as_published -= i64::from(h.retain_as_published);
                    UnsubAckReason::Success
                }
                None => UnsubAckReason::NoSubscriptionExisted,
            })
            .collect();
        UnsubAck {
            pkid: u.pkid,
            reasons,
        }
    }
}

/// The SUBACK code granting `qos` (rumqttd's router grants what is asked).
fn granted(qos: QoS) -> SubscribeReasonCode {
    match qos {
        QoS::AtMostOnce => SubscribeReasonCode::QoS0,
        QoS::AtLeastOnce => SubscribeReasonCode::QoS1,
        QoS::ExactlyOnce => SubscribeReasonCode::QoS2,
    }
}

/// A filter as the router takes it: the options are the gateway's to apply.
fn filter_of(path: &str) -> Filter {
    Filter {
        path: path.to_owned(),
        qos: QoS::AtLeastOnce,
        nolocal: false,
        preserve_retain: false,
        retain_forward_rule: RetainForwardRule::OnEverySubscribe,
    }
}

/// A SUBSCRIBE of one filter carrying the gateway's identifier for it. A 3.1.1 session
/// needs none (it has no options to apply), and the router would otherwise allocate
/// properties for every publish it forwards.
fn router_subscribe(pkid: u16, f: Filter, router_id: Option<usize>) -> Packet {
    let s = Subscribe {
        pkid,
        filters: vec![f],
    };
    let props = router_id.map(|id| SubscribeProperties {
        id: Some(id),
        user_properties: Vec::new(),
    });
    Packet::Subscribe(s, props)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::wire;
    use crate::policy::Grants;

    fn identity(grants: Grants) -> Identity {
        wire::identity("rider-1", grants)
    }

    fn subscribe(paths: &[&str], rule: RetainForwardRule) -> Subscribe {
        let filters = paths
            .iter()
            .map(|p| Filter {
                retain_forward_rule: rule.clone(),
                ..filter_of(p)
            })
            .collect();
        Subscribe { pkid: 4, filters }
    }

    fn take(s: &mut Subscriptions, who: &Identity, paths: &[&str], v5: bool) -> (Taken, Tally) {
        let mut tally = Tally::default();
        let sub = subscribe(paths, RetainForwardRule::OnEverySubscribe);
        (s.take(who, sub, Some(9), v5, &mut tally), tally)
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
            let paths = ["drivers/+/location", "a/#/b", "#", "drivers/+/status"];
            let (taken, tally) = take(&mut s, &rider, &paths, v5);
            let ok = SubscribeReasonCode::QoS1;
            assert_eq!(taken.ack.return_codes, [ok, codes[0], codes[1], ok]);
            let kept: Vec<_> = taken
                .for_router
                .iter()
                .map(|p| match p {
                    Packet::Subscribe(s, props) => {
                        // Only MQTT 5 subscriptions carry the gateway's identifier.
                        assert_eq!(props.is_some(), v5);
                        s.filters[0].path.as_str()
                    }
                    other => panic!("{other:?}"),
                })
                .collect();
            assert_eq!(kept, ["drivers/+/location", "drivers/+/status"]);
            assert_eq!((tally.subscriptions, tally.subscriptions_refused), (2, 2));
        }
    }

    #[test]
    fn the_quota_counts_each_filter_held_once() {
        let service = identity(Grants::service());
        let mut s = Subscriptions::new(2);
        let (taken, _) = take(&mut s, &service, &["drivers/a/#", "drivers/b/#"], true);
        assert_eq!(taken.for_router.len(), 2);
        assert_eq!(
            s.refusal(&service, "drivers/c/#"),
            Some(SubscribeReasonCode::QuotaExceeded)
        );
        assert_eq!(s.refusal(&service, "drivers/a/#"), None, "a renewal");
        let u = Unsubscribe {
            pkid: 3,
            filters: vec!["drivers/a/#".into(), "drivers/z/#".into()],
        };
        let ack = s.release(&u, &mut Tally::default());
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
    fn each_subscription_is_known_by_the_identifier_the_router_returns() {
        let service = identity(Grants {
            publish: vec![],
            subscribe: vec!["#".into()],
        });
        let mut s = Subscriptions::new(5);
        let mut tally = Tally::default();
        let mut sub = subscribe(&["a/#", "b/#"], RetainForwardRule::Never);
        sub.filters[0].nolocal = true;
        sub.filters[1].preserve_retain = true;
        let taken = s.take(&service, sub, Some(9), true, &mut tally);
        assert_eq!(tally.retain_as_published, 1);
        let ids: Vec<usize> = taken
            .for_router
            .iter()
            .filter_map(|p| match p {
                Packet::Subscribe(_, Some(props)) => props.id,
                _ => None,
            })
            .collect();
        assert_eq!(ids.len(), 2);
        let a = s.through(&[ids[0]], b"b/1").expect("known by its id");
        assert!(a.no_local && !a.retain_as_published && a.no_retained);
        assert_eq!(a.client_id, Some(9));
        let b = s.through(&[], b"b/1").expect("found by its topic");
        assert!(b.retain_as_published && !b.no_local);
        assert!(s.through(&[], b"c/1").is_none());
        assert!(s.any_no_local());
        // What a persistent session keeps comes back whole, and renewed in the router.
        let kept = s.take_all();
        assert_eq!(kept.retain_as_published(), 1);
        let mut again = Subscriptions::new(5);
        again.restore(kept);
        assert!(again.through(&[ids[1]], b"b/1").is_some());
        assert_eq!(again.reidentify().len(), 2);
    }

    #[test]
    fn a_resumed_session_counts_what_it_held_before() {
        let service = identity(Grants::service());
        let mut s = Subscriptions::new(1);
        take(&mut s, &service, &["drivers/#"], false);
        let kept = s.take_all();
        assert!(!kept.is_empty());
        let mut s = Subscriptions::new(1);
        s.restore(kept);
        assert_eq!(
            s.refusal(&service, "owntracks/#"),
            Some(SubscribeReasonCode::QuotaExceeded)
        );
        assert!(!s.take_all().is_empty());
        assert_eq!(s.refusal(&service, "owntracks/#"), None);
    }
}
