//! What a subscriber saw: per publisher, which sequence numbers arrived, so the report can
//! say how many were lost, duplicated or out of order; and how late each was.

use hdrhistogram::Histogram;
use std::collections::HashMap;

/// Sequence bookkeeping for one publisher as seen by one subscriber.
#[derive(Debug, Default, Clone, Copy)]
struct SeqWindow {
    highest: u64,
    /// Bit i set: `highest - i` was seen.
    seen: u128,
}

/// One subscriber's tally.
#[derive(Debug)]
pub struct Tally {
    per_publisher: HashMap<u32, SeqWindow>,
    /// Messages received (duplicates included).
    pub received: u64,
    /// Messages received again.
    pub duplicates: u64,
    /// Messages older than one already received.
    pub out_of_order: u64,
    /// End-to-end latency, microseconds.
    pub latency_us: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            per_publisher: HashMap::new(),
            received: 0,
            duplicates: 0,
            out_of_order: 0,
            latency_us: new_histogram(),
        }
    }
}

/// A latency histogram: 1 us to 10 min, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|_| unreachable!("valid bounds"))
}

impl Tally {
    /// Records message `seq` (from 1) of `publisher`, `latency_us` late.
    pub fn record(&mut self, publisher: u32, seq: u64, latency_us: u64) {
        self.received += 1;
        let _ = self.latency_us.record(latency_us.clamp(1, 600_000_000));
        let w = self.per_publisher.entry(publisher).or_default();
        if seq > w.highest {
            let shift = seq - w.highest;
            w.seen = if shift >= 128 { 0 } else { w.seen << shift };
            w.seen |= 1;
            w.highest = seq;
            return;
        }
        let back = w.highest - seq;
        if back >= 128 {
            self.out_of_order += 1;
            return;
        }
        if w.seen & (1 << back) != 0 {
            self.duplicates += 1;
        } else {
            w.seen |= 1 << back;
            self.out_of_order += 1;
        }
    }

    /// Distinct messages received.
    pub fn distinct(&self) -> u64 {
        self.received - self.duplicates
    }

    /// Adds another subscriber's tally (publishers are counted per subscriber).
    pub fn merge(&mut self, other: &Tally) {
        self.received += other.received;
        self.duplicates += other.duplicates;
        self.out_of_order += other.out_of_order;
        let _ = self.latency_us.add(&other.latency_us);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_losses_duplicates_and_reordering() {
        let mut t = Tally::default();
        for seq in [1, 2, 3, 5, 4, 4, 6, 2] {
            t.record(7, seq, 1_000);
        }
        assert_eq!(t.received, 8);
        assert_eq!(t.duplicates, 2, "4 and 2 again");
        assert_eq!(t.out_of_order, 1, "4 after 5");
        assert_eq!(t.distinct(), 6);
        // 6 published, 6 distinct received: nothing lost.
        let mut other = Tally::default();
        other.record(1, 1, 3_000);
        t.merge(&other);
        assert_eq!(t.distinct(), 7);
        // HDR keeps 3 significant digits.
        assert!(t.latency_us.max().abs_diff(3_000) <= 3);
    }

    #[test]
    fn publishers_are_independent() {
        let mut t = Tally::default();
        t.record(1, 10, 1);
        t.record(2, 1, 1);
        t.record(1, 11, 1);
        assert_eq!((t.duplicates, t.out_of_order), (0, 0));
    }
}
