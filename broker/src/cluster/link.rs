//! The NATS connection: connecting (and reconnecting, which async-nats does by itself),
//! the bounded queue in front of `publish` (which waits while the client reconnects, so
//! no publisher may call it), and the subscriptions the local filters need.

use super::{inject, presence, retained, subject, Cluster};
use crate::gateway::Gateway;
use async_nats::{Client, ConnectOptions, Event};
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// Messages from NATS waiting for the injector; past it the subscriptions wait, and
/// async-nats drops for a full subscription (counted as a slow consumer).
const INBOUND_QUEUE: usize = 8_192;
/// Pause between attempts at the first connection.
const RETRY: Duration = Duration::from_millis(500);

/// A message for NATS.
#[derive(Debug)]
pub(super) struct Outgoing {
    pub(super) subject: String,
    pub(super) payload: Bytes,
}

/// The filters local subscribers hold, each with how many hold it. Only a change from 0
/// to 1 or back wakes the task that subscribes on NATS.
#[derive(Debug, Default)]
pub(crate) struct Interest {
    counts: Mutex<HashMap<String, usize>>,
    changed: Notify,
}

impl Interest {
    /// One more holder of `filter`.
    pub(crate) fn add(&self, filter: &str) {
        let filter = unshared(filter);
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(filter.to_owned()).or_insert(0);
        *n += 1;
        if *n == 1 {
            self.changed.notify_one();
        }
    }

    /// One holder of `filter` fewer.
    pub(crate) fn remove(&self, filter: &str) {
        let filter = unshared(filter);
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(filter) {
            *n -= 1;
            if *n == 0 {
                counts.remove(filter);
                self.changed.notify_one();
            }
        }
    }

    /// The filters held now.
    pub(crate) fn filters(&self) -> Vec<String> {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.keys().cloned().collect()
    }
}

/// The filter a shared subscription (`$share/GROUP/filter`) needs from NATS: the node
/// takes every message and its router picks one member of the group among its clients.
fn unshared(filter: &str) -> &str {
    filter
        .strip_prefix("$share/")
        .and_then(|rest| rest.split_once('/'))
        .map_or(filter, |(_group, f)| f)
}

/// Connects, starts every cluster task, and says ready once the retained mirror caught
/// up. Returns at shutdown.
pub(super) async fn run(gw: Arc<Gateway>, cluster: Arc<Cluster>, tracker: TaskTracker) {
    let shutdown = gw.shutdown.clone();
    let Some(client) = connect(&cluster, &shutdown).await else {
        return;
    };
    info!(node = %cluster.node, servers = %cluster.settings.servers.join(","), "joined the NATS cluster");
    let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
    tracker.spawn(publisher(
        client.clone(),
        Arc::clone(&cluster),
        shutdown.clone(),
    ));
    tracker.spawn(inject::run(
        Arc::clone(&gw),
        Arc::clone(&cluster),
        inbound_rx,
    ));
    tracker.spawn(subscriptions(
        client.clone(),
        Arc::clone(&cluster),
        inbound_tx.clone(),
        shutdown.clone(),
    ));
    let Some(stores) = retained::open(&client, &cluster, &shutdown).await else {
        return;
    };
    // Before the mirror can say ready: a ready node hears every takeover.
    let listening = tokio::select! {
        _ = shutdown.cancelled() => return,
        l = presence::listen(&client, &cluster) => l,
    };
    if let Some(listening) = listening {
        tracker.spawn(presence::run(
            Arc::clone(&gw),
            client.clone(),
            Arc::clone(&cluster),
            listening,
            stores.wills.clone(),
            inbound_tx.clone(),
        ));
    }
    retained::spawn(&tracker, &cluster, &stores, inbound_tx, &shutdown);
}

