//! Frame rules the gateway enforces before rumqttd sees a packet.
//!
//! rumqttd's codecs each parse one version and answer nothing on another. The gateway
//! reads the CONNECT's protocol name and level itself, picks the codec (see
//! [`super::codec`]), and answers MQTT 3.1 clients with 3.1.1's CONNACK 0x01. The topic and filter checks stop what the router
//! would otherwise answer by dropping the link (see `rumqttd-local-links.md`, edge 3).

/// What the first bytes of a connection say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectKind {
    /// Not enough bytes yet to tell.
    Incomplete,
    /// An MQTT 3.1.1 CONNECT: parse it with rumqttd's v4 codec.
    V311,
    /// An MQTT 5 CONNECT: parse it with rumqttd's v5 codec.
    V5,
    /// MQTT 3.1 (`MQIsdp`) or an unknown level: refuse with 3.1.1's CONNACK 0x01.
    Unsupported,
}

/// Why the first packet cannot be a CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The first packet is not CONNECT.
    #[error("first packet is not CONNECT (type {0})")]
    NotConnect(u8),
    /// The remaining length is malformed.
    #[error("malformed remaining length")]
    MalformedLength,
    /// The packet is larger than the limit.
    #[error("packet of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// The CONNECT is too short for its own header.
    #[error("malformed CONNECT")]
    Malformed,
    /// The CONNECT's reserved flag (bit 0 of the connect flags) is set: the server must
    /// close the connection (3.1.1 [MQTT-3.1.2-3]; MQTT 5 calls it a malformed packet).
    #[error("reserved CONNECT flag set")]
    ReservedFlag,
}

/// Why a topic name is refused, in the terms MQTT 5 answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicError {
    /// Not UTF-8, or holding U+0000: a malformed packet (MQTT 5 1.5.4, DISCONNECT 0x81;
    /// 3.1.1 1.5.3 closes the connection). The router would drop the link for it.
    Malformed,
    /// Empty, or with a wildcard: a protocol error (MQTT 5 3.3.2-2, 4.7.1; 0x82).
    Protocol,
    /// A `$` topic: well formed, but kept for the server (MQTT 5 0x90, topic name invalid).
    Reserved,
}

/// Whether a parsed publish is QoS 1 or 2. rumqttd keeps the QoS private, but its length
/// counts the packet id, which only those have.
pub fn above_qos0(p: &rumqttd::protocol::Publish) -> bool {
    p.len() > 2 + p.topic.len() + p.payload.len()
}

/// MQTT 3.1.1 PINGRESP.
pub const PINGRESP: [u8; 2] = [0xD0, 0x00];

/// Reads the fixed header's remaining length: `Ok(None)` when more bytes are needed,
/// otherwise `(header length, remaining length)`.
///
/// # Errors
/// More than four length bytes.
pub fn remaining_length(buf: &[u8]) -> Result<Option<(usize, usize)>, FrameError> {
    let mut len = 0usize;
    for (i, byte) in buf.iter().skip(1).take(4).enumerate() {
        len |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((i + 2, len)));
        }
    }
    if buf.len() >= 5 {
        Err(FrameError::MalformedLength)
    } else {
        Ok(None)
    }
}

/// Tells which MQTT version a connection's first bytes speak.
///
/// # Errors
/// The first packet is not a CONNECT, is larger than `max_size`, or is malformed.
pub fn inspect_connect(buf: &[u8], max_size: usize) -> Result<ConnectKind, FrameError> {
    let Some(&first) = buf.first() else {
        return Ok(ConnectKind::Incomplete);
    };
    if first != 0x10 {
        return Err(FrameError::NotConnect(first >> 4));
    }
    let Some((header, remaining)) = remaining_length(buf)? else {
        return Ok(ConnectKind::Incomplete);
    };
    if remaining > max_size {
        return Err(FrameError::TooLarge(remaining));
    }
    let body = &buf[header..];
    let frame_end = remaining.min(body.len());
    let body = &body[..frame_end];
    // Protocol name (u16 length + bytes) and level.
    let complete = body.len() == remaining;
    let need = |n: usize| {
        if body.len() >= n {
            Ok(true)
        } else if complete {
            Err(FrameError::Malformed)
        } else {
            Ok(false)
        }
    };
    if !need(2)? {
        return Ok(ConnectKind::Incomplete);
    }
    let name_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
    if !need(2 + name_len + 1)? {
        return Ok(ConnectKind::Incomplete);
    }
    let name = &body[2..2 + name_len];
    let level = body[2 + name_len];
    let kind = match (name, level) {
        (b"MQTT", 4) => ConnectKind::V311,
        (b"MQTT", 5) => ConnectKind::V5,
        _ => return Ok(ConnectKind::Unsupported),
    };
    // The connect flags follow the level; rumqttd ignores their reserved bit.
    if !need(2 + name_len + 2)? {
        return Ok(ConnectKind::Incomplete);
    }
    if body[2 + name_len + 1] & 0x01 != 0 {
        return Err(FrameError::ReservedFlag);
    }
    Ok(kind)
}

