//! Who is alive, and who holds which client id, fleet-wide.
//!
//! - Every node says it is alive every `heartbeat_ms` on `{prefix}.hb` (`+INCARNATION`;
//!   `-INCARNATION` when it leaves on purpose). A peer not heard for `dead_after_ms`
//!   while this node itself is connected is dead: one surviving node (the one whose
//!   `create` of the marker key `dead.{incarnation}` succeeds) publishes the wills that
//!   node's clients left in the wills bucket.
//! - Every connect is announced on `{prefix}.id`; a node holding that client id for an
//!   older connect closes it (its will fires there, once), and counts the connect in its
//!   own flapping quota, so a device hopping between nodes is banned as on one node.

use super::envelope::Envelope;
use super::inject::Incoming;
use super::{subject, Cluster};
use crate::gateway::Gateway;
use async_nats::jetstream::kv;
use async_nats::{Client, Subscriber};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

/// A connect, as announced to the other nodes.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Claim {
    /// The incarnation of the node the client connected to.
    pub(super) inc: String,
    /// Its stamp on that node (µs since the Unix epoch, but never below a stamp the
    /// node saw before: `Registry::stamp`).
    pub(super) at_us: u64,
    /// The client id.
    pub(super) id: String,
}

/// The wills bucket key of a client of an incarnation.
pub(super) fn will_key(incarnation: &str, client_id: &str) -> String {
    format!(
        "w.{}.{}",
        subject::key_of(incarnation),
        subject::key_of(client_id)
    )
}

/// How long [`listen`] waits for NATS to confirm its subscriptions.
const CONFIRM: Duration = Duration::from_secs(2);

/// The node's subscriptions to heartbeats and connects, taken before it says ready.
pub(super) struct Listening {
    hb: Subscriber,
    ids: Subscriber,
}

/// Subscribes to heartbeats and connects, and waits until the node's NATS server has the
/// subscriptions (a flush is answered after them): a connect another node announces
/// once this node is ready then closes the older connection here. None (logged) when
/// the client cannot subscribe.
pub(super) async fn listen(client: &Client, cluster: &Cluster) -> Option<Listening> {
    let prefix = &cluster.settings.prefix;
    let subscribed = async {
        let hb = client.subscribe(format!("{prefix}.hb")).await?;
        let ids = client.subscribe(format!("{prefix}.id")).await?;
        Ok::<_, async_nats::SubscribeError>(Listening { hb, ids })
    };
    let listening = match subscribed.await {
        Ok(listening) => listening,
        Err(e) => {
            warn!(error = %e, "cannot subscribe to heartbeats and connects: peers' deaths and takeovers go unnoticed");
            return None;
        }
    };
    // Not fatal: the client subscribes again itself once it is connected.
    match tokio::time::timeout(CONFIRM, client.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "NATS did not confirm the presence subscriptions"),
        Err(_) => warn!("NATS did not confirm the presence subscriptions within {CONFIRM:?}"),
    }
    Some(listening)
}

/// Heartbeats, peers, connects elsewhere; until shutdown, then a goodbye.
pub(super) async fn run(
    gw: Arc<Gateway>,
    client: Client,
    cluster: Arc<Cluster>,
    listening: Listening,
    wills: kv::Store,
    inbound: mpsc::Sender<Incoming>,
) {
    let hb_subject = format!("{}.hb", cluster.settings.prefix);
    let Listening { mut hb, mut ids } = listening;
    let beat = Duration::from_millis(cluster.settings.heartbeat_ms);
    let dead_after = Duration::from_millis(cluster.settings.dead_after_ms);
    let mut tick = tokio::time::interval(beat);
    let mut peers: HashMap<String, Instant> = HashMap::new();
    let alive = Bytes::from(format!("+{}", cluster.incarnation));
    let shutdown = gw.shutdown.clone();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {
                if cluster.connected.load(Ordering::Relaxed) {
                    cluster.send(hb_subject.clone(), alive.clone());
                } else {
                    // Silence we cannot hear is not a peer's death.
                    peers.values_mut().for_each(|t| *t = Instant::now());
                }
                for dead in dead_peers(&mut peers, dead_after) {
                    warn!(peer = %dead, "peer silent: publishing its clients' wills");
                    let (c, w, i) = (Arc::clone(&cluster), wills.clone(), inbound.clone());
                    tokio::spawn(async move { fire_wills(&c, &w, &dead, &i).await });
                }
                cluster.meters.peers.set(peers.len() as f64);
            }
            Some(m) = hb.next() => on_heartbeat(&cluster, &mut peers, &m.payload),
            Some(m) = ids.next() => on_claim(&gw, &cluster, &m.payload),
        }
    }
    let bye = Bytes::from(format!("-{}", cluster.incarnation));
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = client.publish(hb_subject, bye).await;
        let _ = client.flush().await;
    })
    .await;
}

