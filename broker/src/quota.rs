//! Connect quotas: how often one client id, and all clients together, may connect.
//!
//! Two devices that share a client id take the id from each other on every connect; left
//! alone they reconnect as fast as the network allows, and each takeover costs a will,
//! a router link and a log line. AWS IoT Core allows one connect per second per client
//! id; fleetcast does the same by default. The global rate guards the CPU spent on
//! password hashes during a reconnect storm, so it is checked before authentication,
//! while the per-id rate is checked after it (so no one can use up another device's
//! quota with a wrong password).

use crate::pacing::Pacer;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Entries the per-id table holds before it sweeps expired ones.
const SWEEP_FLOOR: usize = 1024;

/// Connect rate limits shared by every listener.
#[derive(Debug)]
pub struct ConnectQuota {
    global: Pacer,
    /// Shortest time between two accepted connects of one client id.
    per_id_interval: Duration,
    recent: Mutex<Recent>,
}

#[derive(Debug)]
struct Recent {
    /// Client id -> when it was last accepted.
    last: HashMap<String, Instant>,
    /// Size at which the next sweep runs; doubles with the live entries so sweeps stay
    /// amortised O(1) per connect.
    sweep_at: usize,
}

impl ConnectQuota {
    /// `per_id` accepted connects per second per client id, `global` over all clients
    /// (with a burst of one second's worth).
    pub fn new(per_id: u32, global: u32) -> ConnectQuota {
        ConnectQuota {
            global: Pacer::new(global, global),
            per_id_interval: Duration::from_secs(1) / per_id.max(1),
            recent: Mutex::new(Recent {
                last: HashMap::new(),
                sweep_at: SWEEP_FLOOR,
            }),
        }
    }

    /// Whether one more CONNECT fits the global rate now (charged if it does).
    pub fn admit_any(&self, now: Instant) -> bool {
        self.global.try_admit(now)
    }

    /// Whether `client_id` may connect now; if so, the connect is recorded.
    pub fn admit_id(&self, client_id: &str, now: Instant) -> bool {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(last) = recent.last.get_mut(client_id) {
            if now.saturating_duration_since(*last) < self.per_id_interval {
                return false;
            }
            *last = now;
            return true;
        }
        if recent.last.len() >= recent.sweep_at {
            let interval = self.per_id_interval;
            recent
                .last
                .retain(|_, t| now.saturating_duration_since(*t) < interval);
            recent.sweep_at = (recent.last.len() * 2).max(SWEEP_FLOOR);
        }
        recent.last.insert(client_id.to_owned(), now);
        true
    }

    /// Client ids remembered now (for tests of the bound).
    pub fn tracked_ids(&self) -> usize {
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_connect_per_second_per_id() {
        let q = ConnectQuota::new(1, 1000);
        let t0 = Instant::now();
        assert!(q.admit_id("a", t0));
        assert!(q.admit_id("b", t0), "other ids are not affected");
        assert!(!q.admit_id("a", t0 + Duration::from_millis(999)));
        assert!(q.admit_id("a", t0 + Duration::from_millis(1000)));
        assert!(!q.admit_id("a", t0 + Duration::from_millis(1500)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_forgets_ids_whose_second_is_over() {
        let q = ConnectQuota::new(1, 1000);
        let t0 = Instant::now();
        for i in 0..SWEEP_FLOOR {
            assert!(q.admit_id(&format!("old-{i}"), t0));
        }
        let later = t0 + Duration::from_secs(2);
        for i in 0..10 {
            assert!(q.admit_id(&format!("new-{i}"), later));
        }
        assert_eq!(q.tracked_ids(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn the_global_rate_has_one_second_of_burst() {
        let q = ConnectQuota::new(1, 100);
        let t0 = Instant::now();
        assert_eq!((0..150).filter(|_| q.admit_any(t0)).count(), 100);
        assert_eq!(
            (0..150)
                .filter(|_| q.admit_any(t0 + Duration::from_millis(500)))
                .count(),
            50
        );
    }
}
