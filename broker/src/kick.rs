//! A kick: a one-shot signal that asks one task to stop (a session whose client id was
//! taken over, or every session when the server shuts down; `registry.rs`).
//!
//! A `CancellationToken` did this before. A session polls its stop signal at every
//! wake-up, and a token's `is_cancelled` takes the token's mutex, on a line that only
//! this session touches and so is mostly out of cache: 4% of the I/O thread's samples
//! with 10,000 drivers at 1 Hz. A plain flag in its own allocation still cost as much
//! (the stall is the miss, not the lock). So kicks that share an [`Epoch`] (a registry's)
//! also bump it, and a waiting task reads its own flag only when the epoch moved since it
//! last looked: at every other wake-up it reads the epoch, a line every session reads and
//! only a kick writes, so it stays in cache. Kicks are rare (a takeover, a shutdown).
//!
//! A kick is also smaller than a child token: 48 bytes where a child token is about 150
//! and a slot in its parent's list, taken under the parent's lock at every connect.

use futures_util::task::AtomicWaker;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

/// Clones share one signal. Any number may [`kick`](Kick::kick) or ask
/// [`is_kicked`](Kick::is_kicked); one task at a time waits on it ([`Kick::kicked`]):
/// when a second task waits, the first is no longer woken.
#[derive(Debug, Clone, Default)]
pub struct Kick {
    inner: Arc<Inner>,
    epoch: Arc<Epoch>,
}

/// Counts the kicks of every [`Kick`] made with it. Aligned to its own cache lines, apart
/// from the `Arc`'s counts (written at every connect and disconnect).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Epoch(AtomicU64);

#[derive(Debug, Default)]
struct Inner {
    kicked: AtomicBool,
    waker: AtomicWaker,
}

impl Kick {
    /// A kick not kicked yet, with an epoch of its own.
    pub fn new() -> Kick {
        Kick::default()
    }

    /// A kick not kicked yet that bumps `epoch` when kicked.
    pub fn with_epoch(epoch: &Arc<Epoch>) -> Kick {
        Kick {
            inner: Arc::default(),
            epoch: Arc::clone(epoch),
        }
    }

    /// Sets the signal and wakes the waiting task; later calls do nothing.
    pub fn kick(&self) {
        // The flag, then the epoch, then the wake-up: a task that sees the epoch moved
        // sees the flag set, and one that did not is woken after the move.
        if !self.inner.kicked.swap(true, Ordering::AcqRel) {
            self.epoch.0.fetch_add(1, Ordering::AcqRel);
            self.inner.waker.wake();
        }
    }

    /// Whether it was kicked.
    pub fn is_kicked(&self) -> bool {
        self.inner.kicked.load(Ordering::Acquire)
    }

    /// Resolves once it is kicked (at once if it was).
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future takes nothing from the signal.
    pub fn kicked(&self) -> Kicked<'_> {
        Kicked {
            kick: self,
            epoch: &self.epoch.0,
            seen: 0,
            registered: None,
        }
    }
}

/// The future of [`Kick::kicked`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Kicked<'a> {
    kick: &'a Kick,
    /// The epoch, reached without going through `kick` (two more lines to load).
    epoch: &'a AtomicU64,
    /// The epoch when the flag was last read.
    seen: u64,
    /// The waker last handed to the kick's `AtomicWaker`: while the task's waker wakes
    /// the same task, it is not handed over again (a locked exchange at every poll).
    registered: Option<Waker>,
}

