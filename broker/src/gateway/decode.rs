//! What the gateway makes of a client's bytes, as one pure function, for the fuzz target
//! (`fuzz/`) and its regression tests.
//!
//! [`decode_stream`] calls what a session calls, in the session's order: CONNECT
//! inspection, the version's codec (guarded, see [`super::codec`]), the CONNECT checks, its
//! MQTT 5 properties and its will (`hello.rs`, `connect_rules.rs`), the will against the
//! policy, then for every packet the PUBLISH header read
//! off the wire and the per-packet checks (`inbound.rs`: topic and filter rules, the policy
//! matcher, location validation, the subscription quota, ack order), with their answers
//! encoded as a session encodes them. Left out is only what needs a socket, the router or
//! the time: the limits are the broker's defaults, the client is taken for a driver account
//! whatever its credentials (checking those is argon2's slow work, not parsing), and the
//! clock stands still so that a run replays. None of it may panic on any input.

use super::codec::Version;
use super::frame::{self, ConnectKind};
use super::hello::{self, Refusal};
use super::inbound::{Inbound, Tally};
use crate::config::{Config, Limits};
use crate::policy::Grants;
use bytes::BytesMut;
use rumqttd::protocol::{Error as ProtocolError, Packet};
use std::sync::{Arc, OnceLock};

/// The fuzzer's "now" for location timestamps (2027-01-15), after the seeds' `ts`.
const NOW_MS: u64 = 1_800_000_000_000;

/// What a byte stream amounted to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    /// The version the CONNECT asked for, if it got that far.
    pub version: Option<Version>,
    /// Packets decoded, CONNECT included.
    pub packets: usize,
    /// PUBLISH packets whose topic the gateway accepts (charged to the publish quota,
    /// granted or not).
    pub valid_publishes: usize,
    /// Packets after the CONNECT that the checks would hand to the router.
    pub forwarded: usize,
    /// The first reason a session would have closed the connection for: a refusal of the
    /// CONNECT or the end of the session (their meters' `reason` labels). Decoding goes on
    /// past it, so that later packets still reach the codec (and, past an end, the checks).
    pub closed: Option<&'static str>,
    /// Why decoding stopped early (a session would close the connection).
    pub error: Option<String>,
}

/// Runs `data` through the gateway's parsing and checks as if it arrived on one
/// connection, under the default limits with packets up to `max_packet_size`.
pub fn decode_stream(data: &[u8], max_packet_size: usize) -> Decoded {
    let mut out = Decoded::default();
    let version = match frame::inspect_connect(data, max_packet_size) {
        Ok(ConnectKind::V311) => Version::V311,
        Ok(ConnectKind::V5) => Version::V5,
        Ok(ConnectKind::Incomplete) => return out,
        Ok(ConnectKind::Unsupported) => {
            out.error = Some("unsupported protocol".into());
            return out;
        }
        Err(e) => {
            out.error = Some(e.to_string());
            return out;
        }
    };
    out.version = Some(version);
    let limits = Limits {
        max_packet_size,
        ..Config::default().limits
    };
    let mut buf = BytesMut::from(data);
    let mut session = None;
    // Answers the gateway gives itself; encoded, then thrown away.
    let mut answers = BytesMut::new();
    loop {
        let header = frame::publish_qos_pkid(&buf);
        let packet = match version.read(&mut buf, max_packet_size) {
            Ok(p) => p,
            Err(ProtocolError::InsufficientBytes(_)) => return out,
            Err(e) => {
                out.error = Some(e.to_string());
                return out;
            }
        };
        out.packets += 1;
        if out.packets == 1 {
            match open_session(packet, version, &limits) {
                Ok(inbound) => session = Some(inbound),
                Err(refusal) => out.closed = Some(refusal.reason()),
            }
            continue;
        }
        // A refused CONNECT leaves no session to check packets against.
        let Some(inbound) = session.as_mut() else {
            continue;
        };
        let mut tally = Tally::default();
        let mut to_router = Vec::new();
        let checked = inbound.check(packet, header, &mut answers, &mut tally, &mut to_router);
        out.forwarded += to_router.len();
        match checked {
            Ok(()) => {}
            Err(end) => {
                out.closed.get_or_insert(end.reason());
            }
        }
        out.valid_publishes += tally.publishes as usize;
        answers.clear();
    }
}

/// The session a CONNECT would open, checked as the handshake checks it.
fn open_session(packet: Packet, version: Version, limits: &Limits) -> Result<Inbound, Refusal> {
    let connect = hello::check_hello(packet, version, limits, NOW_MS)?;
    let username = hello::username(&connect, None);
    let identity = hello::admit(&connect, username, Some(account()))?;
    Ok(Inbound::new(version, identity, limits, || NOW_MS))
}

