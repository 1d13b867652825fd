//! The tracks' table: each track in a slot its holder may remember, and an index by driver
//! id for everyone else.
//!
//! The board keeps each driver's [`Slot`] beside its entry, so recording a fix goes straight
//! to the track instead of looking the id up a second time. On a 10,000-driver fleet that
//! second lookup (a hash, a probe and a key compare, each a cache miss more often than not)
//! was a fifth of the map's time. A sweep frees slots and a new driver may take one, so
//! every track carries a serial of its own: a remembered slot whose serial is not its
//! track's is stale, and the id is looked up again.

use super::{Abs, Track};
use std::collections::HashMap;

/// Where a driver's track is held, as [`find`](Slots::find) last saw it. Only ever used
/// with the id it was found or made for: it is checked against its track's serial (a slot
/// reused by another driver), not against the id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub(super) at: u32,
    serial: u64,
}

/// Tracks by slot, and each driver's slot.
#[derive(Debug, Default)]
pub(super) struct Slots {
    /// A forgotten driver's slot is empty until a new driver takes it.
    slots: Vec<Option<Track>>,
    /// Empty slots.
    free: Vec<u32>,
    index: HashMap<String, u32>,
    /// The serial the last track got.
    serial: u64,
}

impl Slots {
    /// Drivers with a track.
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    /// Driver `id`'s track.
    pub(super) fn get(&self, id: &str) -> Option<&Track> {
        let at = *self.index.get(id)?;
        self.slots.get(at as usize)?.as_ref()
    }

    /// The track in slot `at`.
    pub(super) fn at_mut(&mut self, at: u32) -> Option<&mut Track> {
        self.slots.get_mut(at as usize)?.as_mut()
    }

    /// The slot of driver `id`'s track: `cached` while it still holds that track, else
    /// looked up (and `cached` updated). None when the driver has no track.
    pub(super) fn find(&self, id: &str, cached: &mut Option<Slot>) -> Option<u32> {
        if let Some(s) = *cached {
            let held = self.slots.get(s.at as usize).and_then(Option::as_ref);
            if held.is_some_and(|t| t.serial == s.serial) {
                debug_assert_eq!(self.index.get(id), Some(&s.at), "a slot of another id");
                return Some(s.at);
            }
        }
        let at = *self.index.get(id)?;
        let track = self.slots.get(at as usize)?.as_ref()?;
        *cached = Some(Slot {
            at,
            serial: track.serial,
        });
        Some(at)
    }

    /// Gives driver `id` (which has none) a track starting at `first`; None when there are
    /// more slots than a `u32` counts.
    pub(super) fn insert(&mut self, id: &str, topic: &str, first: Abs) -> Option<Slot> {
        let at = match self.free.pop() {
            Some(at) => at,
            None => {
                let at = u32::try_from(self.slots.len()).ok()?;
                self.slots.push(None);
                at
            }
        };
        self.serial += 1;
        self.slots[at as usize] = Some(Track::new(self.serial, topic, first));
        self.index.insert(id.to_owned(), at);
        Some(Slot {
            at,
            serial: self.serial,
        })
    }

    /// Driver ids with a track, in no order.
    pub(super) fn ids(&self) -> impl Iterator<Item = &String> {
        self.index.keys()
    }

    /// Every track, in no order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Track> {
        self.slots.iter().flatten()
    }

    /// Keeps the tracks `keep` says to; the others' slots are freed.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&Track) -> bool) {
        let Slots {
            slots, free, index, ..
        } = self;
        index.retain(|_, &mut at| {
            let Some(slot) = slots.get_mut(at as usize) else {
                return false;
            };
            if slot.as_ref().is_some_and(&mut keep) {
                return true;
            }
            if slot.take().is_some() {
                free.push(at);
            }
            false
        });
    }

    /// Bytes of the table itself at its capacity: slots (tracks' own records), free list,
    /// index entries and ids.
    pub(super) fn table_bytes(&self) -> usize {
        let per_entry = std::mem::size_of::<(String, u32)>() + 1;
        self.index.capacity() * per_entry
            + self.slots.capacity() * std::mem::size_of::<Option<Track>>()
            + self.free.capacity() * std::mem::size_of::<u32>()
            + self.index.keys().map(String::capacity).sum::<usize>()
    }
}
