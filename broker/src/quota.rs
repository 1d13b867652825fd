//! Connect quotas: how often one client id, and all clients together, may connect.
//!
//! Two devices that share a client id take the id from each other on every connect; left
//! alone they reconnect as fast as the network allows, and each takeover costs a will, a
//! router link and a log line. A hard one-connect-a-second rule (AWS IoT Core's) stops
//! that loop but also refuses a phone that drops Wi-Fi and comes straight back, or a test
//! suite that connects twice. So by default fleetcast detects *flapping* instead, as EMQX
//! does: a client id that connects more than `flap_max_connects` times within
//! `flap_window_ms` is refused for `flap_ban_ms`; a normal reconnect is never refused.
//! The strict rate is still there for those who want it (`connect_rate_per_client_id`,
//! 0 = off).
//!
//! The global rate guards the CPU spent on password hashes during a reconnect storm, so it
//! is checked before authentication, while the per-id rules are checked after it (so no one
//! can use up another device's quota with a wrong password).

use crate::pacing::Pacer;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Entries the per-id table holds before it sweeps expired ones.
const SWEEP_FLOOR: usize = 1024;

/// Why a client id may not connect now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdRefusal {
    /// Sooner than the strict per-id rate allows.
    Rate,
    /// The id is banned for flapping.
    Flapping,
}

/// The per-client-id rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRules {
    /// Shortest time between two accepted connects of one id (None: no strict rate).
    pub min_interval: Option<Duration>,
    /// More accepted connects than this within `window` ban the id (0: no detection).
    pub flap_max: u32,
    /// The flapping window.
    pub window: Duration,
    /// How long a flapping id is refused.
    pub ban: Duration,
}

impl IdRules {
    /// `per_id` connects a second at most (0: no strict rate) and the flapping rule.
    pub fn new(per_id: u32, flap_max: u32, window: Duration, ban: Duration) -> IdRules {
        IdRules {
            min_interval: (per_id > 0).then(|| Duration::from_secs(1) / per_id),
            flap_max,
            window,
            ban,
        }
    }

    /// How long an id's record matters after its last event.
    fn memory(&self) -> Duration {
        self.window
            .max(self.ban)
            .max(self.min_interval.unwrap_or_default())
    }
}

/// Connect rate limits shared by every listener.
#[derive(Debug)]
pub struct ConnectQuota {
    global: Pacer,
    rules: IdRules,
    recent: Mutex<Recent>,
}

/// One client id's recent connects.
#[derive(Debug, Clone, Copy)]
struct IdRecord {
    /// The last accepted connect.
    last: Instant,
    /// Start of the current flapping window, and accepted connects in it.
    window_start: Instant,
    count: u32,
    /// Refused until then.
    banned_until: Option<Instant>,
}

#[derive(Debug)]
struct Recent {
    ids: HashMap<String, IdRecord>,
    /// Size at which the next sweep runs; doubles with the live entries so sweeps stay
    /// amortised O(1) per connect.
    sweep_at: usize,
}

impl ConnectQuota {
    /// The per-id `rules`, and `global` connects a second over all clients (with a burst
    /// of one second's worth).
    pub fn new(rules: IdRules, global: u32) -> ConnectQuota {
        ConnectQuota {
            global: Pacer::new(global, global),
            rules,
            recent: Mutex::new(Recent {
                ids: HashMap::new(),
                sweep_at: SWEEP_FLOOR,
            }),
        }
    }

    /// Whether one more CONNECT fits the global rate now (charged if it does).
    pub fn admit_any(&self, now: Instant) -> bool {
        self.global.try_admit(now)
    }

    /// Whether `client_id` may connect now; if so, the connect is recorded. A refused
    /// connect is not charged.
    ///
    /// # Errors
    /// Why the id may not connect now.
    pub fn admit_id(&self, client_id: &str, now: Instant) -> Result<(), IdRefusal> {
        let rules = self.rules;
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = recent.ids.get_mut(client_id) {
            return admit(r, &rules, now);
        }
        if recent.ids.len() >= recent.sweep_at {
            let memory = rules.memory();
            recent.ids.retain(|_, r| {
                let last = r.banned_until.map_or(r.last, |b| b.max(r.last));
                now.saturating_duration_since(last) < memory
            });
            recent.sweep_at = (recent.ids.len() * 2).max(SWEEP_FLOOR);
        }
        let record = IdRecord {
            last: now,
            window_start: now,
            count: 1,
            banned_until: None,
        };
        recent.ids.insert(client_id.to_owned(), record);
        Ok(())
    }

