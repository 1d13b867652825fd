//! The one router link every HTTP publish goes through.
//!
//! A link per request would cost the router a connection build and teardown each (on its
//! one builder thread); one shared link takes them all instead, batched: whatever requests
//! are waiting go in one notification. A QoS 1 request is answered only once the router
//! has acked it (rumqttd acks a publish once it is in the topic's log), a QoS 0 one once it
//! is handed over. The queue in front is bounded: a full one answers "busy" at once.
//!
//! rumqttd's public constructor makes only QoS 0 publishes; a QoS 1 one is built through
//! its own serialized form (`Publish::deserialize`), which carries the QoS and packet id.

use crate::router::{disconnect_packet, RouterHandle};
use bytes::{BufMut, Bytes, BytesMut};
use rumqttd::protocol::{Packet, Publish};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Requests waiting for the link; past this a request is answered busy.
pub const QUEUE: usize = 1_024;
/// Requests handed to the router in one notification at most.
const BATCH: usize = 256;
/// How long a QoS 1 request waits for the router's ack.
const ACK_WAIT: Duration = Duration::from_secs(5);
/// The link's client id (the gateway refuses ids with this prefix to clients).
const CLIENT_ID: &str = "fleetcast:http";

/// Why a publish did not reach the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Too many requests waiting.
    #[error("too many publishes waiting")]
    Busy,
    /// The router did not ack in time, or the link is gone.
    #[error("the router did not take the message")]
    Unavailable,
}

/// One publish to make.
#[derive(Debug)]
pub struct Job {
    pub topic: Bytes,
    pub payload: Bytes,
    pub retain: bool,
    /// Answer once the router acked it.
    pub qos1: bool,
    pub reply: oneshot::Sender<Result<(), LinkError>>,
}

/// Where HTTP handlers hand their publishes.
#[derive(Debug, Clone)]
pub struct Publisher {
    jobs: mpsc::Sender<Job>,
}

impl Publisher {
    /// Starts the link's task on `tracker`; it ends with `shutdown`.
    pub fn spawn(
        router: Arc<RouterHandle>,
        shutdown: CancellationToken,
        tracker: &tokio_util::task::TaskTracker,
    ) -> Publisher {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tracker.spawn(run(router, queue, shutdown));
        Publisher { jobs }
    }

    /// Publishes without waiting for the router (dropped, and logged, when the queue is
    /// full): for the broker's own messages, which no request waits for.
    pub fn send(&self, topic: Bytes, payload: Bytes, retain: bool, qos1: bool) {
        let (reply, _) = oneshot::channel();
        let job = Job {
            topic,
            payload,
            retain,
            qos1,
            reply,
        };
        if self.jobs.try_send(job).is_err() {
            warn!("publish queue full: a broker message was dropped");
        }
    }

    /// Publishes, returning once the router has the message (QoS 1: acked it).
    ///
    /// # Errors
    /// [`LinkError::Busy`] when the queue is full, [`LinkError::Unavailable`] when the
    /// router did not take it.
    pub async fn publish(
        &self,
        topic: Bytes,
        payload: Bytes,
        retain: bool,
        qos1: bool,
    ) -> Result<(), LinkError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            topic,
            payload,
            retain,
            qos1,
            reply,
        };
        self.jobs.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => LinkError::Busy,
            mpsc::error::TrySendError::Closed(_) => LinkError::Unavailable,
        })?;
        answer.await.unwrap_or(Err(LinkError::Unavailable))
    }
}

/// A publish at QoS 1 with `pkid`, through rumqttd's serialized form: header, packet id,
/// topic length, topic, payload.
fn qos1_publish(topic: &[u8], payload: &[u8], retain: bool, pkid: u16) -> Publish {
    let mut b = BytesMut::with_capacity(5 + topic.len() + payload.len());
    b.put_u8(0x30 | (1 << 1) | u8::from(retain));
    b.put_u16(pkid);
    b.put_u16(topic.len() as u16);
    b.put_slice(topic);
    b.put_slice(payload);
    Publish::deserialize(b.freeze())
}

async fn run(
    router: Arc<RouterHandle>,
    mut queue: mpsc::Receiver<Job>,
    shutdown: CancellationToken,
) {
    let (mut tx, mut rx, _) = loop {
        match router.connect(CLIENT_ID, true).await {
            Ok(link) => break link,
            Err(e) => {
                warn!(error = %e, "HTTP publishing link not built; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    let mut next_pkid: u16 = 0;
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => break,
            job = queue.recv() => match job {
                Some(j) => j,
                None => break,
            },
        };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match queue.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let mut packets = Vec::with_capacity(batch.len());
        let mut waiting = HashMap::new();
        let mut done = Vec::new();
        for job in batch {
            let publish = if job.qos1 {
                // Packet ids 1..=65535; a batch is far smaller, so none repeats within it.
                next_pkid = next_pkid.checked_add(1).unwrap_or(1);
                waiting.insert(next_pkid, job.reply);
                qos1_publish(&job.topic, &job.payload, job.retain, next_pkid)
            } else {
                done.push(job.reply);
                Publish::new(job.topic, job.payload, job.retain)
            };
            packets.push(Packet::Publish(publish, None));
        }
        let Some(last) = packets.pop() else { continue };
        tx.buffer().extend(packets);
        if tx.send(last).await.is_err() {
            return;
        }
        for reply in done {
            let _ = reply.send(Ok(()));
        }
        if !await_acks(&mut rx, &mut waiting).await {
            for (_, reply) in waiting.drain() {
                let _ = reply.send(Err(LinkError::Unavailable));
            }
            return;
        }
        for (_, reply) in waiting.drain() {
            let _ = reply.send(Err(LinkError::Unavailable));
        }
    }
    let _ = tx.send(disconnect_packet()).await;
}

/// Reads the link until every request in `waiting` is acked (answering each), or
/// [`ACK_WAIT`] passes (those left are the caller's to answer). False when the link is gone.
async fn await_acks(
    rx: &mut rumqttd::local::LinkRx,
    waiting: &mut HashMap<u16, oneshot::Sender<Result<(), LinkError>>>,
) -> bool {
    let deadline = tokio::time::Instant::now() + ACK_WAIT;
    while !waiting.is_empty() {
        let next = tokio::time::timeout_at(deadline, rx.next()).await;
        let notification = match next {
            Err(_) => return true,
            Ok(Err(_)) => return false,
            Ok(Ok(n)) => n,
        };
        match notification {
            Some(rumqttd::Notification::Unschedule) if rx.wake().await.is_err() => return false,
            Some(rumqttd::Notification::Unschedule) => {}
            Some(rumqttd::Notification::Disconnect(..)) => return false,
            Some(other) => {
                if let Some(Packet::PubAck(ack, _)) = Option::<Packet>::from(other) {
                    if let Some(reply) = waiting.remove(&ack.pkid) {
                        let _ = reply.send(Ok(()));
                    }
                }
            }
            None => {}
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_qos1_publish_is_built_with_its_packet_id() {
        let p = qos1_publish(b"a/b", b"x", true, 7);
        assert!(p.retain);
        assert_eq!((&p.topic[..], &p.payload[..]), (&b"a/b"[..], &b"x"[..]));
        // QoS 1 counts a packet id in its length; QoS 0 does not.
        assert_eq!(p.len(), 2 + 3 + 1 + 2);
        assert_eq!(Publish::new("a/b", "x", true).len(), 2 + 3 + 1);
    }
}
