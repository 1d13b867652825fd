//! `[cluster]`: the NATS servers a node joins and how it watches its peers.

use super::ConfigError;
use serde::{Deserialize, Serialize};

/// `[cluster]`: the NATS servers this node joins and how it watches its peers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cluster {
    /// NATS server URLs (`nats://H:P`); empty: no cluster, a node on its own.
    pub servers: Vec<String>,
    /// This node's name, shown in the ready line and to its peers; empty: host name and
    /// process id.
    pub node: String,
    /// Prefix of every NATS subject and KV bucket the nodes of one cluster share.
    pub prefix: String,
    /// Replicas of the KV buckets (retained messages, wills): at most the NATS servers.
    pub replicas: usize,
    /// How often a node says it is alive (ms).
    pub heartbeat_ms: u64,
    /// A peer not heard for this long (ms) is dead: its clients' wills are published.
    pub dead_after_ms: u64,
    /// How long `serve` waits for NATS and the retained mirror before giving up (ms).
    pub startup_timeout_ms: u64,
    /// Messages queued for NATS; past it they are dropped and counted, never waited for.
    pub queue: usize,
    /// Retained topics (and wills) waiting to be written to KV; past it, dropped.
    pub pending_writes: usize,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            servers: Vec::new(),
            node: String::new(),
            prefix: "fleetcast".into(),
            replicas: 3,
            heartbeat_ms: 1_000,
            dead_after_ms: 6_000,
            startup_timeout_ms: 30_000,
            queue: 65_536,
            pending_writes: 100_000,
        }
    }
}

impl Cluster {
    /// URLs, names and bounds that make sense.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let c = self;
        let bad = |what: &str| Err(ConfigError::Invalid(what.to_owned()));
        if c.servers
            .iter()
            .any(|s| !s.starts_with("nats://") && !s.starts_with("tls://"))
        {
            return bad("cluster.servers must be nats://HOST:PORT URLs");
        }
        let token = |t: &str| {
            !t.is_empty()
                && t.len() <= 64
                && t.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        };
        if !token(&c.prefix) {
            return bad("cluster.prefix must be 1 to 64 of A-Z a-z 0-9 - _");
        }
        if !c.node.is_empty() && !token(&c.node) {
            return bad("cluster.node must be 1 to 64 of A-Z a-z 0-9 - _");
        }
        if c.replicas == 0 || c.replicas > 5 {
            return bad("cluster.replicas must be within 1..=5");
        }
        if c.heartbeat_ms == 0 || c.dead_after_ms < 2 * c.heartbeat_ms {
            return bad(
                "cluster.heartbeat_ms must be at least 1 and dead_after_ms at least twice it",
            );
        }
        if c.startup_timeout_ms == 0 || c.queue == 0 || c.pending_writes == 0 {
            return bad("cluster.startup_timeout_ms, queue and pending_writes must be at least 1");
        }
        Ok(())
    }
}
