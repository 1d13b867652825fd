//! The location schema: the [`Location`] a driver publishes on `drivers/{id}/location`, the
//! [`Presence`] on `drivers/{id}/status`, and the one set of rules a fix must pass.
//!
//! The gateway refuses a fix that breaks a rule and the board ignores one, through the same
//! [`check`]: a fix the gateway accepts is one the map shows, and the other way round. The
//! gateway applies it to last wills too, at CONNECT. An empty payload is not a fix but the
//! MQTT way to delete a retained message: accepted, and not shown.
//!
//! Every fix is read twice (the gateway's check, the board), so the shape drivers send (a
//! flat object, plain numbers, no escapes) is read in place by `scan`, without allocating;
//! anything else goes to serde_json, whose answer `scan` matches bit for bit.

use crate::topic;
use serde::{Deserialize, Serialize};

mod scan;

pub use scan::Fields;

/// Earliest `ts` accepted: 2000-01-01 (ms since the epoch).
pub const TS_MIN_MS: u64 = 946_684_800_000;
/// Latest `ts` accepted: one hour ahead of the receiver's clock (clocks drift).
pub const TS_AHEAD_MS: u64 = 3_600_000;

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
    /// Latitude, degrees (WGS 84), in [-90, 90].
    pub lat: f64,
    /// Longitude, degrees (WGS 84), in [-180, 180].
    pub lon: f64,
    /// Direction of travel, degrees clockwise from north, in [0, 360].
    pub heading: f64,
    /// Speed over ground, m/s, not negative.
    pub speed: f64,
    /// Horizontal accuracy, metres (the GPS noise's scale), not negative.
    pub accuracy: f64,
    /// Ride-hailing state.
    pub status: Status,
    /// Per-driver counter, +1 per fix, for loss and order detection.
    pub seq: u64,
    /// When the fix was taken, milliseconds since the Unix epoch, for latency.
    pub ts: u64,
}

/// Why a location payload was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// Not JSON of the documented shape (a field missing, of the wrong type, an unknown
    /// `status`).
    #[error("not a location of the documented shape")]
    Shape,
    /// `id` differs from the topic's driver id.
    #[error("the id differs from the topic's driver")]
    Id,
    /// A number is NaN or infinite.
    #[error("a number is not finite")]
    NotFinite,
    /// lat outside [-90, 90], lon outside [-180, 180] or heading outside [0, 360].
    #[error("lat, lon or heading out of range")]
    OutOfRange,
    /// Negative speed or accuracy.
    #[error("negative speed or accuracy")]
    Negative,
    /// `ts` before 2000 or more than an hour ahead.
    #[error("ts before 2000 or more than an hour ahead")]
    Time,
}

impl Location {
    /// Checks the rules for a fix published by driver `topic_id`, received at `now_ms`.
    ///
    /// # Errors
    /// The first rule the fix breaks.
    pub fn validate(&self, topic_id: &str, now_ms: u64) -> Result<(), Invalid> {
        rules(&self.fields(), topic_id, now_ms)
    }

    /// Parses and checks a fix published by driver `topic_id`.
    ///
    /// # Errors
    /// [`Invalid::Shape`] when it does not parse, else the first rule it breaks.
    pub fn parse(topic_id: &str, payload: &[u8], now_ms: u64) -> Result<Location, Invalid> {
        Location::read(topic_id, payload, now_ms).map(Fix::into_location)
    }

    /// As [`Location::parse`], without allocating for the shape drivers send: that fix's
    /// fields are read in place, borrowing the id from `payload` (the board reads every
    /// fix and keeps one per driver, whose id it already holds).
    ///
    /// # Errors
    /// [`Invalid::Shape`] when it does not parse, else the first rule it breaks.
    pub fn read<'a>(topic_id: &str, payload: &'a [u8], now_ms: u64) -> Result<Fix<'a>, Invalid> {
        if let Some(f) = scan::fields(payload) {
            rules(&f, topic_id, now_ms)?;
            return Ok(Fix::InPlace(f));
        }
        let loc: Location = serde_json::from_slice(payload).map_err(|_| Invalid::Shape)?;
        loc.validate(topic_id, now_ms)?;
        Ok(Fix::Owned(loc))
    }

    /// Its fields, the id borrowed.
    pub fn fields(&self) -> Fields<'_> {
        Fields {
            id: &self.id,
            lat: self.lat,
            lon: self.lon,
            heading: self.heading,
            speed: self.speed,
            accuracy: self.accuracy,
            status: self.status,
            seq: self.seq,
            ts: self.ts,
        }
    }

    /// Becomes `f`, keeping its id's allocation when the id is the same.
    pub fn set(&mut self, f: &Fields<'_>) {
        if self.id != f.id {
            f.id.clone_into(&mut self.id);
        }
        self.lat = f.lat;
        self.lon = f.lon;
        self.heading = f.heading;
        self.speed = f.speed;
        self.accuracy = f.accuracy;
        self.status = f.status;
        self.seq = f.seq;
        self.ts = f.ts;
    }
}

