//! When a connection thread that ran out of work pauses before it parks
//! (`[runtime] io_coalesce_us`, `io_threads.rs`).
//!
//! A pause helps a thread that wakes often for a little work each time (a fleet: 10,000
//! publishes a second came in about 2,000 wake-ups of five publishes). It hurts one that
//! has work most of the time and parks only for a moment, waiting for a socket (a flood
//! between two clients: a 2 ms pause before every park halved 1 -> 1's rate). So a thread
//! pauses only while it was busy under a quarter of the time in its last [`PERIOD`],
//! measured from its own park and unpark, two clock reads a wake-up.

use std::time::{Duration, Instant};

/// How long the busy share is measured over before the thread decides again.
pub(crate) const PERIOD: Duration = Duration::from_millis(20);

/// The busy share (1 / this) under which the thread pauses.
const BUSY_UNDER: u32 = 4;

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
    pausing: bool,
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
        }
    }

    /// The thread woke at `now`: the time since it parked (its pause included) was idle.
    pub(crate) fn unparked(&mut self, now: Instant) {
        self.total += now.saturating_duration_since(self.mark);
        self.mark = now;
    }

    /// The thread is out of work at `now`: how long to pause before parking, if at all.
    pub(crate) fn parking(&mut self, now: Instant) -> Option<Duration> {
        let busy = now.saturating_duration_since(self.mark);
        self.busy += busy;
        self.total += busy;
        self.mark = now;
        if self.total >= PERIOD {
            self.pausing = self.busy * BUSY_UNDER < self.total;
            self.busy = Duration::ZERO;
            self.total = Duration::ZERO;
        }
        self.pausing.then_some(self.pause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `cycles` of `busy` then `idle` (the pause, when taken, counts as idle) and
    /// returns how many parks paused.
    fn run(duty: &mut Duty, now: &mut Instant, cycles: u32, busy: Duration, idle: Duration) -> u32 {
        let mut paused = 0;
        for _ in 0..cycles {
            *now += busy;
            let pause = duty.parking(*now);
            paused += u32::from(pause.is_some());
            *now += pause.unwrap_or_default() + idle;
            duty.unparked(*now);
        }
        paused
    }

    #[test]
    fn a_thread_mostly_idle_pauses_and_a_busy_one_does_not() {
        let us = Duration::from_micros;
        let mut now = Instant::now();
        let mut duty = Duty::new(us(2000), now);
        // A fleet: 35 µs of work every 500 µs. Not before the first period is over.
        assert_eq!(run(&mut duty, &mut now, 10, us(35), us(465)), 0);
        run(&mut duty, &mut now, 40, us(35), us(465));
        assert_eq!(run(&mut duty, &mut now, 1000, us(35), us(465)), 1000);
        // A flood: busy 900 µs, parked 50 µs. Pauses stop within a period.
        assert!(run(&mut duty, &mut now, 30, us(900), us(50)) <= 30);
        assert_eq!(run(&mut duty, &mut now, 1000, us(900), us(50)), 0);
        // Busy just over a quarter of the time (its pauses counted as idle): no pause.
        assert_eq!(run(&mut duty, &mut now, 1000, us(300), us(800)), 0);
        // And back to a fleet: pausing again.
        run(&mut duty, &mut now, 100, us(35), us(465));
        assert_eq!(run(&mut duty, &mut now, 100, us(35), us(465)), 100);
    }
}
