//! When a connection thread that ran out of work pauses before it parks
//! (`[runtime] io_coalesce_us`, `io_threads.rs`).
//!
//! A pause helps a thread that wakes often for a little work each time (a fleet: 10,000
//! publishes a second came in about 2,000 wake-ups of five publishes). It hurts one that
//! has work most of the time and parks only for a moment, waiting for a socket (a flood
//! between two clients: a 2 ms pause before every park halved 1 -> 1's rate), and one
//! whose clients wait for each answer before they send again (a QoS 1 publisher with one
//! message in flight): there, what a pause gathers is the one client it kept waiting. So
//! a thread pauses only while, in its last [`PERIOD`], it was busy under a quarter of the
//! time (measured from its own park and unpark, two clock reads a wake-up), and stops for
//! [`HOLD_PERIODS`] when its pauses gathered fewer than [`GATHER_MIN`] session wake-ups
//! each (sessions count theirs, [`session_woke`]).

use std::cell::Cell;
use std::time::{Duration, Instant};

/// How long the busy share is measured over before the thread decides again.
pub(crate) const PERIOD: Duration = Duration::from_millis(20);

/// The busy share (1 / this) under which the thread pauses.
const BUSY_UNDER: u32 = 4;

/// Session wake-ups a pause must gather on average for the thread to go on pausing.
pub(crate) const GATHER_MIN: u32 = 4;

/// Periods a thread whose pauses gathered too little goes without before it tries again
/// (a second): a client that waits for each answer is slowed for one period in 51.
pub(crate) const HOLD_PERIODS: u32 = 50;

thread_local! {
    /// Session wake-ups on this thread since it last parked.
    static WAKES: Cell<u32> = const { Cell::new(0) };
}

/// Counts a session's wake-up on the current thread (its select loop, once a turn).
pub fn session_woke() {
    WAKES.with(|w| w.set(w.get().saturating_add(1)));
}

/// Session wake-ups on the current thread since this was last asked.
pub(crate) fn take_session_wakes() -> u32 {
    WAKES.with(|w| w.replace(0))
}

/// One thread's record of its busy and idle time.
#[derive(Debug)]
pub(crate) struct Duty {
    /// How long it pauses when it does.
    pause: Duration,
    /// The last park or unpark.
    mark: Instant,
    /// Busy time in the period so far.
    busy: Duration,
    /// All time in the period so far.
    total: Duration,
    /// Whether it pauses; set at each park, so at the next one it also says whether the
    /// wake-ups since were gathered by a pause.
    pausing: bool,
    /// Pauses taken in the period so far, and the session wake-ups they gathered.
    pauses: u32,
    gathered: u32,
    /// Periods left before pausing may start again.
    hold: u32,
}

impl Duty {
    /// A record starting at `now`, not pausing until a period says so.
    pub(crate) fn new(pause: Duration, now: Instant) -> Duty {
        Duty {
            pause,
            mark: now,
            busy: Duration::ZERO,
            total: Duration::ZERO,
            pausing: false,
            pauses: 0,
            gathered: 0,
            hold: 0,
        }
    }

    /// The thread woke at `now`: the time since it parked (its pause included) was idle.
    pub(crate) fn unparked(&mut self, now: Instant) {
        self.total += now.saturating_duration_since(self.mark);
        self.mark = now;
    }

