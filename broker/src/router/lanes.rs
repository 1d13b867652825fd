//! Shared ingest links ("lanes"): the router links that carry the publishes of every
//! device that only publishes.
//!
//! A rumqttd local link costs about 27 KB of router buffers and cursors, and every
//! notification on it is a wake-up of the forwarder and router threads. A device that
//! only publishes at QoS 0 or 1 needs none of what a link of its own holds (no
//! subscriptions, no session, no acks from the router: the gateway acks its QoS 1
//! publishes once they are in a lane, `gateway/publishes.rs`), so its publishes go through
//! one of a few links shared by all such devices; a device gets a link of its own when it
//! first needs one (`gateway/uplink.rs`).
//!
//! Batching across connections: a push that finds its lane's buffer empty notifies the
//! router; a push that finds it non-empty does not, because the notification of the push
//! that made it non-empty has not been handled yet (rumqttd takes a link's whole buffer
//! under its lock when it handles one, so "non-empty" means "a notification is on its
//! way"). Whatever many connections push while the router is busy goes in with one
//! notification. Each lane's pushes are serialized by a mutex, which is what keeps that
//! reasoning true, and a connection always uses the same lane, so its publishes stay in
//! order; they also stay in order with a link it builds later, because the device first
//! flushes its lane ([`Lanes::flush_one`]: a notification straight into the router's FIFO
//! channel) and only then asks for the build, which reaches that channel behind it.
//!
//! Batching in time: a fleet at 1 Hz per device spreads its publishes evenly, so a push
//! nearly always finds its lane empty and every message would still cost a wake-up of the
//! router thread. Under load (more than [`BUSY_PER_S`] notifications a second) the lanes
//! therefore switch to a coalescing window: pushes only fill the buffer, and the router
//! takes what the lanes hold on its own, every window (`[router] coalesce_window_us`,
//! [`WINDOW`] by default; rumqttd's `Polled`, `vendor/rumqttd/FLEETCAST.md`), so one router
//! wake-up carries everything that came in that window, at the cost of at most the window
//! of latency; with the window set to 0 it never switches. The router switches back after
//! [`QUIET_WINDOWS`] windows in a row found the lanes empty. Below that rate a push
//! notifies at once, as before; one that finds the router's channel full leaves it in the
//! lane, and the router takes it before it next blocks. (A flusher thread used to send
//! each lane's notification every window: under 10,000 drivers at 1 Hz it woke 540 times
//! a second, 0.9% of a core, to wake the router as often.)
//!
//! A flood needs no window: a push under the window that leaves more than
//! [`NOTIFY_BYTES`] waiting notifies at once (once, until the router takes the buffer),
//! so the router is not left idle while a heavy publisher's reads pause for what waits
//! (`gateway/intake.rs`), which is most of what 1 -> 1 at full speed gained
//! (`bench/SUMMARY.md`). Callers turn it off once a subscriber behind is no longer waited
//! for (`gateway/backlog.rs`): a flood let in early then overwrites what it has not read,
//! and the window paces the flood instead (with it always on, one of two 1,000 -> 1 runs
//! lost 0.9%; with this exception, seven runs lost 0-0.23%, all that the broker read and
//! dropped counted in the two checked).
//!
//! Only QoS 0 and 1 publishes may go through a lane. The router answers nothing on a lane
//! (it acks no QoS 1 publish from one: rumqttd's `Polled`), so nobody needs to read the
//! lane's receiving end; QoS 2 needs the router's PUBREC and PUBREL. The gateway acks a
//! QoS 1 publish as soon as it is in the lane, before the router has it; a push holding a
//! retained one therefore notifies at once (when the router's channel has room, window or
//! not), so that what anyone sends the router after that PUBACK (a SUBSCRIBE that should
//! find it retained) reaches the router behind it, as it did when the router acked it.
//! Under the window, a non-retained one may reach the router up to a window after its
//! PUBACK: a subscription made in that time may still receive it.

