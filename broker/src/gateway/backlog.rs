//! Publishers paced to a subscriber that falls behind in the router's log.
//!
//! rumqttd keeps each filter's log in `max_segment_count` segments of `max_segment_size`
//! bytes and overwrites the oldest when it needs room: a subscriber that reads slower than
//! publishers write loses what it had not read (`gaps.rs` counts it). Nothing in the router
//! pushes back, so the gateway does: a subscriber session that the router finds busy (it
//! filled the link's buffer and parked it) or that sees a gap **marks** itself behind, with
//! its filters. From then on, and only while some session is marked, each publisher
//! session adds what it pushes on a marked session's filters to that mark (bytes as the
//! router's log counts them), and the marked session adds what it takes off its logs. The
//! difference is how much of the log it has yet to read since it marked itself; past
//! a quarter of what the log keeps beyond its newest segment, publishers of those topics
//! **hold**: they stop reading their sockets, so TCP pushes back on the devices, until the
//! subscriber has read down to half of that again.
//!
//! Bounds: a hold lasts at most `hold_max` (`[limits] behind_hold_ms`); a subscriber that
//! could not make room within it (stuck, or much slower than what it subscribed to) is
//! not waited for again until it has caught up, so it never stalls the fleet for longer:
//! past the bound messages flow and what the router overwrites for it is counted as
//! `fleetcast_messages_dropped_total{reason="subscriber_behind"}`. A mark is dropped when
//! its subscriber has caught up (the router has not parked it for a second), or when its
//! session ends. Publishes the gateway does not
//! read from a socket (HTTP, the cluster, wills) are not counted nor held; they only make
//! the subscriber seem less behind than it is, until the mark is dropped.
//!
//! Marking relies on the router taking publishes in pieces small beside a log: it appends
//! what waits in a link or lane in one go, before any subscriber reads, so sessions pause
//! their reads while an eighth of a log's kept bytes waits in theirs
//! ([`Backlogs::waiting_max`]); otherwise a flood reaches the logs whole before the
//! subscriber is first parked.
//!
//! Cost when no subscriber is behind: one relaxed atomic load per read that carried
//! publishes.

use bytes::Bytes;
use fleetcast_proto::filter;
use rumqttd::protocol::Packet;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How long a marked subscriber goes without the router parking it before it counts as
/// caught up and its mark is dropped. Not sooner: while it is behind, a batch may still
/// come without a park now and then, and a mark made again starts from what it has unread
/// then, which it does not know.
const QUIET: Duration = Duration::from_secs(1);

/// Subscribers followed as behind at most: past this one is not marked (its losses are
/// still counted), so a crowd of slow subscribers cannot make every publish a long scan.
pub(super) const MAX_MARKS: usize = 64;

/// Marks of subscribers behind, shared by every session.
#[derive(Debug)]
pub struct Backlogs {
    /// How many marks there are: zero is the publishers' whole check.
    active: AtomicUsize,
    marks: RwLock<Vec<Arc<Mark>>>,
    /// Bytes of a log a marked subscriber may have unread before publishers hold.
    hold_at: i64,
    /// Log bytes a link or lane may have waiting for the router before its publishers
    /// pause ([`Backlogs::waiting_max`]).
    waiting_max: usize,
    /// How long one hold may last.
    hold_max: Duration,
    /// Marks at most ([`MAX_MARKS`]).
    max_marks: usize,
    origin: Instant,
}

/// One subscriber session behind: its filters and what was pushed on them and read off
/// them since it marked itself.
#[derive(Debug)]
pub struct Mark {
    /// The session's filters, shared subscriptions left out.
    filters: Vec<String>,
    /// Log bytes publishers pushed on `filters` since the mark.
    pushed: AtomicI64,
    /// Log bytes the subscriber read (or the router skipped for it) since the mark.
    taken: AtomicI64,
    /// Whether publishers of these filters hold now.
    holding: AtomicBool,
    /// When the hold under way began, ms after [`Backlogs::origin`].
    held_since_ms: AtomicU64,
    /// A hold ran out its bound: not waited for again until the mark is dropped.
    given_up: AtomicBool,
    /// Told when the subscriber made room or was given up.
    room: Notify,
}

