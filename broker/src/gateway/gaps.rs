//! Messages the router skipped for a subscriber that fell behind, counted.
//!
//! rumqttd keeps each filter's log in a fixed number of segments; a subscriber that reads
//! slower than publishers write finds its cursor's segment gone, and the router moves it
//! to the oldest one left without telling anyone what was overwritten. Every forward
//! carries its offset in the filter's log (absolute offsets count up by one per message
//! across segments), so a session sees the jump as a gap between consecutive forwards of
//! one log: that many messages were lost, and are counted as
//! `fleetcast_messages_dropped_total{reason="subscriber_behind"}`.
//!
//! The log a forward came from is known by the router identifier the gateway gives each
//! MQTT 5 filter, or, for a 3.1.1 session, when it holds one filter; shared
//! subscriptions are left out (their members read one log in turns, so gaps are normal).

use super::subscriptions::Subscriptions;
use rumqttd::Forward;

/// Logs followed per session at most: past this (a client subscribing and unsubscribing
/// over and over) the oldest are forgotten, and a gap in them goes uncounted.
const MAX_LOGS: usize = 64;

/// The next offset expected from each log a session reads, at most [`MAX_LOGS`].
#[derive(Debug, Default)]
pub(crate) struct Gaps {
    next: Vec<(usize, u64)>,
}

impl Gaps {
    /// Notes `f`; returns how many messages of its log were skipped before it.
    pub(super) fn note(&mut self, subscriptions: &Subscriptions, f: &Forward) -> u64 {
        // Retained messages come without an offset: not from the log.
        let Some((_, at)) = f.cursor else { return 0 };
        let ids = f
            .properties
            .as_ref()
            .map_or(&[][..], |p| &p.subscription_identifiers[..]);
        let Some(log) = subscriptions.log_of(ids) else {
            return 0;
        };
        self.skipped(log, at)
    }

    /// A message at offset `at` of `log` came; returns how many before it never did.
    pub(crate) fn skipped(&mut self, log: usize, at: u64) -> u64 {
        match self.next.iter_mut().find(|(l, _)| *l == log) {
            Some((_, next)) => {
                // Below `next`: a QoS 1/2 message sent again, nothing skipped.
                let lost = at.saturating_sub(*next);
                *next = (*next).max(at + 1);
                lost
            }
            None => {
                if self.next.len() >= MAX_LOGS {
                    self.next.remove(0);
                }
                // The first of a subscription starts where the log was when it subscribed.
                self.next.push((log, at + 1));
                0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jump_in_one_log_counts_what_it_skipped() {
        let mut g = Gaps::default();
        assert_eq!(g.skipped(1, 10), 0);
        assert_eq!(g.skipped(1, 11), 0);
        assert_eq!(g.skipped(2, 500), 0);
        assert_eq!(g.skipped(1, 20), 8);
        assert_eq!(g.skipped(2, 501), 0);
        // Sent again (a QoS 1 retry): nothing skipped, nothing rewound.
        assert_eq!(g.skipped(1, 15), 0);
        assert_eq!(g.skipped(1, 21), 0);
    }

    #[test]
    fn logs_followed_are_bounded() {
        let mut g = Gaps::default();
        for log in 0..1_000 {
            g.skipped(log, 0);
        }
        assert_eq!(g.next.len(), MAX_LOGS);
    }
}