use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::Packet;
use rumqttd::Polled;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Lanes built at most (one per core is plenty: a push holds its lane's lock for
/// a few hundred nanoseconds).
const MAX_LANES: usize = 8;
/// The coalescing window under load by default (`[router] coalesce_window_us`): the most
/// a publish waits for its router wake-up. 2 ms: with the connection threads' own pause
/// (`io_threads/pause.rs`, 2 ms) publishes already come in batches, and 5 ms saved only
/// 2-6% more of a 10,000-driver fleet's CPU for twice the p99 (8.8 against 4.6-4.7 ms).
/// Without that pause, 2 ms had cost about a fifth more CPU than 5 ms (`bench/SUMMARY.md`,
/// 2026-12-07).
pub(crate) const WINDOW: Duration = Duration::from_millis(2);
/// Notifications a second above which the window is worth its latency.
const BUSY_PER_S: u64 = 2_000;
/// How many notifications the rate is measured over ([`BUSY_PER_S`] for 10 ms).
const BUSY_COUNT: u64 = BUSY_PER_S / 100;
/// Windows in a row with nothing to take before pushes notify on their own again.
pub(crate) const QUIET_WINDOWS: u32 = 50;
/// Log bytes waiting in a lane past which a push may notify at once under the window
/// (a fleet at 1 Hz, one small publish per push, never comes near it; a flood passes it
/// in well under a window).
const NOTIFY_BYTES: usize = 64 * 1024;

/// One shared link: the sending end, and the receiving end kept open (the router drops
/// a link whose receiver is gone).
struct Lane {
    tx: Mutex<Waiting>,
    _rx: LinkRx,
}

/// A lane's sending end and the log bytes of what waits in its buffer for the router.
struct Waiting {
    tx: LinkTx,
    /// Log bytes pushed since the router last took the buffer (it takes all of it at
    /// once, so an empty buffer means none wait).
    bytes: usize,
    /// A notification was sent for what waits; cleared when a push finds the buffer
    /// empty (the router took it), so a flood notifies once per take, not per push.
    notified: bool,
}

impl Waiting {
    /// Log bytes waiting now.
    fn now(&self) -> usize {
        // Empty: the router took all that was counted.
        if self.tx.buffer().is_empty() {
            0
        } else {
            self.bytes
        }
    }
}

/// The shared ingest links.
pub(crate) struct Lanes {
    lanes: Vec<Lane>,
    /// The router's side of the window: on, it takes what the lanes hold every window
    /// (never on when the window is 0).
    polled: Polled,
    /// Notifications pushes sent, all told.
    direct: AtomicU64,
    /// When the last [`BUSY_COUNT`] of them began (ms since `born`).
    counted_from: AtomicU64,
    born: Instant,
    /// Notifications sent before the window ended (floods, retained QoS 1 publishes), all
    /// told.
    early: AtomicU64,
    /// The router's own channel has room for a notification without blocking.
    room: Room,
}

/// Whether the router's channel has room now (its sender's type is private to rumqttd,
/// so it is only ever held in a closure).
pub(crate) type Room = Box<dyn Fn() -> bool + Send + Sync>;

/// A lane's router link is gone: the router dropped it or stopped.
#[derive(Debug, thiserror::Error)]
#[error("shared router link gone")]
pub struct LaneGone;

impl Lanes {
    /// The lanes over links already built (the router's event type is private, so the
    /// links are built where its sender is: `RouterHandle::spawn`); `polled` is what the
    /// router was given (`Router::with_polled`), and names the links here.
    pub(crate) fn new(links: Vec<(LinkTx, LinkRx)>, polled: Polled, room: Room) -> Arc<Lanes> {
        polled.set_links(links.iter().map(|(_, rx)| rx.id()).collect());
        let lanes = links
            .into_iter()
            .map(|(tx, rx)| Lane {
                tx: Mutex::new(Waiting {
                    tx,
                    bytes: 0,
                    notified: false,
                }),
                _rx: rx,
            })
            .collect();
        Arc::new(Lanes {
            lanes,
            polled,
            direct: AtomicU64::new(0),
            counted_from: AtomicU64::new(0),
            born: Instant::now(),
            early: AtomicU64::new(0),
            room,
        })
    }

    /// Counts a notification a push is about to send, and turns the window on when the
    /// last [`BUSY_COUNT`] came faster than [`BUSY_PER_S`] (before the send, so the router
    /// sees it on when it wakes for it).
    fn count_direct(&self) {
        let n = self.direct.fetch_add(1, Ordering::Relaxed) + 1;
        if n % BUSY_COUNT != 0 {
            return;
        }
        let now = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        let from = self.counted_from.swap(now, Ordering::Relaxed);
        if now.saturating_sub(from) * BUSY_PER_S < BUSY_COUNT * 1_000 {
            self.polled.turn_on();
        }
    }

    /// Notifies the router of lane `lane` (modulo the lanes) if anything waits in it, so
    /// that what a device pushed there is ahead of anything it sends another way next.
    /// Whether there was.
    ///
    /// # Errors
    /// [`LaneGone`] when the lane's link is gone.
    pub(crate) fn flush_one(&self, lane: usize) -> Result<bool, LaneGone> {
        let lane = &self.lanes[lane % self.lanes.len()];
        let mut waiting = lane.tx.lock().unwrap_or_else(|e| e.into_inner());
        let last = waiting.tx.buffer().pop_back();
        match last {
            Some(last) => {
                waiting.notified = true;
                notify(&mut waiting.tx, last).map(|()| true)
            }
            None => Ok(false),
        }
    }

    /// Log bytes waiting in lane `lane` (modulo the lanes) for the router to take.
    pub(crate) fn waiting(&self, lane: usize) -> usize {
        let lane = &self.lanes[lane % self.lanes.len()];
        lane.tx.lock().unwrap_or_else(|e| e.into_inner()).now()
    }

    /// How many lanes to build: one per core, at most [`MAX_LANES`].
    pub(crate) fn wanted() -> usize {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_LANES)
    }

    /// Hands `batch` (QoS 0 and 1 publishes only) to the router through lane `lane` (taken
    /// modulo the number of lanes), draining it. Returns the log bytes now waiting in the
    /// lane, which callers read as back-pressure: the router appends a buffer it takes to
    /// the logs in one go, before any subscriber reads, so what waits must stay well below
    /// what a log keeps. `early`: under the window, notify at once when more than
    /// [`NOTIFY_BYTES`] wait.
    ///
    /// # Errors
    /// [`LaneGone`] when the lane's link is gone.
    pub(crate) fn push(
        &self,
        lane: usize,
        batch: &mut Vec<Packet>,
        early: bool,
    ) -> Result<usize, LaneGone> {
        debug_assert!(batch.iter().all(|p| matches!(p, Packet::Publish(..))));
        let lane = &self.lanes[lane % self.lanes.len()];
        // One pass over the batch: its log bytes, and whether it holds a retained QoS 1
        // publish, already acked to its client (see the module's doc).
        let (bytes, retained_ack) = batch.iter().fold((0, false), |(bytes, retained), p| {
            let acked = matches!(p, Packet::Publish(p, _)
                if p.retain && crate::gateway::frame::above_qos0(p));
            (bytes + super::log_bytes(p), retained || acked)
        });
        let mut waiting = lane.tx.lock().unwrap_or_else(|e| e.into_inner());
        let Some(last) = batch.pop() else {
            return Ok(waiting.now());
        };
        let (was_empty, notify_now) = {
            let mut buffer = waiting.tx.buffer();
            let was_empty = buffer.is_empty();
            buffer.extend(batch.drain(..));
            let waits = if was_empty {
                bytes
            } else {
                waiting.bytes + bytes
            };
            // Empty: the router took the buffer, and with it any notification sent.
            let notified = waiting.notified && !was_empty;
            let at_once = !notified && (retained_ack || (early && waits >= NOTIFY_BYTES));
            // Either a notification is on its way for what is there, which takes this
            // too, or the router takes it at its next look (within the window), or (the
            // router's channel full: a send would block this thread) before it next
            // blocks. The look at `busy` is under the buffer's lock: the router turns the
            // window off before it takes the buffer one last time.
            let busy = self.polled.is_on();
            let later = !at_once && (!was_empty || busy);
            if later || !(self.room)() {
                buffer.push_back(last);
                (was_empty, None)
            } else {
                (was_empty, Some(last))
            }
        };
        // Empty: the router took all that was counted. (If it takes the buffer just after
        // the look, the count stays high until the next push: a pause too many, never
        // one too few.)
        if was_empty {
            waiting.bytes = bytes;
            waiting.notified = false;
        } else {
            waiting.bytes += bytes;
        }
        let Some(last) = notify_now else {
            return Ok(waiting.bytes);
        };
        waiting.notified = true;
        if !was_empty || self.polled.is_on() {
            self.early.fetch_add(1, Ordering::Relaxed);
        }
        self.count_direct();
        notify(&mut waiting.tx, last).map(|()| waiting.bytes)
    }
}

/// Pushes `last` into the lane and notifies the router. A lane's link sends straight into
/// the router's bounded channel (no forwarder hop, `router.rs`), so this blocks while
/// that channel is full: pushes call it only when [`Lanes::room`] says there is room;
/// [`Lanes::flush_one`], once in a device's life, may wait.
fn notify(tx: &mut LinkTx, last: Packet) -> Result<(), LaneGone> {
    super::send_now(tx, last).then_some(()).ok_or(LaneGone)
}

#[cfg(test)]
mod tests;
