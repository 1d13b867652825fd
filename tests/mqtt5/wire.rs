//! MQTT 5 packets built and parsed byte by byte, properties included. The conformance
//! tests need what no client library shows: whether a PUBLISH on the wire carried a
//! Topic Alias, how large each packet was, how many QoS 1 PUBLISHes came before an ack,
//! the exact properties of a CONNACK. So this codec hides nothing and accepts nothing
//! the spec calls malformed (a parse failure fails the test with the bytes).

use std::fmt::Write as _;

pub use crate::common::frame;

/// The property identifiers the tests use (MQTT 5, 2.2.2.2).
pub mod id {
    pub const MESSAGE_EXPIRY: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_ID: u8 = 0x0B;
    pub const SESSION_EXPIRY: u8 = 0x11;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const REASON_STRING: u8 = 0x1F;
    pub const WILL_DELAY: u8 = 0x18;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
}

/// A property value, typed as the spec types each identifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Byte(u8),
    U16(u16),
    U32(u32),
    Var(u32),
    Str(String),
    Bin(Vec<u8>),
    Pair(String, String),
}

/// Reads one property value of a given type.
type ReadValue = fn(&mut Reader) -> Result<Value, String>;

/// The type the spec gives each property identifier; None for an unknown one, which
/// makes the packet malformed.
fn kind(id: u8) -> Option<ReadValue> {
    Some(match id {
        0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => |r| Ok(Value::Byte(r.u8()?)),
        0x13 | 0x21 | 0x22 | 0x23 => |r| Ok(Value::U16(r.u16()?)),
        0x02 | 0x11 | 0x18 | 0x27 => |r| Ok(Value::U32(r.u32()?)),
        0x0B => |r| Ok(Value::Var(r.var()?)),
        0x03 | 0x08 | 0x12 | 0x15 | 0x1A | 0x1C | 0x1F => |r| Ok(Value::Str(r.string()?)),
        0x09 | 0x16 => |r| Ok(Value::Bin(r.bin()?.to_vec())),
        0x26 => |r| Ok(Value::Pair(r.string()?, r.string()?)),
        _ => return None,
    })
}

/// A property list in wire order (order matters for user properties).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Props(pub Vec<(u8, Value)>);

impl Props {
    pub fn new() -> Props {
        Props::default()
    }

    pub fn u16(mut self, id: u8, v: u16) -> Props {
        self.0.push((id, Value::U16(v)));
        self
    }

    pub fn u32(mut self, id: u8, v: u32) -> Props {
        self.0.push((id, Value::U32(v)));
        self
    }

    pub fn var(mut self, id: u8, v: u32) -> Props {
        self.0.push((id, Value::Var(v)));
        self
    }

    pub fn str(mut self, id: u8, v: &str) -> Props {
        self.0.push((id, Value::Str(v.into())));
        self
    }

    pub fn bin(mut self, id: u8, v: &[u8]) -> Props {
        self.0.push((id, Value::Bin(v.into())));
        self
    }

    pub fn user(mut self, k: &str, v: &str) -> Props {
        self.0
            .push((id::USER_PROPERTY, Value::Pair(k.into(), v.into())));
        self
    }

    pub fn get(&self, id: u8) -> Option<&Value> {
        self.0.iter().find(|(i, _)| *i == id).map(|(_, v)| v)
    }

    pub fn has(&self, id: u8) -> bool {
        self.get(id).is_some()
    }

    /// A numeric property of any width.
    pub fn num(&self, id: u8) -> Option<u32> {
        match self.get(id)? {
            Value::Byte(v) => Some(u32::from(*v)),
            Value::U16(v) => Some(u32::from(*v)),
            Value::U32(v) | Value::Var(v) => Some(*v),
            _ => None,
        }
    }

    pub fn string(&self, id: u8) -> Option<&str> {
        match self.get(id)? {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn users(&self) -> Vec<(String, String)> {
        self.0
            .iter()
            .filter_map(|(_, v)| match v {
                Value::Pair(k, v) => Some((k.clone(), v.clone())),
                _ => None,
            })
            .collect()
    }

    /// The encoded list, its variable byte length first.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        for (id, v) in &self.0 {
            put_var(&mut body, u32::from(*id));
            match v {
                Value::Byte(b) => body.push(*b),
                Value::U16(n) => body.extend_from_slice(&n.to_be_bytes()),
                Value::U32(n) => body.extend_from_slice(&n.to_be_bytes()),
                Value::Var(n) => put_var(&mut body, *n),
                Value::Str(s) => put(&mut body, s.as_bytes()),
                Value::Bin(b) => put(&mut body, b),
                Value::Pair(k, v) => {
                    put(&mut body, k.as_bytes());
                    put(&mut body, v.as_bytes());
                }
            }
        }
        let mut out = Vec::new();
        put_var(&mut out, body.len() as u32);
        out.extend(body);
        out
    }
}

