//! `[runtime]`: the threads connections and the rest run on, and how many of each a
//! machine gets when the file does not say.

use serde::{Deserialize, Serialize};

/// Threads (`[runtime]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Runtime {
    /// Single-threaded runtimes client connections run on (`io_threads.rs`). Unset: one
    /// per two cores, at least one; 0: connections share the tokio runtime everything
    /// else runs on.
    pub io_threads: Option<usize>,
    /// Worker threads of the tokio runtime `fleetcast serve` runs HTTP, the map and the
    /// rest on (and, with `io_threads = 0`, the connections). Unset: the cores the
    /// connection threads leave, at least one; 0: one per core. A library user's runtime
    /// is its own.
    pub workers: Option<usize>,
    /// How long (µs) a connection thread that ran out of work, and was busy under a
    /// quarter of the time lately, waits before it asks the kernel for more
    /// (`io_threads/pause.rs`): what arrives meanwhile is taken in one wake-up. Unset:
    /// [`DEFAULT_IO_COALESCE_US`]; 0: it asks at once.
    pub io_coalesce_us: Option<u64>,
}

/// `io_coalesce_us` when the file does not say.
pub const DEFAULT_IO_COALESCE_US: u64 = 2000;

/// The most `io_coalesce_us` accepted (µs).
pub const MAX_IO_COALESCE_US: u64 = 20_000;

impl Runtime {
    /// Both counts within 0..=[`MAX_THREADS`](crate::io_threads::MAX_THREADS), the pause
    /// within 0..=[`MAX_IO_COALESCE_US`].
    pub(super) fn validate(&self) -> Result<(), String> {
        let max = crate::io_threads::MAX_THREADS;
        for (key, n) in [("io_threads", self.io_threads), ("workers", self.workers)] {
            if n.unwrap_or(0) > max {
                return Err(format!("runtime.{key} must be within 0..={max}"));
            }
        }
        if self.io_coalesce_us.unwrap_or(0) > MAX_IO_COALESCE_US {
            return Err(format!(
                "runtime.io_coalesce_us must be within 0..={MAX_IO_COALESCE_US}"
            ));
        }
        Ok(())
    }

    /// How long a connection thread out of work waits before it parks; None: it does not.
    pub fn io_coalesce(&self) -> Option<std::time::Duration> {
        let us = self.io_coalesce_us.unwrap_or(DEFAULT_IO_COALESCE_US);
        (us > 0).then(|| std::time::Duration::from_micros(us))
    }

    /// How many connection threads `io_threads` asks for.
    pub fn io_thread_count(&self) -> usize {
        self.io_threads
            .unwrap_or_else(|| (cores() / 2).max(1))
            .min(crate::io_threads::MAX_THREADS)
    }

    /// How many tokio workers `workers` asks for.
    pub fn worker_count(&self) -> usize {
        match self.workers {
            Some(0) => cores(),
            Some(n) => n,
            None => cores().saturating_sub(self.io_thread_count()).max(1),
        }
    }
}

/// The cores this process may run on (at least one).
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