/// Removes and returns the peers silent for `dead_after`.
fn dead_peers(peers: &mut HashMap<String, Instant>, dead_after: Duration) -> Vec<String> {
    let now = Instant::now();
    let dead: Vec<String> = peers
        .iter()
        .filter(|(_, seen)| now.duration_since(**seen) > dead_after)
        .map(|(p, _)| p.clone())
        .collect();
    for p in &dead {
        peers.remove(p);
    }
    dead
}

fn on_heartbeat(cluster: &Cluster, peers: &mut HashMap<String, Instant>, payload: &Bytes) {
    let Ok(text) = std::str::from_utf8(payload) else {
        return;
    };
    if let Some(inc) = text.strip_prefix('+') {
        if inc != cluster.incarnation && peers.insert(inc.to_owned(), Instant::now()).is_none() {
            info!(peer = %inc, "peer joined");
        }
    } else if let Some(inc) = text.strip_prefix('-') {
        if peers.remove(inc).is_some() {
            info!(peer = %inc, "peer left");
        }
    }
}

/// A connect on another node: the older local connection of that id is closed.
fn on_claim(gw: &Gateway, cluster: &Cluster, payload: &Bytes) {
    let Ok(claim) = serde_json::from_slice::<Claim>(payload) else {
        cluster.meters.dropped("malformed").increment(1);
        return;
    };
    if claim.inc == cluster.incarnation {
        return;
    }
    // A connect here from now on is newer than this one, whatever the clocks say.
    gw.registry.observe(claim.at_us);
    // Counted as a connect here too: flapping between nodes is flapping.
    let _ = gw.connects.admit_id(&claim.id, Instant::now());
    // Ties go to the greater incarnation, on both nodes alike.
    let wins_tie = claim.inc > cluster.incarnation;
    if gw.registry.kick_older(&claim.id, claim.at_us, wins_tie) {
        cluster.meters.takeovers.increment(1);
        info!(client_id = %claim.id, peer = %claim.inc, "client id connected on another node: closing ours");
    }
}

/// Publishes the wills a dead incarnation's clients left, if this node is the one to.
async fn fire_wills(
    cluster: &Cluster,
    store: &kv::Store,
    dead: &str,
    inbound: &mpsc::Sender<Incoming>,
) {
    let marker = format!("dead.{}", subject::key_of(dead));
    if store
        .create(&marker, Bytes::from(cluster.incarnation.clone()))
        .await
        .is_err()
    {
        return; // Another node took it (or NATS is gone, and so is the cluster's view).
    }
    let prefix = format!("w.{}.", subject::key_of(dead));
    let Ok(keys) = store.keys().await else {
        return;
    };
    let keys: Vec<String> = keys
        .filter_map(|k| async move { k.ok() })
        .filter(|k| std::future::ready(k.starts_with(&prefix)))
        .collect()
        .await;
    for key in keys {
        if let Ok(Some(value)) = store.get(&key).await {
            if let Some(will) = Envelope::decode(&value) {
                cluster.publish(&will.topic, &will.payload, will.retain);
                let _ = inbound.send(Incoming::Local(will)).await;
                cluster.meters.wills_fired.increment(1);
            }
        }
        let _ = store.purge(&key).await;
    }
}