impl Mark {
    /// Log bytes pushed and not yet read.
    fn lag(&self) -> i64 {
        self.pushed.load(Ordering::Relaxed) - self.taken.load(Ordering::Relaxed)
    }
}

/// A session's own mark; dropping it takes the mark off the board.
#[derive(Debug)]
pub(super) struct Marked {
    board: Arc<Backlogs>,
    mark: Arc<Mark>,
    /// When the router last parked the subscriber (its link's buffer full: it had more).
    last_parked: Instant,
}

impl Drop for Marked {
    fn drop(&mut self) {
        self.board.unmark(&self.mark);
    }
}

/// Log bytes of one publish as rumqttd counts them (`Storage::size` of its publish data).
fn log_bytes(topic: &Bytes, payload: &Bytes) -> i64 {
    i64::try_from(4 + topic.len() + payload.len()).unwrap_or(i64::MAX)
}

impl Backlogs {
    /// Marks for logs of `segment_count` segments of `segment_size` bytes; a hold lasts at
    /// most `hold_max`, and at most `max_marks` subscribers are followed.
    pub fn new(
        segment_size: usize,
        segment_count: usize,
        hold_max: Duration,
        max_marks: usize,
    ) -> Backlogs {
        // The router drops the oldest segment when it starts a new one past the count, so
        // (count - 1) segments are always kept; holding at a quarter of that leaves the
        // rest for what is under way (a read's publishes from each publisher, the lanes,
        // the router's queue) and for what the subscriber had unread when it marked itself,
        // which is not counted.
        let kept = segment_size.saturating_mul(segment_count.saturating_sub(1).max(1));
        Backlogs {
            active: AtomicUsize::new(0),
            marks: RwLock::new(Vec::new()),
            hold_at: i64::try_from(kept / 4).unwrap_or(i64::MAX),
            waiting_max: kept / 8,
            hold_max,
            max_marks,
            origin: Instant::now(),
        }
    }

    /// Log bytes a link or lane may have waiting for the router before the sessions
    /// pushing into it pause their reads: an eighth of what a log keeps. The router
    /// appends what it takes from a link to the logs in one go, before any subscriber
    /// reads; a flood let in at once would overwrite a log before a subscriber could be
    /// marked behind, let alone held for.
    pub(super) fn waiting_max(&self) -> usize {
        self.waiting_max
    }

