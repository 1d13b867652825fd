//! Client frames and identities for the gateway's unit tests, built by hand byte by byte
//! so that each test feeds the checks what a client's socket would, through the codec.

use super::codec::Version;
use super::hello::{admit, Hello, Identity};
use crate::policy::Grants;
use bytes::BytesMut;
use rumqttd::protocol::Packet;
use std::sync::Arc;

/// An MQTT string: a 16-bit length, then the bytes.
pub(super) fn put_str(v: &mut Vec<u8>, s: &str) {
    v.extend_from_slice(&(s.len() as u16).to_be_bytes());
    v.extend_from_slice(s.as_bytes());
}

/// A frame of type `first` around `body`.
pub(super) fn frame(first: u8, body: Vec<u8>) -> Vec<u8> {
    let mut v = vec![first];
    let mut len = body.len();
    loop {
        let byte = (len % 128) as u8;
        len /= 128;
        v.push(if len > 0 { byte | 0x80 } else { byte });
        if len == 0 {
            break;
        }
    }
    v.extend(body);
    v
}

/// Decodes a whole frame as the session does.
pub(super) fn read(version: Version, bytes: &[u8]) -> Packet {
    version
        .read(&mut BytesMut::from(bytes), 1 << 20)
        .expect("a well-formed frame")
}

/// A CONNECT: `props` are MQTT 5 properties; a will, if any, says "bye".
pub(super) fn connect(
    version: Version,
    clean: bool,
    id: &str,
    will: Option<&str>,
    props: &[u8],
) -> Vec<u8> {
    let v5 = version == Version::V5;
    let flags = if clean { 0x02 } else { 0 } | if will.is_some() { 0x04 } else { 0 };
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', if v5 { 5 } else { 4 }];
    body.extend_from_slice(&[flags, 0, 60]);
    if v5 {
        body.push(props.len() as u8);
        body.extend_from_slice(props);
    }
    put_str(&mut body, id);
    if let Some(topic) = will {
        if v5 {
            body.push(0);
        }
        put_str(&mut body, topic);
        put_str(&mut body, "bye");
    }
    frame(0x10, body)
}

/// A PUBLISH (the packet id only above QoS 0; MQTT 5 properties empty).
/// A CONNECT off the wire: `props` are MQTT 5 properties, the will says "bye".
pub(super) fn connect_packet(
    version: Version,
    clean: bool,
    id: &str,
    will: Option<&str>,
    props: &[u8],
) -> Packet {
    read(version, &connect(version, clean, id, will, props))
}

pub(super) fn publish(version: Version, qos: u8, pkid: u16, topic: &str, payload: &str) -> Vec<u8> {
    let mut body = Vec::new();
    put_str(&mut body, topic);
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    if version == Version::V5 {
        body.push(0);
    }
    body.extend_from_slice(payload.as_bytes());
    frame(0x30 | (qos << 1), body)
}

/// A SUBSCRIBE of `filters` at QoS 1 (MQTT 5 properties empty).
pub(super) fn subscribe(version: Version, pkid: u16, filters: &[&str]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    if version == Version::V5 {
        body.push(0);
    }
    for f in filters {
        put_str(&mut body, f);
        body.push(1);
    }
    frame(0x82, body)
}

/// An UNSUBSCRIBE of `filters` (MQTT 5 properties empty).
pub(super) fn unsubscribe(version: Version, pkid: u16, filters: &[&str]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    if version == Version::V5 {
        body.push(0);
    }
    for f in filters {
        put_str(&mut body, f);
    }
    frame(0xA2, body)
}

/// What a clean CONNECT of `client_id` without will or login comes to.
pub(super) fn hello(version: Version, client_id: &str) -> Hello {
    Hello {
        version,
        client_id: client_id.into(),
        assigned_id: false,
        clean_start: true,
        session_expiry: 0,
        expiry_capped: false,
        keep_alive: 60,
        keep_alive_ours: false,
        will: None,
        will_properties: None,
        takes: super::hello::Takes::ANYTHING,
        login: None,
    }
}

/// `client_id`, logged in as the account of that name with `grants`.
pub(super) fn identity(client_id: &str, grants: Grants) -> Identity {
    let hello = hello(Version::V5, client_id);
    admit(&hello, client_id.into(), Some(Arc::new(grants))).expect("no will to refuse")
}
