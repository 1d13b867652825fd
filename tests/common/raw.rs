//! Raw MQTT 3.1.1 and 5 frames built byte by byte, and a reader for whole frames off a
//! socket: for the tests that send what a well-behaved client library never would
//! (reserved bits, packet id 0, topic aliases, bytes that are not UTF-8, pipelining).

use super::{frame, PATIENCE};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

/// An MQTT string or binary field: a 16-bit length, then the bytes.
pub fn put(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

/// An MQTT 5 ack, CONNACK or DISCONNECT (one length byte) whose variable header is
/// `fixed` bytes before its properties, with the properties checked to be one Reason String
/// (or none) and taken out: what is left compares byte for byte, whatever the wording.
#[allow(dead_code)]
pub fn without_reason(packet: &[u8], fixed: usize) -> Vec<u8> {
    assert!(packet.len() >= 2 + fixed, "too short: {packet:02x?}");
    assert_eq!(
        usize::from(packet[1]) + 2,
        packet.len(),
        "one whole packet: {packet:02x?}"
    );
    let props = &packet[2 + fixed..];
    if let Some((&len, list)) = props.split_first() {
        assert_eq!(
            usize::from(len),
            list.len(),
            "property length: {packet:02x?}"
        );
        if let Some((&id, string)) = list.split_first() {
            assert_eq!(id, 0x1F, "a Reason String: {packet:02x?}");
            let n = usize::from(u16::from_be_bytes([string[0], string[1]]));
            assert_eq!(n + 2, string.len(), "the whole string: {packet:02x?}");
            std::str::from_utf8(&string[2..]).expect("UTF-8");
        }
    }
    let mut out = vec![packet[0], (fixed + 1) as u8];
    out.extend_from_slice(&packet[2..2 + fixed]);
    out.push(0);
    out
}

/// What a CONNECT carries besides its client id.
#[derive(Clone, Default)]
pub struct Hello<'a> {
    /// 4 (3.1.1) or 5.
    pub level: u8,
    /// Extra bits OR-ed into the connect flags (bit 0 is the reserved one).
    pub extra_flags: u8,
    /// MQTT 5 CONNECT properties, already encoded (without their length).
    pub props: &'a [u8],
    /// Will topic, payload and retain flag (QoS 0).
    pub will: Option<(&'a [u8], &'a [u8], bool)>,
    /// Keepalive, seconds.
    pub keep_alive: u16,
}

/// A CONNECT (clean session) of `client_id` as `hello` describes it.
pub fn connect(client_id: &str, hello: &Hello) -> Vec<u8> {
    let v5 = hello.level == 5;
    let mut body = Vec::new();
    put(&mut body, b"MQTT");
    body.push(hello.level);
    let mut flags = 0x02 | hello.extra_flags;
    if let Some((_, _, retain)) = hello.will {
        flags |= 0x04 | if retain { 0x20 } else { 0 };
    }
    body.push(flags);
    body.extend_from_slice(&hello.keep_alive.to_be_bytes());
    if v5 {
        body.push(hello.props.len() as u8);
        body.extend_from_slice(hello.props);
    }
    put(&mut body, client_id.as_bytes());
    if let Some((topic, payload, _)) = hello.will {
        if v5 {
            body.push(0);
        }
        put(&mut body, topic);
        put(&mut body, payload);
    }
    frame(0x10, &body)
}

/// A plain CONNECT at `level` with keepalive 30 s.
pub fn plain_connect(client_id: &str, level: u8) -> Vec<u8> {
    connect(
        client_id,
        &Hello {
            level,
            keep_alive: 30,
            ..Hello::default()
        },
    )
}

/// A PUBLISH at `qos` (packet id `pkid` above QoS 0); `props` are MQTT 5 properties
/// (`None` for 3.1.1).
pub fn publish(
    topic: &[u8],
    payload: &[u8],
    qos: u8,
    pkid: u16,
    retain: bool,
    props: Option<&[u8]>,
) -> Vec<u8> {
    let mut body = Vec::new();
    put(&mut body, topic);
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    if let Some(p) = props {
        body.push(p.len() as u8);
        body.extend_from_slice(p);
    }
    body.extend_from_slice(payload);
    frame(0x30 | (qos << 1) | u8::from(retain), &body)
}

/// A SUBSCRIBE of one filter at QoS 1 (`v5`: with an empty property length).
pub fn subscribe(filter: &str, pkid: u16, v5: bool) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    if v5 {
        body.push(0);
    }
    put(&mut body, filter.as_bytes());
    body.push(1);
    frame(0x82, &body)
}

/// An UNSUBSCRIBE of one filter.
pub fn unsubscribe(filter: &str, pkid: u16, v5: bool) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    if v5 {
        body.push(0);
    }
    put(&mut body, filter.as_bytes());
    frame(0xA2, &body)
}

/// One whole frame from the server (fixed header included), or None when the connection
/// closed or nothing came within `wait`.
pub async fn read_frame(s: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
    timeout(wait, async {
        let mut out = vec![0u8; 1];
        s.read_exact(&mut out).await.ok()?;
        let mut len = 0usize;
        for shift in 0..4 {
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.ok()?;
            out.push(b[0]);
            len |= usize::from(b[0] & 0x7F) << (7 * shift);
            if b[0] & 0x80 == 0 {
                break;
            }
        }
        let at = out.len();
        out.resize(at + len, 0);
        s.read_exact(&mut out[at..]).await.ok()?;
        Some(out)
    })
    .await
    .ok()
    .flatten()
}

/// Whether the server closes the connection (EOF or reset) within [`PATIENCE`], reading
/// and keeping whatever it sent before.
pub async fn closed_after(s: &mut TcpStream) -> (bool, Vec<u8>) {
    let mut got = Vec::new();
    let r = timeout(PATIENCE, async {
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    (r.is_ok(), got)
}
