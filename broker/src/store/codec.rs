//! The store's records, byte by byte: a version byte first, lengths before every field, so
//! that a damaged record is reported as damaged instead of read as something else.
//!
//! - retained (key: the topic): `[2][qos][u32 len][MQTT 5 properties, see props.rs]
//!   [payload...]`; `[1][qos][payload...]` (no properties) is read too.
//! - session (key: the client id): `[1]`, the u64 unix second it expires at (0: connected,
//!   or never), its u32 expiry interval (s), a u32 count of filters, each `[u16 len][filter][qos]`, a u32 count of queued messages,
//!   each `[u16 len][topic][u32 len][payload][qos]`.

use super::props::Props;
use bytes::{Buf, BufMut, Bytes};

const RECORD_VERSION: u8 = 1;

/// A retained message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retained {
    /// Its topic.
    pub topic: Bytes,
    /// Its payload (never empty: an empty one deletes).
    pub payload: Bytes,
    /// The QoS it was published at.
    pub qos: u8,
    /// Its MQTT 5 properties, when it had any worth keeping.
    pub props: Option<Props>,
}

/// A message a persistent session is owed: queued while it was away, or sent and not
/// acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// Its topic.
    pub topic: Bytes,
    /// Its payload.
    pub payload: Bytes,
    /// The QoS it is due at (1 or 2).
    pub qos: u8,
}

/// A persistent session (`clean_session=false`) as kept on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedSession {
    /// Its client id.
    pub client_id: String,
    /// When it ends if its client does not come back (unix seconds); 0: never, or while
    /// connected.
    pub expires_at: u64,
    /// How long it outlives a connection (s; `u32::MAX`: for ever).
    pub expiry: u32,
    /// Its subscriptions: filter and QoS.
    pub filters: Vec<(String, u8)>,
    /// What it is owed, oldest first.
    pub queued: Vec<Queued>,
}

/// The retained record's version with properties.
const RETAINED_VERSION: u8 = 2;

/// Encodes a retained message's value.
pub(super) fn encode_retained(r: &Retained) -> Vec<u8> {
    let mut props = Vec::new();
    if let Some(p) = &r.props {
        p.encode(&mut props);
    }
    let mut out = Vec::with_capacity(r.payload.len() + props.len() + 6);
    out.put_u8(RETAINED_VERSION);
    out.put_u8(r.qos);
    out.put_u32(props.len() as u32);
    out.put_slice(&props);
    out.put_slice(&r.payload);
    out
}

/// Decodes a retained message stored under `topic`.
pub(super) fn decode_retained(topic: &[u8], value: &[u8]) -> Result<Retained, String> {
    let (qos, props, payload) = match value {
        [RECORD_VERSION, qos @ 0..=2, payload @ ..] => (*qos, None, payload),
        [RETAINED_VERSION, qos @ 0..=2, rest @ ..] => {
            let mut r = rest;
            let len = count(&mut r)?;
            let props = take(&mut r, len)?;
            let props = (!props.is_empty())
                .then(|| Props::decode(props))
                .transpose()?;
            (*qos, props, r)
        }
        _ => return Err("malformed record".into()),
    };
    if payload.is_empty() {
        return Err("empty payload".into());
    }
    Ok(Retained {
        topic: Bytes::copy_from_slice(topic),
        payload: Bytes::copy_from_slice(payload),
        qos,
        props,
    })
}

/// Encodes a session's value.
pub(super) fn encode_session(s: &SavedSession) -> Vec<u8> {
    let size: usize = s.filters.iter().map(|(f, _)| f.len() + 3).sum::<usize>()
        + s.queued
            .iter()
            .map(|q| q.topic.len() + q.payload.len() + 7)
            .sum::<usize>();
    let mut out = Vec::with_capacity(size + 9);
    out.put_u8(RECORD_VERSION);
    out.put_u64(s.expires_at);
    out.put_u32(s.expiry);
    out.put_u32(s.filters.len() as u32);
    for (filter, qos) in &s.filters {
        put_short(&mut out, filter.as_bytes());
        out.put_u8(*qos);
    }
    out.put_u32(s.queued.len() as u32);
    for q in &s.queued {
        put_short(&mut out, &q.topic);
        out.put_u32(q.payload.len() as u32);
        out.put_slice(&q.payload);
        out.put_u8(q.qos);
    }
    out
}

/// Topics and filters are MQTT strings: at most 65,535 bytes, so a u16 length holds them.
fn put_short(out: &mut Vec<u8>, b: &[u8]) {
    let len = b.len().min(usize::from(u16::MAX));
    out.put_u16(len as u16);
    out.put_slice(&b[..len]);
}