    fn ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.origin).as_millis()).unwrap_or(u64::MAX)
    }

    /// Marks a subscriber holding `filters` behind; None when it holds none that can be
    /// followed or the board is full.
    pub(super) fn mark(self: &Arc<Self>, filters: Vec<String>) -> Option<Marked> {
        // No filter to follow, or holding is off (`behind_hold_ms = 0`).
        if filters.is_empty() || self.hold_max.is_zero() {
            return None;
        }
        let mark = Arc::new(Mark {
            filters,
            pushed: AtomicI64::new(0),
            taken: AtomicI64::new(0),
            holding: AtomicBool::new(false),
            held_since_ms: AtomicU64::new(0),
            given_up: AtomicBool::new(false),
            room: Notify::new(),
        });
        let mut marks = self.marks.write().unwrap_or_else(|e| e.into_inner());
        if marks.len() >= self.max_marks {
            return None;
        }
        marks.push(Arc::clone(&mark));
        self.active.store(marks.len(), Ordering::Release);
        Some(Marked {
            board: Arc::clone(self),
            mark,
            last_parked: Instant::now(),
        })
    }

    fn unmark(&self, mark: &Arc<Mark>) {
        let mut marks = self.marks.write().unwrap_or_else(|e| e.into_inner());
        marks.retain(|m| !Arc::ptr_eq(m, mark));
        self.active.store(marks.len(), Ordering::Release);
        drop(marks);
        // Its held publishers go on at once.
        mark.holding.store(false, Ordering::Release);
        mark.room.notify_waiters();
    }

    /// Whether a subscriber is marked behind and no longer waited for (its hold ran
    /// out): then floods must reach the router no faster than its lanes' window.
    pub(super) fn any_given_up(&self) -> bool {
        if self.active.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let marks = self.marks.read().unwrap_or_else(|e| e.into_inner());
        marks.iter().any(|m| m.given_up.load(Ordering::Relaxed))
    }

    /// Counts the publishes of `batch` (pushed to the router now) on the marks whose
    /// filters they match; returns the mark whose subscriber the publisher must now wait
    /// for, if one is too far behind.
    pub(super) fn pushed(&self, batch: &[Packet], now: Instant) -> Option<Arc<Mark>> {
        if self.active.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.count(batch, now)
    }

    #[cold]
    fn count(&self, batch: &[Packet], now: Instant) -> Option<Arc<Mark>> {
        let marks = self.marks.read().unwrap_or_else(|e| e.into_inner());
        // Topic by topic (each checked as UTF-8 once), mark by mark.
        let mut bytes = vec![0i64; marks.len()];
        for packet in batch {
            let Packet::Publish(p, _) = packet else {
                continue;
            };
            let Ok(topic) = std::str::from_utf8(&p.topic) else {
                continue;
            };
            let size = log_bytes(&p.topic, &p.payload);
            for (mark, bytes) in marks.iter().zip(bytes.iter_mut()) {
                // The router appends a publish once to each matching filter's log.
                let logs = mark
                    .filters
                    .iter()
                    .filter(|f| filter::matches(f, topic))
                    .count();
                *bytes += size * i64::try_from(logs).unwrap_or(0);
            }
        }
        let mut hold = None;
        for (mark, bytes) in marks.iter().zip(bytes) {
            if bytes == 0 {
                continue;
            }
            mark.pushed.fetch_add(bytes, Ordering::Relaxed);
            if hold.is_none() && self.starts_hold(mark, now) {
                hold = Some(Arc::clone(mark));
            }
        }
        hold
    }

    /// Waits until the subscriber of `mark` makes room, is given up or the hold under way
    /// reaches its bound; then [`Self::still_holds`] says whether to go on holding.
    ///
    /// # Cancel safety
    /// Cancel safe: it only waits.
    pub(super) async fn room(&self, mark: &Mark) {
        let notified = mark.room.notified();
        tokio::pin!(notified);
        // Registered before the look at `holding`: a notice after it is not missed.
        notified.as_mut().enable();
        if !mark.holding.load(Ordering::Acquire) || mark.given_up.load(Ordering::Relaxed) {
            return;
        }
        let since = Duration::from_millis(mark.held_since_ms.load(Ordering::Acquire));
        // A millisecond past the bound: `still_holds` then sees it run out.
        let bound = self.origin + since + self.hold_max + Duration::from_millis(1);
        let _ = tokio::time::timeout_at(bound, notified).await;
    }

    /// Whether publishers of `mark`'s filters must hold now (a hold begins if none is
    /// under way).
    fn starts_hold(&self, mark: &Mark, now: Instant) -> bool {
        if mark.given_up.load(Ordering::Relaxed) || mark.lag() <= self.hold_at {
            return false;
        }
        if !mark.holding.swap(true, Ordering::AcqRel) {
            mark.held_since_ms.store(self.ms(now), Ordering::Release);
        }
        self.still_holds(mark, now)
    }

    /// Whether a publisher holding for `mark` must go on holding: the subscriber has not
    /// made room, and the hold is within its bound (past it, the mark is given up).
    pub(super) fn still_holds(&self, mark: &Mark, now: Instant) -> bool {
        if mark.given_up.load(Ordering::Relaxed) || !mark.holding.load(Ordering::Acquire) {
            return false;
        }
        let since = mark.held_since_ms.load(Ordering::Acquire);
        let held = Duration::from_millis(self.ms(now).saturating_sub(since));
        if held <= self.hold_max {
            return true;
        }
        if !mark.given_up.swap(true, Ordering::AcqRel) {
            tracing::info!(
                held_ms = held.as_millis() as u64,
                "a subscriber behind made no room within the hold bound: publishers go on"
            );
            mark.room.notify_waiters();
        }
        false
    }

    /// The marked subscriber took `bytes` off its logs (or had them skipped); `parked` if
    /// the router parked it again. Returns false when it has caught up (the router has
    /// not parked it for [`QUIET`]): drop the mark.
    pub(super) fn took(&self, marked: &mut Marked, bytes: i64, parked: bool, now: Instant) -> bool {
        if parked {
            marked.last_parked = now;
        } else if now.saturating_duration_since(marked.last_parked) > QUIET {
            return false;
        }
        let mark = &marked.mark;
        mark.taken.fetch_add(bytes, Ordering::Relaxed);
        let lag = mark.lag();
        if lag < 0 {
            // Publishes not counted (HTTP, the cluster) were read: never below nothing.
            mark.taken.fetch_add(lag, Ordering::Relaxed);
        }
        // Room for half a hold: publishers go on.
        if lag <= self.hold_at / 2 && mark.holding.swap(false, Ordering::AcqRel) {
            mark.room.notify_waiters();
        }
        true
    }
}

