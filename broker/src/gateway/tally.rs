//! What the packets of one read came to: counted by the pure checks (`inbound.rs`,
//! `subscriptions.rs`) and metered by the session once per read, so that the checks touch
//! no shared state and the fuzz target can run them.

use crate::meters::GatewayMeters;

/// What the packets of one read came to, for the session's meters and pacing. Counted
/// here and metered once per read: the checks stay free of shared state.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Tally {
    /// PUBLISH packets received with a valid topic, granted or not: the quota charges them.
    pub(super) publishes: u32,
    /// PUBLISH packets with a topic MQTT does not allow.
    pub(super) invalid_topic: u64,
    /// PUBLISH packets to topics the policy does not grant.
    pub(super) policy_denied: u64,
    /// Locations that failed validation.
    pub(super) invalid_payload: u64,
    /// Subscription filters taken.
    pub(super) subscriptions: u64,
    /// Subscription filters refused.
    pub(super) subscriptions_refused: u64,
    /// Subscriptions with MQTT 5 Retain As Published taken, less those given up.
    pub(super) retain_as_published: i64,
}

impl Tally {
    /// Adds the counts to the gateway's meters.
    pub(super) fn record(&self, meters: &GatewayMeters) {
        for (reason, n) in [
            ("invalid_topic", self.invalid_topic),
            ("policy_denied", self.policy_denied),
            ("invalid_payload", self.invalid_payload),
        ] {
            if n > 0 {
                meters.drop_for(reason).increment(n);
            }
        }
        if self.subscriptions > 0 {
            meters.subscriptions.increment(self.subscriptions);
        }
        if self.subscriptions_refused > 0 {
            meters
                .subscriptions_refused
                .increment(self.subscriptions_refused);
        }
        if self.publishes > 0 {
            meters
                .publishes_received
                .increment(u64::from(self.publishes));
        }
    }
}
