//! Retained messages in a JetStream KV bucket replicated over the NATS servers: one key
//! per topic, written coalesced (a KV put costs about a millisecond, so only the latest
//! value of a topic waiting to be written is written, many at once), and mirrored by every
//! node into its own router, where late subscribers find them as if they were local.
//! The wills bucket (see `presence`) is written the same way.

use super::inject::Incoming;
use super::{subject, Cluster};
use async_nats::jetstream::{self, kv};
use async_nats::Client;
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

/// KV writes in flight at once.
const IN_FLIGHT: usize = 64;
/// At shutdown, how long the last writes may take.
const FINAL_WRITES: Duration = Duration::from_secs(1);
/// Pause before a failed bucket or watch is tried again.
const RETRY: Duration = Duration::from_millis(500);

/// Values waiting for their KV write, the latest per key; None deletes the key.
#[derive(Debug)]
pub(super) struct Pending {
    map: Mutex<HashMap<String, Option<Bytes>>>,
    changed: Notify,
    max: usize,
}

impl Pending {
    pub(super) fn new(max: usize) -> Pending {
        Pending {
            map: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            max,
        }
    }

    /// Replaces what waits for `key`; false (dropped) when `max` keys already wait.
    pub(super) fn put(&self, key: String, value: Option<Bytes>) -> bool {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= self.max && !map.contains_key(&key) {
            return false;
        }
        map.insert(key, value);
        self.changed.notify_one();
        true
    }

    fn take(&self) -> HashMap<String, Option<Bytes>> {
        std::mem::take(&mut *self.map.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The node's two buckets.
#[derive(Clone)]
pub(super) struct Stores {
    pub(super) retained: kv::Store,
    pub(super) wills: kv::Store,
}

/// Opens (or creates) the buckets, trying until shutdown.
pub(super) async fn open(
    client: &Client,
    cluster: &Cluster,
    shutdown: &CancellationToken,
) -> Option<Stores> {
    let js = jetstream::new(client.clone());
    let prefix = &cluster.settings.prefix;
    loop {
        let retained = bucket(&js, format!("{prefix}_retained"), cluster).await;
        let wills = bucket(&js, format!("{prefix}_wills"), cluster).await;
        match (retained, wills) {
            (Ok(retained), Ok(wills)) => return Some(Stores { retained, wills }),
            (Err(e), _) | (_, Err(e)) => warn!(error = %e, "KV bucket not ready yet"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

async fn bucket(
    js: &jetstream::Context,
    name: String,
    cluster: &Cluster,
) -> Result<kv::Store, async_nats::Error> {
    if let Ok(store) = js.get_key_value(&name).await {
        return Ok(store);
    }
    let config = kv::Config {
        bucket: name,
        history: 1,
        num_replicas: cluster.settings.replicas,
        ..Default::default()
    };
    Ok(js.create_key_value(config).await?)
}

/// Starts the writers and the mirror.
pub(super) fn spawn(
    tracker: &TaskTracker,
    cluster: &Arc<Cluster>,
    stores: &Stores,
    inbound: mpsc::Sender<Incoming>,
    shutdown: &CancellationToken,
) {
    let retained = stores.retained.clone();
    let wills = stores.wills.clone();
    let (c, s) = (Arc::clone(cluster), shutdown.clone());
    tracker.spawn(async move { write(&c, &c.retained, retained, s).await });
    let (c, s) = (Arc::clone(cluster), shutdown.clone());
    tracker.spawn(async move { write(&c, &c.wills, wills, s).await });
    tracker.spawn(mirror(
        Arc::clone(cluster),
        stores.retained.clone(),
        inbound,
        shutdown.clone(),
    ));
}

/// Writes what waits, many at once, until shutdown; then once more, so the node's last
/// changes (its clients' wills withdrawn) are not lost.
async fn write(
    cluster: &Cluster,
    pending: &Pending,
    store: kv::Store,
    shutdown: CancellationToken,
) {
    loop {
        let stopping = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = pending.changed.notified() => false,
        };
        if !cluster.connected.load(Ordering::Relaxed) && !stopping {
            // Kept (coalescing) until NATS is back.
            tokio::time::sleep(RETRY).await;
            pending.changed.notify_one();
            continue;
        }
        let batch = pending.take();
        let writes =
            futures_util::stream::iter(batch).for_each_concurrent(IN_FLIGHT, |(key, value)| {
                let store = &store;
                async move {
                    let done = match value {
                        Some(v) => store.put(&key, v).await.is_ok(),
                        None => store.purge(&key).await.is_ok(),
                    };
                    if !done {
                        cluster.meters.dropped("kv_write_failed").increment(1);
                    }
                }
            });
        if stopping {
            // Within the shutdown grace time, whatever NATS does.
            let _ = tokio::time::timeout(FINAL_WRITES, writes).await;
            return;
        }
        writes.await;
    }
}

/// Mirrors the retained bucket into the injector: first every topic's latest value (the
/// node says ready once they are in its router), then every change.
async fn mirror(
    cluster: Arc<Cluster>,
    store: kv::Store,
    inbound: mpsc::Sender<Incoming>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = watch(&cluster, &store, &inbound) => if let Err(e) = r {
                warn!(error = %e, "the retained mirror stopped; watching again");
            },
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// One watch of the bucket, until it fails.
async fn watch(
    cluster: &Cluster,
    store: &kv::Store,
    inbound: &mpsc::Sender<Incoming>,
) -> Result<(), async_nats::Error> {
    // A watch of an empty bucket yields nothing, so nothing would say it has caught up.
    let empty = store.status().await?.values() == 0;
    let mut entries = store.watch_with_history(">").await?;
    if empty {
        caught_up(cluster, inbound).await;
    }
    while let Some(entry) = entries.next().await {
        let entry = entry?;
        let current = entry.seen_current || entry.delta == 0;
        let put = entry.operation == kv::Operation::Put;
        if put
            && subject::text_of_key(&entry.key).is_some()
            && inbound.send(Incoming::Mirror(entry.value)).await.is_err()
        {
            return Ok(());
        }
        if current && !*cluster.ready.borrow() {
            caught_up(cluster, inbound).await;
        }
    }
    Err("the watch ended".into())
}

/// Says ready once the injector has put everything mirrored so far into the router.
async fn caught_up(cluster: &Cluster, inbound: &mpsc::Sender<Incoming>) {
    let (done, injected) = oneshot::channel();
    if inbound.send(Incoming::Caught(done)).await.is_ok() && injected.await.is_ok() {
        cluster.ready.send_replace(true);
    }
}