/// Log bytes of a forward and of the `skipped` messages before it (assumed its size).
pub(super) fn forward_bytes(f: &rumqttd::Forward, skipped: u64) -> i64 {
    let one = log_bytes(&f.publish.topic, &f.publish.payload);
    one.saturating_mul(i64::try_from(skipped.saturating_add(1)).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttd::protocol::Publish;

    fn publish(topic: &str, n: usize) -> Packet {
        Packet::Publish(
            Publish::new(topic.as_bytes().to_vec(), vec![0u8; n], false),
            None,
        )
    }

    fn board(hold_ms: u64) -> Arc<Backlogs> {
        // Logs of 2 x 2,000 bytes: hold past 500 unread.
        Arc::new(Backlogs::new(2_000, 2, Duration::from_millis(hold_ms), 4))
    }

    #[test]
    fn nobody_behind_counts_nothing() {
        let b = board(100);
        assert!(b.pushed(&[publish("a/b", 96)], Instant::now()).is_none());
    }

    #[test]
    fn publishers_hold_past_a_quarter_of_the_log_and_go_on_once_read_down() {
        let b = board(10_000);
        let now = Instant::now();
        let mut m = b.mark(vec!["a/+".to_owned()]).expect("marked");
        // 100 bytes each in the log (4 + 3 + 93); other topics are not counted.
        let five = vec![publish("a/b", 93); 5];
        assert!(b.pushed(&five, now).is_none());
        assert!(b.pushed(&[publish("x/y", 93)], now).is_none());
        let held = b.pushed(&[publish("a/c", 93)], now).expect("held");
        assert!(b.still_holds(&held, now));
        // Read down to 350 unread: not yet half of a hold.
        assert!(b.took(&mut m, 250, true, now));
        assert!(b.still_holds(&held, now));
        assert!(b.took(&mut m, 100, true, now));
        assert!(!b.still_holds(&held, now));
        // Not parked for a while: caught up.
        assert!(b.took(&mut m, 250, false, now + QUIET));
        assert!(!b.took(&mut m, 0, false, now + QUIET * 2));
    }

    #[test]
    fn a_hold_ends_at_its_bound_and_the_subscriber_is_not_waited_for_again() {
        let b = board(100);
        let now = Instant::now();
        let _m = b.mark(vec!["#".to_owned()]).expect("marked");
        let held = b.pushed(&vec![publish("a", 195); 6], now).expect("held");
        assert!(b.still_holds(&held, now + Duration::from_millis(100)));
        assert!(!b.still_holds(&held, now + Duration::from_millis(102)));
        assert!(b.pushed(&[publish("a", 195)], now).is_none());
    }

    #[test]
    fn a_dropped_mark_releases_its_publishers_and_the_board() {
        let b = board(10_000);
        let now = Instant::now();
        let m = b.mark(vec!["a".to_owned()]).expect("marked");
        let held = b.pushed(&vec![publish("a", 195); 6], now).expect("held");
        drop(m);
        assert!(!b.still_holds(&held, now));
        assert_eq!(b.active.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn marks_are_bounded() {
        let b = board(100);
        let kept: Vec<_> = (0..10)
            .filter_map(|_| b.mark(vec!["#".to_owned()]))
            .collect();
        assert_eq!(kept.len(), 4);
        assert!(b.mark(Vec::new()).is_none());
    }
}
