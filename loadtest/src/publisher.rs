//! One load-test connection's life: wait for its connect slot, connect, then by scenario
//! hold it quietly (idle), drop and reconnect it (storm), publish as fast as the broker
//! takes (throughput) or publish at the interval (fleet), until the run stops.

use crate::config::Scenario;
use crate::conn::Conn;
use crate::dial::dial;
use crate::probe::body;
use crate::shared::Shared;
use crate::wire;
use fleetcast_proto::topic;
use rand::Rng;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{interval_at, sleep, sleep_until, timeout, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// Throughput: messages written per socket write. Batching is what lets one load-test
/// process outrun a broker; 32 keeps a batch of default-size messages under 8 KiB.
const BATCH: u64 = 32;
/// Longest wait, once the load stops, for the broker to take what the publisher's socket
/// still holds: the rest of a frame cut mid-write, then everything up to the DISCONNECT,
/// which the broker answers by closing. A broker that paces a flood reads the last of it
/// seconds after the load (its p99 latency in 1,000 -> 1 is 20 s and more); messages
/// still unread when the run ends were counted as published and never arrived.
const SETTLE_MAX: Duration = Duration::from_secs(30);

/// When one publisher does what.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot {
    /// Its number over the whole run (all worker processes): client id and source address.
    pub index: usize,
    /// When it connects.
    pub connect_at: Instant,
    /// When it publishes first.
    pub first_tick: Instant,
}

/// The run's two signals to its publishers.
#[derive(Debug, Clone)]
pub(crate) struct Signals {
    /// The load is over: disconnect.
    pub stop: CancellationToken,
    /// Storm: drop the connection now.
    pub storm: CancellationToken,
}

/// Publisher `slot.index`, until `signals.stop`.
pub(crate) async fn publisher(shared: Arc<Shared>, slot: Slot, signals: Signals) {
    let id = format!("{}{:06}", shared.cfg.id_prefix, slot.index);
    tokio::select! {
        _ = signals.stop.cancelled() => return,
        _ = sleep_until(slot.connect_at) => {}
    }
    let Ok((conn, buf, open)) = dial(&shared, slot.index, &id).await else {
        return;
    };
    match shared.cfg.scenario {
        Scenario::Idle => hold(conn, buf, shared.cfg.ping_every(), &signals.stop).await,
        Scenario::Storm => {
            tokio::select! {
                _ = signals.stop.cancelled() => return,
                _ = hold(conn, buf, shared.cfg.ping_every(), &signals.storm) => {}
            }
            drop(open);
            // Dropped abruptly (no DISCONNECT), as when a network fails.
            reconnect(&shared, slot.index, &id, &signals.stop).await;
        }
        Scenario::Throughput | Scenario::Fleet => {
            let mut p = Publishing {
                shared: &shared,
                topic: topic::location_topic(&id),
                id,
                conn,
                buf,
                out: Vec::with_capacity(256),
            };
            let still_up = if shared.cfg.scenario == Scenario::Throughput {
                p.flood(slot.first_tick, &signals.stop).await
            } else {
                p.tick(slot.first_tick, &signals.stop).await
            };
            if still_up {
                let _ = timeout(SETTLE_MAX, p.settle()).await;
            }
        }
    }
}

/// Keeps a connection open and quiet until `stop`, answering nothing but pings.
async fn hold(mut conn: Conn, mut buf: Vec<u8>, every: Duration, stop: &CancellationToken) {
    let mut ping = tokio::time::interval(every);
    ping.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ping.tick() => if conn.send(&wire::PINGREQ).await.is_err() { return },
            r = conn.recv(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(_) => buf.clear(),
            }
        }
    }
}

/// Storm: connects again (after a random wait with `--jitter`) and holds until `stop`.
async fn reconnect(shared: &Shared, index: usize, id: &str, stop: &CancellationToken) {
    let cfg = &shared.cfg;
    if cfg.jitter {
        let window = cfg.connections as f64 / f64::from(cfg.connect_rate.max(1));
        let wait = rand::rng().random_range(0.0..window.max(0.001));
        sleep(Duration::from_secs_f64(wait)).await;
    }
    let Ok((conn, buf, _open)) = dial(shared, index, id).await else {
        return;
    };
    shared.reconnected_now();
    hold(conn, buf, shared.cfg.ping_every(), stop).await;
}