/// A checked fix as [`Location::read`] found it: read in place, or parsed by serde_json
/// into a [`Location`] of its own.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Fix<'a> {
    /// The common shape, its id borrowed from the payload.
    InPlace(Fields<'a>),
    /// Any other shape serde_json accepts.
    Owned(Location),
}

impl Fix<'_> {
    /// Its fields, however it was read.
    pub fn fields(&self) -> Fields<'_> {
        match self {
            Fix::InPlace(f) => *f,
            Fix::Owned(loc) => loc.fields(),
        }
    }

    /// As a [`Location`] of its own (allocates the id if it was read in place).
    pub fn into_location(self) -> Location {
        match self {
            Fix::InPlace(f) => Location::from(&f),
            Fix::Owned(loc) => loc,
        }
    }
}

impl From<&Fields<'_>> for Location {
    fn from(f: &Fields<'_>) -> Location {
        Location {
            id: f.id.to_owned(),
            lat: f.lat,
            lon: f.lon,
            heading: f.heading,
            speed: f.speed,
            accuracy: f.accuracy,
            status: f.status,
            seq: f.seq,
            ts: f.ts,
        }
    }
}

/// The rules, on a fix however it was read.
fn rules(f: &Fields<'_>, topic_id: &str, now_ms: u64) -> Result<(), Invalid> {
    if f.id != topic_id {
        return Err(Invalid::Id);
    }
    if ![f.lat, f.lon, f.heading, f.speed, f.accuracy]
        .iter()
        .all(|v| v.is_finite())
    {
        return Err(Invalid::NotFinite);
    }
    if !(-90.0..=90.0).contains(&f.lat)
        || !(-180.0..=180.0).contains(&f.lon)
        || !(0.0..=360.0).contains(&f.heading)
    {
        return Err(Invalid::OutOfRange);
    }
    if f.speed < 0.0 || f.accuracy < 0.0 {
        return Err(Invalid::Negative);
    }
    if f.ts < TS_MIN_MS || f.ts > now_ms.saturating_add(TS_AHEAD_MS) {
        return Err(Invalid::Time);
    }
    Ok(())
}