/// The fuzzed client's grants, built as `auth` builds an account's from a credentials
/// file: its role's grants plus its own. A driver that may also follow the fleet (a
/// rider's subscriptions), so that both the publish and the subscribe matchers run.
fn account() -> Arc<Grants> {
    static ACCOUNT: OnceLock<Arc<Grants>> = OnceLock::new();
    let grants = ACCOUNT.get_or_init(|| {
        let own = Grants {
            publish: Vec::new(),
            subscribe: Grants::rider().subscribe,
        };
        Arc::new(Grants::driver().with(&own))
    });
    Arc::clone(grants)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::wire::{self, publish, subscribe};

    fn connect(level: u8) -> Vec<u8> {
        let mut v = vec![0x10, 0, 0, 4, b'M', b'Q', b'T', b'T', level, 0x02, 0, 60];
        if level == 5 {
            v.push(0);
        }
        v.extend_from_slice(&[0, 1, b'x']);
        v[1] = (v.len() - 2) as u8;
        v
    }

    #[test]
    fn a_well_formed_stream_decodes_in_both_versions() {
        for (level, version) in [(4, Version::V311), (5, Version::V5)] {
            let mut data = connect(level);
            // PUBLISH QoS 0 "a/b" "x" (MQTT 5 adds an empty property length).
            if level == 5 {
                data.extend_from_slice(&[0x30, 0x07, 0, 3, b'a', b'/', b'b', 0, b'x']);
            } else {
                data.extend_from_slice(&[0x30, 0x06, 0, 3, b'a', b'/', b'b', b'x']);
            }
            data.extend_from_slice(&[0xC0, 0x00]);
            let d = decode_stream(&data, 1024);
            assert_eq!(d.version, Some(version));
            assert_eq!((d.packets, d.valid_publishes), (3, 1), "{d:?}");
            assert_eq!(d.error, None);
        }
    }

    #[test]
    fn a_server_packet_after_connect_stops_decoding() {
        let mut data = connect(5);
        data.extend_from_slice(&[0x20, 0x03, 0x00, 0x00, 0x00]);
        let d = decode_stream(&data, 1024);
        assert_eq!(d.packets, 1);
        assert!(d.error.is_some());
    }

    #[test]
    fn the_stream_goes_through_the_sessions_own_checks() {
        let location = format!(
            r#"{{"id":"drv-1","lat":60.1,"lon":24.9,"heading":0,"speed":0,"accuracy":3,"status":"available","seq":1,"ts":{NOW_MS}}}"#
        );
        let mut data = wire::connect(Version::V5, true, "drv-1", None, &[]);
        data.extend(publish(
            Version::V5,
            1,
            1,
            "drivers/drv-1/location",
            &location,
        ));
        // Dropped and acked, not forwarded: an invalid location, someone else's topic.
        data.extend(publish(Version::V5, 1, 2, "drivers/drv-1/location", "{}"));
        data.extend(publish(
            Version::V5,
            1,
            3,
            "drivers/drv-2/location",
            &location,
        ));
        // The account follows the fleet: one filter of two goes through.
        data.extend(subscribe(Version::V5, 4, &["drivers/+/location", "#"]));
        data.extend(subscribe(Version::V5, 5, &["#"]));
        let d = decode_stream(&data, 131_072);
        assert_eq!(
            (d.packets, d.valid_publishes, d.forwarded),
            (6, 3, 2),
            "{d:?}"
        );
        assert_eq!((d.closed, d.error), (None, None));
        // The same bytes in 3.1.1 break the policy: the session would have ended there.
        let mut data = wire::connect(Version::V311, true, "drv-1", None, &[]);
        data.extend(publish(
            Version::V311,
            1,
            3,
            "drivers/drv-2/location",
            &location,
        ));
        data.extend([0x40, 2, 0, 9]);
        let d = decode_stream(&data, 131_072);
        assert_eq!(d.closed, Some("policy_violation"), "{d:?}");
        assert_eq!(d.packets, 3, "decoding goes on past the end");
    }

    #[test]
    fn the_connect_is_held_to_the_default_limits() {
        let longest = "x".repeat(Config::default().limits.max_client_id_len);
        let d = decode_stream(&wire_connect(&longest), 131_072);
        assert_eq!(d.closed, None, "{d:?}");
        let mut data = wire_connect(&format!("{longest}x"));
        data.extend([0xC0, 0x00]);
        let d = decode_stream(&data, 131_072);
        assert_eq!(d.closed, Some("bad_client_id"), "{d:?}");
        assert_eq!((d.packets, d.forwarded, d.error), (2, 0, None));
        // A will outside the account's policy is refused as the handshake refuses it.
        let will = wire::connect(Version::V311, true, "drv-1", Some("a/b"), &[]);
        assert_eq!(decode_stream(&will, 131_072).closed, Some("not_authorized"));
    }

    fn wire_connect(id: &str) -> Vec<u8> {
        wire::connect(Version::V311, true, id, None, &[])
    }
}
