//! Reconnect back-off: "full jitter" (a uniformly random wait below an exponentially
//! growing ceiling), so that a broker restart is not answered by every client at once.

use std::time::Duration;

/// The ceiling of the first retry.
pub const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// The largest ceiling.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The wait before retry number `attempt` (0 first), given `unit`, a random number in
/// [0, 1) the caller draws (so this crate needs no random number generator).
pub fn full_jitter(attempt: u32, unit: f64) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX))
        .min(BACKOFF_MAX);
    // A NaN would make `mul_f64` panic: a broken generator gets no wait, not a crash.
    let unit = if unit.is_nan() {
        0.0
    } else {
        unit.clamp(0.0, 1.0)
    };
    ceiling.mul_f64(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_doubles_up_to_the_maximum() {
        assert_eq!(full_jitter(0, 0.0), Duration::ZERO);
        assert_eq!(full_jitter(0, 1.0), BACKOFF_BASE);
        assert_eq!(full_jitter(1, 1.0), BACKOFF_BASE * 2);
        assert_eq!(full_jitter(3, 0.5), BACKOFF_BASE * 4);
        for attempt in [6, 20, u32::MAX] {
            assert_eq!(full_jitter(attempt, 1.0), BACKOFF_MAX);
        }
        // A generator that strays outside [0, 1) cannot make the wait exceed the ceiling.
        assert_eq!(full_jitter(0, 7.0), BACKOFF_BASE);
        assert_eq!(full_jitter(0, f64::NAN), Duration::ZERO);
    }
}