/// QoS and packet id of the PUBLISH frame at the start of `buf` (packet id 0 at QoS 0).
///
/// rumqttd keeps `Publish::qos` and `pkid` private, so the gateway reads them off the wire.
pub fn publish_qos_pkid(buf: &[u8]) -> Option<(u8, u16)> {
    let first = *buf.first()?;
    if first >> 4 != 3 {
        return None;
    }
    let qos = (first >> 1) & 3;
    if qos == 0 {
        return Some((0, 0));
    }
    let (header, _) = remaining_length(buf).ok()??;
    let topic_len = usize::from(u16::from_be_bytes([
        *buf.get(header)?,
        *buf.get(header + 1)?,
    ]));
    let at = header + 2 + topic_len;
    Some((qos, u16::from_be_bytes([*buf.get(at)?, *buf.get(at + 1)?])))
}

/// Why a PUBLISH or will topic name is refused, if it is: it must be UTF-8 without NUL,
/// non-empty, without wildcards, and not a `$` system topic.
pub fn topic_name_error(topic: &[u8]) -> Option<TopicError> {
    if topic.contains(&0) || std::str::from_utf8(topic).is_err() {
        return Some(TopicError::Malformed);
    }
    if topic.is_empty() || topic.iter().any(|&b| b == b'+' || b == b'#') {
        return Some(TopicError::Protocol);
    }
    if topic[0] == b'$' {
        return Some(TopicError::Reserved);
    }
    None
}

/// Whether a PUBLISH or will topic name is acceptable (see [`topic_name_error`]).
pub fn valid_topic_name(topic: &[u8]) -> bool {
    topic_name_error(topic).is_none()
}

