//! The MQTT 5 properties of a retained message, as the store keeps them: what a subscriber
//! is given with it (payload format, content type, response topic, correlation data, user
//! properties) and when it expires, as a unix second rather than an interval, so that a
//! message's expiry runs on while fleetcast is down.
//!
//! Layout: a flags byte (1 format, 2 expiry, 4 content type, 8 response topic, 16
//! correlation data), the flagged fields in that order (`[u8]`, `[u64]`, then `[u16
//! len][bytes]` each), a u16 count of user properties, each `[u16 len][key][u16 len][value]`.

use bytes::{Buf, BufMut, Bytes};
use rumqttd::protocol::PublishProperties;

/// What the store keeps of a retained message's properties.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Props {
    /// Payload Format Indicator.
    pub format: Option<u8>,
    /// When it expires (unix seconds).
    pub expires_at: Option<u64>,
    /// Content Type.
    pub content_type: Option<String>,
    /// Response Topic.
    pub response_topic: Option<String>,
    /// Correlation Data.
    pub correlation_data: Option<Bytes>,
    /// User Properties, in order.
    pub user_properties: Vec<(String, String)>,
}

/// User Property keys starting with this are the gateway's own notes (`gateway/marks.rs`),
/// never a client's: not kept.
const MARK_PREFIX: char = '\u{0}';

impl Props {
    /// What to keep of `p`, published at unix second `now`; None when there is nothing.
    pub fn of(p: &PublishProperties, now: u64) -> Option<Props> {
        let props = Props {
            format: p.payload_format_indicator,
            expires_at: p.message_expiry_interval.map(|s| now + u64::from(s)),
            content_type: p.content_type.clone(),
            response_topic: p.response_topic.clone(),
            correlation_data: p.correlation_data.clone(),
            user_properties: p
                .user_properties
                .iter()
                .filter(|(k, _)| !k.starts_with(MARK_PREFIX))
                .cloned()
                .collect(),
        };
        (props != Props::default()).then_some(props)
    }

    /// Whether it has expired by unix second `now`.
    pub fn expired(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The properties to publish it with again at unix second `now` (the expiry it has left).
    pub fn publish(&self, now: u64) -> PublishProperties {
        PublishProperties {
            payload_format_indicator: self.format,
            message_expiry_interval: self
                .expires_at
                .map(|at| u32::try_from(at.saturating_sub(now)).unwrap_or(u32::MAX)),
            topic_alias: None,
            response_topic: self.response_topic.clone(),
            correlation_data: self.correlation_data.clone(),
            user_properties: self.user_properties.clone(),
            subscription_identifiers: Vec::new(),
            content_type: self.content_type.clone(),
        }
    }

    /// Appends the encoding.
    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        let flags = u8::from(self.format.is_some())
            | u8::from(self.expires_at.is_some()) << 1
            | u8::from(self.content_type.is_some()) << 2
            | u8::from(self.response_topic.is_some()) << 3
            | u8::from(self.correlation_data.is_some()) << 4;
        out.put_u8(flags);
        if let Some(f) = self.format {
            out.put_u8(f);
        }
        if let Some(at) = self.expires_at {
            out.put_u64(at);
        }
        for s in [&self.content_type, &self.response_topic]
            .into_iter()
            .flatten()
        {
            put_short(out, s.as_bytes());
        }
        if let Some(c) = &self.correlation_data {
            put_short(out, c);
        }
        let users = self.user_properties.len().min(usize::from(u16::MAX));
        out.put_u16(users as u16);
        for (k, v) in &self.user_properties[..users] {
            put_short(out, k.as_bytes());
            put_short(out, v.as_bytes());
        }
    }

    /// Decodes what [`Props::encode`] wrote, all of `r`.
    pub(super) fn decode(mut r: &[u8]) -> Result<Props, String> {
        let flags = take(&mut r, 1)?[0];
        let mut p = Props::default();
        if flags & 1 != 0 {
            p.format = Some(take(&mut r, 1)?[0]);
        }
        if flags & 2 != 0 {
            p.expires_at = Some(take(&mut r, 8)?.get_u64());
        }
        if flags & 4 != 0 {
            p.content_type = Some(text(&mut r)?);
        }
        if flags & 8 != 0 {
            p.response_topic = Some(text(&mut r)?);
        }
        if flags & 16 != 0 {
            p.correlation_data = Some(Bytes::copy_from_slice(short(&mut r)?));
        }
        let users = take(&mut r, 2)?.get_u16();
        for _ in 0..users {
            p.user_properties.push((text(&mut r)?, text(&mut r)?));
        }
        if flags >> 5 != 0 || !r.is_empty() {
            return Err("malformed properties".into());
        }
        Ok(p)
    }
}

/// MQTT strings and binary data are at most 65,535 bytes: a u16 length holds them.
fn put_short(out: &mut Vec<u8>, b: &[u8]) {
    let len = b.len().min(usize::from(u16::MAX));
    out.put_u16(len as u16);
    out.put_slice(&b[..len]);
}

fn take<'a>(r: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if r.len() < n {
        return Err("truncated properties".into());
    }
    let (head, tail) = r.split_at(n);
    *r = tail;
    Ok(head)
}

fn short<'a>(r: &mut &'a [u8]) -> Result<&'a [u8], String> {
    let len = usize::from(take(r, 2)?.get_u16());
    take(r, len)
}

fn text(r: &mut &[u8]) -> Result<String, String> {
    String::from_utf8(short(r)?.to_vec()).map_err(|_| "property not UTF-8".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_round_trip_with_the_expiry_running_on() {
        let published = PublishProperties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(60),
            content_type: Some("application/json".into()),
            response_topic: Some("replies/1".into()),
            correlation_data: Some(Bytes::from_static(b"\x00\x01")),
            user_properties: vec![
                ("k".into(), "v".into()),
                ("\u{0}fleetcast".into(), "r".into()),
            ],
            ..PublishProperties::default()
        };
        let kept = Props::of(&published, 1_000).expect("something to keep");
        assert_eq!(
            kept.user_properties,
            [("k".to_owned(), "v".to_owned())],
            "no marks"
        );
        let mut bytes = Vec::new();
        kept.encode(&mut bytes);
        let back = Props::decode(&bytes).expect("decodes");
        assert_eq!(back, kept);
        assert_eq!(back.publish(1_045).message_expiry_interval, Some(15));
        assert!(!back.expired(1_059) && back.expired(1_060));
        for cut in 0..bytes.len() {
            assert!(Props::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(Props::of(&PublishProperties::default(), 0), None);
    }
}
