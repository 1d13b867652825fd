//! Log lines a client can trigger at will (refused logins, denied publishes, failed TLS
//! handshakes, invalid payloads) are written at most once a second per kind, with the
//! number left out since: an operator sees every kind of trouble at INFO, and a flood of
//! bad passwords cannot flood the log.

use std::sync::atomic::{AtomicU64, Ordering};

/// One kind of log line's budget: the second it was last written and what was left out.
#[derive(Debug, Default)]
pub struct Throttle {
    second: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttle {
    /// A throttle that has written nothing yet.
    pub const fn new() -> Throttle {
        Throttle {
            second: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether a line may be written in `now_s` (unix seconds): `Some(n)` with the lines
    /// left out since the last one, `None` (counted) when this second already had one.
    pub fn admit(&self, now_s: u64) -> Option<u64> {
        let last = self.second.load(Ordering::Relaxed);
        if last != now_s
            && self
                .second
                .compare_exchange(last, now_s, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_and_a_count_of_the_rest() {
        let t = Throttle::new();
        assert_eq!(t.admit(100), Some(0));
        assert_eq!(t.admit(100), None);
        assert_eq!(t.admit(100), None);
        assert_eq!(t.admit(101), Some(2));
        assert_eq!(t.admit(105), Some(0));
    }
}
