//! The password check's defences against guessing: who may try, when, and in what order.
//!
//! An argon2 check costs a core for tens of milliseconds and ~19 MiB, on purpose; a
//! guesser with one socket per guess would otherwise get every check it asks for and make
//! every other device wait behind its guesses. So, before any hash:
//!
//! - a source address (IPv4, IPv6 /64) with `auth_failures_per_source` wrong passwords
//!   within `auth_failure_window_ms` is refused outright for a back-off that doubles with
//!   each further round ([`crate::lockout`]);
//! - an account (any username, known or not, so that nothing here tells which exist)
//!   with `auth_failures_per_account` wrong passwords in the window is paced to one check
//!   per `auth_account_check_interval_ms`: slowed, never locked, or a guesser could lock
//!   a real device out;
//! - checks wait in one line, at most `auth_concurrency` running at once, and a source
//!   has at most one attempt in that line (the others wait behind it, at most
//!   `auth_pending_per_source`): a flood from one address delays another address by one
//!   check, not by the flood. The line holds at most `auth_queue`; past either bound the
//!   CONNECT is refused at once, "server unavailable".
//!
//! A [`Turn`] is moved into the hash job, so the line is held while argon2 runs even when
//! the client has given up (the connect time-out): a check cannot be cancelled, so it
//! must not stop counting. The jobs run on `auth_concurrency` threads of their own, each
//! keeping argon2's working memory between checks ([`crate::hashing`]): memory for
//! checks is `auth_concurrency` x `m`, however many guesses come.

use crate::config::Limits;
use crate::hashing::Scratch;
use crate::lockout::{Lockout, Rules, Verdict};
use crate::sources::source_key;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::{info, warn};

/// Attempts one source may have in the shared line (waiting or running) at once. One is
/// what fairness needs; a NAT'd fleet still gets through, its devices one after another.
const IN_LINE_PER_SOURCE: usize = 1;

/// Why an attempt was turned away before its password was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Its source is in back-off, or its account's paced turn is too far off.
    Backoff,
    /// No room in the line.
    Busy,
}

/// The bounds, from `[limits]`.
#[derive(Debug, Clone, Copy)]
pub struct GuardSettings {
    /// Failures that put a source in back-off.
    pub source: Rules,
    /// Failures that pace an account.
    pub account: Rules,
    /// argon2 checks at once.
    pub concurrency: usize,
    /// Attempts waiting in the shared line at most.
    pub queue: usize,
    /// Attempts of one source waiting for its place in the line at most.
    pub pending_per_source: usize,
}

impl GuardSettings {
    /// The settings `[limits]` gives.
    pub fn from_limits(l: &Limits) -> GuardSettings {
        let ms = Duration::from_millis;
        let source = Rules {
            threshold: l.auth_failures_per_source,
            window: ms(l.auth_failure_window_ms),
            backoff: ms(l.auth_backoff_ms),
            backoff_max: ms(l.auth_backoff_max_ms),
            pace: Duration::ZERO,
            capacity: l.auth_tracked_max,
        };
        GuardSettings {
            source,
            account: Rules {
                threshold: l.auth_failures_per_account,
                backoff: Duration::ZERO,
                pace: ms(l.auth_account_check_interval_ms),
                ..source
            },
            concurrency: l.auth_concurrency,
            queue: l.auth_queue,
            pending_per_source: l.auth_pending_per_source,
        }
    }

    /// No failure limits and no bound on waiting: [`crate::auth::Auth::check`] outside
    /// a broker (tools, tests), where no one is guessing.
    pub fn unlimited() -> GuardSettings {
        let never = Rules {
            threshold: u32::MAX,
            window: Duration::from_secs(1),
            backoff: Duration::ZERO,
            backoff_max: Duration::ZERO,
            pace: Duration::ZERO,
            capacity: 1,
        };
        GuardSettings {
            source: never,
            account: never,
            concurrency: 2,
            queue: usize::MAX,
            pending_per_source: usize::MAX,
        }
    }
}

/// One source's attempts waiting for the line.
#[derive(Debug)]
struct SourceLine {
    in_line: Arc<Semaphore>,
    pending: usize,
}

type Lines = Arc<Mutex<HashMap<IpAddr, SourceLine>>>;

/// A password check for a worker thread, given the thread's argon2 memory.
type Job = Box<dyn FnOnce(&mut Scratch) + Send>;

