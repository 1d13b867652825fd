//! The hooks one gateway session calls, in the gateway's own terms (rumqttd packets and
//! notifications, bytes written), so the session code carries one line per hook.
//!
//! A session without a store gets a tap that does nothing. Every session reports its
//! retained publishes and wills; a session kept beyond its connection (3.1.1
//! `clean_session=false`, MQTT 5 with a Session Expiry) also reports its filters, the QoS
//! 1/2 messages it is sent and its acks, and is handed back, right after its CONNACK, what
//! it was owed before a restart.

use super::{Durable, Replay, REPLAY_PKID_BASE};
use bytes::{BufMut, Bytes, BytesMut};
use rumqttd::protocol::Packet;
use rumqttd::Notification;
use std::sync::Arc;

/// One session's hooks into the durable state.
#[derive(Debug, Default)]
pub struct Tap {
    durable: Option<Arc<Durable>>,
    /// The client id, when the session is kept.
    persistent: Option<String>,
    /// What the session was owed before a restart, to send after the CONNACK.
    replays: Vec<Replay>,
}

/// A message the router forwarded, held until its packet id is known (after encoding).
#[derive(Debug)]
pub struct Seen(Bytes, Bytes);

impl Tap {
    /// The hooks of a session of `client_id` that starts afresh (`clean_start`) or
    /// resumes, and outlives its connection by `expiry` seconds (0: not at all).
    pub fn connect(
        durable: Option<&Arc<Durable>>,
        client_id: &str,
        clean_start: bool,
        expiry: u32,
    ) -> Tap {
        let Some(durable) = durable else {
            return Tap::default();
        };
        let (kept, replays) = durable.connected(client_id, clean_start, expiry);
        Tap {
            durable: Some(Arc::clone(durable)),
            persistent: kept.then(|| client_id.to_owned()),
            replays,
        }
    }

    /// Encodes what the session was owed before a restart as PUBLISH frames (QoS 1,
    /// packet ids from [`REPLAY_PKID_BASE`]) onto `out`, telling `sent` each packet id in
    /// the order written, for the session's ack bookkeeping.
    pub fn replay(&mut self, v5: bool, out: &mut BytesMut, mut sent: impl FnMut(u16)) {
        for r in std::mem::take(&mut self.replays) {
            publish_frame(&r.topic, &r.payload, r.pkid, v5, out);
            sent(r.pkid);
        }
    }

    /// The packets the gateway checked a read's client packets into, about to go to the
    /// router. Takes out acks of messages the gateway replayed: the router never sent
    /// those, so it must not see their acks.
    pub fn inbound(&self, batch: &mut Vec<Packet>) {
        if self.durable.is_none() {
            return;
        }
        for packet in batch.iter() {
            self.one(packet);
        }
        if self.persistent.is_some() {
            batch.retain(|p| !matches!(p, Packet::PubAck(a, _) if a.pkid >= REPLAY_PKID_BASE));
        }
    }

    fn one(&self, packet: &Packet) {
        let Some(durable) = &self.durable else {
            return;
        };
        let persistent = self.persistent.as_deref();
        match (packet, persistent) {
            (Packet::Publish(p, props), _) => {
                // QoS 1 and 2 are both owed at QoS 1 at most (replays are QoS 1).
                let qos = u8::from(crate::gateway::frame::above_qos0(p));
                durable.published(&p.topic, &p.payload, p.retain, qos, props.as_ref());
            }
            (Packet::Subscribe(s, _), Some(id)) => {
                let filters: Vec<(String, u8)> = s
                    .filters
                    .iter()
                    .map(|f| (f.path.clone(), f.qos as u8))
                    .collect();
                durable.subscribed(id, &filters);
            }
            (Packet::Unsubscribe(u, _), Some(id)) => durable.unsubscribed(id, &u.filters),
            (Packet::PubAck(a, _), Some(id)) => durable.acked(id, a.pkid),
            (Packet::PubRec(a, _), Some(id)) => durable.acked(id, a.pkid),
            _ => {}
        }
    }

    /// A router notification about to be encoded: a forwarded publish is held (cheap
    /// clones) when the session is persistent.
    pub fn seen(&self, n: Option<&Notification>) -> Option<Seen> {
        self.persistent.as_ref()?;
        match n {
            Some(Notification::Forward(f)) => {
                Some(Seen(f.publish.topic.clone(), f.publish.payload.clone()))
            }
            _ => None,
        }
    }

    /// `written` is what encoding the held publish appended: its QoS and packet id; nothing
    /// when the client's Receive Maximum `held` it back (it comes again) or the gateway
    /// dropped it for the client (it is acked to the router, so no longer owed).
    pub fn sent(&self, seen: Option<Seen>, written: &[u8], held: bool) {
        let (Some(Seen(topic, payload)), Some(durable), Some(id)) =
            (seen, &self.durable, &self.persistent)
        else {
            return;
        };
        match crate::gateway::frame::publish_qos_pkid(written) {
            // QoS 0 copies are not acknowledged, so never owed.
            Some((1..=2, pkid)) => durable.forwarded(id, &topic, &payload, pkid),
            Some(_) => {}
            None if held => {}
            None => durable.dropped(id, &topic, &payload),
        }
    }

    /// The session is publishing its will (a PUBLISH for the router).
    pub fn will(&self, publish: &Packet) {
        if let Some(durable) = &self.durable {
            durable.published_packet(publish);
        }
    }

    /// The connection ended; the session lasts `expiry` seconds more (0: it ends now).
    pub fn close(&self, expiry: u32) {
        if let (Some(durable), Some(id)) = (&self.durable, &self.persistent) {
            match expiry {
                0 => durable.forget(id),
                s => durable.disconnected(id, s),
            }
        }
    }
}

/// A PUBLISH at QoS 1 (MQTT 3.1.1, or 5 with no properties).
fn publish_frame(topic: &[u8], payload: &[u8], pkid: u16, v5: bool, out: &mut BytesMut) {
    let remaining = 2 + topic.len() + 2 + usize::from(v5) + payload.len();
    out.put_u8(0x32);
    let mut len = remaining;
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if len == 0 {
            break;
        }
    }
    out.put_u16(topic.len() as u16);
    out.put_slice(topic);
    out.put_u16(pkid);
    if v5 {
        out.put_u8(0);
    }
    out.put_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::codec::Version;

    #[test]
    fn replays_are_frames_both_codecs_read() {
        let payload = Bytes::from(vec![b'x'; 300]);
        for (version, v5) in [(Version::V311, false), (Version::V5, true)] {
            let mut tap = Tap {
                replays: vec![Replay {
                    topic: Bytes::from("alerts/1"),
                    payload: payload.clone(),
                    pkid: 1_000,
                }],
                ..Tap::default()
            };
            let mut out = BytesMut::new();
            let mut sent = Vec::new();
            tap.replay(v5, &mut out, |pkid| sent.push(pkid));
            assert_eq!(sent, [1_000]);
            assert_eq!(
                crate::gateway::frame::publish_qos_pkid(&out),
                Some((1, 1_000))
            );
            match version.read(&mut out, 1 << 20) {
                Ok(Packet::Publish(p, _)) => {
                    assert_eq!(&p.topic[..], b"alerts/1");
                    assert_eq!(p.payload, payload);
                }
                other => panic!("{other:?}"),
            }
            assert!(out.is_empty());
        }
    }
}
