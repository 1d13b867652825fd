//! In-process subscribers: a link into the router without a socket, for parts of fleetcast
//! that live in the same process (the dashboard bridge).
//!
//! Client ids of local subscribers start with `fleetcast:`, a prefix the gateway refuses to
//! network clients, so no device can take a local subscriber's id over.
//!
//! A local subscriber that reads slower than its filters' logs fill loses what the router
//! overwrote, as a session does (`gateway/gaps.rs`); it counts that from the gaps in each
//! log's offsets ([`LocalSubscriber::take_skipped`]). A forward does not say which filter's
//! log it came from, so it is told by the filter its topic matches: counted only when no
//! topic can match two of the filters (the map's are such).

use crate::gateway::gaps::Gaps;
use crate::router::{disconnect_packet, RouterError, RouterHandle};
use bytes::Bytes;
use fleetcast_proto::filter;
use futures_util::FutureExt;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::{Forward, Notification};

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
    /// The filters, whose order numbers their logs; empty when two of them may match one
    /// topic (then gaps are not counted).
    logs: Vec<String>,
    gaps: Gaps,
    /// Messages the router skipped since [`take_skipped`](LocalSubscriber::take_skipped).
    skipped: u64,
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
            logs: disjoint(filters),
            gaps: Gaps::default(),
            skipped: 0,
            early: Default::default(),
        };
        // The subscriptions hold once the router acked them: publishes that reach the
        // router by another path (the lanes send straight into its channel, not behind
        // this link's subscribes) are matched from then on.
        let mut acked = 0;
        while acked < filters.len() {
            match sub.notification().await {
                Some(Notification::Forward(f)) => {
                    sub.note(&f);
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
                self.note(&f);
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
            // What the link's cache or buffer holds; a look that finds nothing takes
            // nothing (flume's `try_recv` takes a signal only when it returns it), and the
            // wake an `Unschedule` asks for is sent at once (the link's channel is
            // unbounded), so no notification is dropped half handled.
            match self.ready_notification() {
                Some(Notification::Forward(f)) => {
                    self.note(&f);
                    out.push((f.publish.topic, f.publish.payload));
                }
                Some(_) => {}
                None => break,
            }
        }
        true
    }

    /// Messages of its filters' logs the router skipped (overwritten before this
    /// subscriber read them) since this was last asked; always 0 when its filters overlap.
    pub fn take_skipped(&mut self) -> u64 {
        std::mem::take(&mut self.skipped)
    }

    /// Counts what the router skipped in `f`'s log before it.
    fn note(&mut self, f: &Forward) {
        // Retained messages come without an offset: not from the log.
        let Some((_, at)) = f.cursor else { return };
        // Not checked as UTF-8 again: the router's topics passed the gateway.
        let topic = &f.publish.topic;
        if let Some(log) = self
            .logs
            .iter()
            .position(|l| filter::matches_bytes(l.as_bytes(), topic))
        {
            self.skipped += self.gaps.skipped(log, at);
        }
    }

    /// Whether the router parked the link since this was last asked: it had more for it
    /// than the link holds, so whoever reads is behind even when a batch came out short
    /// (a batch holds what the router handed over in its passes so far, not what waits in
    /// its log).
    pub fn was_parked(&mut self) -> bool {
        std::mem::take(&mut self.parked)
    }

    /// As [`notification`](Self::notification), for one the link holds already: None
    /// when it holds none. Without a future: through one, each notification was moved
    /// several times more.
    fn ready_notification(&mut self) -> Option<Notification> {
        while !self.gone {
            match self.rx.try_next() {
                Ok(None) => return None,
                got => {
                    if let Some(n) = self.answer(got) {
                        return Some(n);
                    }
                }
            }
        }
        None
    }

    /// The link's next notification other than `Unschedule` (answered by waking the
    /// link), or None once the router dropped the link.
    ///
    /// # Cancel safety
    /// Cancel safe: a notification is only taken from the link when it is returned, and
    /// an `Unschedule` is answered before the next wait.
    async fn notification(&mut self) -> Option<Notification> {
        while !self.gone {
            let got = self.rx.next().await;
            if let Some(n) = self.answer(got) {
                return Some(n);
            }
        }
        None
    }

    /// What the link gave, for both ways of reading it: a notification for the reader;
    /// or none, with an `Unschedule` answered by waking the link, and `gone` set when the
    /// router dropped it.
    fn answer<E>(&mut self, got: Result<Option<Notification>, E>) -> Option<Notification> {
        match got {
            Ok(Some(Notification::Unschedule)) => {
                self.parked = true;
                // The link's channel is unbounded: this send never waits.
                if self.rx.ready().is_err() {
                    self.gone = true;
                }
                None
            }
            Ok(Some(Notification::Disconnect(..))) | Err(_) => {
                self.gone = true;
                None
            }
            Ok(n) => n,
        }
    }
}

