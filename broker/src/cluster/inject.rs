//! What arrives from the other nodes goes into the local router through one in-process
//! link, `fleetcast:cluster`, and nowhere else: nothing copies that link's publishes back
//! out, so a message cannot loop. A node may hear one message twice (two of its NATS
//! subscriptions overlap, or a retained message comes live and again from the KV mirror):
//! the origin and sequence in its [`Envelope`] let the injector pass it once.

use super::envelope::Envelope;
use super::Cluster;
use crate::gateway::Gateway;
use crate::local::LOCAL_PREFIX;
use bytes::Bytes;
use rumqttd::local::LinkRx;
use rumqttd::protocol::{Packet, Publish};
use rumqttd::Notification;
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

/// Live messages remembered to drop a second copy; copies from overlapping
/// subscriptions arrive close together.
const RECENT: usize = 16_384;
/// Messages injected per notification of the router.
const BATCH: usize = 256;

/// What the injector takes.
#[derive(Debug)]
pub(super) enum Incoming {
    /// An envelope from a live NATS subscription.
    Live(Bytes),
    /// A retained entry from the KV mirror.
    Mirror(Bytes),
    /// A publish this node makes on a dead peer's behalf (its clients' wills).
    Local(Envelope),
    /// Answered once everything sent before it is in the router.
    Caught(oneshot::Sender<()>),
}

/// What was injected, to pass each message once.
#[derive(Debug, Default)]
struct Seen {
    recent: HashSet<(u64, u64)>,
    order: VecDeque<(u64, u64)>,
    /// Per retained topic: the origin and sequence of the value the router holds.
    retained: HashMap<String, (String, u64)>,
}

impl Seen {
    /// Whether a live message is new (and remembers it).
    fn first_live(&mut self, e: &Envelope) -> bool {
        let mut h = DefaultHasher::new();
        e.origin.hash(&mut h);
        let id = (h.finish(), e.seq);
        if !self.recent.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > RECENT {
            if let Some(old) = self.order.pop_front() {
                self.recent.remove(&old);
            }
        }
        true
    }

    /// Whether a retained value is newer than the one held for its topic (and remembers
    /// it). Order holds per origin only: two nodes' values for one topic are taken as they
    /// come.
    fn newer_retained(&mut self, e: &Envelope) -> bool {
        if let Some((origin, seq)) = self.retained.get(&e.topic) {
            if *origin == e.origin && e.seq <= *seq {
                return false;
            }
        }
        if e.payload.is_empty() {
            self.retained.remove(&e.topic);
        } else {
            self.retained
                .insert(e.topic.clone(), (e.origin.clone(), e.seq));
        }
        true
    }
}

/// Whether a peer's topic is one MQTT allows in a PUBLISH.
fn valid_topic(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#', '\0']) && !topic.starts_with('$')
}

/// Injects until the channel closes (all senders gone at shutdown).
pub(super) async fn run(gw: Arc<Gateway>, cluster: Arc<Cluster>, mut rx: mpsc::Receiver<Incoming>) {
    let (mut tx, link_rx, _) = match gw
        .router
        .connect(&format!("{LOCAL_PREFIX}cluster"), true)
        .await
    {
        Ok(link) => link,
        Err(e) => {
            warn!(error = %e, "no router link for the cluster: nothing from other nodes is delivered");
            return;
        }
    };
    tokio::spawn(drain(link_rx));
    let mut seen = Seen::default();
    let mut batch = Vec::with_capacity(BATCH);
    let mut caught = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match take(&cluster, &mut seen, item) {
                Take::Publish(p) => batch.push(*p),
                Take::Marker(done) => caught.push(done),
                Take::Skip => {}
            }
            if batch.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        cluster.meters.mirror_size.set(seen.retained.len() as f64);
        if let Some(last) = batch.pop() {
            tx.buffer().extend(batch.drain(..));
            if tx.send(last).await.is_err() {
                warn!("the router dropped the cluster link");
                return;
            }
        }
        for done in caught.drain(..) {
            let _ = done.send(());
        }
    }
    let _ = tx.send(crate::router::disconnect_packet()).await;
}

