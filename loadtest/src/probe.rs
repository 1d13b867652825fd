//! The payload a load-test publisher sends and its subscribers read back: a real
//! `fleetcast_proto::Location` (so a broker that checks locations passes it) plus `tsu`,
//! the send time in microseconds, for sub-millisecond latency.
//!
//! Written with `format!` rather than by serializing a `Location`: it is built once per
//! message on the throughput path, and the bytes stay those earlier runs and benchmark
//! results were measured with. Subscribers read back only `seq` and `tsu` ([`Probe`]), not
//! a whole `Location`, for the same reason.

use fleetcast_proto::topic;
use serde::Deserialize;
use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch (0 if the clock is before it). The load tester's own:
/// `fleetcast_proto::time` is milliseconds, as `ts` is, too coarse for latency on loopback.
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Message `seq` of publisher `id`, padded with `pad` to `size` bytes when asked.
pub(crate) fn body(id: &str, seq: u64, size: Option<usize>) -> Vec<u8> {
    let ts = now_us();
    let mut s = format!(
        r#"{{"id":"{id}","lat":60.17,"lon":24.94,"heading":0,"speed":0,"accuracy":3,"status":"available","seq":{seq},"ts":{},"tsu":{ts}}}"#,
        ts / 1000
    );
    if let Some(size) = size {
        if size > s.len() + 10 {
            s.pop();
            let pad = size - s.len() - 10;
            s.push_str(r#","pad":""#);
            s.extend(std::iter::repeat_n('x', pad));
            s.push_str(r#""}"#);
        }
    }
    s.into_bytes()
}

/// What a subscriber reads from a message.
#[derive(Debug, Deserialize)]
pub(crate) struct Probe {
    /// The publisher's counter.
    pub seq: u64,
    /// When it was sent, microseconds since the epoch.
    pub tsu: u64,
}

/// The publisher index in `drivers/{prefix}{index}/location`; None for any other topic
/// (another run's, another tool's, not a location).
pub(crate) fn publisher_of(topic: &[u8], prefix: &str) -> Option<u32> {
    let id = topic::location_driver(std::str::from_utf8(topic).ok()?)?;
    id.strip_prefix(prefix)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_parse_and_pad() {
        let b = body("lt-000001", 7, Some(300));
        assert!(b.len() >= 300 && b.len() < 320, "{}", b.len());
        let p: Probe = serde_json::from_slice(&b).expect("json");
        assert_eq!(p.seq, 7);
        let loc: fleetcast_proto::Location = serde_json::from_slice(&b).expect("a real Location");
        assert_eq!(loc.id, "lt-000001");
        assert_eq!(publisher_of(b"drivers/lt-000042/location", "lt-"), Some(42));
        assert_eq!(publisher_of(b"drivers/drv-000042/location", "lt-"), None);
    }

    #[test]
    fn bodies_pass_the_gateway_rules_and_only_location_topics_count() {
        let b = body("lt-000003", 1, None);
        let now = fleetcast_proto::time::now_ms();
        fleetcast_proto::Location::parse("lt-000003", &b, now).expect("a valid fix");
        assert_eq!(publisher_of(b"drivers/lt-000042/status", "lt-"), None);
        assert_eq!(publisher_of(b"drivers/lt-000042/location/x", "lt-"), None);
        assert_eq!(publisher_of(b"drivers/lt-x/location", "lt-"), None);
        assert_eq!(publisher_of(&[0xff, 0xfe], "lt-"), None);
    }
}