/// The threads argon2 checks run on, started with the first check. The channel needs no
/// bound: a job is only sent by a holder of a [`Turn`], so at most `auth_concurrency` are
/// in it. The threads end when the guard (the channel's sender) is dropped.
#[derive(Debug)]
struct Workers {
    count: usize,
    jobs: OnceLock<flume::Sender<Job>>,
}

impl Workers {
    fn sender(&self) -> &flume::Sender<Job> {
        self.jobs.get_or_init(|| {
            let (tx, rx) = flume::unbounded::<Job>();
            for i in 0..self.count {
                let rx: flume::Receiver<Job> = rx.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("fleetcast-argon2-{i}"))
                    .spawn(move || {
                        let mut scratch = Scratch::new();
                        while let Ok(job) = rx.recv() {
                            job(&mut scratch);
                        }
                    });
                if let Err(e) = spawned {
                    warn!(error = %e, "cannot start a password check thread");
                }
            }
            tx
        })
    }
}

/// Failure tables and the line of password checks, shared by every listener.
#[derive(Debug)]
pub struct LoginGuard {
    settings: GuardSettings,
    sources: Mutex<Lockout<IpAddr>>,
    /// Keyed by a digest of the username: fixed-size keys, whatever a client sends.
    accounts: Mutex<Lockout<u64>>,
    username_key: RandomState,
    checks: Arc<Semaphore>,
    /// Attempts waiting for `checks`.
    queued: AtomicUsize,
    /// One entry per source with an attempt under way: bounded by the connections.
    lines: Lines,
    workers: Workers,
}

/// A place at the front of the line: an argon2 check may run while it is held.
#[derive(Debug)]
pub struct Turn {
    _check: OwnedSemaphorePermit,
    _in_line: OwnedSemaphorePermit,
    _pending: Pending,
}

/// One attempt counted in its source's line until dropped.
#[derive(Debug)]
struct Pending {
    lines: Lines,
    key: IpAddr,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut lines = lock(&self.lines);
        if let Some(line) = lines.get_mut(&self.key) {
            line.pending = line.pending.saturating_sub(1);
            if line.pending == 0 {
                lines.remove(&self.key);
            }
        }
    }
}

