//! The publish quota of HTTP publishers, per client id.
//!
//! An MQTT connection carries its own pacer; an HTTP publisher has no connection, so its
//! pacer lives here, by client id, in a table of bounded size: a flood of made-up ids
//! cannot grow it past [`MAX_TRACKED`] (when full it starts over, which at worst gives each
//! id a fresh burst once).

use crate::pacing::Pacer;
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::time::Instant;

/// Client ids whose pacers are kept at most.
pub const MAX_TRACKED: usize = 65_536;

/// Pacers by client id.
#[derive(Debug)]
pub struct Rates {
    rate: u32,
    pacers: Mutex<HashMap<String, Pacer>>,
}

impl Rates {
    /// `rate` publishes a second per client id, with a tenth of a second of burst (as for
    /// an MQTT connection).
    pub fn new(rate: u32) -> Rates {
        Rates {
            rate,
            pacers: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `client_id` may publish once more at `now` (charged if so).
    pub fn admit(&self, client_id: &str, now: Instant) -> bool {
        let mut pacers = self.pacers.lock().unwrap_or_else(|p| p.into_inner());
        if !pacers.contains_key(client_id) && pacers.len() >= MAX_TRACKED {
            pacers.clear();
        }
        pacers
            .entry(client_id.to_owned())
            .or_insert_with(|| Pacer::new(self.rate, (self.rate / 10).max(1)))
            .try_admit(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_id_has_its_own_quota() {
        let r = Rates::new(10);
        let now = Instant::now();
        assert!(r.admit("a", now));
        assert!(!r.admit("a", now), "a burst of one at 10/s");
        assert!(r.admit("b", now));
        assert!(r.admit("a", now + std::time::Duration::from_millis(100)));
    }
}
