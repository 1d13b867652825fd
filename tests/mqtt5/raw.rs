//! A raw MQTT 5 client over a TcpStream for the conformance tests: it sends the packets
//! of `wire`, reads whole frames into a buffer (a timed-out read loses nothing, so
//! "nothing more came within 1 s" can be asked mid-stream) and acks only when a test
//! says so, so the tests decide what the broker sees.

use crate::wire::{self, Connect, Packet, Props, Publish};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

/// Upper bound for anything that should come; what should not come is given its own
/// shorter wait by each test.
pub const PATIENCE: Duration = crate::common::PATIENCE;

/// What a broker says in its CONNACK.
#[derive(Clone, Debug)]
pub struct ConnAck {
    pub session_present: bool,
    pub reason: u8,
    pub props: Props,
}

pub struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
    /// Packets read while waiting for another kind.
    kept: VecDeque<Packet>,
    eof: bool,
    /// Which broker, for failure messages.
    pub who: String,
}

impl Raw {
    /// Connects and reads the CONNACK, whatever its reason code.
    pub async fn hello(addr: SocketAddr, who: &str, c: &Connect) -> (Raw, ConnAck) {
        let s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        let mut raw = Raw {
            s,
            buf: Vec::new(),
            kept: VecDeque::new(),
            eof: false,
            who: who.to_string(),
        };
        raw.send(&c.encode()).await;
        match raw.next(PATIENCE).await {
            Some(Packet::ConnAck {
                session_present,
                reason,
                props,
            }) => (
                raw,
                ConnAck {
                    session_present,
                    reason,
                    props,
                },
            ),
            other => panic!("[{who}] {}: expected a CONNACK, got {other:?}", c.client_id),
        }
    }

    /// Connects; panics unless the CONNACK accepts.
    pub async fn connect(addr: SocketAddr, who: &str, c: &Connect) -> (Raw, ConnAck) {
        let (raw, ack) = Raw::hello(addr, who, c).await;
        assert_eq!(ack.reason, 0, "[{who}] {} refused: {ack:?}", c.client_id);
        (raw, ack)
    }

    /// A clean-start connection without properties.
    pub async fn plain(addr: SocketAddr, who: &str, client_id: &str) -> Raw {
        Raw::connect(addr, who, &Connect::new(client_id)).await.0
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.s
            .write_all(bytes)
            .await
            .unwrap_or_else(|e| panic!("[{}] write failed: {e}", self.who));
    }

    /// The next packet within `wait`; None when nothing came or the connection closed
    /// (see [`Raw::is_closed`]).
    pub async fn next(&mut self, wait: Duration) -> Option<Packet> {
        if let Some(p) = self.kept.pop_front() {
            return Some(p);
        }
        self.read(wait).await
    }