/// Connects to the first server that answers, trying until shutdown.
async fn connect(cluster: &Arc<Cluster>, shutdown: &CancellationToken) -> Option<Client> {
    loop {
        let events = Arc::clone(cluster);
        let options = ConnectOptions::new()
            .name(format!("fleetcast {}", cluster.node))
            .no_echo()
            // The operator's order: each node's own (nearest) server first.
            .retain_servers_order()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .event_callback(move |event| {
                let c = Arc::clone(&events);
                async move { on_event(&c, event) }
            });
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            r = options.connect(&cluster.settings.servers) => match r {
                Ok(client) => {
                    cluster.set_connected(true);
                    return Some(client);
                }
                Err(e) => warn!(error = %e, "cannot reach NATS yet; trying again"),
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

fn on_event(cluster: &Cluster, event: Event) {
    match event {
        Event::Connected => {
            info!("NATS connection back");
            cluster.set_connected(true);
        }
        Event::Disconnected => {
            warn!("NATS connection lost: cross-node traffic is dropped until it is back");
            cluster.set_connected(false);
        }
        // Only at shutdown (reconnects never give up).
        Event::Closed => cluster.set_connected(false),
        Event::SlowConsumer(_) => cluster.meters.dropped("slow_consumer").increment(1),
        other => info!(event = %other, "NATS"),
    }
}

impl Cluster {
    pub(super) fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
        self.meters.link_up.set(if up { 1.0 } else { 0.0 });
    }
}

/// Drains the queue into NATS. While the connection is down what is queued is dropped
/// and counted: it is stale by the time NATS is back, and `publish` would wait.
async fn publisher(client: Client, cluster: Arc<Cluster>, shutdown: CancellationToken) {
    loop {
        let m = tokio::select! {
            _ = shutdown.cancelled() => return,
            m = cluster.out_rx.recv_async() => match m {
                Ok(m) => m,
                Err(_) => return,
            },
        };
        if client.connection_state() != async_nats::connection::State::Connected {
            cluster.meters.dropped("disconnected").increment(1);
            continue;
        }
        match client.publish(m.subject, m.payload).await {
            Ok(()) => cluster.meters.messages_out.increment(1),
            Err(e) if e.kind() == async_nats::client::PublishErrorKind::MaxPayloadExceeded => {
                cluster.meters.dropped("too_long").increment(1)
            }
            Err(_) => cluster.meters.dropped("disconnected").increment(1),
        }
    }
}

/// Keeps one NATS subscription per filter the local subscribers hold (two for `a/#`),
/// each feeding the injector, and ends those no longer held.
async fn subscriptions(
    client: Client,
    cluster: Arc<Cluster>,
    inbound: mpsc::Sender<inject::Incoming>,
    shutdown: CancellationToken,
) {
    let prefix = format!("{}.m", cluster.settings.prefix);
    let mut active: HashMap<String, CancellationToken> = HashMap::new();
    loop {
        let wanted = cluster.interest.filters();
        active.retain(|filter, stop| {
            let keep = wanted.contains(filter);
            if !keep {
                stop.cancel();
            }
            keep
        });
        for filter in wanted {
            if active.contains_key(&filter) {
                continue;
            }
            let stop = shutdown.child_token();
            for subject in subject::filter_subjects(&prefix, &filter) {
                match client.subscribe(subject).await {
                    Ok(sub) => {
                        tokio::spawn(forward(sub, inbound.clone(), stop.clone()));
                    }
                    Err(e) => warn!(error = %e, %filter, "cannot subscribe on NATS"),
                }
            }
            active.insert(filter, stop);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = cluster.interest.changed.notified() => {}
        }
    }
}

/// Moves one subscription's messages to the injector until stopped; dropping the
/// subscription unsubscribes it.
async fn forward(
    mut sub: async_nats::Subscriber,
    inbound: mpsc::Sender<inject::Incoming>,
    stop: CancellationToken,
) {
    loop {
        let m = tokio::select! {
            _ = stop.cancelled() => return,
            m = sub.next() => match m {
                Some(m) => m,
                None => return,
            },
        };
        if inbound
            .send(inject::Incoming::Live(m.payload))
            .await
            .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interest_is_counted_and_shared_subscriptions_need_their_filter() {
        let i = Interest::default();
        i.add("drivers/#");
        i.add("$share/g/drivers/#");
        i.add("a/+");
        let mut f = i.filters();
        f.sort();
        assert_eq!(f, ["a/+", "drivers/#"]);
        i.remove("drivers/#");
        assert_eq!(i.filters().len(), 2, "one holder of drivers/# is left");
        i.remove("$share/g/drivers/#");
        i.remove("a/+");
        i.remove("never/held");
        assert!(i.filters().is_empty());
        assert_eq!(unshared("$share/g"), "$share/g");
    }
}
