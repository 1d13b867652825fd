//! Failed logins remembered per key (a source address, or a username's digest), and what
//! follows from them: a back-off that refuses the key outright, or a pace that lets it
//! try a password only so often.
//!
//! The table is itself a target: a guesser with many addresses or usernames would grow it
//! without end. So keys are fixed-size (callers digest usernames), an entry is forgotten
//! once its back-off is over and it has been quiet for a while, and the table never holds
//! more than `capacity` entries: when full, expired entries go first, then the oldest
//! eighth (entries not in back-off before those that are, so a flood of new keys evicts
//! old noise before it frees a guesser). Every method takes `now`, so tests use paused
//! time.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;
use tokio::time::Instant;

/// What failures lead to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Failures within `window` that start a back-off, or a pace.
    pub threshold: u32,
    /// How long a failure counts.
    pub window: Duration,
    /// The first back-off; doubles with each further round of `threshold` failures. Zero:
    /// never refuse outright (accounts are only paced).
    pub backoff: Duration,
    /// The longest back-off; also how long a quiet key's rounds are remembered.
    pub backoff_max: Duration,
    /// Past `threshold` failures in the window, at most one try per `pace`. Zero: no pace.
    pub pace: Duration,
    /// Keys remembered at most.
    pub capacity: usize,
}

/// Whether a key may try a password now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Now.
    Go,
    /// After this wait (its turn is reserved).
    Wait(Duration),
    /// Not before this much time has passed.
    Refuse(Duration),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Failures since `window_start`.
    failures: u32,
    window_start: Instant,
    /// Back-offs served so far (the next one is `backoff * 2^rounds`).
    rounds: u32,
    blocked_until: Instant,
    last_failure: Instant,
    /// The next paced try's turn.
    next_turn: Instant,
}

/// Failures per key, bounded.
#[derive(Debug)]
pub struct Lockout<K> {
    rules: Rules,
    entries: HashMap<K, Entry>,
}

impl<K: Hash + Eq + Copy> Lockout<K> {
    /// An empty table.
    pub fn new(rules: Rules) -> Lockout<K> {
        Lockout {
            rules,
            entries: HashMap::new(),
        }
    }

    /// Whether `key` may try now; a paced key's turn is reserved by asking, so the caller
    /// must then try (or give the turn up by failing to connect, which costs nothing).
    pub fn verdict(&mut self, key: K, now: Instant) -> Verdict {
        let rules = self.rules;
        let Some(e) = self.entries.get_mut(&key) else {
            return Verdict::Go;
        };
        if e.blocked_until > now {
            return Verdict::Refuse(e.blocked_until - now);
        }
        let in_window = now.saturating_duration_since(e.window_start) < rules.window;
        if rules.pace.is_zero() || !in_window || e.failures < rules.threshold {
            return Verdict::Go;
        }
        let turn = e.next_turn.max(now);
        let wait = turn - now;
        // One turn ahead at most: a queue of paced tries would only hold connections.
        if wait > rules.pace {
            return Verdict::Refuse(wait);
        }
        e.next_turn = turn + rules.pace;
        if wait.is_zero() {
            Verdict::Go
        } else {
            Verdict::Wait(wait)
        }
    }

