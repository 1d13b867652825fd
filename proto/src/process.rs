//! CPU time and memory of a process, from `/proc` (Linux), for the summaries that report
//! what a fleet or a broker costs.
//!
//! Here rather than in one part because three report it: the broker's `/metrics`, the
//! `simulate` summary lines and the load tester's report (its own cost and the broker's);
//! it needs nothing but `std`.

use std::time::Duration;

/// A process's resource use at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// User plus system CPU time used so far.
    pub cpu: Duration,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
}

/// Clock ticks per second of `/proc/PID/stat` times (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: u64 = 100;

/// Reads `/proc/{pid}/stat` and `/proc/{pid}/status`; None when the process is gone or
/// the system has no `/proc`.
pub fn usage(pid: u32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(Usage {
        cpu: Duration::from_millis(ticks * 1000 / TICKS_PER_SEC),
        rss_bytes: rss_kb * 1024,
    })
}

/// This process's usage.
pub fn own_usage() -> Option<Usage> {
    usage(std::process::id())
}

/// Open file descriptors of this process (None without `/proc`).
pub fn open_fds() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count())
}

/// CPU use between two readings as a percentage of one core.
pub fn cpu_percent(before: Usage, after: Usage, wall: Duration) -> f64 {
    if wall.is_zero() {
        return 0.0;
    }
    after.cpu.saturating_sub(before.cpu).as_secs_f64() / wall.as_secs_f64() * 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_usage_and_sees_cpu_spent() {
        let Some(before) = own_usage() else {
            return; // no /proc here
        };
        assert!(before.rss_bytes > 0);
        // Spin until the process has used 100 ms more CPU; /proc must show it.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        loop {
            for _ in 0..100_000 {
                x = x.wrapping_add(std::hint::black_box(1));
            }
            let now = own_usage().expect("still here");
            if now.cpu >= before.cpu + Duration::from_millis(100) {
                assert!(now.rss_bytes > 0);
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no CPU time seen ({x})"
            );
        }
    }

    #[test]
    fn counts_open_fds() {
        let Some(before) = open_fds() else { return };
        let f = std::fs::File::open("/proc/self/status").expect("open");
        assert!(open_fds().expect("fds") > before.saturating_sub(1));
        drop(f);
    }

    #[test]
    fn cpu_percent_is_cpu_time_over_wall_time() {
        let at = |ms| Usage {
            cpu: Duration::from_millis(ms),
            rss_bytes: 1,
        };
        assert_eq!(
            cpu_percent(at(1_000), at(1_250), Duration::from_secs(1)),
            25.0
        );
        assert_eq!(cpu_percent(at(0), at(3_000), Duration::from_secs(2)), 150.0);
        assert_eq!(cpu_percent(at(0), at(10), Duration::ZERO), 0.0);
    }
}
