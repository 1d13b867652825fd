//! What a session does with the bytes it reads: room in the read buffer, the frames
//! parsed and checked, the quotas and back-pressure they meet, and the batch handed to
//! the router.

use super::backlog::Mark;
use super::codec::Violation;
use super::end::End;
use super::frame;
use super::inbound::Tally;
use super::session::Session;
use super::transport::Transport;
use super::Gateway;
use crate::cluster::ClusterHook;
use bytes::BytesMut;
use rumqttd::protocol::Error as ProtocolError;
use rumqttd::protocol::Packet;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Bytes asked of the socket per read while frames are coming faster than one a read.
const READ_CHUNK: usize = 16 * 1024;
/// What a read buffer holding part of a frame is grown to first: enough for a position
/// fix (~100 bytes) several times over, small beside the socket's own kernel buffers.
const READ_MIN: usize = 1024;
/// Spare room below which a buffer holding part of a frame is grown before a read.
const READ_ROOM: usize = 256;
/// Router back-log (events) past which sessions pause their reads.
const ROUTER_HIGH_WATER: usize = 16 * 1024;
/// How long reads pause while the router is behind (its back-log, or what waits in a
/// link or lane) before looking again: it takes a few hundred microseconds to catch up.
/// Reads resume only once it has (`Session::router_behind`): a pause of fixed length let
/// 1,000 flooding publishers push a read each per pause into lanes the router had not
/// emptied, and one 1,000 -> 1 run in about ten grew them past 1 GB while the router,
/// busy appending takes of that size, delivered nothing.
pub(super) const ROUTER_PAUSE: Duration = Duration::from_millis(1);

