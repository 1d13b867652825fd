//! `fleetcast_e2e_latency_seconds`, kept here and written out at scrape time.
//!
//! The map records one sample per fix. Through the Prometheus recorder each sample read
//! the clock and was queued for the next scrape (`AtomicBucketInstant::record`): about a
//! tenth of the map's thread in a 1 -> 1 flood. A fix's latency is a whole number of
//! milliseconds, so its bucket is found by comparing integers, and a batch's samples are
//! added per bucket, one atomic add each, whatever the batch's size.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// The histogram's bucket bounds, seconds (Prometheus' `le`); also those of the broker's
/// other `_seconds` histograms.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

const NAME: &str = "fleetcast_e2e_latency_seconds";
const HELP: &str = "End-to-end latency from a fix's ts to the bridge.";

/// End-to-end latencies in [`LATENCY_BUCKETS`], with their count and sum.
#[derive(Debug)]
pub struct LatencyHistogram {
    /// Per bucket, the longest latency in whole milliseconds it holds (`ms / 1000 <= le`
    /// as the recorder compared it, in `f64`).
    most_ms: [u64; LATENCY_BUCKETS.len()],
    /// Samples per bucket, not cumulative; the last is `+Inf`.
    counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    count: AtomicU64,
    sum_ms: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> LatencyHistogram {
        let most_ms = LATENCY_BUCKETS.map(|le| {
            // The largest whole ms with ms / 1000 <= le (a bound is at least 0.0005 s).
            let mut ms = (le * 1000.0).ceil() as u64 + 1;
            while ms > 0 && (ms as f64 / 1000.0) > le {
                ms -= 1;
            }
            ms
        });
        LatencyHistogram {
            most_ms,
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_ms: AtomicU64::new(0),
        }
    }

    fn bucket(&self, ms: u64) -> usize {
        self.most_ms
            .iter()
            .position(|&most| ms <= most)
            .unwrap_or(LATENCY_BUCKETS.len())
    }

    /// Records one latency, in milliseconds.
    pub fn record(&self, ms: u64) {
        self.record_all(&[ms]);
    }

    /// Records every latency of `batch`, in milliseconds.
    pub fn record_all(&self, batch: &[u64]) {
        if batch.is_empty() {
            return;
        }
        let mut add = [0u64; LATENCY_BUCKETS.len() + 1];
        let mut sum = 0u64;
        for &ms in batch {
            add[self.bucket(ms)] += 1;
            sum = sum.saturating_add(ms);
        }
        for (count, n) in self.counts.iter().zip(add) {
            if n > 0 {
                count.fetch_add(n, Ordering::Relaxed);
            }
        }
        self.sum_ms.fetch_add(sum, Ordering::Relaxed);
        self.count.fetch_add(batch.len() as u64, Ordering::Relaxed);
    }

    /// How many latencies were recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The histogram in Prometheus' text format, as the recorder wrote it.
    pub fn prometheus_text(&self) -> String {
        let mut out = String::with_capacity(1024);
        let _ = writeln!(out, "# HELP {NAME} {HELP}");
        let _ = writeln!(out, "# TYPE {NAME} histogram");
        // Read the count first: a bucket read later may hold more, never less.
        let count = self.count.load(Ordering::Relaxed);
        let mut cumulative = 0u64;
        for (le, n) in LATENCY_BUCKETS.iter().zip(&self.counts) {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{NAME}_bucket{{le=\"{le}\"}} {}",
                cumulative.min(count)
            );
        }
        let _ = writeln!(out, "{NAME}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_ms.load(Ordering::Relaxed) as f64 / 1000.0;
        let _ = writeln!(out, "{NAME}_sum {sum}");
        let _ = writeln!(out, "{NAME}_count {count}");
        out.push('\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The recorder's rule for a sample in seconds: in every bucket whose bound it does
    /// not pass.
    fn recorder_buckets(ms: u64) -> Vec<bool> {
        LATENCY_BUCKETS
            .iter()
            .map(|&le| ms as f64 / 1000.0 <= le)
            .collect()
    }

    #[test]
    fn a_latency_lands_where_the_recorder_put_it() {
        let h = LatencyHistogram::new();
        for ms in (0..12_000).chain([u64::MAX / 2]) {
            let b = h.bucket(ms);
            let want = recorder_buckets(ms);
            let got: Vec<bool> = (0..LATENCY_BUCKETS.len()).map(|k| k >= b).collect();
            assert_eq!(got, want, "{ms} ms");
        }
    }

    #[test]
    fn the_text_is_cumulative_with_count_and_sum() {
        let h = LatencyHistogram::new();
        h.record_all(&[0, 1, 1, 3, 7_000, 20_000]);
        h.record(2);
        let text = h.prometheus_text();
        for line in [
            "# TYPE fleetcast_e2e_latency_seconds histogram",
            "fleetcast_e2e_latency_seconds_bucket{le=\"0.0005\"} 1",
            "fleetcast_e2e_latency_seconds_bucket{le=\"0.001\"} 3",
            "fleetcast_e2e_latency_seconds_bucket{le=\"0.002\"} 4",
            "fleetcast_e2e_latency_seconds_bucket{le=\"0.005\"} 5",
            "fleetcast_e2e_latency_seconds_bucket{le=\"5\"} 5",
            "fleetcast_e2e_latency_seconds_bucket{le=\"10\"} 6",
            "fleetcast_e2e_latency_seconds_bucket{le=\"+Inf\"} 7",
            "fleetcast_e2e_latency_seconds_sum 27.007",
            "fleetcast_e2e_latency_seconds_count 7",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        assert_eq!(h.count(), 7);
    }
}