    async fn read(&mut self, wait: Duration) -> Option<Packet> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(frame) = self.whole_frame() {
                return Some(
                    wire::parse(&frame).unwrap_or_else(|e| panic!("[{}] malformed: {e}", self.who)),
                );
            }
            if self.eof {
                return None;
            }
            let mut chunk = [0u8; 4096];
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.s.read(&mut chunk)).await {
                Err(_) => return None,
                Ok(Ok(0) | Err(_)) => self.eof = true,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn whole_frame(&mut self) -> Option<Vec<u8>> {
        let mut len = 0usize;
        let mut at = 1;
        loop {
            let b = *self.buf.get(at)?;
            len |= usize::from(b & 0x7F) << (7 * (at - 1));
            at += 1;
            if b & 0x80 == 0 {
                break;
            }
            assert!(at < 5, "[{}] remaining length too long", self.who);
        }
        if self.buf.len() < at + len {
            return None;
        }
        Some(self.buf.drain(..at + len).collect())
    }

    /// Whether the server closed the connection (seen by a read).
    pub fn is_closed(&self) -> bool {
        self.eof && self.kept.is_empty() && self.buf.is_empty()
    }

    /// Reads until the connection closes or `wait` passes, returning the DISCONNECT reason
    /// if one came, and whether it closed. PUBLISHes and the like in between are skipped.
    pub async fn end(&mut self, wait: Duration) -> (Option<u8>, bool) {
        let deadline = Instant::now() + wait;
        let mut reason = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(Packet::Disconnect { reason: r, .. }) => reason = Some(r),
                Some(_) => {}
                None => return (reason, self.is_closed()),
            }
        }
    }

    /// The next PUBLISH within `wait`, keeping other packets for later.
    pub async fn publish_within(&mut self, wait: Duration) -> Option<Publish> {
        if let Some(i) = self
            .kept
            .iter()
            .position(|p| matches!(p, Packet::Publish(_)))
        {
            if let Some(Packet::Publish(p)) = self.kept.remove(i) {
                return Some(p);
            }
        }
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read(left).await? {
                Packet::Publish(p) => return Some(p),
                Packet::Disconnect { reason, props } => panic!(
                    "[{}] DISCONNECT 0x{reason:02x} {props:?} while waiting for a PUBLISH",
                    self.who
                ),
                other => self.kept.push_back(other),
            }
        }
    }

    /// Every PUBLISH until none has come for `quiet` (QoS 1 ones acked, so that a
    /// broker's flow control never holds the rest back).
    pub async fn publishes_until_quiet(&mut self, quiet: Duration) -> Vec<Publish> {
        let mut out = Vec::new();
        while let Some(p) = self.publish_within(quiet).await {
            if p.qos == 1 {
                self.send(&wire::puback(p.pkid)).await;
            }
            out.push(p);
        }
        out
    }

    /// The next PUBLISH; panics with `what` if none comes within [`PATIENCE`].
    pub async fn expect_publish(&mut self, what: &str) -> Publish {
        match self.publish_within(PATIENCE).await {
            Some(p) => p,
            None => panic!(
                "[{}] expected a PUBLISH ({what}), none came within {PATIENCE:?}{}",
                self.who,
                if self.is_closed() {
                    " (connection closed)"
                } else {
                    ""
                }
            ),
        }
    }

    /// Waits for a packet `pick` takes, keeping the others (PUBLISHes among them).
    pub async fn expect<R>(&mut self, what: &str, pick: impl Fn(&Packet) -> Option<R>) -> R {
        if let Some(i) = self.kept.iter().position(|p| pick(p).is_some()) {
            let p = self.kept.remove(i).unwrap();
            return pick(&p).unwrap();
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read(left).await {
                Some(p) => match pick(&p) {
                    Some(r) => return r,
                    None => {
                        if let Packet::Disconnect { reason, props } = &p {
                            panic!(
                                "[{}] DISCONNECT 0x{reason:02x} {props:?} while waiting for {what}",
                                self.who
                            );
                        }
                        self.kept.push_back(p)
                    }
                },
                None => panic!(
                    "[{}] no {what} within {PATIENCE:?}{}",
                    self.who,
                    if self.is_closed() {
                        " (connection closed)"
                    } else {
                        ""
                    }
                ),
            }
        }
    }

    /// SUBSCRIBE and its SUBACK's reason codes.
    pub async fn subscribe(&mut self, pkid: u16, props: &Props, filters: &[(&str, u8)]) -> Vec<u8> {
        self.send(&wire::subscribe(pkid, props, filters)).await;
        self.expect("SUBACK", |p| match p {
            Packet::SubAck {
                pkid: id, codes, ..
            } if *id == pkid => Some(codes.clone()),
            _ => None,
        })
        .await
    }

    /// Subscribes to one filter with these options; panics unless granted.
    pub async fn sub(&mut self, filter: &str, options: u8) {
        let codes = self.subscribe(1, &Props::new(), &[(filter, options)]).await;
        assert!(
            codes.len() == 1 && codes[0] < 0x80,
            "[{}] SUBSCRIBE {filter} refused: {codes:02x?}",
            self.who
        );
    }

    /// A QoS 1 PUBLISH, waiting for its PUBACK; returns the PUBACK's reason and properties.
    pub async fn publish1(
        &mut self,
        topic: &str,
        payload: &[u8],
        pkid: u16,
        retain: bool,
        props: &Props,
    ) -> (u8, Props) {
        self.send(&wire::publish(topic, payload, 1, pkid, retain, props))
            .await;
        self.expect("PUBACK", |p| match p {
            Packet::Ack {
                kind: 4,
                pkid: id,
                reason,
                props,
            } if *id == pkid => Some((*reason, props.clone())),
            _ => None,
        })
        .await
    }

    /// A QoS 0 PUBLISH.
    pub async fn publish0(&mut self, topic: &str, payload: &[u8], retain: bool, props: &Props) {
        self.send(&wire::publish(topic, payload, 0, 0, retain, props))
            .await;
    }

    /// A round trip (PINGREQ, PINGRESP): everything the broker sent before it has been
    /// read into the buffer, and everything sent before it was handled.
    pub async fn sync(&mut self) {
        self.send(&[0xC0, 0x00]).await;
        self.expect("PINGRESP", |p| matches!(p, Packet::PingResp).then_some(()))
            .await;
    }

    /// DISCONNECT (normal) and close.
    pub async fn bye(self) {
        self.bye_with(0, &Props::new()).await;
    }

    /// DISCONNECT with properties, then close once the server has: dropping a socket
    /// with unread bytes sends a reset, which may reach the server before it reads the
    /// DISCONNECT and turn a clean end into a lost connection (a will, for one).
    pub async fn bye_with(mut self, reason: u8, props: &Props) {
        self.send(&wire::disconnect(reason, props)).await;
        let _ = self.s.shutdown().await;
        let _ = self.end(PATIENCE).await;
    }

    /// Drops the socket without DISCONNECT (a lost network).
    pub fn drop_socket(self) {
        drop(self.s);
    }
}
