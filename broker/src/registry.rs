//! Client-id ownership: one live connection per client id.
//!
//! Left to rumqttd, a second connection with the same id silently drops the first link,
//! and the first connection's will is lost. The registry gives MQTT's (and mosquitto's)
//! behaviour instead: the newcomer asks the old connection to finish (it publishes its
//! will and releases its link), waits until it has, and only then builds its own link.

use crate::kick::{Epoch, Kick};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;

/// Who owns which client id.
#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<Inner>,
    /// Moved by every kick of a claim: a session reads its own kick only when it moved
    /// (`kick.rs`).
    epoch: Arc<Epoch>,
    /// The last connect stamp given or seen (µs since the Unix epoch), so that stamps
    /// only grow: see [`Registry::stamp`].
    clock: AtomicU64,
}

#[derive(Debug, Default)]
struct Inner {
    next_generation: u64,
    owners: HashMap<String, Owner>,
    /// Set by [`Registry::kick_all`] (the server shutting down): every later claim is
    /// kicked as it is made.
    closed: bool,
}

#[derive(Debug)]
struct Owner {
    generation: u64,
    /// Its connect stamp ([`Registry::stamp`]): a connect elsewhere in the cluster
    /// closes it only if newer.
    since_us: u64,
    /// Kicked to ask the owner to finish.
    kick: Kick,
    /// Resolves (with an error) when the owner's [`Claim`] is dropped.
    released: Option<oneshot::Receiver<()>>,
}

/// Ownership of a client id; dropping it releases the id.
#[derive(Debug)]
pub struct Claim {
    registry: Arc<Registry>,
    client_id: String,
    generation: u64,
    since_us: u64,
    kick: Kick,
    _released: oneshot::Sender<()>,
}

impl Claim {
    /// The connect stamp of this ownership, as announced to the cluster.
    pub fn since_us(&self) -> u64 {
        self.since_us
    }

    /// Kicked when a newer connection takes this client id over, or the server shuts
    /// down ([`Registry::kick_all`]; tell them apart by the shutdown token).
    pub fn kicked(&self) -> &Kick {
        &self.kick
    }
}

impl Registry {
    /// An empty registry. Its claims are kicked at shutdown by [`kick_all`]
    /// (`Gateway::stop`).
    ///
    /// [`kick_all`]: Registry::kick_all
    pub fn new() -> Registry {
        Registry {
            inner: Mutex::default(),
            epoch: Arc::default(),
            clock: AtomicU64::new(0),
        }
    }

    /// Kicks every owner, and every claim made from now on as it is made (a connection
    /// accepted just before the shutdown then ends at once).
    pub fn kick_all(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.closed = true;
        for owner in inner.owners.values() {
            owner.kick.kick();
        }
    }

    /// A kick for a new claim: kicked already once the registry is closed.
    fn new_kick(&self, inner: &Inner) -> Kick {
        let kick = Kick::with_epoch(&self.epoch);
        if inner.closed {
            kick.kick();
        }
        kick
    }