    /// Client ids remembered now (for tests of the bound).
    pub fn tracked_ids(&self) -> usize {
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ids
            .len()
    }
}

/// The rules for an id seen before.
fn admit(r: &mut IdRecord, rules: &IdRules, now: Instant) -> Result<(), IdRefusal> {
    if r.banned_until.is_some_and(|b| now < b) {
        return Err(IdRefusal::Flapping);
    }
    if rules
        .min_interval
        .is_some_and(|min| now.saturating_duration_since(r.last) < min)
    {
        return Err(IdRefusal::Rate);
    }
    if now.saturating_duration_since(r.window_start) >= rules.window {
        r.window_start = now;
        r.count = 0;
    }
    if rules.flap_max > 0 && r.count >= rules.flap_max {
        // One connect past the limit: the id is kicking itself in a loop.
        r.banned_until = Some(now + rules.ban);
        r.window_start = now;
        r.count = 0;
        return Err(IdRefusal::Flapping);
    }
    r.count += 1;
    r.last = now;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn strict() -> IdRules {
        IdRules::new(1, 0, Duration::from_secs(60), Duration::from_secs(60))
    }

    fn flapping(max: u32) -> IdRules {
        IdRules::new(0, max, Duration::from_secs(60), Duration::from_secs(300))
    }

    #[tokio::test(start_paused = true)]
    async fn the_strict_rate_allows_one_connect_per_second_per_id() {
        let q = ConnectQuota::new(strict(), 1000);
        let t0 = Instant::now();
        assert_eq!(q.admit_id("a", t0), Ok(()));
        assert_eq!(q.admit_id("b", t0), Ok(()), "other ids are not affected");
        assert_eq!(q.admit_id("a", t0 + 999 * MS), Err(IdRefusal::Rate));
        assert_eq!(q.admit_id("a", t0 + 1000 * MS), Ok(()));
        assert_eq!(q.admit_id("a", t0 + 1500 * MS), Err(IdRefusal::Rate));
    }

    #[tokio::test(start_paused = true)]
    async fn quick_reconnects_pass_and_a_kicking_loop_is_banned() {
        let q = ConnectQuota::new(flapping(15), 1000);
        let t0 = Instant::now();
        // Five connects within a second: a phone coming back, a test connecting twice.
        for i in 0..5 {
            assert_eq!(q.admit_id("a", t0 + i * 100 * MS), Ok(()), "{i}");
        }
        // Up to 15 in the minute pass; the 16th bans the id for 5 minutes.
        for i in 5..15 {
            assert_eq!(q.admit_id("a", t0 + i * 100 * MS), Ok(()), "{i}");
        }
        assert_eq!(q.admit_id("a", t0 + 1_500 * MS), Err(IdRefusal::Flapping));
        assert_eq!(q.admit_id("b", t0 + 1_500 * MS), Ok(()), "other ids go on");
        let banned = t0 + 1_500 * MS;
        assert_eq!(
            q.admit_id("a", banned + Duration::from_secs(299)),
            Err(IdRefusal::Flapping)
        );
        assert_eq!(q.admit_id("a", banned + Duration::from_secs(300)), Ok(()));
        // A new window: the count starts over.
        let later = banned + Duration::from_secs(400);
        for i in 0..15 {
            assert_eq!(q.admit_id("a", later + i * MS), Ok(()), "{i}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_forgets_ids_whose_window_is_over() {
        let q = ConnectQuota::new(strict(), 1000);
        let t0 = Instant::now();
        for i in 0..SWEEP_FLOOR {
            assert_eq!(q.admit_id(&format!("old-{i}"), t0), Ok(()));
        }
        let later = t0 + Duration::from_secs(61);
        for i in 0..10 {
            assert_eq!(q.admit_id(&format!("new-{i}"), later), Ok(()));
        }
        assert_eq!(q.tracked_ids(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn the_global_rate_has_one_second_of_burst() {
        let q = ConnectQuota::new(strict(), 100);
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
