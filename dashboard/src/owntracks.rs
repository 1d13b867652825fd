//! OwnTracks location payloads, so a real OwnTracks phone app appears on the map.
//!
//! OwnTracks publishes `{"_type":"location","lat":..,"lon":..,"tst":SECONDS,"acc":M,
//! "vel":KM/H,"cog":DEG,"tid":"XX"}` on `owntracks/{user}/{device}`. It becomes a
//! [`Location`] with id `ot-{user}-{device}`.

use fleetcast_simulator::payload::{Location, Status};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct OwnTracks {
    #[serde(rename = "_type")]
    kind: String,
    lat: f64,
    lon: f64,
    tst: Option<u64>,
    acc: Option<f64>,
    vel: Option<f64>,
    cog: Option<f64>,
}

/// The `{user}/{device}` of an `owntracks/{user}/{device}` topic.
pub fn device_of(topic: &str) -> Option<(&str, &str)> {
    let mut p = topic.split('/');
    match (p.next(), p.next(), p.next(), p.next()) {
        (Some("owntracks"), Some(user), Some(device), None)
            if !user.is_empty() && !device.is_empty() =>
        {
            Some((user, device))
        }
        _ => None,
    }
}

/// Converts an OwnTracks payload; None for other `_type`s and invalid JSON.
/// `seq` is the bridge's own counter for this device (OwnTracks has none).
pub fn to_location(topic: &str, payload: &[u8], seq: u64, now_ms: u64) -> Option<Location> {
    let (user, device) = device_of(topic)?;
    let o: OwnTracks = serde_json::from_slice(payload).ok()?;
    if o.kind != "location" {
        return None;
    }
    Some(Location {
        id: format!("ot-{user}-{device}"),
        lat: o.lat,
        lon: o.lon,
        heading: o.cog.unwrap_or(0.0).rem_euclid(360.0),
        speed: o.vel.map_or(0.0, |kmh| kmh / 3.6),
        accuracy: o.acc.unwrap_or(0.0),
        status: Status::Available,
        seq,
        ts: o.tst.map_or(now_ms, |s| s.saturating_mul(1000)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_a_phone_fix() {
        let body = br#"{"_type":"location","lat":60.17,"lon":24.94,"tst":1700000000,"acc":12,"vel":36,"cog":270,"tid":"ph","batt":80}"#;
        let l = to_location("owntracks/alice/phone", body, 5, 0).expect("location");
        assert_eq!(l.id, "ot-alice-phone");
        assert_eq!(l.ts, 1_700_000_000_000);
        assert!((l.speed - 10.0).abs() < 1e-9);
        assert_eq!(l.heading, 270.0);
        assert_eq!(l.accuracy, 12.0);
        assert_eq!(l.seq, 5);
        assert!(to_location("owntracks/alice/phone", br#"{"_type":"transition"}"#, 1, 0).is_none());
        assert!(to_location("owntracks/alice", body, 1, 0).is_none());
        assert!(to_location("owntracks/a/b", b"not json", 1, 0).is_none());
    }
}
