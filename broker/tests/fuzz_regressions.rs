//! Regression tests for the gateway's parsing (`gateway::decode::decode_stream`, the fuzz
//! target's entry point; see fuzz/README.md), run in CI:
//!
//! - what rumqttd's v5 decoder does on its own with a packet type a client may not send
//!   (it panics), and that the gateway's guard turns the same bytes into an error;
//! - every seed of the fuzz corpus decodes completely;
//! - a bounded, seeded mutation run over the seeds (the fuzzer's idea, without its
//!   coverage feedback) that must not panic.

#![allow(missing_docs, clippy::unwrap_used)]

use bytes::BytesMut;
use fleetcast_broker::gateway::codec::Version;
use fleetcast_broker::gateway::decode::decode_stream;
use rumqttd::protocol::Protocol;

/// An MQTT 5 CONNECT for client id "x", then the given bytes.
fn after_v5_connect(rest: &[u8]) -> Vec<u8> {
    let mut v = vec![
        0x10, 0x0E, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0, 0, 1, b'x',
    ];
    v.extend_from_slice(rest);
    v
}

#[test]
fn rumqttd_v5_alone_panics_on_a_connack_from_a_client_and_the_guard_does_not() {
    let connack = [0x20, 0x03, 0x00, 0x00, 0x00];
    let raw = std::panic::catch_unwind(|| {
        let mut buf = BytesMut::from(&connack[..]);
        let _ = rumqttd::protocol::v5::V5.read_mut(&mut buf, 1024);
    });
    assert!(
        raw.is_err(),
        "rumqttd's v5 decoder no longer panics here: the guard in gateway::codec may be relaxed"
    );
    let mut buf = BytesMut::from(&connack[..]);
    assert!(Version::V5.read(&mut buf, 1024).is_err());
    let d = decode_stream(&after_v5_connect(&connack), 1024);
    assert_eq!(d.packets, 1, "{d:?}");
    assert!(d.error.is_some());
}

fn seeds() -> Vec<(String, Vec<u8>)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/seeds");
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_seed_decodes_completely() {
    let seeds = seeds();
    assert!(seeds.len() >= 9);
    for (name, bytes) in &seeds {
        let d = decode_stream(bytes, 131_072);
        if name.starts_with("v31") {
            assert_eq!(d.error.as_deref(), Some("unsupported protocol"), "{name}");
            continue;
        }
        assert_eq!(d.error, None, "{name}: {d:?}");
        assert!(d.packets >= 1, "{name}");
        if name.ends_with("-session") {
            assert_eq!(d.packets, 12, "{name}: {d:?}");
            assert_eq!(d.valid_publishes, 3, "{name}");
        }
    }
}

#[test]
fn the_session_seeds_go_through_the_gateways_own_checks() {
    // The fuzzed client is a driver account that may also follow the fleet: its locations,
    // one filter of three and the UNSUBSCRIBE go through; "a/b" is outside its policy
    // (3.1.1 closes the connection, 5 refuses the publish), and the acks at the end were
    // never asked for.
    let seeds = seeds();
    for (name, closed) in [
        ("v4-session", "policy_violation"),
        ("v5-session", "protocol_error"),
    ] {
        let (_, bytes) = seeds.iter().find(|(n, _)| n == name).unwrap();
        let d = decode_stream(bytes, 131_072);
        assert_eq!(d.closed, Some(closed), "{name}: {d:?}");
        assert_eq!(d.forwarded, 4, "{name}: {d:?}");
    }
}

/// xorshift64*: a fixed sequence, so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn mutated_seeds_never_panic() {
    let seeds = seeds();
    let mut rng = Rng(0x5EED_F1EE_7CA5_7000);
    let mut decoded = 0usize;
    for _ in 0..20_000 {
        let (_, seed) = &seeds[rng.below(seeds.len())];
        let mut data = seed.clone();
        for _ in 0..1 + rng.below(8) {
            let at = rng.below(data.len());
            match rng.below(4) {
                0 => data[at] = rng.next() as u8,
                1 => data[at] ^= 1 << rng.below(8),
                2 => data.truncate(at),
                _ => data.insert(at, rng.next() as u8),
            }
            if data.is_empty() {
                data.push(0x10);
            }
        }
        for max in [131_072, 64] {
            decoded += decode_stream(&data, max).packets;
        }
    }
    // Mutations leave most streams partly decodable; a run that decodes nothing is not
    // exercising the codecs at all.
    assert!(decoded > 10_000, "{decoded}");
}
