//! In-process subscribers: a link into the router without a socket, for parts of fleetcast
//! that live in the same process (the dashboard bridge).
//!
//! Client ids of local subscribers start with `fleetcast:`, a prefix the gateway refuses to
//! network clients, so no device can take a local subscriber's id over.

use crate::router::{disconnect_packet, RouterError, RouterHandle};
use bytes::Bytes;
use futures_util::FutureExt;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::Notification;

/// Client id prefix reserved for in-process links.
pub const LOCAL_PREFIX: &str = "fleetcast:";

/// A subscription inside the process: yields (topic, payload) of every matching publish.
pub struct LocalSubscriber {
    tx: LinkTx,
    rx: LinkRx,
    gone: bool,
    /// The router parked the link (it had more than the link holds) since
    /// [`was_parked`](LocalSubscriber::was_parked) was last asked.
    parked: bool,
    /// Publishes the router sent before the last SUBACK (while `new` waited for it).
    early: std::collections::VecDeque<(Bytes, Bytes)>,
}

impl std::fmt::Debug for LocalSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSubscriber")
            .field("gone", &self.gone)
            .finish()
    }
}

impl LocalSubscriber {
    /// Builds a link named `fleetcast:{name}` and subscribes it to `filters` (QoS 0).
    ///
    /// # Errors
    /// The router refused the link or is gone.
    pub async fn new(
        router: &RouterHandle,
        name: &str,
        filters: &[&str],
    ) -> Result<LocalSubscriber, RouterError> {
        let (mut tx, rx, _connack) = router
            .connect(&format!("{LOCAL_PREFIX}{name}"), true)
            .await?;
        for filter in filters {
            // Our link channel is unbounded, so this never blocks.
            tx.subscribe(*filter)
                .map_err(|e| RouterError::Refused(Box::new(e)))?;
        }
        let mut sub = LocalSubscriber {
            tx,
            rx,
            gone: false,
            parked: false,
            early: Default::default(),
        };
        // The subscriptions hold once the router acked them: publishes that reach the
        // router by another path (the lanes send straight into its channel, not behind
        // this link's subscribes) are matched from then on.
        let mut acked = 0;
        while acked < filters.len() {
            match sub.notification().await {
                Some(Notification::Forward(f)) => {
                    sub.early.push_back((f.publish.topic, f.publish.payload));
                }
                // rumqttd's ack type is private: its packet form tells a SUBACK.
                Some(other) => {
                    let packet: Option<rumqttd::protocol::Packet> = other.into();
                    if matches!(packet, Some(rumqttd::protocol::Packet::SubAck(..))) {
                        acked += 1;
                    }
                }
                None => return Err(RouterError::Stopped),
            }
        }
        Ok(sub)
    }

    /// The next publish, or None once the router dropped the link.
    ///
    /// # Cancel safety
    /// Cancel safe: a publish is only taken from the link when it is returned.
    pub async fn next(&mut self) -> Option<(Bytes, Bytes)> {
        if let Some(early) = self.early.pop_front() {
            return Some(early);
        }
        loop {
            if let Notification::Forward(f) = self.notification().await? {
                return Some((f.publish.topic, f.publish.payload));
            }
        }
    }

    /// Waits for the next publish, then adds it and every other one the link already
    /// holds to `out`, up to `max` in `out`; false (nothing added) once the router dropped
    /// the link. One await for a batch: taken one by one through [`next`](Self::next),
    /// each publish's notification (a few hundred bytes with its MQTT 5 properties) was
    /// moved through every async layer on its way, a tenth of the map's time in a flood.
    ///
    /// # Cancel safety
    /// Cancel safe while it waits for the first publish; what it added to `out` stays
    /// there.
    pub async fn next_batch(&mut self, out: &mut Vec<(Bytes, Bytes)>, max: usize) -> bool {
        while out.len() < max {
            let Some(early) = self.early.pop_front() else {
                break;
            };
            out.push(early);
        }
        if out.is_empty() {
            match self.next().await {
                Some(m) => out.push(m),
                None => return false,
            }
        }
        while out.len() < max {
            // Ready when the link's cache or buffer holds more; a poll that finds nothing
            // takes nothing (flume's receive takes a signal only when it returns it), and
            // the wake an `Unschedule` asks for is ready at once (the link's channel is
            // unbounded), so no notification is dropped half handled.
            match self.notification().now_or_never() {
                Some(Some(Notification::Forward(f))) => {
                    out.push((f.publish.topic, f.publish.payload));
                }
                Some(Some(_)) => {}
                Some(None) | None => break,
            }
        }
        true
    }