    /// A connect stamp: microseconds since the Unix epoch, but always above every stamp
    /// given or [observed](Registry::observe) before. Two connects of one client id a
    /// moment apart on two nodes then never look the wrong way round, even within one
    /// millisecond, and a connect made after this node heard of another is newer than it
    /// whatever the two clocks say (a hybrid logical clock).
    fn stamp(&self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        let previous = self
            .clock
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                Some(now.max(last.saturating_add(1)))
            })
            .unwrap_or_else(|last| last);
        now.max(previous.saturating_add(1))
    }

    /// Moves the clock past a stamp another node gave.
    pub fn observe(&self, stamp_us: u64) {
        self.clock.fetch_max(stamp_us, Ordering::AcqRel);
    }

    /// Takes ownership of `client_id`, first asking a current owner to finish and waiting
    /// up to `wait` for it. Returns whether an older connection was taken over.
    pub async fn claim(self: &Arc<Self>, client_id: &str, wait: Duration) -> (Claim, bool) {
        let (tx, rx) = oneshot::channel();
        let since_us = self.stamp();
        let (generation, previous, kick) = {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let kick = self.new_kick(&inner);
            inner.next_generation += 1;
            let generation = inner.next_generation;
            let previous = inner.owners.insert(
                client_id.to_owned(),
                Owner {
                    generation,
                    since_us,
                    kick: kick.clone(),
                    released: Some(rx),
                },
            );
            (generation, previous, kick)
        };
        let took_over = previous.is_some();
        if let Some(mut old) = previous {
            old.kick.kick();
            if let Some(released) = old.released.take() {
                // An owner that does not finish in time is abandoned; the router then
                // replaces its link itself.
                let _ = tokio::time::timeout(wait, released).await;
            }
        }
        let claim = Claim {
            registry: Arc::clone(self),
            client_id: client_id.to_owned(),
            generation,
            since_us,
            kick,
            _released: tx,
        };
        (claim, took_over)
    }

    /// Takes ownership of `client_id` only if nobody holds it (for work on a session that
    /// must not disturb a live connection, such as expiring it).
    pub fn try_claim(self: &Arc<Self>, client_id: &str) -> Option<Claim> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.owners.contains_key(client_id) {
            return None;
        }
        inner.next_generation += 1;
        let generation = inner.next_generation;
        let (tx, rx) = oneshot::channel();
        let kick = self.new_kick(&inner);
        let since_us = self.stamp();
        let owner = Owner {
            generation,
            since_us,
            kick: kick.clone(),
            released: Some(rx),
        };
        inner.owners.insert(client_id.to_owned(), owner);
        Some(Claim {
            registry: Arc::clone(self),
            client_id: client_id.to_owned(),
            generation,
            since_us,
            kick,
            _released: tx,
        })
    }

    /// Asks the owner of `client_id` to finish if its stamp is older than `than_us`, a
    /// connect on another node of the cluster; on a tie, if `wins_tie` (the two nodes
    /// decide the same way, so exactly one connection stays). Returns whether it did.
    pub fn kick_older(&self, client_id: &str, than_us: u64, wins_tie: bool) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match inner.owners.get(client_id) {
            Some(owner)
                if (owner.since_us < than_us || (owner.since_us == than_us && wins_tie))
                    && !owner.kick.is_kicked() =>
            {
                owner.kick.kick();
                true
            }
            _ => false,
        }
    }

    /// Client ids owned now.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .owners
            .len()
    }

    /// Whether no client id is owned.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut inner = self
            .registry
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // A newer owner may already hold the id: leave its entry alone.
        if inner
            .owners
            .get(&self.client_id)
            .is_some_and(|o| o.generation == self.generation)
        {
            inner.owners.remove(&self.client_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn newcomer_kicks_and_waits_for_the_owner() {
        let reg = Arc::new(Registry::new());
        let (first, took) = reg.claim("drv-1", Duration::from_secs(5)).await;
        assert!(!took);
        let kicked = first.kicked().clone();
        let reg2 = Arc::clone(&reg);
        let newcomer =
            tokio::spawn(async move { reg2.claim("drv-1", Duration::from_secs(5)).await });
        kicked.kicked().await;
        // The newcomer has not finished while the first claim is held.
        tokio::task::yield_now().await;
        assert!(!newcomer.is_finished());
        drop(first);
        let (second, took) = newcomer.await.expect("join");
        assert!(took);
        assert_eq!(reg.len(), 1);
        drop(second);
        assert!(reg.is_empty());
    }

    #[tokio::test]
    async fn a_try_claim_never_kicks() {
        let reg = Arc::new(Registry::new());
        let (live, _) = reg.claim("a", Duration::from_millis(1)).await;
        assert!(reg.try_claim("a").is_none());
        assert!(!live.kicked().is_kicked());
        drop(live);
        let quiet = reg.try_claim("a").expect("free");
        assert!(reg.try_claim("a").is_none());
        drop(quiet);
        assert!(reg.is_empty());
    }

    #[tokio::test]
    async fn a_newer_connect_elsewhere_kicks_an_older_owner_only() {
        let reg = Arc::new(Registry::new());
        let (owner, _) = reg.claim("a", Duration::from_millis(1)).await;
        let since = owner.since_us();
        assert!(
            !reg.kick_older("a", since - 1, true),
            "an older connect elsewhere"
        );
        assert!(!reg.kick_older("a", since, false), "a tie this node wins");
        assert!(!owner.kicked().is_kicked());
        assert!(!reg.kick_older("b", since + 1, false), "nobody holds b");
        assert!(
            reg.kick_older("a", since, true),
            "a tie the other node wins"
        );
        assert!(owner.kicked().is_kicked());
    }

    #[tokio::test]
    async fn stamps_only_grow_and_pass_what_was_observed() {
        let reg = Arc::new(Registry::new());
        let (a, _) = reg.claim("a", Duration::from_millis(1)).await;
        let (b, _) = reg.claim("b", Duration::from_millis(1)).await;
        // Within one microsecond or not, the second connect is the newer.
        assert!(b.since_us() > a.since_us());
        // A peer whose clock runs an hour ahead announced a connect: a connect here
        // afterwards is still the newer one.
        let ahead = b.since_us() + 3_600_000_000;
        reg.observe(ahead);
        let c = reg.try_claim("c").expect("free");
        assert!(c.since_us() > ahead);
    }

    /// At shutdown every owner is kicked, and so is a claim made afterwards; a try-claim
    /// too (whatever holds it ends as promptly).
    #[tokio::test]
    async fn a_shutdown_kicks_every_owner_now_and_later() {
        let reg = Arc::new(Registry::new());
        let (a, _) = reg.claim("a", Duration::from_millis(1)).await;
        let b = reg.try_claim("b").expect("free");
        assert!(!a.kicked().is_kicked() && !b.kicked().is_kicked());
        let waiting = {
            let kick = a.kicked().clone();
            tokio::spawn(async move { kick.kicked().await })
        };
        reg.kick_all();
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the waiting owner is woken")
            .expect("join");
        assert!(b.kicked().is_kicked());
        let (late, _) = reg.claim("c", Duration::from_millis(1)).await;
        assert!(late.kicked().is_kicked(), "a claim after the shutdown");
        assert!(reg.try_claim("d").expect("free").kicked().is_kicked());
    }

    #[tokio::test]
    async fn stale_release_keeps_the_new_owner() {
        let reg = Arc::new(Registry::new());
        let (first, _) = reg.claim("a", Duration::from_millis(1)).await;
        // Times out waiting (first is still held), then owns the id.
        let (second, took) = reg.claim("a", Duration::from_millis(1)).await;
        assert!(took);
        drop(first);
        assert_eq!(reg.len(), 1, "the old claim must not remove the new owner");
        drop(second);
        assert!(reg.is_empty());
    }
}
