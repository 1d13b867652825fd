//! Geofences as the map shows them: each fence's shape and count, and the latest entries
//! and exits, from the broker's `geofences/{name}/shape|count|events` topics.
//!
//! The broker publishes a fence's shape and count retained, so the map has them as soon as
//! its feed subscribes; events are kept in a short ring. Every change bumps a version, so
//! each browser is sent the whole (small) set only when it changed since it last looked,
//! and only the fences its token lets it see.

use crate::board::Visibility;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::sync::RwLock;

/// Fences kept at most: a flood of made-up names cannot grow the map's memory.
pub const MAX_FENCES: usize = 2_000;
/// Latest events kept.
pub const MAX_EVENTS: usize = 20;

/// One fence as the page draws it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FenceView {
    /// Its name.
    pub name: String,
    /// GeoJSON geometry.
    pub geometry: Value,
    /// Drivers inside.
    pub count: u64,
}

#[derive(Debug, Default)]
struct Inner {
    fences: BTreeMap<String, FenceView>,
    events: VecDeque<Value>,
    version: u64,
}

/// The fences the feed has told about.
#[derive(Debug, Default)]
pub struct Fences {
    inner: RwLock<Inner>,
}

impl Fences {
    /// Takes a `geofences/...` message; false when it is not one the map uses.
    pub fn ingest(&self, topic: &str, body: &[u8]) -> bool {
        let mut parts = topic.split('/');
        let (Some("geofences"), Some(name), Some(kind), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let value: Option<Value> = serde_json::from_slice(body).ok();
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let changed = match (kind, value) {
            // An empty retained message: the fence is gone.
            ("shape", None) if body.is_empty() => inner.fences.remove(name).is_some(),
            ("shape", Some(feature)) => {
                let known = inner.fences.contains_key(name);
                if !known && inner.fences.len() >= MAX_FENCES {
                    return false;
                }
                let geometry = feature.get("geometry").cloned().unwrap_or(Value::Null);
                let count = inner.fences.get(name).map_or(0, |f| f.count);
                let view = FenceView {
                    name: name.to_owned(),
                    geometry,
                    count,
                };
                inner.fences.insert(name.to_owned(), view);
                true
            }
            ("count", Some(v)) => match (inner.fences.get_mut(name), v["count"].as_u64()) {
                (Some(f), Some(n)) => {
                    f.count = n;
                    true
                }
                _ => false,
            },
            ("events", Some(v)) => {
                if inner.events.len() >= MAX_EVENTS {
                    inner.events.pop_front();
                }
                inner.events.push_back(v);
                true
            }
            _ => false,
        };
        if changed {
            inner.version += 1;
        }
        changed
    }

    /// What changed since `seen` (a version), as `allowed` may see it; `seen` moves on.
    pub fn since(
        &self,
        seen: &mut u64,
        allowed: Option<&Visibility>,
    ) -> Option<(Vec<FenceView>, Vec<Value>)> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        if inner.version == *seen {
            return None;
        }
        *seen = inner.version;
        let visible =
            |name: &str| allowed.is_none_or(|a| a.may_see(&format!("geofences/{name}/count")));
        let fences = inner
            .fences
            .values()
            .filter(|f| visible(&f.name))
            .cloned()
            .collect();
        let events = inner
            .events
            .iter()
            .filter(|e| visible(e["fence"].as_str().unwrap_or_default()))
            .cloned()
            .collect();
        Some((fences, events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: &str = r#"{"type":"Feature","properties":{"name":"a"},"geometry":{"type":"MultiPolygon","coordinates":[]}}"#;

    #[test]
    fn shapes_counts_and_events_come_together_once_per_change() {
        let f = Fences::default();
        assert!(f.ingest("geofences/a/shape", SHAPE.as_bytes()));
        assert!(f.ingest("geofences/a/count", br#"{"fence":"a","count":3}"#));
        assert!(f.ingest(
            "geofences/a/events",
            br#"{"fence":"a","id":"d","event":"enter"}"#
        ));
        assert!(
            !f.ingest("geofences/b/count", br#"{"count":1}"#),
            "no shape yet"
        );
        assert!(!f.ingest("drivers/x/location", b"{}"));
        let mut seen = 0;
        let (fences, events) = f.since(&mut seen, None).expect("changed");
        assert_eq!((fences.len(), fences[0].count, events.len()), (1, 3, 1));
        assert!(f.since(&mut seen, None).is_none(), "nothing new");
        assert!(f.ingest("geofences/a/shape", b""));
        let (fences, _) = f.since(&mut seen, None).expect("removed");
        assert!(fences.is_empty());
    }

    #[test]
    fn a_viewer_sees_the_fences_its_token_allows() {
        let f = Fences::default();
        f.ingest("geofences/a/shape", SHAPE.as_bytes());
        let rider = Visibility {
            filters: vec!["drivers/+/location".to_owned()].into(),
            account: "rider-1".into(),
            expires_at: None,
            ends: None,
        };
        let (fences, _) = f.since(&mut 0, Some(&rider)).expect("a version");
        assert!(fences.is_empty());
    }
}