    /// Whether the router parked the link since this was last asked: it had more for it
    /// than the link holds, so whoever reads is behind even when a batch came out short
    /// (a batch holds what the router handed over in its passes so far, not what waits in
    /// its log).
    pub fn was_parked(&mut self) -> bool {
        std::mem::take(&mut self.parked)
    }

    /// The link's next notification other than `Unschedule` (answered by waking the
    /// link), or None once the router dropped the link.
    ///
    /// # Cancel safety
    /// Cancel safe: a notification is only taken from the link when it is returned.
    async fn notification(&mut self) -> Option<Notification> {
        if self.gone {
            return None;
        }
        loop {
            match self.rx.next().await {
                Ok(Some(Notification::Unschedule)) => {
                    self.parked = true;
                    if self.rx.wake().await.is_err() {
                        self.gone = true;
                        return None;
                    }
                }
                Ok(Some(Notification::Disconnect(..))) | Err(_) => {
                    self.gone = true;
                    return None;
                }
                Ok(Some(n)) => return Some(n),
                Ok(None) => {}
            }
        }
    }
}

impl Drop for LocalSubscriber {
    fn drop(&mut self) {
        if !self.gone {
            // Unbounded link channel: ready at once. Without it the router keeps the slot.
            let _ = self.tx.send(disconnect_packet()).now_or_never();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::RouterSettings;
    use rumqttd::protocol::{Packet, Publish};
    use std::time::Duration;

    /// Batches take every publish in order, never more than asked, past the link's own
    /// buffer (the router parks the link when it is full: the batch wakes it), and tell
    /// that the router had more than the link held (the map reads on at once then).
    #[tokio::test]
    async fn batches_take_every_publish_in_order_past_the_links_buffer() {
        let router = RouterHandle::spawn(&RouterSettings {
            max_connections: 10,
            max_outgoing_packet_count: 100,
            max_segment_size: 1 << 20,
            max_segment_count: 4,
            coalesce_window: None,
        })
        .expect("router");
        let mut sub = LocalSubscriber::new(&router, "batch-test", &["batch/test"])
            .await
            .expect("subscriber");
        let n = 1_000u32;
        for i in 0..n {
            let payload = Bytes::from(i.to_string());
            let publish = Packet::Publish(
                Publish::new(Bytes::from_static(b"batch/test"), payload, false),
                None,
            );
            router
                .push_shared(0, &mut vec![publish], true)
                .expect("lane");
        }
        // Read once the router took them all: it then has more than the link holds.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while router.waiting_shared(0) > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the router takes the lane"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut got = 0u32;
        let mut batches = 0;
        let mut parked = false;
        while got < n {
            let mut batch = Vec::new();
            let more =
                tokio::time::timeout(Duration::from_secs(10), sub.next_batch(&mut batch, 64))
                    .await
                    .expect("every publish arrives");
            assert!(more, "the link is there");
            assert!(!batch.is_empty() && batch.len() <= 64, "{}", batch.len());
            for (topic, payload) in batch {
                assert_eq!(topic, "batch/test");
                assert_eq!(payload, got.to_string(), "in order");
                got += 1;
            }
            batches += 1;
            parked |= sub.was_parked();
        }
        assert!(batches < n, "one publish a batch: {batches}");
        assert!(
            parked,
            "1,000 publishes are more than the link holds ({batches} batches)"
        );
        assert!(!sub.was_parked(), "told once");
        // A few, well within the link: taken without the router parking it.
        for i in 0..10u32 {
            let publish = Packet::Publish(
                Publish::new(
                    Bytes::from_static(b"batch/test"),
                    Bytes::from(i.to_string()),
                    false,
                ),
                None,
            );
            router
                .push_shared(0, &mut vec![publish], true)
                .expect("lane");
        }
        let mut got = 0;
        while got < 10 {
            let mut batch = Vec::new();
            tokio::time::timeout(Duration::from_secs(10), sub.next_batch(&mut batch, 64))
                .await
                .expect("every publish arrives");
            got += batch.len();
        }
        assert!(!sub.was_parked(), "ten fit the link");
    }
}
