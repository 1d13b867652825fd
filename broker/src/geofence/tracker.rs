//! Which drivers are in which fence: the membership rule, pure.
//!
//! GPS wanders by metres, so a driver waiting at a fence's edge would be "in" and "out"
//! every other fix. The rule: a driver enters after `enter_fixes` fixes in a row inside the
//! fence, and exits after `exit_fixes` fixes in a row more than `exit_margin_m` metres
//! outside it. Noise smaller than the margin at the edge therefore yields no event at all.
//!
//! Each fix costs one R-tree query over the fences' bounding boxes (`rstar`), a
//! point-in-polygon test (`geo`) per box that holds it, and a distance only for a driver
//! already inside or about to enter. Drivers outside every fence cost no memory.

use geo::{
    BoundingRect, Closest, ClosestPoint, Contains, Distance, Haversine, MultiPolygon, Point,
};
use rstar::primitives::{GeomWithData, Rectangle};
use rstar::{RTree, AABB};
use std::collections::HashMap;

/// A named area.
#[derive(Debug, Clone, PartialEq)]
pub struct Fence {
    /// Its name: the `{name}` of its topics.
    pub name: String,
    /// Its area, lon/lat.
    pub area: MultiPolygon<f64>,
}

/// The membership rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    /// Fixes in a row inside a fence before a driver enters it.
    pub enter_fixes: u8,
    /// Fixes in a row beyond the margin before a driver exits.
    pub exit_fixes: u8,
    /// How far outside (metres) a fix must be to count towards an exit.
    pub exit_margin_m: f64,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            enter_fixes: 2,
            exit_fixes: 2,
            exit_margin_m: 25.0,
        }
    }
}

/// An entry into or an exit out of a fence.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The fence's name.
    pub fence: String,
    /// The driver.
    pub id: String,
    /// True for an entry.
    pub enter: bool,
    /// When the fix that decided it was taken (ms since the epoch).
    pub ts: u64,
    /// Where that fix was: latitude.
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
}

/// A fix of a driver.
#[derive(Debug, Clone, Copy)]
pub struct Fix<'a> {
    /// The driver.
    pub id: &'a str,
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// When it was taken (ms since the epoch).
    pub ts: u64,
}

/// One driver's standing with one fence.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Member {
    fence: usize,
    inside: bool,
    /// Fixes in a row that say otherwise.
    streak: u8,
}

/// Fences, their index and who is in them.
#[derive(Debug, Default)]
pub struct Tracker {
    rules: Rules,
    /// By slot; a removed fence leaves None so slots stay stable.
    fences: Vec<Option<Fence>>,
    by_name: HashMap<String, usize>,
    index: RTree<GeomWithData<Rectangle<[f64; 2]>, usize>>,
    /// Drivers inside a fence or on their way in, by id.
    drivers: HashMap<String, Vec<Member>>,
    /// Drivers inside each fence, by slot.
    counts: Vec<usize>,
}

impl Tracker {
    /// No fences yet, under `rules`.
    pub fn new(rules: Rules) -> Tracker {
        Tracker {
            rules,
            ..Tracker::default()
        }
    }

    /// Adds `fence`, or replaces the one of that name (whose members start over).
    pub fn set(&mut self, fence: Fence) {
        if let Some(slot) = self.by_name.get(&fence.name).copied() {
            self.forget(slot);
            self.fences[slot] = Some(fence);
        } else {
            self.by_name.insert(fence.name.clone(), self.fences.len());
            self.fences.push(Some(fence));
            self.counts.push(0);
        }
        self.reindex();
    }

    /// Removes the fence named `name`; false if there is none.
    pub fn remove(&mut self, name: &str) -> bool {
        let Some(slot) = self.by_name.remove(name) else {
            return false;
        };
        self.forget(slot);
        self.fences[slot] = None;
        self.reindex();
        true
    }

    /// The fences, with the drivers inside each.
    pub fn fences(&self) -> impl Iterator<Item = (&Fence, usize)> {
        self.fences
            .iter()
            .zip(&self.counts)
            .filter_map(|(f, c)| f.as_ref().map(|f| (f, *c)))
    }

