//! The messages drivers publish: the one definition the simulator, the dashboard bridge
//! and the load tester share.
//!
//! Topics: `drivers/{id}/location` carries a [`Location`] every interval, retained;
//! `drivers/{id}/status` carries a [`Presence`], retained, `online` on connect and the same
//! message with `offline` as the last will.

use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// Filter matching every driver's location topic.
pub const LOCATION_FILTER: &str = "drivers/+/location";
/// Filter matching every driver's status topic.
pub const STATUS_FILTER: &str = "drivers/+/status";

/// `drivers/{id}/location`.
pub fn location_topic(id: &str) -> String {
    format!("drivers/{id}/location")
}

/// `drivers/{id}/status`.
pub fn status_topic(id: &str) -> String {
    format!("drivers/{id}/status")
}

/// The driver id in a `drivers/{id}/...` topic.
pub fn driver_of(topic: &str) -> Option<&str> {
    let mut parts = topic.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("drivers"), Some(id), Some(_), None) if !id.is_empty() => Some(id),
        _ => None,
    }
}

/// A ride-hailing driver's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Free, cruising, waiting for a request.
    Available,
    /// Driving to pick a rider up.
    ToPickup,
    /// Carrying a rider.
    OnTrip,
}

impl Status {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Available => "available",
            Status::ToPickup => "to_pickup",
            Status::OnTrip => "on_trip",
        }
    }
}

/// One position fix, published on `drivers/{id}/location`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Location {
    /// Driver id, e.g. `drv-000042` (also the MQTT client id).
    pub id: String,
    /// Latitude, degrees (WGS 84).
    pub lat: f64,
    /// Longitude, degrees (WGS 84).
    pub lon: f64,
    /// Direction of travel, degrees clockwise from north, in [0, 360).
    pub heading: f64,
    /// Speed over ground, m/s.
    pub speed: f64,
    /// Horizontal accuracy, metres (the GPS noise's scale).
    pub accuracy: f64,
    /// Ride-hailing state.
    pub status: Status,
    /// Per-driver counter, +1 per fix, for loss and order detection.
    pub seq: u64,
    /// When the fix was taken, milliseconds since the Unix epoch, for latency.
    pub ts: u64,
}

/// Online/offline presence, published on `drivers/{id}/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// Driver id.
    pub id: String,
    /// `online` or `offline`.
    pub status: String,
}

impl Presence {
    /// The retained message published on connect.
    pub fn online(id: &str) -> Presence {
        Presence {
            id: id.to_owned(),
            status: "online".to_owned(),
        }
    }

    /// The last will: the same message with `offline`.
    pub fn offline(id: &str) -> Presence {
        Presence {
            id: id.to_owned(),
            status: "offline".to_owned(),
        }
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_json_has_the_documented_fields() {
        let l = Location {
            id: "drv-000042".into(),
            lat: 60.17,
            lon: 24.94,
            heading: 90.0,
            speed: 8.5,
            accuracy: 4.0,
            status: Status::ToPickup,
            seq: 7,
            ts: 1_700_000_000_000,
        };
        let v: serde_json::Value = serde_json::to_value(&l).expect("serialize");
        let mut keys: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["accuracy", "heading", "id", "lat", "lon", "seq", "speed", "status", "ts"]
        );
        assert_eq!(v["status"], "to_pickup");
        let back: Location = serde_json::from_value(v).expect("parse");
        assert_eq!(back, l);
    }

    #[test]
    fn topics_round_trip() {
        assert_eq!(location_topic("drv-1"), "drivers/drv-1/location");
        assert_eq!(driver_of("drivers/drv-1/location"), Some("drv-1"));
        assert_eq!(driver_of("drivers/drv-1/status"), Some("drv-1"));
        assert_eq!(driver_of("drivers//status"), None);
        assert_eq!(driver_of("owntracks/a/b"), None);
    }
}
