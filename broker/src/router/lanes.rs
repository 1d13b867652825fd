//! Shared ingest links ("lanes"): the router links that carry the publishes of every
//! device that only publishes.
//!
//! A rumqttd local link costs about 27 KB of router buffers and cursors, and every
//! notification on it is a wake-up of the forwarder and router threads. A device that
//! only publishes at QoS 0 needs none of what a link of its own holds (no subscriptions,
//! no acks, no session), so its publishes go through one of a few links shared by all
//! such devices; a device gets a link of its own when it first needs one
//! (`gateway/uplink.rs`).
//!
//! Batching across connections: a push that finds its lane's buffer empty notifies the
//! router; a push that finds it non-empty does not, because the notification of the push
//! that made it non-empty has not been handled yet (rumqttd takes a link's whole buffer
//! under its lock when it handles one, so "non-empty" means "a notification is on its
//! way"). Whatever many connections push while the router is busy goes in with one
//! notification. Each lane's pushes are serialized by a mutex, which is what keeps that
//! reasoning true, and a connection always uses the same lane, so its publishes stay in
//! order; they also stay in order with a link it builds later, because link builds and
//! notifications go through the same FIFO channel.
//!
//! Only QoS 0 publishes may go through a lane: they are the only packets the router
//! answers with nothing, so nobody needs to read the lane's receiving end.

use futures_util::FutureExt;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::Packet;
use std::sync::Mutex;

/// Lanes built at most (one per core is plenty: a push holds its lane's lock for
/// a few hundred nanoseconds).
const MAX_LANES: usize = 8;

/// One shared link: the sending end, and the receiving end kept open (the router drops
/// a link whose receiver is gone).
struct Lane {
    tx: Mutex<LinkTx>,
    _rx: LinkRx,
}

/// The shared ingest links.
pub(crate) struct Lanes {
    lanes: Vec<Lane>,
}

/// A lane's router link is gone: the router dropped it or stopped.
#[derive(Debug, thiserror::Error)]
#[error("shared router link gone")]
pub struct LaneGone;

impl Lanes {
    /// The lanes over links already built (the router's event type is private, so the
    /// links are built where its sender is: `RouterHandle::spawn`).
    pub(crate) fn new(links: Vec<(LinkTx, LinkRx)>) -> Lanes {
        let lanes = links
            .into_iter()
            .map(|(tx, rx)| Lane {
                tx: Mutex::new(tx),
                _rx: rx,
            })
            .collect();
        Lanes { lanes }
    }

    /// How many lanes to build: one per core, at most [`MAX_LANES`].
    pub(crate) fn wanted() -> usize {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_LANES)
    }

    /// Hands `batch` (QoS 0 publishes only) to the router through lane `lane` (taken
    /// modulo the number of lanes). Returns the packets now waiting in the lane, which
    /// callers read as back-pressure.
    ///
    /// # Errors
    /// [`LaneGone`] when the lane's link is gone.
    pub(crate) fn push(&self, lane: usize, mut batch: Vec<Packet>) -> Result<usize, LaneGone> {
        debug_assert!(batch
            .iter()
            .all(|p| matches!(p, Packet::Publish(p, _) if !crate::gateway::frame::above_qos0(p))));
        let lane = &self.lanes[lane % self.lanes.len()];
        let mut tx = lane.tx.lock().unwrap_or_else(|e| e.into_inner());
        let Some(last) = batch.pop() else {
            return Ok(tx.buffer().len());
        };
        let waiting = {
            let mut buffer = tx.buffer();
            let was_empty = buffer.is_empty();
            buffer.extend(batch);
            if !was_empty {
                // A notification is on its way for what is there: it takes this too.
                buffer.push_back(last);
                return Ok(buffer.len());
            }
            buffer.len()
        };
        // Our sender is unbounded (the forwarder drains it), so this is ready at once.
        match tx.send(last).now_or_never() {
            Some(Ok(_)) => Ok(waiting + 1),
            _ => Err(LaneGone),
        }
    }
}