thread_local! {
    /// An emptied batch kept for the next read on this thread: a fresh `Vec` for every
    /// read was a malloc and a free per position (2.5% of a connection thread's samples
    /// on the 5,000-driver fleet). A session that finds it taken (another read on the
    /// thread is between its parse and its push) makes its own.
    static SPARE: std::cell::Cell<Vec<Packet>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Packets a kept batch may have room for: a flood's large batches are not kept.
const SPARE_MAX: usize = 64;

/// Keeps `batch`, emptied, for the thread's next read.
fn give_back(mut batch: Vec<Packet>) {
    if batch.capacity() <= SPARE_MAX {
        batch.clear();
        SPARE.set(batch);
    }
}

/// Readies a read buffer for the next read. An empty one is let go, to the thread's spare
/// (`transport::spare`): the transport reads into that or into an allocation of the size
/// that came (`transport.rs`), so that a connection waiting for its next packet holds no
/// buffer (a device sending a fix a second waits nearly all the time). One holding part of
/// a frame keeps it and grows, to [`READ_MIN`] first, then a chunk at a time: a flood
/// reads [`READ_CHUNK`] at a time.
pub(super) fn make_room(buf: &mut BytesMut) {
    if buf.is_empty() {
        // Even without spare room: an emptied buffer may still hold the allocation (and
        // the shared header) that the frames split off it were read into. It goes to the
        // thread's next read (`transport::spare`), not to this idle connection.
        super::transport::spare(std::mem::take(buf));
        return;
    }
    if buf.capacity() - buf.len() >= READ_ROOM {
        return;
    }
    let grow = if buf.len() < READ_MIN {
        READ_MIN - buf.len()
    } else {
        READ_CHUNK
    };
    buf.reserve(grow.max(READ_ROOM));
}

/// What the frames of one read came to.
struct Frames {
    /// Checked packets for the router, in order.
    batch: Vec<Packet>,
    tally: Tally,
    /// What ended the session, if a frame did; the frames before it still count.
    end: Option<End>,
    /// How long reads pause for the publish quotas (zero: no pause).
    wait: Duration,
    /// Whole packets parsed (keepalive counts packets, not bytes).
    packets: usize,
}

/// What handling the bytes read came to.
pub(super) struct Progress {
    /// How long reads pause for the publish quotas or the router, if they do.
    pause: Option<Duration>,
    /// Why they pause: a quota (else the router).
    quota: bool,
    /// The subscriber behind that reads hold for, if one is too far behind
    /// (`backlog.rs`).
    hold: Option<Arc<Mark>>,
    /// Whether a whole packet was among them: only that counts as hearing from the client
    /// (MQTT: "a Control Packet"), or a PUBLISH dripped a byte at a time would keep a
    /// connection alive forever.
    heard: bool,
    /// When the bytes were taken: the time heard, and what a pause counts from.
    at: Instant,
}

impl<T: Transport> Session<T> {
    /// Notes a whole packet as heard; returns when reads may resume after the pause due
    /// (and whether it waits for the router: then only once the router has caught up)
    /// and the subscriber they hold for, counting the pause and the hold.
    pub(super) fn heard(
        &self,
        progress: Progress,
        last_heard: &mut Instant,
    ) -> (Option<(Instant, bool)>, Option<Arc<Mark>>) {
        if progress.heard {
            *last_heard = progress.at;
        }
        let pauses = &self.gw.meters.pacing_pauses;
        if progress.pause.is_some() {
            pauses.count(if progress.quota { "quota" } else { "router" });
        }
        if progress.hold.is_some() {
            pauses.count("subscriber_behind");
        }
        let for_router = !progress.quota;
        (
            progress.pause.map(|wait| (progress.at + wait, for_router)),
            progress.hold,
        )
    }

    /// Whether the router is still behind for this session: its back-log is past the
    /// high-water mark, or more than [`super::backlog::Backlogs::waiting_max`] still waits
    /// in the session's link or lane.
    pub(super) fn router_behind(&self) -> bool {
        self.gw.router.backlog() > ROUTER_HIGH_WATER
            || self.waiting() > self.gw.backlogs.waiting_max()
    }

    /// Parses the complete frames read, checks them, and hands the batch to the router.
    /// Stops early when this connection's publish quota is used up: the rest stays in the
    /// read buffer until the returned pause is over.
    pub(super) async fn on_client_bytes(&mut self) -> Result<Progress, End> {
        let now = Instant::now();
        let Frames {
            mut batch,
            tally,
            end,
            mut wait,
            packets,
        } = self.take_frames(now);
        self.tap.inbound(&mut batch);
        let mut router_behind = false;
        if tally.publishes > 0 {
            // The shared pacer is charged once per read: an atomic per message would be
            // contended by every connection.
            wait = wait.max(self.gw.global_pacer.charge(tally.publishes, now));
            // The back-log read takes the channel's lock: only reads with publishes pay.
            router_behind = self.gw.router.backlog() > ROUTER_HIGH_WATER;
        }
        tally.record(&self.gw.meters);
        self.gw.count_retain_as_published(tally.retain_as_published);
        self.cluster.copy(&batch);
        // Counted as pushed on the marks of subscribers behind, if there are any.
        let hold = if tally.publishes > 0 {
            self.gw.backlogs.pushed(&batch, now)
        } else {
            None
        };
        // Packets before a violation still go through, as they would have on their own.
        let lane_len = self.inbound.lane_len;
        router_behind |= self.submit(&mut batch, lane_len).await? > self.gw.backlogs.waiting_max();
        give_back(batch);
        let quota = !wait.is_zero();
        if router_behind {
            wait = wait.max(ROUTER_PAUSE);
        }
        if !self.wbuf.is_empty() {
            self.flush().await?;
        }
        if let Some(e) = end {
            return Err(e);
        }
        // The client's acks may have made room for what its Receive Maximum held back.
        if self.delivery.held.is_some() {
            // Boxed: only MQTT 5 clients with a Receive Maximum come here.
            Box::pin(self.release_held()).await?;
        }
        Ok(Progress {
            pause: (!wait.is_zero()).then_some(wait),
            quota,
            hold,
            heard: packets > 0,
            at: now,
        })
    }

    /// Parses and checks frames off the read buffer until it holds no whole frame, one
    /// ends the session, or this connection's publish quota asks for a pause.
    fn take_frames(&mut self, now: Instant) -> Frames {
        let max = self.gw.config.limits.max_packet_size;
        self.inbound.mark_retained = self.gw.wants_retain_marks();
        self.inbound.new_read(self.tx.is_none());
        let mut frames = Frames {
            batch: SPARE.take(),
            tally: Tally::default(),
            end: None,
            wait: Duration::ZERO,
            packets: 0,
        };
        while frames.wait.is_zero() {
            let header = frame::publish_qos_pkid(&self.rbuf);
            let packet = match self.version.read(&mut self.rbuf, max) {
                Ok(p) => p,
                Err(ProtocolError::InsufficientBytes(_)) => break,
                Err(e) => {
                    self.gw.meters.drop_for("malformed_packet").increment(1);
                    let violation = match e {
                        ProtocolError::PayloadSizeLimitExceeded(_) => Violation::PacketTooLarge,
                        _ => Violation::Malformed,
                    };
                    frames.end = Some(End::Protocol(violation, e.to_string()));
                    break;
                }
            };
            frames.packets += 1;
            let before = frames.tally.publishes;
            let tally = &mut frames.tally;
            let batch = &mut frames.batch;
            if let Err(e) = self
                .inbound
                .check(packet, header, &mut self.wbuf, tally, batch)
            {
                frames.end = Some(e);
                break;
            }
            if frames.tally.publishes > before {
                // Charged one by one so that a burst read at once cannot pass the quota.
                frames.wait = self.pacer.charge(1, now);
            }
        }
        frames
    }
}

/// Waits for the subscriber `hold` is for to make room, or for the hold's bound
/// (`backlog.rs`).
///
/// # Cancel safety
/// Cancel safe: it only waits.
pub(super) async fn room(gw: &Gateway, hold: Option<&Mark>) {
    if let Some(m) = hold {
        gw.backlogs.room(m).await;
    }
}
