//! Geofences: named areas, and an event each time a driver enters or leaves one.
//!
//! A task reads every driver's location from the router (an in-process subscriber on
//! `drivers/+/location`), runs it through the [`Tracker`] (the membership rule and the
//! spatial index), and publishes what happened: each entry or exit on
//! `geofences/{name}/events` at QoS 1, the number of drivers inside as a retained
//! `geofences/{name}/count`. Fences come from a GeoJSON file at start (`serve --geofences`)
//! and from the HTTP API (`api.rs`). Subscribers are whoever the topic policy lets read
//! `geofences/...`.

pub mod api;
pub mod geojson;
pub mod tracker;

pub use tracker::{Event, Fence, Fix, Rules, Tracker};

use crate::durable::Durable;
use crate::ingest::Publisher;
use crate::local::LocalSubscriber;
use crate::router::RouterHandle;
use bytes::Bytes;
use fleetcast_proto::location::Location;
use fleetcast_proto::topic;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// A fence as the store kept it: its name, and its GeoJSON Feature (empty: deleted).
pub type KeptFence = (String, Vec<u8>);

/// The fences in force and who is in them, shared by the task and the API.
#[derive(Debug)]
pub struct Geofences {
    tracker: Mutex<Tracker>,
    publisher: Publisher,
    /// With `--data`: where changes made over the API are kept.
    store: Option<Arc<Durable>>,
}

impl Geofences {
    /// `fences` under `rules`; events go out through `publisher`. With a `store`, `kept`
    /// (what the API changed before a restart: name -> Feature, empty when deleted) is
    /// applied over `fences`, and later API changes are written to it.
    pub fn new(
        rules: Rules,
        fences: Vec<Fence>,
        publisher: Publisher,
        store: Option<(Arc<Durable>, Vec<KeptFence>)>,
    ) -> Arc<Geofences> {
        let mut tracker = Tracker::new(rules);
        for f in fences {
            tracker.set(f);
        }
        let store = store.map(|(durable, kept)| {
            for (name, feature) in kept {
                if feature.is_empty() {
                    tracker.remove(&name);
                    continue;
                }
                let parsed = serde_json::from_slice(&feature)
                    .map_err(|e| e.to_string())
                    .and_then(|v| geojson::feature(&v).map_err(|e| e.to_string()));
                match parsed {
                    Ok(fence) => tracker.set(fence),
                    Err(e) => {
                        warn!(fence = %name, error = %e, "a kept geofence is unreadable; skipped")
                    }
                }
            }
            durable
        });
        Arc::new(Geofences {
            tracker: Mutex::new(tracker),
            publisher,
            store,
        })
    }

    fn tracker(&self) -> std::sync::MutexGuard<'_, Tracker> {
        self.tracker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every fence as a GeoJSON Feature with its count.
    pub fn features(&self) -> Vec<serde_json::Value> {
        let t = self.tracker();
        t.fences().map(|(f, n)| geojson::to_feature(f, n)).collect()
    }

    /// Adds or replaces a fence; its count starts at 0.
    pub fn set(&self, fence: Fence) {
        let name = fence.name.clone();
        if let Some(store) = &self.store {
            store.geofence(&name, Some(&geojson::to_feature(&fence, 0).to_string()));
        }
        self.publish_shape(&fence);
        self.tracker().set(fence);
        self.publish_count(&name, 0);
    }

    /// The fence's GeoJSON, retained on `geofences/{name}/shape`, for maps.
    fn publish_shape(&self, fence: &Fence) {
        let topic = Bytes::from(format!("geofences/{}/shape", fence.name));
        let body = geojson::to_feature(fence, 0).to_string();
        self.publisher.send(topic, Bytes::from(body), true, true);
    }

    /// Removes a fence; false if there was none. Its retained count is cleared.
    pub fn remove(&self, name: &str) -> bool {
        let removed = self.tracker().remove(name);
        if removed {
            if let Some(store) = &self.store {
                store.geofence(name, None);
            }
            for kind in ["count", "shape"] {
                let topic = Bytes::from(format!("geofences/{name}/{kind}"));
                self.publisher.send(topic, Bytes::new(), true, true);
            }
        }
        removed
    }

    /// Takes one location publish; publishes the events it decided.
    pub fn location(&self, topic_name: &[u8], payload: &[u8]) {
        let Some(id) = std::str::from_utf8(topic_name)
            .ok()
            .and_then(topic::location_driver)
        else {
            return;
        };
        // The gateway checked it already (when validation is on); parsed again here for
        // its fields, against the same rules.
        let Ok(fix) = Location::parse(id, payload, fleetcast_proto::time::now_ms()) else {
            return;
        };
        let (events, counts) = {
            let mut t = self.tracker();
            if t.fences().next().is_none() {
                return;
            }
            let events = t.fix(Fix {
                id: &fix.id,
                lat: fix.lat,
                lon: fix.lon,
                ts: fix.ts,
            });
            let counts: Vec<(String, usize)> = events
                .iter()
                .map(|e| (e.fence.clone(), t.count(&e.fence).unwrap_or(0)))
                .collect();
            (events, counts)
        };
        for e in &events {
            let body = serde_json::json!({
                "fence": e.fence,
                "id": e.id,
                "event": if e.enter { "enter" } else { "exit" },
                "ts": e.ts,
                "lat": e.lat,
                "lon": e.lon,
            });
            let topic = Bytes::from(format!("geofences/{}/events", e.fence));
            self.publisher
                .send(topic, Bytes::from(body.to_string()), false, true);
        }
        for (name, n) in counts {
            self.publish_count(&name, n);
        }
    }

    fn publish_count(&self, name: &str, n: usize) {
        let topic = Bytes::from(format!("geofences/{name}/count"));
        let body = serde_json::json!({ "fence": name, "count": n }).to_string();
        self.publisher.send(topic, Bytes::from(body), true, true);
    }

    /// `fleetcast_geofence_drivers{fence}` in Prometheus' text format (fences come and go
    /// at run time, so their gauges are written at each scrape).
    pub fn prometheus_text(&self) -> String {
        let mut out = String::from(
            "# HELP fleetcast_geofence_drivers Drivers inside each geofence.\n\
             # TYPE fleetcast_geofence_drivers gauge\n",
        );
        for (f, n) in self.tracker().fences() {
            let _ = writeln!(
                out,
                "fleetcast_geofence_drivers{{fence=\"{}\"}} {n}",
                f.name
            );
        }
        out
    }

    /// Publishes the starting counts, then follows every location until `shutdown`.
    pub async fn run(self: Arc<Self>, router: Arc<RouterHandle>, shutdown: CancellationToken) {
        let fences: Vec<Fence> = self.tracker().fences().map(|(f, _)| f.clone()).collect();
        for f in &fences {
            self.publish_shape(f);
        }
        for (name, n) in self.counts() {
            self.publish_count(&name, n);
        }
        let filters = [topic::LOCATION_FILTER];
        let mut sub = match LocalSubscriber::new(&router, "geofences", &filters).await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "geofences cannot follow locations");
                return;
            }
        };
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                n = sub.next() => n,
            };
            let Some((topic, payload)) = next else { return };
            self.location(&topic, &payload);
        }
    }

    fn counts(&self) -> Vec<(String, usize)> {
        let t = self.tracker();
        t.fences().map(|(f, n)| (f.name.clone(), n)).collect()
    }
}
