//! fleetcast: links the router looks into on its own, without being notified.
//!
//! fleetcast carries the publishes of every device that only publishes through a few shared
//! links (its "lanes"). Under load, a notification per push would wake the router for every
//! message, so the pushes only fill the links' buffers, and the router takes what they hold
//! itself: every `every` while [`Polled::is_on`], and, on or off, whenever it runs out of
//! work before it blocks (which takes what a push left when the router's channel had no
//! room for its notification). It turns itself off after `quiet_after` looks in a row that
//! found nothing; the pushes turn it on.
//!
//! The router answers nothing on these links: whoever pushes a QoS 1 publish into one acks
//! it to its client itself (fleetcast's gateway, once the publish is in the link's buffer),
//! so the router appends it without a PUBACK that nobody would read. QoS 2 needs the
//! router's PUBREC and PUBREL: it never goes through these links.

use crate::ConnectionId;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The links the router looks into, shared by the router and whoever pushes into them.
#[derive(Debug, Clone)]
pub struct Polled {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Set once, when the links are built (their ids come from the router).
    links: OnceLock<Vec<ConnectionId>>,
    on: AtomicBool,
    /// How often the router looks while on; None: it is never on.
    every: Option<Duration>,
    /// Looks in a row that found nothing before the router turns itself off.
    quiet_after: u32,
}

impl Polled {
    /// Links to be named with [`Polled::set_links`]; looked into every `every` while on
    /// (never on when None), off after `quiet_after` empty looks in a row.
    pub fn new(every: Option<Duration>, quiet_after: u32) -> Polled {
        Polled {
            inner: Arc::new(Inner {
                links: OnceLock::new(),
                on: AtomicBool::new(false),
                every,
                quiet_after: quiet_after.max(1),
            }),
        }
    }

    /// Names the links (once; later calls are ignored).
    pub fn set_links(&self, links: Vec<ConnectionId>) {
        let _ = self.inner.links.set(links);
    }

    /// The router looks every `every` from now on, until it finds nothing for a while.
    /// Call it before notifying the router, so that the router sees it on when it wakes.
    pub fn turn_on(&self) {
        if self.inner.every.is_some() {
            self.inner.on.store(true, Ordering::SeqCst);
        }
    }

    /// Whether the router looks on its own now (a push may leave its data unannounced).
    pub fn is_on(&self) -> bool {
        self.inner.on.load(Ordering::SeqCst)
    }

    pub(crate) fn turn_off(&self) {
        self.inner.on.store(false, Ordering::SeqCst);
    }

    pub(crate) fn links(&self) -> &[ConnectionId] {
        self.inner.links.get().map_or(&[], Vec::as_slice)
    }

    /// How often the router looks, when on.
    pub(crate) fn every(&self) -> Option<Duration> {
        self.inner.every.filter(|_| self.is_on())
    }

    pub(crate) fn quiet_after(&self) -> u32 {
        self.inner.quiet_after
    }
}