/// Whether a subscription filter is acceptable to both MQTT and the router: `+` fills a
/// whole level, `#` only as the whole last level, no NUL, and `$` only as `$share/G/...`.
pub fn valid_topic_filter(filter: &str) -> bool {
    let filter = match filter.strip_prefix("$share/") {
        Some(rest) => match rest.split_once('/') {
            Some((group, f)) if !group.is_empty() && !group.contains(['+', '#']) => f,
            _ => return false,
        },
        None if filter.starts_with('$') => return false,
        None => filter,
    };
    if filter.is_empty() || filter.contains('\0') {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    let last = levels.len() - 1;
    levels.iter().enumerate().all(|(i, level)| match *level {
        "#" => i == last,
        "+" => true,
        l => !l.contains(['+', '#']),
    })
}

/// Whether a network client may use this id: the router silently refuses ids with
/// `+ # / $`, and the `fleetcast:` prefix is kept for in-process links.
pub fn valid_client_id(id: &str, max_len: usize) -> bool {
    !id.is_empty()
        && id.len() <= max_len
        && !id.contains(['+', '#', '/', '$', '\0'])
        && !id.starts_with(crate::local::LOCAL_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(name: &[u8], level: u8) -> Vec<u8> {
        let mut body = vec![0, name.len() as u8];
        body.extend_from_slice(name);
        body.extend_from_slice(&[level, 0x02, 0, 60, 0, 1, b'x']);
        let mut v = vec![0x10, body.len() as u8];
        v.extend(body);
        v
    }

    #[test]
    fn versions_are_told_apart() {
        assert_eq!(
            inspect_connect(&connect(b"MQTT", 4), 1024),
            Ok(ConnectKind::V311)
        );
        assert_eq!(
            inspect_connect(&connect(b"MQTT", 5), 1024),
            Ok(ConnectKind::V5)
        );
        assert_eq!(
            inspect_connect(&connect(b"MQIsdp", 3), 1024),
            Ok(ConnectKind::Unsupported)
        );
    }

    #[test]
    fn every_prefix_of_a_connect_is_incomplete() {
        let full = connect(b"MQTT", 4);
        for n in 0..9 {
            assert_eq!(
                inspect_connect(&full[..n], 1024),
                Ok(ConnectKind::Incomplete),
                "{n}"
            );
        }
    }

    #[test]
    fn the_reserved_connect_flag_is_an_error() {
        for level in [4, 5] {
            let mut c = connect(b"MQTT", level);
            c[9] |= 0x01;
            assert_eq!(inspect_connect(&c, 1024), Err(FrameError::ReservedFlag));
            // Not decided before the flags byte is there.
            assert_eq!(inspect_connect(&c[..9], 1024), Ok(ConnectKind::Incomplete));
        }
    }

    #[test]
    fn bad_first_packets_are_errors() {
        assert_eq!(
            inspect_connect(&[0x30, 0x00], 1024),
            Err(FrameError::NotConnect(3))
        );
        assert_eq!(
            inspect_connect(&[0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], 1024),
            Err(FrameError::MalformedLength)
        );
        assert_eq!(
            inspect_connect(&[0x10, 0x80, 0x10], 1024),
            Err(FrameError::TooLarge(2048))
        );
        // Complete frame too short for its protocol name.
        assert_eq!(
            inspect_connect(&[0x10, 0x02, 0x00, 0x04], 1024),
            Err(FrameError::Malformed)
        );
    }

    #[test]
    fn publish_header_is_read_off_the_wire() {
        // QoS 1, topic "a/b", pkid 0x0102, payload "x".
        let qos1 = [0x32, 0x08, 0x00, 0x03, b'a', b'/', b'b', 0x01, 0x02, b'x'];
        assert_eq!(publish_qos_pkid(&qos1), Some((1, 0x0102)));
        assert_eq!(
            publish_qos_pkid(&[0x30, 0x04, 0, 1, b'a', b'x']),
            Some((0, 0))
        );
        assert_eq!(publish_qos_pkid(&[0x82, 0x00]), None);
        assert_eq!(publish_qos_pkid(&qos1[..6]), None);
    }

    #[test]
    fn topic_and_filter_rules() {
        assert!(valid_topic_name(b"drivers/drv-1/location"));
        assert!(!valid_topic_name(b"drivers/+/location"));
        assert!(!valid_topic_name(b"$SYS/x"));
        assert!(!valid_topic_name(b""));
        assert_eq!(topic_name_error(b"a/\xff"), Some(TopicError::Malformed));
        assert_eq!(topic_name_error(b"a/\0"), Some(TopicError::Malformed));
        assert_eq!(topic_name_error(b"a/#"), Some(TopicError::Protocol));
        assert_eq!(topic_name_error(b""), Some(TopicError::Protocol));
        assert_eq!(topic_name_error(b"$SYS/x"), Some(TopicError::Reserved));
        assert_eq!(topic_name_error("caf\u{e9}/x".as_bytes()), None);
        for ok in [
            "#",
            "drivers/+/location",
            "drivers/#",
            "+",
            "$share/g/drivers/#",
        ] {
            assert!(valid_topic_filter(ok), "{ok}");
        }
        for bad in [
            "",
            "a/#/b",
            "a+/b",
            "$SYS/#",
            "$share//x",
            "$share/g",
            "a/b#",
        ] {
            assert!(!valid_topic_filter(bad), "{bad}");
        }
        assert!(valid_client_id("drv-000042", 128));
        assert!(!valid_client_id("a/b", 128));
        assert!(!valid_client_id(&"x".repeat(129), 128));
        assert!(!valid_client_id("fleetcast:bridge", 128));
    }
}
