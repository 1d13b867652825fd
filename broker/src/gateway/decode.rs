//! Everything the gateway parses from a client's bytes, as one pure function, for the fuzz
//! target (`fuzz/`) and its regression tests.
//!
//! A session does socket and router work around these steps; the parsing itself is here in
//! the same order: CONNECT inspection, the version's codec (guarded, see [`super::codec`]),
//! the PUBLISH header read off the wire, topic and filter rules, the policy matcher and
//! location validation. None of it may panic on any input.

use super::codec::Version;
use super::frame::{self, ConnectKind};
use crate::{policy, validation};
use bytes::BytesMut;
use rumqttd::protocol::{Error as ProtocolError, Packet};

/// What a byte stream amounted to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    /// The version the CONNECT asked for, if it got that far.
    pub version: Option<Version>,
    /// Packets decoded, CONNECT included.
    pub packets: usize,
    /// PUBLISH packets whose topic the gateway accepts.
    pub valid_publishes: usize,
    /// Why decoding stopped early (a session would close the connection).
    pub error: Option<String>,
}

/// Runs `data` through the gateway's parsing as if it arrived on one connection.
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
    let mut buf = BytesMut::from(data);
    loop {
        let _ = frame::publish_qos_pkid(&buf);
        let packet = match version.read(&mut buf, max_packet_size) {
            Ok(p) => p,
            Err(ProtocolError::InsufficientBytes(_)) => return out,
            Err(e) => {
                out.error = Some(e.to_string());
                return out;
            }
        };
        out.packets += 1;
        match packet {
            Packet::Connect(c, _, will, _, _) => {
                let _ = frame::valid_client_id(&c.client_id, 128);
                if let Some(w) = will {
                    let _ = frame::valid_topic_name(&w.topic);
                }
            }
            Packet::Publish(p, _) if frame::valid_topic_name(&p.topic) => {
                out.valid_publishes += 1;
                let _ = validation::check(&p.topic, &p.payload, 1_800_000_000_000);
                if let Ok(t) = std::str::from_utf8(&p.topic) {
                    let _ = policy::matches("drivers/+/location", t);
                }
            }
            Packet::Subscribe(s, _) => {
                for f in &s.filters {
                    if frame::valid_topic_filter(&f.path) {
                        let _ = policy::matches(&f.path, "drivers/drv-1/location");
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