/// Decodes the session of `client_id`.
pub(super) fn decode_session(client_id: &str, value: &[u8]) -> Result<SavedSession, String> {
    let mut r = value;
    if take(&mut r, 1)?[0] != RECORD_VERSION {
        return Err("unknown record version".into());
    }
    let expires_at = take(&mut r, 8)?.get_u64();
    let expiry = take(&mut r, 4)?.get_u32();
    let filters_len = count(&mut r)?;
    let mut filters = Vec::with_capacity(filters_len.min(1024));
    for _ in 0..filters_len {
        let filter = short(&mut r)?;
        let filter = std::str::from_utf8(filter).map_err(|_| "filter not UTF-8")?;
        filters.push((filter.to_owned(), qos(&mut r)?));
    }
    let queued_len = count(&mut r)?;
    let mut queued = Vec::with_capacity(queued_len.min(1024));
    for _ in 0..queued_len {
        let topic = Bytes::copy_from_slice(short(&mut r)?);
        let len = count(&mut r)?;
        let payload = Bytes::copy_from_slice(take(&mut r, len)?);
        queued.push(Queued {
            topic,
            payload,
            qos: qos(&mut r)?,
        });
    }
    if !r.is_empty() {
        return Err("trailing bytes".into());
    }
    Ok(SavedSession {
        client_id: client_id.to_owned(),
        expires_at,
        expiry,
        filters,
        queued,
    })
}

fn take<'a>(r: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if r.len() < n {
        return Err("truncated record".into());
    }
    let (head, tail) = r.split_at(n);
    *r = tail;
    Ok(head)
}

fn count(r: &mut &[u8]) -> Result<usize, String> {
    let mut b = take(r, 4)?;
    Ok(b.get_u32() as usize)
}

fn short<'a>(r: &mut &'a [u8]) -> Result<&'a [u8], String> {
    let mut b = take(r, 2)?;
    let len = usize::from(b.get_u16());
    take(r, len)
}

fn qos(r: &mut &[u8]) -> Result<u8, String> {
    match take(r, 1)?[0] {
        q @ 0..=2 => Ok(q),
        _ => Err("QoS out of range".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> SavedSession {
        SavedSession {
            client_id: "c".into(),
            expires_at: 1_800_000_000,
            expiry: 3600,
            filters: vec![("a/+".into(), 1), ("b/#".into(), 2)],
            queued: vec![
                Queued {
                    topic: Bytes::from("a/1"),
                    payload: Bytes::from(vec![0u8, 255, 7]),
                    qos: 1,
                },
                Queued {
                    topic: Bytes::from("b/2/3"),
                    payload: Bytes::new(),
                    qos: 2,
                },
            ],
        }
    }

    #[test]
    fn records_round_trip() {
        let s = session();
        assert_eq!(decode_session("c", &encode_session(&s)), Ok(s));
        let kept = Retained {
            topic: Bytes::from("t/1"),
            payload: Bytes::from("{}"),
            qos: 1,
            props: Some(Props {
                content_type: Some("application/json".into()),
                expires_at: Some(1_800_000_000),
                ..Props::default()
            }),
        };
        assert_eq!(
            decode_retained(b"t/1", &encode_retained(&kept)),
            Ok(kept.clone())
        );
        let plain = Retained {
            props: None,
            ..kept
        };
        assert_eq!(
            decode_retained(b"t/1", &encode_retained(&plain)),
            Ok(plain.clone())
        );
        let v1 = decode_retained(b"t/1", &[1, 1, b'{', b'}']).expect("version 1 read");
        assert_eq!(v1, plain);
    }

    #[test]
    fn every_truncation_and_bad_byte_is_an_error_not_a_panic() {
        let bytes = encode_session(&session());
        for cut in 0..bytes.len() {
            assert!(decode_session("c", &bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(decode_session("c", &extra).is_err());
        let mut bad_qos = bytes;
        let last = bad_qos.len() - 1;
        bad_qos[last] = 9;
        assert!(decode_session("c", &bad_qos).is_err());
        assert!(
            decode_retained(b"t", &[RECORD_VERSION, 0]).is_err(),
            "empty payload"
        );
        assert!(decode_retained(b"t", &[7, 0, 1]).is_err(), "version");
        assert!(
            decode_retained(b"t", &[2, 0, 0, 0, 0, 9]).is_err(),
            "props past the end"
        );
        assert!(decode_retained(b"t", &[]).is_err());
    }
}