/// A connected publisher of `drivers/{id}/location`.
struct Publishing<'a> {
    shared: &'a Shared,
    id: String,
    topic: String,
    conn: Conn,
    buf: Vec<u8>,
    /// The frames of one write.
    out: Vec<u8>,
}

impl Publishing<'_> {
    /// Throughput: QoS 0 batches back to back from `start` until `stop`; false when the
    /// connection was lost or is left mid-frame (it then gets no DISCONNECT).
    async fn flood(&mut self, start: Instant, stop: &CancellationToken) -> bool {
        tokio::select! {
            _ = stop.cancelled() => return true,
            _ = sleep_until(start) => {}
        }
        let mut seq = 0u64;
        // Where each frame of the batch ends in `out`.
        let mut ends = Vec::with_capacity(BATCH as usize);
        loop {
            self.out.clear();
            ends.clear();
            for _ in 0..BATCH {
                seq += 1;
                let payload = body(&self.id, seq, self.shared.cfg.payload_size);
                wire::publish(&mut self.out, &self.topic, &payload, 0, 0);
                ends.push(self.out.len());
            }
            let mut written = 0;
            tokio::select! {
                _ = stop.cancelled() => {
                    // Stopped mid-batch: what the socket took reaches the broker, so it
                    // counts as published (else more arrive than were "published" and
                    // as many losses hide), and a frame cut in two is finished rather
                    // than left torn for the broker to count as malformed.
                    let sent = self.finish_frame(&ends, written).await;
                    let whole = ends.iter().take_while(|&&e| e <= sent).count();
                    self.shared.published.fetch_add(whole as u64, Ordering::Relaxed);
                    // A frame left torn (the broker read nothing for SETTLE_MAX): no
                    // DISCONNECT after it, or the broker reads it as the frame's rest
                    // and counts a malformed packet or an invalid payload.
                    return sent == 0 || ends.contains(&sent);
                }
                r = self.conn.send_counting(&self.out, &mut written) => if r.is_err() {
                    let _ = self.shared.error("lost_connection".into());
                    return false;
                },
            }
            self.shared.published.fetch_add(BATCH, Ordering::Relaxed);
            self.buf.clear();
        }
    }

    /// Sends DISCONNECT and waits for the broker to close the connection: it has then
    /// read everything before.
    async fn settle(&mut self) -> std::io::Result<()> {
        self.conn.send(&wire::DISCONNECT).await?;
        loop {
            self.buf.clear();
            if self.conn.recv(&mut self.buf).await? == 0 {
                return Ok(());
            }
        }
    }

    /// Writes the rest of the frame `written` cut (frames end at `ends`), for at most
    /// [`SETTLE_MAX`]; returns how much of `out` is written then.
    async fn finish_frame(&mut self, ends: &[usize], written: usize) -> usize {
        let Some(&end) = ends.iter().find(|&&e| e > written) else {
            return written;
        };
        if written == 0 || ends.contains(&written) {
            return written;
        }
        let mut more = 0;
        let rest = &self.out[written..end];
        match tokio::time::timeout(SETTLE_MAX, self.conn.send_counting(rest, &mut more)).await {
            Ok(Ok(())) => end,
            _ => written + more,
        }
    }

    /// Fleet: one message per interval from `first_tick` until `stop`, at the run's QoS;
    /// false when the connection was lost.
    async fn tick(&mut self, first_tick: Instant, stop: &CancellationToken) -> bool {
        let cfg = &self.shared.cfg;
        let mut ticker = interval_at(first_tick, cfg.interval.max(Duration::from_millis(1)));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let (mut seq, mut pkid) = (0u64, 0u16);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return true,
                _ = ticker.tick() => {
                    seq += 1;
                    if cfg.qos > 0 {
                        pkid = pkid % 65_535 + 1;
                    }
                    self.out.clear();
                    let payload = body(&self.id, seq, cfg.payload_size);
                    wire::publish(&mut self.out, &self.topic, &payload, cfg.qos, pkid);
                    if cfg.retain {
                        self.out[0] |= 0x01;
                    }
                    if self.conn.send(&self.out).await.is_err() {
                        break;
                    }
                    self.shared.published.fetch_add(1, Ordering::Relaxed);
                }
                r = self.conn.recv(&mut self.buf) => match r {
                    Ok(0) | Err(_) => break,
                    // PUBACKs and PINGRESPs: nothing to do with them.
                    Ok(_) => self.buf.clear(),
                }
            }
        }
        let _ = self.shared.error("lost_connection".into());
        false
    }
}
