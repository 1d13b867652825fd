//! What one client session tells the cluster: its connect (so an older connection of its
//! client id elsewhere closes), its will (kept in the wills bucket while it is connected,
//! for a peer to publish if this node dies), the publishes and filters the gateway
//! accepted, and the will when it fires here. Dropping it withdraws the filters and the
//! kept will.

use super::envelope::Envelope;
use super::presence::{will_key, Claim};
use super::Cluster;
use bytes::Bytes;
use rumqttd::protocol::{LastWill, Packet};
use std::collections::HashSet;
use std::sync::Arc;

/// A session's share of the cluster.
#[derive(Debug)]
pub struct Member {
    cluster: Arc<Cluster>,
    /// Filters this session added to the node's interest.
    filters: HashSet<String>,
    /// The wills bucket key holding this session's will.
    will_key: Option<String>,
}

impl Member {
    /// Announces the connect of `client_id`, stamped `since_us` by the registry, and
    /// keeps its will for the node's death.
    pub fn join(
        cluster: &Arc<Cluster>,
        client_id: &str,
        since_us: u64,
        will: Option<&LastWill>,
    ) -> Member {
        let claim = Claim {
            inc: cluster.incarnation.clone(),
            at_us: since_us,
            id: client_id.to_owned(),
        };
        if let Ok(json) = serde_json::to_vec(&claim) {
            let subject = format!("{}.id", cluster.settings.prefix);
            cluster.send(subject, Bytes::from(json));
        }
        let will_key = will.and_then(|w| {
            let envelope = Envelope {
                origin: cluster.incarnation.clone(),
                seq: 0,
                retain: w.retain,
                topic: std::str::from_utf8(&w.topic).ok()?.to_owned(),
                payload: w.message.clone(),
            };
            let key = will_key(&cluster.incarnation, client_id);
            if !cluster.wills.put(key.clone(), Some(envelope.encode()?)) {
                cluster.meters.dropped("pending_writes_full").increment(1);
            }
            Some(key)
        });
        Member {
            cluster: Arc::clone(cluster),
            filters: HashSet::new(),
            will_key,
        }
    }

    /// Listens to `filters` (a resumed session's, which the router restored itself).
    pub fn hold<'a>(&mut self, filters: impl Iterator<Item = &'a str>) {
        for f in filters {
            if self.filters.insert(f.to_owned()) {
                self.cluster.interest.add(f);
            }
        }
    }

    /// Copies what the gateway hands the router to the cluster: publishes go to the other
    /// nodes, filters taken or given up change what this node listens to.
    pub fn copy(&mut self, batch: &[Packet]) {
        for packet in batch {
            match packet {
                Packet::Publish(..) => self.cluster.copy_publish(packet),
                Packet::Subscribe(s, _) => {
                    for f in &s.filters {
                        if self.filters.insert(f.path.clone()) {
                            self.cluster.interest.add(&f.path);
                        }
                    }
                }
                Packet::Unsubscribe(u, _) => {
                    for f in &u.filters {
                        if self.filters.remove(f) {
                            self.cluster.interest.remove(f);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// The gateway's hook: a session without a cluster has no [`Member`], and copies nothing.
pub trait ClusterHook {
    /// [`Member::copy`], when there is a member.
    fn copy(&mut self, batch: &[Packet]);
    /// [`Member::hold`], when there is a member.
    fn hold<'a>(&mut self, filters: impl Iterator<Item = &'a str>);
}

impl ClusterHook for Option<Member> {
    fn copy(&mut self, batch: &[Packet]) {
        if let Some(member) = self {
            member.copy(batch);
        }
    }

    fn hold<'a>(&mut self, filters: impl Iterator<Item = &'a str>) {
        if let Some(member) = self {
            member.hold(filters);
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        for f in self.filters.drain() {
            self.cluster.interest.remove(&f);
        }
        if let Some(key) = self.will_key.take() {
            if !self.cluster.wills.put(key, None) {
                self.cluster
                    .meters
                    .dropped("pending_writes_full")
                    .increment(1);
            }
        }
    }
}
