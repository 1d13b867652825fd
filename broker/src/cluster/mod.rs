//! Several fleetcast nodes over a NATS cluster, acting as one broker.
//!
//! - [`subject`]: MQTT topics and filters as NATS subjects and KV keys, without collisions.
//! - [`envelope`]: what a message carries between nodes (origin, sequence, retain).
//! - `link`: the NATS connection, the bounded queue in front of it (publishers never wait
//!   on NATS), and the subscriptions the local filters need, counted.
//! - `inject`: what arrives from NATS goes into the local router, once, and never back out.
//! - `retained`: retained messages in a replicated KV bucket, written coalesced per topic,
//!   mirrored by every node into its router.
//! - `presence`: heartbeats, one connection per client id fleet-wide, and the wills of a
//!   node that died.
//! - `member`: what one client session tells the cluster (the gateway's only hook).
//!
//! Loop freedom is by construction: only a session's accepted packets are copied out
//! (`Member::copy`), and what comes in enters the router through a link of its own that
//! nothing copies; the NATS connection has `no_echo`, so a node never hears itself.

pub mod envelope;
mod inject;
mod link;
mod member;
mod meters;
mod presence;
mod retained;
pub mod subject;

pub use member::{ClusterHook, Member};
pub use meters::ClusterMeters;

use crate::config::Cluster as Settings;
use crate::gateway::Gateway;
use bytes::Bytes;
use envelope::Envelope;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

/// Why a node could not join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// NATS or the KV buckets were not ready within `startup_timeout_ms`.
    #[error("the cluster was not ready within {0:?} (NATS servers {1})")]
    NotReady(Duration, String),
}

/// A node's share of the cluster: queues and counts the gateway's hooks feed, the tasks
/// that drain them are started by [`start`].
#[derive(Debug)]
pub struct Cluster {
    settings: Settings,
    /// This node's name.
    node: String,
    /// This run of the node: its name and a start stamp, so a restarted node is new.
    incarnation: String,
    seq: AtomicU64,
    out: flume::Sender<link::Outgoing>,
    out_rx: flume::Receiver<link::Outgoing>,
    /// Filters the local subscribers hold, counted.
    pub(crate) interest: link::Interest,
    retained: retained::Pending,
    wills: retained::Pending,
    meters: ClusterMeters,
    connected: AtomicBool,
    ready: watch::Sender<bool>,
}

impl Cluster {
    /// A node of the cluster `settings` describes (not yet connected).
    pub fn new(settings: &Settings, recorder: &dyn metrics::Recorder) -> Cluster {
        let node = if settings.node.is_empty() {
            default_node_name()
        } else {
            settings.node.clone()
        };
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let (out, out_rx) = flume::bounded(settings.queue);
        Cluster {
            incarnation: format!("{node}:{stamp:x}"),
            node,
            settings: settings.clone(),
            seq: AtomicU64::new(0),
            out,
            out_rx,
            interest: link::Interest::default(),
            retained: retained::Pending::new(settings.pending_writes),
            wills: retained::Pending::new(settings.pending_writes),
            meters: ClusterMeters::new(recorder),
            connected: AtomicBool::new(false),
            ready: watch::channel(false).0,
        }
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The subject of a live message on `topic`.
    fn live_subject(&self, topic: &str) -> String {
        subject::topic_subject(&format!("{}.m", self.settings.prefix), topic)
    }

    /// Sends a publish a local client made (or a will) to the other nodes, once: live over
    /// core NATS, and, when retained, to the KV bucket (coalesced per topic). Never waits.
    pub(crate) fn publish(&self, topic: &str, payload: &Bytes, retain: bool) {
        let envelope = Envelope {
            origin: self.incarnation.clone(),
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            retain,
            topic: topic.to_owned(),
            payload: payload.clone(),
        };
        let Some(wire) = envelope.encode() else {
            self.meters.dropped("too_long").increment(1);
            return;
        };
        if retain
            && !self
                .retained
                .put(subject::key_of(topic), Some(wire.clone()))
        {
            self.meters.dropped("pending_writes_full").increment(1);
        }
        self.send(self.live_subject(topic), wire);
    }

    /// [`publish`](Cluster::publish) for a packet on its way to the router (anything but
    /// a PUBLISH is left alone).
    pub(crate) fn copy_publish(&self, packet: &rumqttd::protocol::Packet) {
        if let rumqttd::protocol::Packet::Publish(p, _) = packet {
            match std::str::from_utf8(&p.topic) {
                Ok(topic) => self.publish(topic, &p.payload, p.retain),
                Err(_) => self.meters.dropped("malformed").increment(1),
            }
        }
    }

    /// Queues a message for NATS, or counts it dropped.
    fn send(&self, subject: String, payload: Bytes) {
        if !self.connected.load(Ordering::Relaxed) {
            self.meters.dropped("disconnected").increment(1);
            return;
        }
        if self
            .out
            .try_send(link::Outgoing { subject, payload })
            .is_err()
        {
            self.meters.dropped("queue_full").increment(1);
        }
    }

    /// Waits until the node is connected and its retained mirror has caught up, at most
    /// `startup_timeout_ms`.
    ///
    /// # Errors
    /// [`ClusterError::NotReady`] at the deadline.
    pub async fn ready(&self) -> Result<(), ClusterError> {
        let limit = Duration::from_millis(self.settings.startup_timeout_ms);
        let mut rx = self.ready.subscribe();
        let ready = tokio::time::timeout(limit, async { rx.wait_for(|r| *r).await.is_ok() })
            .await
            .unwrap_or(false);
        if ready {
            return Ok(());
        }
        Err(ClusterError::NotReady(
            limit,
            self.settings.servers.join(","),
        ))
    }
}

/// Host name and process id: unique enough on one machine and across machines.
fn default_node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(40)
        .collect();
    let host = if host.is_empty() { "node".into() } else { host };
    format!("{host}-{}", std::process::id())
}

/// Starts the node's cluster tasks on `tracker`: they stop with the gateway.
pub fn start(gw: &Arc<Gateway>, cluster: Arc<Cluster>, tracker: &TaskTracker) {
    tracker.spawn(link::run(Arc::clone(gw), cluster, tracker.clone()));
}
