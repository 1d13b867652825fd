//! What outlives a connection for a while: its session, and a delayed will.
//!
//! rumqttd keeps a persistent session until the same client id connects again, forever,
//! and has no will delay. MQTT 5 asks for both to end on time: a session ends Session
//! Expiry Interval seconds after its connection (a persistent 3.1.1 session after
//! `max_session_expiry_secs`), and a will with a Will Delay Interval waits that long, or
//! until the session ends if sooner, and is not sent at all if the client comes back
//! first. One task per session that lingers does this; a new connection with the client
//! id cancels it ([`Lingering::cancel`]) as soon as it owns the id.
//!
//! The session is ended by building a clean link for the id and releasing it, which is
//! how rumqttd discards one; done under a registry claim taken only if no connection holds
//! the id, so it never disturbs a live one. Delayed wills go out through a link of their
//! own (`fleetcast:will:N`: the gateway refuses such ids to clients).

use super::Gateway;
use crate::router::{disconnect_packet, RouterHandle};
use rumqttd::protocol::{LastWill, LastWillProperties, Packet, Publish, PublishProperties};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Sessions (and wills) lingering after their connection, by client id.
#[derive(Debug, Default)]
pub struct Lingering {
    inner: Mutex<HashMap<String, (u64, CancellationToken)>>,
    next: AtomicU64,
}

impl Lingering {
    /// A connection owns `client_id` again: what lingered for it is called off. Returns
    /// whether anything did (then the router holds a session for the id).
    pub fn cancel(&self, client_id: &str) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match inner.remove(client_id) {
            Some((_, t)) => {
                t.cancel();
                true
            }
            None => false,
        }
    }

    /// Sessions lingering now.
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether none lingers.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn register(&self, client_id: &str) -> (u64, CancellationToken) {
        let token = CancellationToken::new();
        let generation = self.next.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let entry = (generation, token.clone());
        if let Some((_, old)) = inner.insert(client_id.to_owned(), entry) {
            old.cancel();
        }
        (generation, token)
    }

    /// The lingering of `generation` is over (a newer one is left alone).
    fn done(&self, client_id: &str, generation: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.get(client_id).is_some_and(|(g, _)| *g == generation) {
            inner.remove(client_id);
        }
    }
}

/// A will held back by its delay: the PUBLISH, and the seconds it waits.
#[derive(Debug)]
pub(super) struct DelayedWill {
    pub(super) publish: Packet,
    pub(super) delay: u32,
}

/// Lets the session of `client_id` linger `expiry` seconds (`u32::MAX`: for ever), and
/// its will, if any, until its delay or the session's end.
pub(super) fn linger(gw: &Arc<Gateway>, client_id: String, expiry: u32, will: Option<DelayedWill>) {
    let (generation, token) = gw.lingering.register(&client_id);
    let gw = Arc::clone(gw);
    tokio::spawn(async move {
        let mut waited = 0u32;
        if let Some(w) = will {
            let at = w.delay.min(expiry);
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(u64::from(at))) => {}
            }
            if let Some(durable) = &gw.durable {
                durable.published_packet(&w.publish);
            }
            if let Some(cluster) = gw.cluster.get() {
                cluster.copy_publish(&w.publish); // Cluster hook: to the other nodes too.
            }
            publish_will(&gw.router, w.publish).await;
            gw.meters.wills.increment(1);
            waited = at;
        }
        if expiry == u32::MAX {
            // Kept until the client comes back; only the will had to wait.
            gw.lingering.done(&client_id, generation);
            return;
        }
        let rest = Duration::from_secs(u64::from(expiry - waited));
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(rest) => {}
        }
        // A connection that holds the id now has called this off, or is about to.
        let Some(claim) = gw.registry.try_claim(&client_id) else {
            return;
        };
        if token.is_cancelled() {
            return;
        }
        gw.lingering.done(&client_id, generation);
        let kept = gw.persistent_filters.take(&client_id);
        gw.forget_retain_as_published(kept.retain_as_published());
        gw.held_sessions.release(&client_id);
        discard(&gw.router, &client_id).await;
        if let Some(durable) = &gw.durable {
            durable.forget(&client_id);
        }
        debug!(client_id, "session expired");
        drop(claim);
    });
}

/// Ends the session the router keeps for `client_id`: a clean link for the id replaces
/// it, and is released at once. The caller owns the id.
pub(super) async fn discard(router: &RouterHandle, client_id: &str) {
    if let Ok((mut tx, _rx, _)) = router.connect(client_id, true).await {
        let _ = tx.send(disconnect_packet()).await;
    }
}

/// Publishes a will through a link of its own, released at once.
async fn publish_will(router: &RouterHandle, publish: Packet) {
    static N: AtomicU64 = AtomicU64::new(1);
    let id = format!(
        "{}will:{}",
        crate::local::LOCAL_PREFIX,
        N.fetch_add(1, Ordering::Relaxed)
    );
    if let Ok((mut tx, _rx, _)) = router.connect(&id, true).await {
        tx.buffer().push_back(publish);
        let _ = tx.send(disconnect_packet()).await;
    }
}

/// A will as the PUBLISH it becomes, with the properties it was given, and its delay (s).
/// Wills enter the router at QoS 0 (rumqttd's public constructor allows no other; the
/// link closes before an ack could come back anyway); rumqttd delivers them to QoS 1
/// subscribers at QoS 1 all the same.
pub(super) fn will_publish(w: LastWill, props: Option<LastWillProperties>) -> (u32, Packet) {
    let publish = Publish::new(w.topic, w.message, w.retain);
    let Some(p) = props else {
        return (0, Packet::Publish(publish, None));
    };
    let properties = PublishProperties {
        payload_format_indicator: p.payload_format_indicator,
        message_expiry_interval: p.message_expiry_interval,
        topic_alias: None,
        response_topic: p.response_topic,
        correlation_data: p.correlation_data,
        user_properties: p.user_properties,
        subscription_identifiers: Vec::new(),
        content_type: p.content_type,
    };
    let delay = p.delay_interval.unwrap_or(0);
    (delay, Packet::Publish(publish, Some(properties)))
}
