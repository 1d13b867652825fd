//! Ingest pacing: a lock-free GCRA rate limiter.
//!
//! rumqttd gives publishers no back-pressure: a publisher that floods makes a slower
//! subscriber silently lose messages once they fall out of the router's log. The gateway
//! therefore charges every PUBLISH it parses to its connection's [`Pacer`] (the publish
//! quota, 100/s by default) and every read's publishes to a global one; past the rate it
//! leaves the rest of what it read unparsed and stops reading that socket for the time
//! the pacer says, so TCP pushes back on the publisher. Nothing is dropped; publishers
//! are slowed. [`Pacer::try_admit`] serves the connect quotas, which refuse instead.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// A generic cell rate algorithm limiter shared by reference (atomics only, no lock).
#[derive(Debug)]
pub struct Pacer {
    /// Time one event costs, in nanoseconds.
    interval_ns: u64,
    /// How far ahead of `now` the schedule may run before callers must wait.
    tolerance_ns: u64,
    /// The theoretical arrival time of the next event, ns after `origin`.
    tat_ns: AtomicU64,
    origin: Instant,
}

impl Pacer {
    /// A pacer for `rate` events per second that lets `burst` events through at once.
    ///
    /// A rate of 0 is treated as 1, so the pacer always makes progress.
    pub fn new(rate: u32, burst: u32) -> Pacer {
        let interval_ns = 1_000_000_000 / u64::from(rate.max(1));
        Pacer {
            interval_ns,
            tolerance_ns: interval_ns * u64::from(burst.max(1)),
            tat_ns: AtomicU64::new(0),
            origin: Instant::now(),
        }
    }

    /// Charges `n` events at `now` and returns how long the caller should wait before it
    /// takes more. The events are always admitted: the caller has already read them.
    pub fn charge(&self, n: u32, now: Instant) -> Duration {
        let now_ns = u64::try_from(now.saturating_duration_since(self.origin).as_nanos())
            .unwrap_or(u64::MAX);
        let cost = self.interval_ns.saturating_mul(u64::from(n));
        let mut new_tat = 0;
        // fetch_update retries on contention; the closure is pure.
        let _ = self
            .tat_ns
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                new_tat = tat.max(now_ns).saturating_add(cost);
                Some(new_tat)
            });
        Duration::from_nanos(new_tat.saturating_sub(now_ns.saturating_add(self.tolerance_ns)))
    }
}

impl Pacer {
    /// Admits one event at `now` if it fits the rate and burst, charging it; refuses it
    /// otherwise, charging nothing (for quotas that turn events away instead of waiting).
    pub fn try_admit(&self, now: Instant) -> bool {
        let now_ns = u64::try_from(now.saturating_duration_since(self.origin).as_nanos())
            .unwrap_or(u64::MAX);
        self.tat_ns
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                let new_tat = tat.max(now_ns).saturating_add(self.interval_ns);
                (new_tat <= now_ns.saturating_add(self.tolerance_ns)).then_some(new_tat)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn try_admit_refuses_past_the_burst_without_charging() {
        let p = Pacer::new(10, 3);
        let t0 = Instant::now();
        assert!((0..3).all(|_| p.try_admit(t0)));
        assert!(!p.try_admit(t0));
        assert!(!p.try_admit(t0 + Duration::from_millis(99)));
        // Refusals cost nothing: one interval later exactly one more fits.
        assert!(p.try_admit(t0 + Duration::from_millis(100)));
        assert!(!p.try_admit(t0 + Duration::from_millis(100)));
    }

    #[tokio::test(start_paused = true)]
    async fn burst_passes_then_rate_is_enforced() {
        let p = Pacer::new(100, 10);
        let t0 = Instant::now();
        // Ten events fit in the burst.
        assert_eq!(p.charge(10, t0), Duration::ZERO);
        // The next ten cost 10 ms each.
        assert_eq!(p.charge(10, t0), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_as_told_keeps_the_long_run_rate() {
        let p = Pacer::new(1_000, 1);
        let start = Instant::now();
        let mut admitted = 0u32;
        while Instant::now() - start < Duration::from_secs(2) {
            let wait = p.charge(50, Instant::now());
            admitted += 50;
            tokio::time::sleep(wait.max(Duration::from_micros(1))).await;
        }
        // 2 s at 1,000/s, give or take one batch.
        assert!((1_950..=2_100).contains(&admitted), "admitted {admitted}");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_does_not_bank_more_than_the_burst() {
        let p = Pacer::new(10, 5);
        tokio::time::advance(Duration::from_secs(60)).await;
        let now = Instant::now();
        assert_eq!(p.charge(5, now), Duration::ZERO);
        assert_eq!(p.charge(1, now), Duration::from_millis(100));
    }
}