impl Future for Kicked<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let epoch = this.epoch.load(Ordering::Acquire);
        let same_task = this
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()));
        // No kick of this epoch since the flag was read, and this task's waker is the
        // one registered then (a kick takes it only after moving the epoch): nothing to
        // read. Checked first: nearly every poll ends here.
        if same_task && epoch == this.seen {
            return Poll::Pending;
        }
        this.seen = epoch;
        if this.kick.is_kicked() {
            return Poll::Ready(());
        }
        if !same_task {
            this.kick.inner.waker.register(cx.waker());
            this.registered = Some(cx.waker().clone());
            // A kick between the first look and the registration woke nobody.
            if this.kick.is_kicked() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;
    use std::time::Duration;

    /// Counts its wake-ups.
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_waiting_task_is_woken_once_and_then_ready() {
        let kick = Kick::new();
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        let mut cx = Context::from_waker(&waker);
        let mut fut = kick.kicked();
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        // Polled again by the same task: still waiting, nothing woken.
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        assert_eq!(counter.0.load(Ordering::SeqCst), 0);
        kick.clone().kick();
        kick.kick();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1, "woken once");
        assert!(kick.is_kicked());
        assert!(Pin::new(&mut fut).poll(&mut cx).is_ready());
        // A future made after the kick is ready at once.
        assert!(Pin::new(&mut kick.kicked()).poll(&mut cx).is_ready());
    }

    #[test]
    fn a_new_waker_is_registered_and_the_old_one_is_not_woken() {
        let kick = Kick::new();
        let (first, second) = (
            Arc::new(Counter(AtomicUsize::new(0))),
            Arc::new(Counter(AtomicUsize::new(0))),
        );
        let (w1, w2) = (
            Waker::from(Arc::clone(&first)),
            Waker::from(Arc::clone(&second)),
        );
        let mut fut = kick.kicked();
        assert!(Pin::new(&mut fut)
            .poll(&mut Context::from_waker(&w1))
            .is_pending());
        // The task moved (another waker): the kick must wake the new one.
        assert!(Pin::new(&mut fut)
            .poll(&mut Context::from_waker(&w2))
            .is_pending());
        kick.kick();
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
    }

    /// Kicks from another thread while a task waits, many times over: the task never
    /// misses one (a lost wake-up would hang until the timeout).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_kick_from_another_thread_is_never_lost() {
        for _ in 0..2_000 {
            let kick = Kick::new();
            let other = kick.clone();
            let kicker = std::thread::spawn(move || other.kick());
            tokio::time::timeout(Duration::from_secs(10), kick.kicked())
                .await
                .expect("the kick wakes the waiting task");
            kicker.join().expect("kicker");
        }
    }

    /// Kicks sharing an epoch: a kick of another moves the epoch, so the waiting task
    /// reads its own flag and goes on waiting; its own kick is seen.
    #[test]
    fn a_shared_epoch_moved_by_another_kick_keeps_the_task_waiting() {
        let epoch = Arc::new(Epoch::default());
        let (mine, other) = (Kick::with_epoch(&epoch), Kick::with_epoch(&epoch));
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        let mut cx = Context::from_waker(&waker);
        let mut fut = mine.kicked();
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        other.kick();
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        assert_eq!(counter.0.load(Ordering::SeqCst), 0, "another's kick");
        mine.kick();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        assert!(Pin::new(&mut fut).poll(&mut cx).is_ready());
        assert_eq!(epoch.0.load(Ordering::SeqCst), 2);
    }

    /// Many kicks sharing an epoch, each from another thread while its task waits and
    /// other kicks move the epoch: none is lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kicks_sharing_an_epoch_are_never_lost() {
        let epoch = Arc::new(Epoch::default());
        let noise = Kick::with_epoch(&epoch);
        for i in 0..2_000 {
            let kick = Kick::with_epoch(&epoch);
            let (other, bystander) = (kick.clone(), Kick::with_epoch(&epoch));
            let kicker = std::thread::spawn(move || {
                bystander.kick();
                other.kick();
            });
            if i == 1_000 {
                noise.kick();
            }
            tokio::time::timeout(Duration::from_secs(10), kick.kicked())
                .await
                .expect("the kick wakes the waiting task");
            kicker.join().expect("kicker");
        }
    }

    #[test]
    fn it_is_small() {
        // Two counts, the flag and an `AtomicWaker` (state and waker).
        assert!(std::mem::size_of::<Inner>() + 16 <= 48);
    }
}
