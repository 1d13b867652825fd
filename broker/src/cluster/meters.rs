//! The cluster's meters, per node: the NATS link, messages out and in, what was dropped
//! and why, the retained mirror, peers, wills published for dead peers, takeovers.

use crate::meters::{counter, describe_counter, describe_gauge, gauge};
use metrics::{Counter, Gauge, Recorder};

/// Why a message did not cross the cluster, as the `reason` label of
/// `fleetcast_cluster_dropped_total`.
pub const CLUSTER_DROP_REASONS: [&str; 7] = [
    "disconnected",
    "queue_full",
    "pending_writes_full",
    "kv_write_failed",
    "slow_consumer",
    "malformed",
    "too_long",
];

/// Handles registered once.
#[derive(Debug, Clone)]
pub struct ClusterMeters {
    /// 1 while connected to a NATS server.
    pub link_up: Gauge,
    /// Messages this node sent to NATS.
    pub messages_out: Counter,
    /// Messages this node took from NATS.
    pub messages_in: Counter,
    /// Second copies not delivered.
    pub duplicates: Counter,
    /// Retained topics in the mirror.
    pub mirror_size: Gauge,
    /// Peers heard from lately.
    pub peers: Gauge,
    /// Wills published for dead peers' clients.
    pub wills_fired: Counter,
    /// Local connections closed for a newer connect of their id on another node.
    pub takeovers: Counter,
    drops: Vec<(&'static str, Counter)>,
}

impl ClusterMeters {
    /// Registers `fleetcast_cluster_*` on `r`.
    pub fn new(r: &dyn Recorder) -> ClusterMeters {
        describe_gauge(
            r,
            "fleetcast_cluster_link_up",
            None,
            "1 while this node is connected to a NATS server.",
        );
        describe_counter(
            r,
            "fleetcast_cluster_messages_out_total",
            None,
            "Messages this node sent to the cluster.",
        );
        describe_counter(
            r,
            "fleetcast_cluster_messages_in_total",
            None,
            "Messages this node took from the cluster.",
        );
        describe_counter(
            r,
            "fleetcast_cluster_duplicates_total",
            None,
            "Second copies from the cluster not delivered.",
        );
        describe_counter(
            r,
            "fleetcast_cluster_dropped_total",
            None,
            "Messages that did not cross the cluster, by reason.",
        );
        describe_gauge(
            r,
            "fleetcast_cluster_kv_mirror_size",
            None,
            "Retained topics in this node's mirror of the KV bucket.",
        );
        describe_gauge(
            r,
            "fleetcast_cluster_peers",
            None,
            "Other nodes heard from lately.",
        );
        describe_counter(
            r,
            "fleetcast_cluster_wills_fired_total",
            None,
            "Wills this node published for the clients of dead peers.",
        );
        describe_counter(
            r,
            "fleetcast_cluster_takeovers_total",
            None,
            "Connections closed for a newer connect of their client id on another node.",
        );
        ClusterMeters {
            link_up: gauge(r, "fleetcast_cluster_link_up", &[("peer", "nats")]),
            messages_out: counter(r, "fleetcast_cluster_messages_out_total", &[]),
            messages_in: counter(r, "fleetcast_cluster_messages_in_total", &[]),
            duplicates: counter(r, "fleetcast_cluster_duplicates_total", &[]),
            mirror_size: gauge(r, "fleetcast_cluster_kv_mirror_size", &[]),
            peers: gauge(r, "fleetcast_cluster_peers", &[]),
            wills_fired: counter(r, "fleetcast_cluster_wills_fired_total", &[]),
            takeovers: counter(r, "fleetcast_cluster_takeovers_total", &[]),
            drops: CLUSTER_DROP_REASONS
                .iter()
                .map(|&reason| {
                    let c = counter(r, "fleetcast_cluster_dropped_total", &[("reason", reason)]);
                    (reason, c)
                })
                .collect(),
        }
    }

    /// The drop counter for `reason` (one of [`CLUSTER_DROP_REASONS`]).
    pub fn dropped(&self, reason: &str) -> &Counter {
        self.drops
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(&self.drops[0].1, |(_, c)| c)
    }
}
