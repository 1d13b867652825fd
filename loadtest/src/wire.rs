//! MQTT 3.1.1 frames for the load tester, written by hand.
//!
//! The load tester must cost less per connection than the broker it measures, so it keeps
//! no client library per connection: a socket, a small read buffer, and these encoders and
//! a frame splitter.

/// Appends the remaining-length varint.
fn put_len(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
}

/// A fixed header (type byte, remaining length) in front of `body`.
pub fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(first);
    put_len(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// CONNECT with a clean session.
pub fn connect(client_id: &str, keep_alive: u16, credentials: Option<(&str, &str)>) -> Vec<u8> {
    let mut body = Vec::with_capacity(32 + client_id.len());
    put_str(&mut body, b"MQTT");
    body.push(4);
    let mut flags = 0x02;
    if credentials.is_some() {
        flags |= 0xC0;
    }
    body.push(flags);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    put_str(&mut body, client_id.as_bytes());
    if let Some((u, p)) = credentials {
        put_str(&mut body, u.as_bytes());
        put_str(&mut body, p.as_bytes());
    }
    frame(0x10, &body)
}

/// PUBLISH at QoS 0 or 1 (`pkid` used only at QoS 1), appended to `out`.
pub fn publish(out: &mut Vec<u8>, topic: &str, payload: &[u8], qos: u8, pkid: u16) {
    let len = 2 + topic.len() + if qos > 0 { 2 } else { 0 } + payload.len();
    out.push(0x30 | (qos.min(1) << 1));
    put_len(out, len);
    put_str(out, topic.as_bytes());
    if qos > 0 {
        out.extend_from_slice(&pkid.to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// SUBSCRIBE to one filter.
pub fn subscribe(filter: &str, qos: u8, pkid: u16) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    put_str(&mut body, filter.as_bytes());
    body.push(qos.min(1));
    frame(0x82, &body)
}

/// PUBACK.
pub fn puback(out: &mut Vec<u8>, pkid: u16) {
    out.extend_from_slice(&[0x40, 0x02]);
    out.extend_from_slice(&pkid.to_be_bytes());
}

/// PINGREQ.
pub const PINGREQ: [u8; 2] = [0xC0, 0x00];
/// DISCONNECT.
pub const DISCONNECT: [u8; 2] = [0xE0, 0x00];

/// A frame read from the broker.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// CONNACK with its return code.
    ConnAck(u8),
    /// SUBACK with its first return code.
    SubAck(u8),
    /// PUBLISH.
    Publish {
        /// QoS.
        qos: u8,
        /// Packet id (0 at QoS 0).
        pkid: u16,
        /// Topic.
        topic: &'a [u8],
        /// Payload.
        payload: &'a [u8],
    },
    /// PUBACK for one of ours.
    PubAck(u16),
    /// Anything else (PINGRESP...).
    Other(u8),
}

/// Splits the first complete frame off `buf`: Ok(None) when more bytes are needed,
/// Ok(Some((frame, length))) otherwise.
///
/// # Errors
/// A malformed frame.
pub fn next_frame(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, &'static str> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let mut len = 0usize;
    let mut header = 0;
    for (i, b) in buf[1..].iter().take(4).enumerate() {
        len |= usize::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            header = i + 2;
            break;
        }
    }
    if header == 0 {
        return if buf.len() >= 5 {
            Err("bad remaining length")
        } else {
            Ok(None)
        };
    }
    let total = header + len;
    if buf.len() < total {
        return Ok(None);
    }
    let body = &buf[header..total];
    let kind = buf[0] >> 4;
    let frame = match kind {
        2 => Frame::ConnAck(*body.get(1).ok_or("short CONNACK")?),
        9 => Frame::SubAck(*body.get(2).ok_or("short SUBACK")?),
        4 => Frame::PubAck(u16::from_be_bytes([
            *body.first().ok_or("short PUBACK")?,
            *body.get(1).ok_or("short PUBACK")?,
        ])),
        3 => {
            let qos = (buf[0] >> 1) & 3;
            let tl = usize::from(u16::from_be_bytes([
                *body.first().ok_or("short")?,
                *body.get(1).ok_or("short")?,
            ]));
            let mut at = 2 + tl;
            let topic = body.get(2..at).ok_or("short topic")?;
            let mut pkid = 0;
            if qos > 0 {
                pkid = u16::from_be_bytes([
                    *body.get(at).ok_or("short")?,
                    *body.get(at + 1).ok_or("short")?,
                ]);
                at += 2;
            }
            Frame::Publish {
                qos,
                pkid,
                topic,
                payload: body.get(at..).ok_or("short payload")?,
            }
        }
        k => Frame::Other(k),
    };
    Ok(Some((frame, total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_round_trips_through_the_splitter() {
        let mut out = Vec::new();
        publish(&mut out, "a/b", &vec![7u8; 300], 1, 9);
        publish(&mut out, "c", b"x", 0, 0);
        let (f, n) = next_frame(&out).expect("ok").expect("frame");
        assert_eq!(
            f,
            Frame::Publish {
                qos: 1,
                pkid: 9,
                topic: b"a/b",
                payload: &[7u8; 300]
            }
        );
        let (f2, n2) = next_frame(&out[n..]).expect("ok").expect("frame");
        assert_eq!(
            f2,
            Frame::Publish {
                qos: 0,
                pkid: 0,
                topic: b"c",
                payload: b"x"
            }
        );
        assert_eq!(n + n2, out.len());
        assert_eq!(next_frame(&out[..n - 1]), Ok(None));
    }

    #[test]
    fn acks_and_connect() {
        assert_eq!(
            next_frame(&[0x20, 2, 0, 5]).expect("ok"),
            Some((Frame::ConnAck(5), 4))
        );
        assert_eq!(
            next_frame(&[0x90, 3, 0, 1, 0x80]).expect("ok"),
            Some((Frame::SubAck(0x80), 5))
        );
        assert_eq!(
            next_frame(&[0x40, 2, 1, 2]).expect("ok"),
            Some((Frame::PubAck(258), 4))
        );
        let c = connect("lt-1", 60, Some(("u", "p")));
        assert_eq!(c[0], 0x10);
        assert_eq!(&c[4..8], b"MQTT");
        assert_eq!(c[9], 0xC2);
    }
}