enum Take {
    Publish(Box<Packet>),
    Marker(oneshot::Sender<()>),
    Skip,
}

/// Decides about one item: the publish to inject, if any.
fn take(cluster: &Cluster, seen: &mut Seen, item: Incoming) -> Take {
    let (e, mirrored) = match item {
        Incoming::Caught(done) => return Take::Marker(done),
        Incoming::Local(e) => (e, false),
        Incoming::Live(bytes) | Incoming::Mirror(bytes) if bytes.is_empty() => return Take::Skip,
        Incoming::Live(bytes) => match Envelope::decode(&bytes) {
            Some(e) => {
                cluster.meters.messages_in.increment(1);
                let first = if e.retain {
                    seen.newer_retained(&e)
                } else {
                    seen.first_live(&e)
                };
                if !first {
                    cluster.meters.duplicates.increment(1);
                    return Take::Skip;
                }
                (e, false)
            }
            None => return malformed(cluster),
        },
        Incoming::Mirror(bytes) => match Envelope::decode(&bytes) {
            Some(e) => (e, true),
            None => return malformed(cluster),
        },
    };
    if mirrored {
        let own = e.origin == cluster.incarnation;
        // Our own writes are in our router already; a value taken live is too.
        if !seen.newer_retained(&e) || own {
            return Take::Skip;
        }
    }
    if !valid_topic(&e.topic) {
        return malformed(cluster);
    }
    Take::Publish(Box::new(Packet::Publish(
        Publish::new(Bytes::from(e.topic), e.payload, e.retain || mirrored),
        None,
    )))
}

fn malformed(cluster: &Cluster) -> Take {
    cluster.meters.dropped("malformed").increment(1);
    Take::Skip
}

/// Takes what the router sends the cluster link (it subscribes to nothing: only
/// scheduling notices) until it is gone.
async fn drain(mut rx: LinkRx) {
    loop {
        match rx.next().await {
            Ok(Some(Notification::Unschedule)) => {
                if rx.wake().await.is_err() {
                    return;
                }
            }
            Ok(Some(Notification::Disconnect(..))) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(origin: &str, seq: u64, retain: bool, payload: &'static [u8]) -> Envelope {
        Envelope {
            origin: origin.into(),
            seq,
            retain,
            topic: "drivers/d1/location".into(),
            payload: Bytes::from_static(payload),
        }
    }

    #[test]
    fn a_live_copy_passes_once() {
        let mut seen = Seen::default();
        assert!(seen.first_live(&env("a", 1, false, b"x")));
        assert!(!seen.first_live(&env("a", 1, false, b"x")));
        assert!(seen.first_live(&env("b", 1, false, b"x")));
    }

    #[test]
    fn a_retained_value_passes_once_and_never_goes_back() {
        let mut seen = Seen::default();
        assert!(seen.newer_retained(&env("a", 5, true, b"x")));
        assert!(
            !seen.newer_retained(&env("a", 5, true, b"x")),
            "the mirror's copy"
        );
        assert!(
            !seen.newer_retained(&env("a", 3, true, b"old")),
            "an older value"
        );
        assert!(
            seen.newer_retained(&env("b", 1, true, b"y")),
            "another node's value"
        );
        assert!(seen.newer_retained(&env("b", 2, true, b"")));
        assert!(seen.retained.is_empty(), "an empty value clears the topic");
    }

    #[test]
    fn peers_cannot_inject_topics_mqtt_forbids() {
        for bad in ["", "a/+", "a/#", "$SYS/x", "a\0b"] {
            assert!(!valid_topic(bad), "{bad:?}");
        }
        assert!(valid_topic("drivers/d1/location"));
    }
}
