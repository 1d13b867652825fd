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
}

impl Runtime {
    /// Both counts within 0..=[`MAX_THREADS`](crate::io_threads::MAX_THREADS).
    pub(super) fn validate(&self) -> Result<(), String> {
        let max = crate::io_threads::MAX_THREADS;
        for (key, n) in [("io_threads", self.io_threads), ("workers", self.workers)] {
            if n.unwrap_or(0) > max {
                return Err(format!("runtime.{key} must be within 0..={max}"));
            }
        }
        Ok(())
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