    /// The thread is out of work at `now`, after `wakes` session wake-ups since it last
    /// parked: how long to pause before parking, if at all.
    pub(crate) fn parking(&mut self, now: Instant, wakes: u32) -> Option<Duration> {
        let busy = now.saturating_duration_since(self.mark);
        self.busy += busy;
        self.total += busy;
        self.mark = now;
        if self.pausing {
            self.gathered = self.gathered.saturating_add(wakes);
        }
        if self.total >= PERIOD {
            let idle_enough = self.busy * BUSY_UNDER < self.total;
            // Pausing since the period began, so `pauses` >= 1.
            if self.pausing && self.gathered < GATHER_MIN * self.pauses {
                self.pausing = false;
                self.hold = HOLD_PERIODS;
            } else if self.hold > 0 {
                self.hold -= 1;
            } else {
                self.pausing = idle_enough;
            }
            self.busy = Duration::ZERO;
            self.total = Duration::ZERO;
            self.pauses = 0;
            self.gathered = 0;
        }
        if self.pausing {
            self.pauses += 1;
            Some(self.pause)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `cycles` of `busy` then `idle` (the pause, when taken, counts as idle), with
    /// `wakes(paused)` session wake-ups in each busy spell, and returns how many parks
    /// paused.
    fn run(
        duty: &mut Duty,
        now: &mut Instant,
        cycles: u32,
        (busy, idle): (Duration, Duration),
        wakes: impl Fn(bool) -> u32,
    ) -> u32 {
        let mut paused = 0;
        let mut last = false;
        for _ in 0..cycles {
            *now += busy;
            let pause = duty.parking(*now, wakes(last));
            last = pause.is_some();
            paused += u32::from(last);
            *now += pause.unwrap_or_default() + idle;
            duty.unparked(*now);
        }
        paused
    }

    #[test]
    fn a_fleet_pauses_and_a_flood_does_not() {
        let us = Duration::from_micros;
        let mut now = Instant::now();
        let mut duty = Duty::new(us(2000), now);
        // A fleet: 35 µs of work every 500 µs, five wake-ups; a pause gathers twenty.
        let fleet = |paused: bool| if paused { 20 } else { 5 };
        // Not before the first period is over.
        assert_eq!(run(&mut duty, &mut now, 10, (us(35), us(465)), fleet), 0);
        run(&mut duty, &mut now, 40, (us(35), us(465)), fleet);
        assert_eq!(
            run(&mut duty, &mut now, 1000, (us(35), us(465)), fleet),
            1000
        );
        // A flood: busy 900 µs, parked 50 µs. Pauses stop within a period.
        let flood = |_| 50;
        assert!(run(&mut duty, &mut now, 30, (us(900), us(50)), flood) <= 30);
        assert_eq!(run(&mut duty, &mut now, 1000, (us(900), us(50)), flood), 0);
        // Busy just over a quarter of the time (its pauses counted as idle): no pause.
        assert_eq!(run(&mut duty, &mut now, 1000, (us(300), us(800)), flood), 0);
        // And back to a fleet: pausing again.
        run(&mut duty, &mut now, 100, (us(35), us(465)), fleet);
        assert_eq!(run(&mut duty, &mut now, 100, (us(35), us(465)), fleet), 100);
    }

    /// A client that waits for each answer (600 µs of work, 50 µs for it to send again):
    /// a pause gathers it alone, so pausing stops and then holds off; the few periods
    /// that try again are all it is slowed by.
    #[test]
    fn a_client_waiting_for_each_answer_is_not_kept_waiting() {
        let us = Duration::from_micros;
        let mut now = Instant::now();
        let mut duty = Duty::new(us(2000), now);
        // A fleet first: pausing.
        let fleet = |paused: bool| if paused { 20 } else { 5 };
        run(&mut duty, &mut now, 100, (us(35), us(465)), fleet);
        assert!(duty.pausing);
        let one = |_| 1;
        // Within two periods (the fleet's last, then one of its own: 40 ms, at most
        // sixteen 2.65 ms cycles) the pauses stop.
        let first = run(&mut duty, &mut now, 30, (us(600), us(50)), one);
        assert!(first <= 16, "{first}");
        assert!(!duty.pausing);
        // Over 5,000 cycles (~3.3 s): paused in at most a few percent.
        let paused = run(&mut duty, &mut now, 5000, (us(600), us(50)), one);
        assert!(paused < 5000 / 25, "{paused}");
    }

    /// A light load whose pauses gather one wake-up each: not worth a pause.
    #[test]
    fn pauses_that_gather_little_stop() {
        let us = Duration::from_micros;
        let mut now = Instant::now();
        let mut duty = Duty::new(us(2000), now);
        let light = |paused: bool| u32::from(paused);
        run(&mut duty, &mut now, 100, (us(10), us(4000)), light);
        assert!(!duty.pausing);
    }

    #[test]
    fn sessions_count_their_wake_ups_per_thread() {
        assert_eq!(take_session_wakes(), 0);
        session_woke();
        session_woke();
        assert_eq!(std::thread::spawn(take_session_wakes).join().ok(), Some(0));
        assert_eq!(take_session_wakes(), 2);
        assert_eq!(take_session_wakes(), 0);
    }
}
