//! Wall-clock time as the wire carries it: milliseconds (a fix's `ts`) and seconds (a
//! token's `exp`) since the Unix epoch.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now (0 if the clock is before the epoch).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Seconds since the Unix epoch, now (0 if the clock is before the epoch).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_milliseconds_agree() {
        let ms = now_ms();
        let s = unix_now();
        assert!(ms / 1000 >= s.saturating_sub(1) && ms / 1000 <= s + 1);
        // Past 2020: the clock is set.
        assert!(s > 1_577_836_800);
    }
}