/// Decrements the waiting count when the wait ends, however it ends.
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LoginGuard {
    /// A guard with these bounds.
    pub fn new(settings: GuardSettings) -> LoginGuard {
        LoginGuard {
            settings,
            sources: Mutex::new(Lockout::new(settings.source)),
            accounts: Mutex::new(Lockout::new(settings.account)),
            username_key: RandomState::new(),
            checks: Arc::new(Semaphore::new(settings.concurrency.max(1))),
            queued: AtomicUsize::new(0),
            lines: Arc::new(Mutex::new(HashMap::new())),
            workers: Workers {
                count: settings.concurrency.max(1),
                jobs: OnceLock::new(),
            },
        }
    }

    /// Whether `source` may try a password now (not in back-off).
    ///
    /// # Errors
    /// [`Hold::Backoff`] while it is.
    pub fn source_may_try(&self, source: IpAddr) -> Result<(), Hold> {
        match lock(&self.sources).verdict(source_key(source), Instant::now()) {
            Verdict::Refuse(_) => Err(Hold::Backoff),
            Verdict::Go | Verdict::Wait(_) => Ok(()),
        }
    }

    /// Waits for `username`'s paced turn, if its account is paced.
    ///
    /// # Errors
    /// [`Hold::Backoff`] when the turn is more than one interval away.
    pub async fn account_turn(&self, username: &str) -> Result<(), Hold> {
        let key = self.username_key.hash_one(username);
        let verdict = lock(&self.accounts).verdict(key, Instant::now());
        match verdict {
            Verdict::Go => Ok(()),
            Verdict::Wait(d) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
            Verdict::Refuse(_) => Err(Hold::Backoff),
        }
    }

    /// Waits for a turn to check a password from `source`.
    ///
    /// # Errors
    /// [`Hold::Busy`] when the source's or the shared line is full.
    pub async fn turn(&self, source: IpAddr) -> Result<Turn, Hold> {
        let key = source_key(source);
        let (in_line, pending) = {
            let mut lines = lock(&self.lines);
            let line = lines.entry(key).or_insert_with(|| SourceLine {
                in_line: Arc::new(Semaphore::new(IN_LINE_PER_SOURCE)),
                pending: 0,
            });
            if line.pending >= self.settings.pending_per_source {
                return Err(Hold::Busy);
            }
            line.pending += 1;
            let pending = Pending {
                lines: Arc::clone(&self.lines),
                key,
            };
            (Arc::clone(&line.in_line), pending)
        };
        let in_line = in_line.acquire_owned().await.map_err(|_| Hold::Busy)?;
        if self.queued.fetch_add(1, Ordering::Relaxed) >= self.settings.queue {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(Hold::Busy);
        }
        let queued = Queued(&self.queued);
        let check = Arc::clone(&self.checks)
            .acquire_owned()
            .await
            .map_err(|_| Hold::Busy)?;
        drop(queued);
        Ok(Turn {
            _check: check,
            _in_line: in_line,
            _pending: pending,
        })
    }

    /// Records a wrong password for `username` from `source`.
    pub fn failed(&self, source: IpAddr, username: &str) {
        let now = Instant::now();
        let key = source_key(source);
        if let Some(backoff) = lock(&self.sources).fail(key, now) {
            let backoff_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX);
            info!(source = %key, backoff_ms, "too many failed logins: source in back-off");
        }
        let account = self.username_key.hash_one(username);
        lock(&self.accounts).fail(account, now);
    }

    /// Runs `job` (an argon2 check) on a check thread; returns its result and `turn`, so
    /// that the caller records a failure before the source's next attempt may start. If
    /// the caller stops waiting, the turn is still held until the job ends.
    pub async fn run(
        &self,
        turn: Turn,
        job: impl FnOnce(&mut Scratch) -> bool + Send + 'static,
    ) -> (bool, Option<Turn>) {
        let (done, result) = tokio::sync::oneshot::channel();
        let work: Job = Box::new(move |scratch| {
            // A caller gone: the turn comes back here and is dropped now, not before.
            let _ = done.send((job(scratch), turn));
        });
        if self.workers.sender().send(work).is_err() {
            return (false, None);
        }
        match result.await {
            Ok((ok, turn)) => (ok, Some(turn)),
            Err(_) => (false, None),
        }
    }

    /// Sources and accounts the failure tables remember now.
    pub fn tracked(&self) -> (usize, usize) {
        (lock(&self.sources).len(), lock(&self.accounts).len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> GuardSettings {
        GuardSettings::from_limits(&Limits::default())
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[tokio::test]
    async fn a_flooding_source_has_one_attempt_in_line_and_a_bounded_wait_behind_it() {
        let guard = Arc::new(LoginGuard::new(GuardSettings {
            pending_per_source: 3,
            concurrency: 1,
            ..settings()
        }));
        let first = guard.turn(ip(1)).await.expect("first");
        // Two more from the same source wait (not in the shared line); the fourth is
        // refused at once.
        let waiting: Vec<_> = (0..2)
            .map(|_| {
                let g = Arc::clone(&guard);
                tokio::spawn(async move { g.turn(ip(1)).await.map(drop) })
            })
            .collect();
        tokio::task::yield_now().await;
        while lock(&guard.lines).get(&ip(1)).map_or(0, |l| l.pending) < 3 {
            tokio::task::yield_now().await;
        }
        assert_eq!(guard.turn(ip(1)).await.err(), Some(Hold::Busy));
        // Another source is next in the shared line, ahead of the flood's waiters.
        let other = {
            let g = Arc::clone(&guard);
            tokio::spawn(async move { g.turn(ip(2)).await.map(drop) })
        };
        while guard.queued.load(Ordering::Relaxed) < 1 {
            tokio::task::yield_now().await;
        }
        drop(first);
        other.await.expect("task").expect("the other source's turn");
        for w in waiting {
            w.await.expect("task").expect("a turn, later");
        }
        assert!(
            lock(&guard.lines).is_empty(),
            "lines go with their attempts"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failures_put_a_source_in_back_off_and_pace_the_account() {
        let guard = LoginGuard::new(settings());
        for _ in 0..5 {
            assert_eq!(guard.source_may_try(ip(1)), Ok(()));
            guard.failed(ip(1), "drv-1");
        }
        assert_eq!(guard.source_may_try(ip(1)), Err(Hold::Backoff));
        assert_eq!(guard.source_may_try(ip(2)), Ok(()));
        // The account is paced: one check now, the next a second later, no more queued.
        let started = Instant::now();
        assert_eq!(guard.account_turn("drv-1").await, Ok(()));
        assert_eq!(guard.account_turn("drv-1").await, Ok(()));
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert_eq!(
            guard.account_turn("drv-2").await,
            Ok(()),
            "other accounts are not"
        );
        assert_eq!(guard.tracked(), (1, 1));
    }
}
