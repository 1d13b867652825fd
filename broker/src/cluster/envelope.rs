//! The bytes a message carries between nodes: who sent it, its place in that sender's
//! order, whether it is retained, and the MQTT payload. Live messages and retained
//! entries in the KV bucket use the same envelope, so a node can tell that a retained
//! entry is the one it already took live (same origin, same sequence) and not deliver
//! it twice.
//!
//! Layout: `0xFC`, flags (bit 0: retain), origin length (u8), origin (UTF-8), sequence
//! (u64 big endian), topic length (u16 big endian), topic, payload.

use bytes::{BufMut, Bytes, BytesMut};

const MAGIC: u8 = 0xFC;
const RETAIN: u8 = 1;

/// A message between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The incarnation of the node whose client published it.
    pub origin: String,
    /// Increases with every message one incarnation sends.
    pub seq: u64,
    /// The MQTT retain flag.
    pub retain: bool,
    /// The MQTT topic.
    pub topic: String,
    /// The MQTT payload.
    pub payload: Bytes,
}

impl Envelope {
    /// The wire form; None when the origin or topic is too long for the layout.
    pub fn encode(&self) -> Option<Bytes> {
        let origin = u8::try_from(self.origin.len()).ok()?;
        let topic = u16::try_from(self.topic.len()).ok()?;
        let mut b =
            BytesMut::with_capacity(14 + self.origin.len() + self.topic.len() + self.payload.len());
        b.put_u8(MAGIC);
        b.put_u8(if self.retain { RETAIN } else { 0 });
        b.put_u8(origin);
        b.put_slice(self.origin.as_bytes());
        b.put_u64(self.seq);
        b.put_u16(topic);
        b.put_slice(self.topic.as_bytes());
        b.put_slice(&self.payload);
        Some(b.freeze())
    }

    /// Reads the wire form; None for anything else (a peer's bytes are not trusted).
    pub fn decode(bytes: &Bytes) -> Option<Envelope> {
        let b = &bytes[..];
        if b.len() < 3 || b[0] != MAGIC {
            return None;
        }
        let retain = b[1] & RETAIN != 0;
        let origin_len = usize::from(b[2]);
        let mut at = 3;
        let origin = std::str::from_utf8(b.get(at..at + origin_len)?).ok()?;
        at += origin_len;
        let seq = u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?);
        at += 8;
        let topic_len = usize::from(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?));
        at += 2;
        let topic = std::str::from_utf8(b.get(at..at + topic_len)?).ok()?;
        at += topic_len;
        Some(Envelope {
            origin: origin.to_owned(),
            seq,
            retain,
            topic: topic.to_owned(),
            payload: bytes.slice(at..),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let e = Envelope {
            origin: "a:1f".into(),
            seq: 7,
            retain: true,
            topic: "drivers/d1/location".into(),
            payload: Bytes::from_static(b"{}"),
        };
        let wire = e.encode().expect("fits");
        assert_eq!(Envelope::decode(&wire), Some(e));
        for bad in [&b""[..], b"\xFC", b"{}", b"\xFC\x00\x09abc"] {
            assert_eq!(Envelope::decode(&Bytes::copy_from_slice(bad)), None);
        }
        let truncated = wire.slice(..wire.len() - 2);
        assert!(Envelope::decode(&truncated).is_some_and(|d| d.payload.is_empty()));
    }
}
