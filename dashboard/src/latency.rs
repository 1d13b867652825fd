//! The status panel's rolling end-to-end latency and message rate, over about the last
//! 10-20 s: two histograms, the current window and the one before it, so the figures
//! neither jump to zero at a window's start nor remember a spike forever.

use hdrhistogram::Histogram;
use std::time::{Duration, Instant};

/// How long one window lasts.
const WINDOW: Duration = Duration::from_secs(10);
/// Longest latency recorded, ms; longer ones count as this.
const MAX_MS: u64 = 3_600_000;

fn histogram() -> Histogram<u64> {
    // 1 ms .. 1 h at 2 significant digits; new_with_bounds only fails on bad bounds.
    Histogram::new_with_bounds(1, MAX_MS, 2).unwrap_or_else(|_| unreachable!("valid bounds"))
}

/// Latencies of the current and the previous window.
#[derive(Debug)]
pub struct LatencyWindow {
    started: Instant,
    current: Histogram<u64>,
    previous: Histogram<u64>,
    previous_span: Duration,
}

impl Default for LatencyWindow {
    fn default() -> Self {
        LatencyWindow::new()
    }
}

impl LatencyWindow {
    /// An empty window starting now.
    pub fn new() -> LatencyWindow {
        LatencyWindow {
            started: Instant::now(),
            current: histogram(),
            previous: histogram(),
            previous_span: Duration::ZERO,
        }
    }

    /// One position's end-to-end latency (clamped to 1 ms .. 1 h).
    pub fn record(&mut self, latency_ms: u64) {
        self.record_all(&[latency_ms]);
    }

    /// Records every latency of `batch` (ms). The window is looked at once for the batch:
    /// a look reads the clock, which per fix was 4% of the map's thread in a flood.
    pub fn record_all(&mut self, batch: &[u64]) {
        self.rotate();
        for &ms in batch {
            let _ = self.current.record(ms.clamp(1, MAX_MS));
        }
    }

    /// (positions per second, p50 ms, p99 ms) over both windows; zeros when empty.
    pub fn summary(&mut self) -> (f64, f64, f64) {
        self.rotate();
        let span = self.previous_span + self.started.elapsed();
        let mut merged = self.previous.clone();
        let _ = merged.add(&self.current);
        let n = merged.len();
        if n == 0 {
            return (0.0, 0.0, 0.0);
        }
        let rate = if span.is_zero() {
            0.0
        } else {
            n as f64 / span.as_secs_f64()
        };
        (
            rate,
            merged.value_at_quantile(0.5) as f64,
            merged.value_at_quantile(0.99) as f64,
        )
    }

    fn rotate(&mut self) {
        let age = self.started.elapsed();
        if age >= WINDOW {
            self.previous = std::mem::replace(&mut self.current, histogram());
            self.previous_span = age;
            self.started = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_what_was_recorded() {
        let mut w = LatencyWindow::new();
        assert_eq!(w.summary(), (0.0, 0.0, 0.0));
        for ms in 1..=100 {
            w.record(ms);
        }
        let (rate, p50, p99) = w.summary();
        assert!(rate > 0.0);
        assert_eq!(p50, 50.0);
        assert_eq!(p99, 99.0);
        // Out of range values are clamped, not lost.
        w.record(0);
        w.record(u64::MAX);
        assert!(w.summary().2 >= 99.0);
    }
}