/// A variable byte integer (1.5.5).
pub fn put_var(out: &mut Vec<u8>, mut n: u32) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            return;
        }
    }
}

/// A string or binary field: a 16-bit length, then the bytes.
pub fn put(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

/// A will message: QoS 0, not retained unless said.
#[derive(Clone, Default)]
pub struct Will {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    pub props: Props,
}

/// What a CONNECT says.
#[derive(Clone)]
pub struct Connect {
    pub client_id: String,
    pub clean_start: bool,
    pub keep_alive: u16,
    pub props: Props,
    pub will: Option<Will>,
    pub login: Option<(String, String)>,
}

impl Connect {
    /// Clean start, keep alive 30 s, no properties.
    pub fn new(client_id: &str) -> Connect {
        Connect {
            client_id: client_id.into(),
            clean_start: true,
            keep_alive: 30,
            props: Props::new(),
            will: None,
            login: None,
        }
    }

    pub fn props(mut self, props: Props) -> Connect {
        self.props = props;
        self
    }

    pub fn resume(mut self) -> Connect {
        self.clean_start = false;
        self
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        put(&mut body, b"MQTT");
        body.push(5);
        let mut flags = if self.clean_start { 0x02 } else { 0 };
        if let Some(w) = &self.will {
            flags |= 0x04 | if w.retain { 0x20 } else { 0 };
        }
        if self.login.is_some() {
            flags |= 0xC0;
        }
        body.push(flags);
        body.extend_from_slice(&self.keep_alive.to_be_bytes());
        body.extend(self.props.encode());
        put(&mut body, self.client_id.as_bytes());
        if let Some(w) = &self.will {
            body.extend(w.props.encode());
            put(&mut body, w.topic.as_bytes());
            put(&mut body, &w.payload);
        }
        if let Some((user, pass)) = &self.login {
            put(&mut body, user.as_bytes());
            put(&mut body, pass.as_bytes());
        }
        frame(0x10, &body)
    }
}

/// A PUBLISH (packet id only above QoS 0).
pub fn publish(
    topic: &str,
    payload: &[u8],
    qos: u8,
    pkid: u16,
    retain: bool,
    props: &Props,
) -> Vec<u8> {
    let mut body = Vec::new();
    put(&mut body, topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.extend(props.encode());
    body.extend_from_slice(payload);
    frame(0x30 | (qos << 1) | u8::from(retain), &body)
}

/// Subscription options byte (3.8.3.1).
pub fn options(qos: u8, no_local: bool, retain_as_published: bool, retain_handling: u8) -> u8 {
    qos | u8::from(no_local) << 2 | u8::from(retain_as_published) << 3 | retain_handling << 4
}

/// A SUBSCRIBE of `filters` (filter, options byte).
pub fn subscribe(pkid: u16, props: &Props, filters: &[(&str, u8)]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    body.extend(props.encode());
    for (f, o) in filters {
        put(&mut body, f.as_bytes());
        body.push(*o);
    }
    frame(0x82, &body)
}

/// A PUBACK with reason Success (the short form, 3.4.2.1).
pub fn puback(pkid: u16) -> Vec<u8> {
    frame(0x40, &pkid.to_be_bytes())
}

/// A DISCONNECT with a reason and properties.
pub fn disconnect(reason: u8, props: &Props) -> Vec<u8> {
    let mut body = vec![reason];
    body.extend(props.encode());
    frame(0xE0, &body)
}

/// A PUBLISH as received. Fields no test reads still show in failure messages.
#[allow(dead_code)]
#[derive(Clone, Debug)]
pub struct Publish {
    pub dup: bool,
    pub qos: u8,
    pub retain: bool,
    /// Empty when the sender used a topic alias alone.
    pub topic: String,
    pub pkid: u16,
    pub props: Props,
    pub payload: Vec<u8>,
    /// The whole packet's size on the wire, fixed header included (what Maximum Packet
    /// Size limits, 3.1.2.11.4).
    pub wire_len: usize,
}

impl Publish {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// A packet from the server. Fields no test reads still show in failure messages.
#[allow(dead_code)]
#[derive(Clone, Debug)]
pub enum Packet {
    ConnAck {
        session_present: bool,
        reason: u8,
        props: Props,
    },
    Publish(Publish),
    /// PUBACK, PUBREC, PUBREL or PUBCOMP: `kind` is the packet type (4 to 7).
    Ack {
        kind: u8,
        pkid: u16,
        reason: u8,
        props: Props,
    },
    SubAck {
        pkid: u16,
        props: Props,
        codes: Vec<u8>,
    },
    UnsubAck {
        pkid: u16,
    },
    PingResp,
    Disconnect {
        reason: u8,
        props: Props,
    },
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at + n;
        if end > self.b.len() {
            return Err(format!("{n} bytes past the end at {}", self.at));
        }
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn var(&mut self) -> Result<u32, String> {
        let mut n = 0u32;
        for shift in 0..4 {
            let b = self.u8()?;
            n |= u32::from(b & 0x7F) << (7 * shift);
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err("variable byte integer longer than 4 bytes".into())
    }

    fn bin(&mut self) -> Result<&'a [u8], String> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }

    fn string(&mut self) -> Result<String, String> {
        let b = self.bin()?;
        String::from_utf8(b.to_vec()).map_err(|_| format!("not UTF-8: {b:02x?}"))
    }

    fn props(&mut self) -> Result<Props, String> {
        let len = self.var()? as usize;
        let end = self.at + len;
        if end > self.b.len() {
            return Err(format!("property length {len} past the end"));
        }
        let mut out = Vec::new();
        while self.at < end {
            let id = self.var()?;
            let read = u8::try_from(id)
                .ok()
                .and_then(kind)
                .ok_or(format!("unknown property 0x{id:02x}"))?;
            out.push((id as u8, read(self)?));
        }
        if self.at != end {
            return Err("a property ran past the property length".into());
        }
        Ok(Props(out))
    }

    fn rest(&mut self) -> &'a [u8] {
        let s = &self.b[self.at..];
        self.at = self.b.len();
        s
    }

    fn left(&self) -> usize {
        self.b.len() - self.at
    }
}

/// Parses one whole frame (fixed header included).
pub fn parse(frame: &[u8]) -> Result<Packet, String> {
    parse_inner(frame).map_err(|e| format!("{e} in {}", hex(frame)))
}

fn parse_inner(frame: &[u8]) -> Result<Packet, String> {
    let mut r = Reader { b: frame, at: 1 };
    let len = r.var()? as usize;
    if r.left() != len {
        return Err(format!("remaining length {len}, {} bytes follow", r.left()));
    }
    let first = frame[0];
    Ok(match first >> 4 {
        2 => {
            let flags = r.u8()?;
            let reason = r.u8()?;
            let props = if r.left() > 0 {
                r.props()?
            } else {
                Props::new()
            };
            Packet::ConnAck {
                session_present: flags & 1 == 1,
                reason,
                props,
            }
        }
        3 => {
            let qos = (first >> 1) & 3;
            let topic = r.string()?;
            let pkid = if qos > 0 { r.u16()? } else { 0 };
            let props = r.props()?;
            Packet::Publish(Publish {
                dup: first & 8 != 0,
                qos,
                retain: first & 1 == 1,
                topic,
                pkid,
                props,
                payload: r.rest().to_vec(),
                wire_len: frame.len(),
            })
        }
        kind @ 4..=7 => {
            let pkid = r.u16()?;
            let reason = if r.left() > 0 { r.u8()? } else { 0 };
            let props = if r.left() > 0 {
                r.props()?
            } else {
                Props::new()
            };
            Packet::Ack {
                kind,
                pkid,
                reason,
                props,
            }
        }
        9 => {
            let pkid = r.u16()?;
            let props = r.props()?;
            Packet::SubAck {
                pkid,
                props,
                codes: r.rest().to_vec(),
            }
        }
        11 => Packet::UnsubAck { pkid: r.u16()? },
        13 => Packet::PingResp,
        14 => {
            let reason = if r.left() > 0 { r.u8()? } else { 0 };
            let props = if r.left() > 0 {
                r.props()?
            } else {
                Props::new()
            };
            Packet::Disconnect { reason, props }
        }
        t => return Err(format!("unexpected packet type {t}")),
    })
}

pub fn hex(b: &[u8]) -> String {
    let mut s = String::new();
    for (i, x) in b.iter().take(64).enumerate() {
        if i > 0 {
            s.push(' ');
        }
        let _ = write!(s, "{x:02x}");
    }
    if b.len() > 64 {
        let _ = write!(s, " ... ({} bytes)", b.len());
    }
    s
}

#[test]
fn properties_round_trip() {
    let p = Props::new()
        .user("k", "1")
        .user("k", "2")
        .var(id::SUBSCRIPTION_ID, 300)
        .u32(id::MESSAGE_EXPIRY, 7)
        .bin(id::CORRELATION_DATA, b"\x00\xff");
    let bytes = publish("a/b", b"x", 1, 9, true, &p);
    match parse(&bytes).unwrap() {
        Packet::Publish(got) => {
            assert_eq!(got.props, p);
            assert_eq!((got.topic.as_str(), got.pkid, got.retain), ("a/b", 9, true));
            assert_eq!(got.payload, b"x");
            assert_eq!(got.wire_len, bytes.len());
        }
        other => panic!("{other:?}"),
    }
    assert!(
        parse(&[0x20, 0x03, 0, 0, 0x05]).is_err(),
        "truncated property length"
    );
}
