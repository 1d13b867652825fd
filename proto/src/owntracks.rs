//! OwnTracks location payloads, so a real OwnTracks phone app appears on the map.
//!
//! OwnTracks publishes `{"_type":"location","lat":..,"lon":..,"tst":SECONDS,"acc":M,
//! "vel":KM/H,"cog":DEG,"tid":"XX"}` on `owntracks/{user}/{device}`. It becomes a
//! [`Location`] with id `ot-{user}-{device}`.

use crate::location::{Location, Status};
use crate::topic::owntracks_device;
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

/// Converts an OwnTracks payload; None for other `_type`s, invalid JSON, and a fix that
/// breaks the rules every [`Location`] must pass. `seq` is the bridge's own counter for
/// this device (OwnTracks has none).
pub fn to_location(topic: &str, payload: &[u8], seq: u64, now_ms: u64) -> Option<Location> {
    let (user, device) = owntracks_device(topic)?;
    let o: OwnTracks = serde_json::from_slice(payload).ok()?;
    if o.kind != "location" {
        return None;
    }
    let id = format!("ot-{user}-{device}");
    let loc = Location {
        id: id.clone(),
        lat: o.lat,
        lon: o.lon,
        heading: o.cog.unwrap_or(0.0).rem_euclid(360.0),
        speed: o.vel.map_or(0.0, |kmh| kmh / 3.6),
        accuracy: o.acc.unwrap_or(0.0),
        status: Status::Available,
        seq,
        ts: o.tst.map_or(now_ms, |s| s.saturating_mul(1000)),
    };
    loc.validate(&id, now_ms).ok()?;
    Some(loc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_a_phone_fix() {
        let body = br#"{"_type":"location","lat":60.17,"lon":24.94,"tst":1700000000,"acc":12,"vel":36,"cog":270,"tid":"ph","batt":80}"#;
        let now = 1_700_000_100_000;
        let l = to_location("owntracks/alice/phone", body, 5, now).expect("location");
        assert_eq!(l.id, "ot-alice-phone");
        assert_eq!(l.ts, 1_700_000_000_000);
        assert!((l.speed - 10.0).abs() < 1e-9);
        assert_eq!(l.heading, 270.0);
        assert_eq!(l.accuracy, 12.0);
        assert_eq!(l.seq, 5);
        assert!(to_location(
            "owntracks/alice/phone",
            br#"{"_type":"transition"}"#,
            1,
            now
        )
        .is_none());
        assert!(to_location("owntracks/alice", body, 1, now).is_none());
        assert!(to_location("owntracks/a/b", b"not json", 1, now).is_none());
        // The same rules as a driver's fix: a phone at latitude 99 is not shown.
        let far = br#"{"_type":"location","lat":99,"lon":24.94,"tst":1700000000}"#;
        assert!(to_location("owntracks/alice/phone", far, 1, now).is_none());
        // Without `tst` the fix is taken as received now.
        let untimed = br#"{"_type":"location","lat":60.1,"lon":24.9}"#;
        assert_eq!(
            to_location("owntracks/a/b", untimed, 1, now).map(|l| l.ts),
            Some(now)
        );
    }
}
