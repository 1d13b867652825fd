//! Location payload validation at the gateway: a bad position is dropped before any
//! subscriber sees it. Checked on `drivers/{id}/location` only; other topics pass as they
//! are. The shape checked is the `Location` payload documented in README.md (defined in
//! `simulator/src/payload.rs`); only the fields that can be wrong in dangerous ways are read.

use serde::Deserialize;

/// Earliest `ts` accepted: 2000-01-01 (ms since the epoch).
const TS_MIN_MS: u64 = 946_684_800_000;
/// Latest `ts` accepted: one hour ahead of the gateway's clock (clocks drift).
const TS_AHEAD_MS: u64 = 3_600_000;

#[derive(Deserialize)]
struct Shape<'a> {
    id: &'a str,
    lat: f64,
    lon: f64,
    heading: f64,
    speed: f64,
    accuracy: f64,
    seq: u64,
    ts: u64,
}

/// Why a location payload was refused (the `reason` is logged, not labelled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Not JSON of the documented shape.
    Shape,
    /// `id` differs from the topic's driver id.
    Id,
    /// A number is NaN or infinite.
    NotFinite,
    /// lat outside [-90, 90] or lon outside [-180, 180].
    OutOfRange,
    /// Negative speed or accuracy.
    Negative,
    /// `ts` before 2000 or more than an hour ahead.
    Time,
}

/// The driver id of a `drivers/{id}/location` topic.
fn location_driver(topic: &[u8]) -> Option<&[u8]> {
    let rest = topic.strip_prefix(b"drivers/")?;
    let id = rest.strip_suffix(b"/location")?;
    (!id.is_empty() && !id.contains(&b'/')).then_some(id)
}

/// Checks a publish; Ok for every topic but driver locations, which must be valid.
///
/// # Errors
/// The first rule a location payload breaks.
pub fn check(topic: &[u8], payload: &[u8], now_ms: u64) -> Result<(), Invalid> {
    let Some(driver) = location_driver(topic) else {
        return Ok(());
    };
    let s: Shape<'_> = serde_json::from_slice(payload).map_err(|_| Invalid::Shape)?;
    let _ = s.seq;
    if s.id.as_bytes() != driver {
        return Err(Invalid::Id);
    }
    if ![s.lat, s.lon, s.heading, s.speed, s.accuracy]
        .iter()
        .all(|v| v.is_finite())
    {
        return Err(Invalid::NotFinite);
    }
    if !(-90.0..=90.0).contains(&s.lat) || !(-180.0..=180.0).contains(&s.lon) {
        return Err(Invalid::OutOfRange);
    }
    if s.speed < 0.0 || s.accuracy < 0.0 {
        return Err(Invalid::Negative);
    }
    if s.ts < TS_MIN_MS || s.ts > now_ms.saturating_add(TS_AHEAD_MS) {
        return Err(Invalid::Time);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_963_525_273;

    fn loc(id: &str, lat: &str, lon: &str, speed: &str, acc: &str, ts: u64) -> Vec<u8> {
        format!(r#"{{"id":"{id}","lat":{lat},"lon":{lon},"heading":90,"speed":{speed},"accuracy":{acc},"status":"available","seq":1,"ts":{ts}}}"#).into_bytes()
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
        // Other topics are not location payloads.
        assert_eq!(check(b"drivers/drv-1/status", b"not json", NOW), Ok(()));
        assert_eq!(check(b"a/b", b"{", NOW), Ok(()));
    }
}