    /// Drivers inside the fence named `name`.
    pub fn count(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).map(|&s| self.counts[s])
    }

    /// Takes a fix; returns the entries and exits it decided.
    pub fn fix(&mut self, fix: Fix<'_>) -> Vec<Event> {
        let p = Point::new(fix.lon, fix.lat);
        let inside: Vec<usize> = self
            .index
            .locate_all_at_point(&[fix.lon, fix.lat])
            .map(|g| g.data)
            .filter(|&s| self.fences[s].as_ref().is_some_and(|f| f.area.contains(&p)))
            .collect();
        if inside.is_empty() && !self.drivers.contains_key(fix.id) {
            return Vec::new();
        }
        let mut members = self.drivers.remove(fix.id).unwrap_or_default();
        let mut events = Vec::new();
        for m in &mut members {
            let now_in = inside.contains(&m.fence);
            let against = if m.inside {
                !now_in && self.beyond_margin(m.fence, p)
            } else {
                now_in
            };
            if !against {
                m.streak = 0;
                continue;
            }
            m.streak = m.streak.saturating_add(1);
            let needed = if m.inside {
                self.rules.exit_fixes
            } else {
                self.rules.enter_fixes
            };
            if m.streak >= needed.max(1) {
                m.inside = !m.inside;
                m.streak = 0;
                events.push(self.event(m.fence, m.inside, fix));
            }
        }
        for &slot in &inside {
            if members.iter().any(|m| m.fence == slot) {
                continue;
            }
            let mut m = Member {
                fence: slot,
                inside: false,
                streak: 1,
            };
            if self.rules.enter_fixes <= 1 {
                m = Member {
                    inside: true,
                    streak: 0,
                    ..m
                };
                events.push(self.event(slot, true, fix));
            }
            members.push(m);
        }
        members.retain(|m| m.inside || m.streak > 0);
        if !members.is_empty() {
            self.drivers.insert(fix.id.to_owned(), members);
        }
        events
    }

    /// Counts the event and describes it.
    fn event(&mut self, slot: usize, enter: bool, fix: Fix<'_>) -> Event {
        let count = &mut self.counts[slot];
        *count = if enter {
            *count + 1
        } else {
            count.saturating_sub(1)
        };
        let fence = self.fences[slot]
            .as_ref()
            .map(|f| f.name.clone())
            .unwrap_or_default();
        Event {
            fence,
            id: fix.id.to_owned(),
            enter,
            ts: fix.ts,
            lat: fix.lat,
            lon: fix.lon,
        }
    }

    /// Whether `p` is more than the exit margin outside the fence in `slot`.
    fn beyond_margin(&self, slot: usize, p: Point<f64>) -> bool {
        let Some(f) = &self.fences[slot] else {
            return true;
        };
        match f.area.closest_point(&p) {
            Closest::SinglePoint(q) => Haversine.distance(p, q) > self.rules.exit_margin_m,
            // Inside, or on the edge.
            Closest::Intersection(_) => false,
            Closest::Indeterminate => true,
        }
    }

    /// Drops every standing with the fence in `slot`.
    fn forget(&mut self, slot: usize) {
        self.counts[slot] = 0;
        self.drivers.retain(|_, ms| {
            ms.retain(|m| m.fence != slot);
            !ms.is_empty()
        });
    }

    fn reindex(&mut self) {
        let boxes = self
            .fences
            .iter()
            .enumerate()
            .filter_map(|(slot, f)| {
                let r = f.as_ref()?.area.bounding_rect()?;
                let aabb = AABB::from_corners([r.min().x, r.min().y], [r.max().x, r.max().y]);
                Some(GeomWithData::new(Rectangle::from_aabb(aabb), slot))
            })
            .collect();
        self.index = RTree::bulk_load(boxes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geo::{polygon, MultiPolygon};

    /// A square of about 1.1 km a side south-west of (60.17, 24.94).
    fn square(name: &str) -> Fence {
        let p = polygon![
            (x: 24.93, y: 60.16), (x: 24.95, y: 60.16), (x: 24.95, y: 60.17),
            (x: 24.93, y: 60.17), (x: 24.93, y: 60.16),
        ];
        Fence {
            name: name.into(),
            area: MultiPolygon(vec![p]),
        }
    }

    fn at(t: &mut Tracker, lat: f64, lon: f64, ts: u64) -> Vec<(bool, String)> {
        let fix = Fix {
            id: "drv-1",
            lat,
            lon,
            ts,
        };
        t.fix(fix).into_iter().map(|e| (e.enter, e.fence)).collect()
    }

    #[test]
    fn noise_at_the_edge_makes_one_entry_and_one_exit() {
        let mut t = Tracker::new(Rules::default());
        t.set(square("airport"));
        // The east edge is lon 24.95; at 60.165, 0.0001 degree of longitude is ~5.6 m.
        let mut events = Vec::new();
        let wobble = [-0.0003, 0.0001, -0.0001, 0.0002, -0.0002, 0.0001];
        // Approach from the east, wobbling across the edge (within ~17 m of it)...
        for (i, d) in wobble.iter().enumerate() {
            events.extend(at(&mut t, 60.165, 24.95 + d, i as u64));
        }
        // ...well inside for a while...
        for i in 0..5 {
            events.extend(at(&mut t, 60.165, 24.94, 10 + i));
        }
        // ...back at the edge, wobbling, then away.
        for (i, d) in wobble.iter().enumerate() {
            events.extend(at(&mut t, 60.165, 24.95 + d, 20 + i as u64));
        }
        for i in 0..3 {
            events.extend(at(&mut t, 60.165, 24.952, 30 + i));
        }
        assert_eq!(
            events,
            [(true, "airport".to_owned()), (false, "airport".to_owned())],
            "one entry, one exit"
        );
        assert_eq!(t.count("airport"), Some(0));
    }

    #[test]
    fn counts_follow_entries_and_a_replaced_fence_starts_over() {
        let mut t = Tracker::new(Rules {
            enter_fixes: 1,
            ..Rules::default()
        });
        t.set(square("a"));
        t.set(Fence {
            name: "b".into(),
            ..square("b")
        });
        assert_eq!(at(&mut t, 60.165, 24.94, 1).len(), 2, "inside both at once");
        assert_eq!((t.count("a"), t.count("b")), (Some(1), Some(1)));
        t.set(square("a"));
        assert_eq!(t.count("a"), Some(0));
        assert!(t.remove("b"));
        assert!(!t.remove("b"));
        assert_eq!(t.fences().count(), 1);
        // Outside everything: nothing kept for the driver.
        at(&mut t, 10.0, 10.0, 2);
        at(&mut t, 10.0, 10.0, 3);
        assert!(t.drivers.is_empty());
    }
}