/// `filters` when no topic matches two of them, else none.
fn disjoint(filters: &[&str]) -> Vec<String> {
    let apart = filters
        .iter()
        .enumerate()
        .all(|(i, a)| filters[i + 1..].iter().all(|b| !filter::overlap(a, b)));
    if apart {
        filters.iter().map(|f| (*f).to_owned()).collect()
    } else {
        Vec::new()
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

    /// Waits until the router has taken everything pushed into lane 0.
    async fn lane_taken(router: &RouterHandle) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while router.waiting_shared(0) > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the router takes the lane"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Batches take every publish in order, never more than asked, past the link's own
    /// buffer (the router parks the link when it is full: the batch wakes it), and tell
    /// that the router had more than the link held (the map reads on at once then).
    #[tokio::test]
    async fn batches_take_every_publish_in_order_past_the_links_buffer() {
        let router = RouterHandle::spawn(&RouterSettings {
            max_connections: 10,
            // A pass forwards up to this many, which fill the link (200 notifications) at
            // once: with fewer, a reader that keeps up between passes is never parked.
            max_outgoing_packet_count: 200,
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
        lane_taken(&router).await;
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
        // The router parks a link whose buffer its last pass filled even when nothing
        // more waits, and that `Unschedule` may still sit behind the last publish read.
        // A marker is forwarded only once the link is woken, so reading it reads past it.
        let marker = Packet::Publish(
            Publish::new(
                Bytes::from_static(b"batch/test"),
                Bytes::from("marker"),
                false,
            ),
            None,
        );
        router
            .push_shared(0, &mut vec![marker], true)
            .expect("lane");
        let mut batch = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), sub.next_batch(&mut batch, 64))
            .await
            .expect("the marker arrives");
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].1, "marker");
        let _ = sub.was_parked();
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

    /// What the router overwrote before a slow subscriber read it is counted: every
    /// publish is either read or counted, in a log far smaller than what was sent.
    #[tokio::test]
    async fn what_the_router_overwrote_is_counted() {
        let router = RouterHandle::spawn(&RouterSettings {
            max_connections: 10,
            max_outgoing_packet_count: 100,
            max_segment_size: 1024,
            max_segment_count: 2,
            coalesce_window: None,
        })
        .expect("router");
        let mut sub = LocalSubscriber::new(&router, "gap-test", &["gap/+", "other/#"])
            .await
            .expect("subscriber");
        let n = 2_000u64;
        let publish = |i: u64| {
            let payload = Bytes::from(i.to_string());
            let p = Packet::Publish(
                Publish::new(Bytes::from_static(b"gap/a"), payload, false),
                None,
            );
            router.push_shared(0, &mut vec![p], true).expect("lane");
        };
        // The first one read before the rest: a log's count starts at its first forward.
        publish(0);
        let mut first = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), sub.next_batch(&mut first, 64))
            .await
            .expect("the first publish arrives");
        assert_eq!(first.len(), 1);
        for i in 1..n {
            publish(i);
        }
        lane_taken(&router).await;
        let (mut read, mut last) = (1u64, 0u64);
        while last + 1 < n {
            let mut batch = Vec::new();
            tokio::time::timeout(Duration::from_secs(10), sub.next_batch(&mut batch, 64))
                .await
                .expect("the newest publishes arrive");
            read += batch.len() as u64;
            last = std::str::from_utf8(&batch[batch.len() - 1].1)
                .expect("utf-8")
                .parse()
                .expect("a number");
        }
        let skipped = sub.take_skipped();
        assert!(skipped > 0, "a 2 KiB log cannot hold {n} publishes");
        assert_eq!(read + skipped, n, "read {read}, skipped {skipped}");
        assert_eq!(sub.take_skipped(), 0, "told once");
    }

    /// Filters one topic can match twice make gaps unreadable: none are counted.
    #[test]
    fn overlapping_filters_count_no_gaps() {
        assert_eq!(disjoint(&["a/+", "b/#"]), vec!["a/+", "b/#"]);
        assert!(disjoint(&["a/+", "a/b"]).is_empty());
        assert!(disjoint(&["#", "b"]).is_empty());
    }
}