    /// Records a failure of `key`; returns the back-off it starts, if it starts one.
    pub fn fail(&mut self, key: K, now: Instant) -> Option<Duration> {
        if !self.entries.contains_key(&key) {
            self.make_room(now);
        }
        let rules = self.rules;
        let e = self.entries.entry(key).or_insert(Entry {
            failures: 0,
            window_start: now,
            rounds: 0,
            blocked_until: now,
            last_failure: now,
            next_turn: now,
        });
        if now.saturating_duration_since(e.window_start) >= rules.window {
            e.failures = 0;
            e.window_start = now;
        }
        e.failures = e.failures.saturating_add(1);
        e.last_failure = now;
        if rules.backoff.is_zero() || e.failures < rules.threshold {
            return None;
        }
        let backoff = rules
            .backoff
            .saturating_mul(1u32 << e.rounds.min(20))
            .min(rules.backoff_max);
        e.rounds = e.rounds.saturating_add(1);
        e.blocked_until = now + backoff;
        e.failures = 0;
        e.window_start = now;
        Some(backoff)
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether an entry has nothing left to say: out of back-off, and quiet for longer
    /// than both the window and the longest back-off (so its rounds are forgiven).
    fn expired(rules: &Rules, e: &Entry, now: Instant) -> bool {
        let memory = rules.window.max(rules.backoff_max);
        e.blocked_until <= now && now.saturating_duration_since(e.last_failure) >= memory
    }

    /// Frees room for one more entry.
    fn make_room(&mut self, now: Instant) {
        if self.entries.len() < self.rules.capacity {
            return;
        }
        let rules = self.rules;
        self.entries.retain(|_, e| !Self::expired(&rules, e, now));
        if self.entries.len() < rules.capacity {
            return;
        }
        // Still full of live entries: drop the oldest eighth at once, so a flood pays
        // this sort once per capacity/8 new keys.
        let mut by_age: Vec<(bool, Instant, K)> = self
            .entries
            .iter()
            .map(|(k, e)| (e.blocked_until > now, e.last_failure, *k))
            .collect();
        by_age.sort_unstable_by_key(|(blocked, last, _)| (*blocked, *last));
        let evict = (rules.capacity / 8).max(1);
        for (_, _, k) in by_age.into_iter().take(evict) {
            self.entries.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            threshold: 3,
            window: Duration::from_secs(60),
            backoff: Duration::from_secs(10),
            backoff_max: Duration::from_secs(40),
            pace: Duration::ZERO,
            capacity: 64,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn threshold_failures_start_a_back_off_that_doubles_up_to_the_cap() {
        let mut t = Lockout::new(rules());
        let t0 = Instant::now();
        assert_eq!(t.fail(1, t0), None);
        assert_eq!(t.fail(1, t0), None);
        assert_eq!(t.verdict(1, t0), Verdict::Go);
        assert_eq!(t.fail(1, t0), Some(Duration::from_secs(10)));
        assert_eq!(t.verdict(1, t0), Verdict::Refuse(Duration::from_secs(10)));
        assert_eq!(t.verdict(2, t0), Verdict::Go, "other keys are not affected");
        let mut at = t0 + Duration::from_secs(10);
        for expected in [20, 40, 40] {
            assert_eq!(t.verdict(1, at), Verdict::Go);
            for _ in 0..2 {
                assert_eq!(t.fail(1, at), None);
            }
            assert_eq!(t.fail(1, at), Some(Duration::from_secs(expected)));
            at += Duration::from_secs(expected);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failures_outside_the_window_do_not_add_up() {
        let mut t = Lockout::new(rules());
        let t0 = Instant::now();
        for i in 0..10u64 {
            assert_eq!(
                t.fail(7, t0 + Duration::from_secs(30 * i)),
                None,
                "failure {i}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_paced_key_gets_one_try_per_pace_and_waits_at_most_one_turn() {
        let paced = Rules {
            backoff: Duration::ZERO,
            pace: Duration::from_secs(1),
            ..rules()
        };
        let mut t = Lockout::new(paced);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(t.fail(1, t0), None, "paced keys are never refused outright");
        }
        assert_eq!(t.verdict(1, t0), Verdict::Go);
        assert_eq!(t.verdict(1, t0), Verdict::Wait(Duration::from_secs(1)));
        assert!(matches!(t.verdict(1, t0), Verdict::Refuse(_)));
        assert_eq!(
            t.verdict(1, t0 + Duration::from_secs(2)),
            Verdict::Go,
            "turns free up as time passes"
        );
        // Once the window is over, the pace is too.
        let later = t0 + Duration::from_secs(61);
        assert_eq!(t.verdict(1, later), Verdict::Go);
        assert_eq!(t.verdict(1, later), Verdict::Go);
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_stays_bounded_and_forgets_quiet_keys_first() {
        let mut t = Lockout::new(rules());
        let t0 = Instant::now();
        // A guesser in back-off, then a flood of one-failure keys.
        for _ in 0..3 {
            t.fail(u64::MAX, t0);
        }
        for k in 0..10_000u64 {
            t.fail(k, t0 + Duration::from_millis(k));
            assert!(t.len() <= 64);
        }
        assert!(
            matches!(
                t.verdict(u64::MAX, t0 + Duration::from_secs(5)),
                Verdict::Refuse(_)
            ),
            "the flood did not free the guesser in back-off"
        );
        // Quiet for longer than the window and the longest back-off: swept, all at once,
        // the next time the table is full.
        let much_later = t0 + Duration::from_secs(3_600);
        let mut k = 20_000;
        while t.len() > 8 {
            t.fail(k, much_later);
            k += 1;
            assert!(k < 20_064, "quiet keys never swept");
        }
    }
}
