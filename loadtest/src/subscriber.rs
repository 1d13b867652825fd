//! A probe subscriber: subscribes to every driver's location (or as one shared group),
//! acknowledges QoS 1 deliveries, and tallies what arrives from this run's publishers:
//! which sequence numbers, and how late.

use crate::dial::dial;
use crate::probe::{now_us, publisher_of, Probe};
use crate::shared::Shared;
use crate::wire::{self, Frame};
use fleetcast_proto::topic;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// The shared-group form of [`topic::LOCATION_FILTER`].
const SHARED_FILTER: &str = "$share/loadtest/drivers/+/location";

/// Told whether the subscription took: the run starts publishers only after every
/// subscriber is in, so nothing published goes unseen.
pub(crate) type Ready = oneshot::Sender<Result<(), String>>;

/// Subscriber number `n`, until `stop`.
pub(crate) async fn subscriber(
    shared: Arc<Shared>,
    n: usize,
    ready: Ready,
    stop: CancellationToken,
) {
    let cfg = &shared.cfg;
    let id = format!("{}sub-{n}", cfg.id_prefix);
    let (mut conn, mut buf, _open) = match dial(&shared, n, &id).await {
        Ok(connected) => connected,
        Err(failed) => {
            let _ = ready.send(Err(failed.detail));
            return;
        }
    };
    let filter = if cfg.shared {
        SHARED_FILTER
    } else {
        topic::LOCATION_FILTER
    };
    if conn
        .send(&wire::subscribe(filter, cfg.qos, 1))
        .await
        .is_err()
    {
        let _ = ready.send(Err("subscribe not sent".into()));
        return;
    }
    let mut reader = Reader {
        shared: &shared,
        n,
        ready: Some(ready),
        acks: Vec::new(),
    };
    // A subscriber at QoS 0 sends nothing once subscribed: without pings the broker closes
    // it after 1.5 keep-alives (90 s by default), and what it then misses reads as the
    // broker's loss.
    let mut ping = tokio::time::interval(cfg.ping_every());
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let why = loop {
        // A malformed frame ends the subscriber: nothing after it can be trusted.
        let consumed = match reader.take(&buf) {
            Ok(consumed) => consumed,
            Err(e) => break e,
        };
        buf.drain(..consumed);
        if !reader.acks.is_empty() {
            if conn.send(&reader.acks).await.is_err() {
                break "sending acks failed";
            }
            reader.acks.clear();
        }
        tokio::select! {
            _ = stop.cancelled() => {
                let _ = conn.send(&wire::DISCONNECT).await;
                return;
            }
            _ = ping.tick() => if conn.send(&wire::PINGREQ).await.is_err() {
                break "sending a PINGREQ failed";
            },
            r = conn.recv(&mut buf) => match r {
                Ok(0) => break "the broker closed the connection",
                Err(_) => break "reading failed",
                Ok(_) => {}
            }
        }
    };
    // Counted in the report, so that loss from a subscriber gone is not read as the
    // broker's.
    shared.subscribers_dropped.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(subscriber = %id, "subscriber stopped before the run did: {why}");
}

/// What one subscriber does with the frames it reads.
struct Reader<'a> {
    shared: &'a Shared,
    n: usize,
    /// Until the SUBACK.
    ready: Option<Ready>,
    /// PUBACKs to send for what was read, written in one go.
    acks: Vec<u8>,
}

impl Reader<'_> {
    /// Handles every complete frame at the start of `buf`; returns the bytes they took.
    fn take(&mut self, buf: &[u8]) -> Result<usize, &'static str> {
        let mut consumed = 0;
        while let Some((frame, len)) = wire::next_frame(&buf[consumed..])? {
            self.handle(frame);
            consumed += len;
        }
        Ok(consumed)
    }

    fn handle(&mut self, frame: Frame<'_>) {
        match frame {
            Frame::SubAck(code) => {
                if let Some(r) = self.ready.take() {
                    let _ = r.send(if code == 0x80 {
                        Err("SUBACK 0x80".into())
                    } else {
                        Ok(())
                    });
                }
            }
            Frame::Publish {
                qos,
                pkid,
                topic,
                payload,
            } => {
                if qos > 0 {
                    wire::puback(&mut self.acks, pkid);
                }
                // Other publishers' messages (another run, another tool) are not counted.
                if let (Some(p), Ok(probe)) = (
                    publisher_of(topic, &self.shared.cfg.id_prefix),
                    serde_json::from_slice::<Probe>(payload),
                ) {
                    let late = now_us().saturating_sub(probe.tsu);
                    self.shared.record(self.n, p, probe.seq, late);
                }
            }
            _ => {}
        }
    }
}