/// Checks a publish (or a last will) as the gateway sees it: Ok for every topic but a
/// driver's location, whose payload must be a valid fix of that driver or empty. A topic
/// that is not UTF-8 is not a location topic (the gateway's topic rules deal with it).
///
/// An empty payload is not a fix: MQTT uses it to delete the topic's retained message
/// (and rumqttd clears it on an empty non-retained publish too), which is how a driver
/// takes its last position off the map's late joiners. The board ignores it.
///
/// # Errors
/// The first rule a non-empty location payload breaks.
pub fn check(topic: &[u8], payload: &[u8], now_ms: u64) -> Result<(), Invalid> {
    let Some(id) = std::str::from_utf8(topic)
        .ok()
        .and_then(topic::location_driver)
    else {
        return Ok(());
    };
    if payload.is_empty() {
        return Ok(());
    }
    // The common shape is checked where it lies, without allocating.
    Location::read(id, payload, now_ms).map(|_| ())
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

    /// Whether the driver said it left.
    pub fn is_offline(&self) -> bool {
        self.status == "offline"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_963_525_273;

    fn loc(id: &str, lat: &str, lon: &str, speed: &str, acc: &str, ts: u64) -> Vec<u8> {
        format!(r#"{{"id":"{id}","lat":{lat},"lon":{lon},"heading":90,"speed":{speed},"accuracy":{acc},"status":"available","seq":1,"ts":{ts}}}"#).into_bytes()
    }

    #[test]
    fn read_borrows_the_common_shape_and_owns_any_other() {
        let plain = loc("drv-1", "60.17", "24.94", "8.5", "4", NOW);
        let fix = Location::read("drv-1", &plain, NOW).expect("valid");
        let Fix::InPlace(f) = &fix else {
            panic!("the common shape is read in place: {fix:?}");
        };
        assert!(plain.as_ptr_range().contains(&f.id.as_ptr()), "id borrowed");
        let parsed = Location::parse("drv-1", &plain, NOW).expect("valid");
        assert_eq!(fix.fields(), parsed.fields());
        // An exponent: serde_json's, owned, read the same.
        let other = loc("drv-1", "6.017e1", "24.94", "8.5", "4", NOW);
        let fix = Location::read("drv-1", &other, NOW).expect("valid");
        assert!(matches!(fix, Fix::Owned(_)), "{fix:?}");
        assert_eq!(fix.fields(), parsed.fields());
        assert_eq!(fix.into_location(), parsed);
        // The rules hold either way.
        assert_eq!(Location::read("drv-2", &plain, NOW), Err(Invalid::Id));
        assert_eq!(Location::read("drv-2", &other, NOW), Err(Invalid::Id));
    }

    #[test]
    fn set_keeps_the_id_it_holds() {
        let mut held =
            Location::parse("drv-1", &loc("drv-1", "1", "2", "3", "4", NOW), NOW).expect("valid");
        let at = held.id.as_ptr();
        let next = Location::parse("drv-1", &loc("drv-1", "5", "6", "7", "8", NOW + 1), NOW)
            .expect("valid");
        held.set(&next.fields());
        assert_eq!(held, next);
        assert_eq!(held.id.as_ptr(), at, "the same id, not allocated again");
        let other =
            Location::parse("drv-22", &loc("drv-22", "5", "6", "7", "8", NOW), NOW).expect("valid");
        held.set(&other.fields());
        assert_eq!(held, other);
    }

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
    fn each_rule() {
        let t = b"drivers/drv-1/location";
        assert_eq!(
            check(t, &loc("drv-1", "60.1", "24.9", "3", "4", NOW), NOW),
            Ok(())
        );
        assert_eq!(check(t, b"{", NOW), Err(Invalid::Shape));
        assert_eq!(check(t, br#"{"lat":1}"#, NOW), Err(Invalid::Shape));
        assert_eq!(
            check(t, &loc("drv-2", "60.1", "24.9", "3", "4", NOW), NOW),
            Err(Invalid::Id)
        );
        // JSON has no NaN, and serde_json refuses 1e999 rather than make it infinite: the
        // NotFinite rule is a second line behind the parser.
        assert_eq!(
            check(t, &loc("drv-1", "1e999", "24.9", "3", "4", NOW), NOW),
            Err(Invalid::Shape)
        );
        assert_eq!(
            check(t, &loc("drv-1", "91", "24.9", "3", "4", NOW), NOW),
            Err(Invalid::OutOfRange)
        );
        assert_eq!(
            check(t, &loc("drv-1", "60", "-181", "3", "4", NOW), NOW),
            Err(Invalid::OutOfRange)
        );
        assert_eq!(
            check(t, &loc("drv-1", "60", "24", "-1", "4", NOW), NOW),
            Err(Invalid::Negative)
        );
        assert_eq!(
            check(t, &loc("drv-1", "60", "24", "1", "-4", NOW), NOW),
            Err(Invalid::Negative)
        );
        assert_eq!(
            check(t, &loc("drv-1", "60", "24", "1", "4", 5), NOW),
            Err(Invalid::Time)
        );
        assert_eq!(
            check(t, &loc("drv-1", "60", "24", "1", "4", NOW + 7_200_000), NOW),
            Err(Invalid::Time)
        );
        // Empty clears the retained location: not a fix, not refused.
        assert_eq!(check(t, b"", NOW), Ok(()));
        assert_eq!(check(t, b" ", NOW), Err(Invalid::Shape));
        // Other topics are not location payloads.
        assert_eq!(check(b"drivers/drv-1/status", b"not json", NOW), Ok(()));
        assert_eq!(check(b"a/b", b"{", NOW), Ok(()));
        assert_eq!(check(b"drivers/\xff/location", b"{", NOW), Ok(()));
    }

    #[test]
    fn status_and_heading_are_part_of_the_rules() {
        let t = b"drivers/drv-1/location";
        let good = String::from_utf8(loc("drv-1", "60", "24", "1", "4", NOW)).expect("utf8");
        let busy = good.replace("available", "busy");
        assert_eq!(check(t, busy.as_bytes(), NOW), Err(Invalid::Shape));
        let no_status = good.replace(r#""status":"available","#, "");
        assert_eq!(check(t, no_status.as_bytes(), NOW), Err(Invalid::Shape));
        for heading in ["720", "-5", "360.5"] {
            let bad = good.replace(r#""heading":90"#, &format!(r#""heading":{heading}"#));
            assert_eq!(
                check(t, bad.as_bytes(), NOW),
                Err(Invalid::OutOfRange),
                "{heading}"
            );
        }
        let edge = good.replace(r#""heading":90"#, r#""heading":360"#);
        assert_eq!(check(t, edge.as_bytes(), NOW), Ok(()));
    }

    #[test]
    fn an_escaped_id_is_the_same_id() {
        let t = b"drivers/drv-1/location";
        let escaped = String::from_utf8(loc("drv-1", "60", "24", "1", "4", NOW))
            .expect("utf8")
            .replace(r#""id":"drv-1""#, r#""id":"drv\u002d1""#);
        assert_eq!(check(t, escaped.as_bytes(), NOW), Ok(()));
    }

    #[test]
    fn presence_round_trips() {
        let p = Presence::offline("drv-1");
        assert!(p.is_offline());
        assert!(!Presence::online("drv-1").is_offline());
        let v = serde_json::to_string(&p).expect("serialize");
        assert_eq!(v, r#"{"id":"drv-1","status":"offline"}"#);
    }
}
