//! The hooks one gateway session calls, in the gateway's own terms (rumqttd packets and
//! notifications, bytes written), so the session code carries one line per hook.
//!
//! A session without a store gets a tap that does nothing. Every session reports its
//! retained publishes and wills; a persistent session (`clean_session=false`) also reports
//! its filters, the QoS 1/2 messages it is sent and its acks, and is handed back, right
//! after its CONNACK, what it was owed before a restart.

use super::{Durable, Replay, REPLAY_PKID_BASE};
use bytes::{BufMut, Bytes, BytesMut};
use rumqttd::protocol::{LastWill, Packet};
use rumqttd::Notification;
use std::sync::Arc;

/// One session's hooks into the durable state.
#[derive(Debug, Default)]
pub struct Tap {
    durable: Option<Arc<Durable>>,
    /// The client id, when the session is persistent and kept.
    persistent: Option<String>,
}

/// A message the router forwarded, held until its packet id is known (after encoding).
#[derive(Debug)]
pub struct Seen(Bytes, Bytes);

impl Tap {
    /// The hooks of a session of `client_id`; also what it must be replayed, already
    /// numbered (at QoS 1, packet ids from [`REPLAY_PKID_BASE`]).
    pub fn connect(
        durable: Option<&Arc<Durable>>,
        client_id: &str,
        persistent: bool,
    ) -> (Tap, Vec<Replay>) {
        let Some(durable) = durable else {
            return (Tap::default(), Vec::new());
        };
        let replays = durable.connected(client_id, persistent);
        let tap = Tap {
            durable: Some(Arc::clone(durable)),
            persistent: persistent.then(|| client_id.to_owned()),
        };
        (tap, replays)
    }

    /// Encodes `replays` as PUBLISH frames (QoS 1) onto `out`; returns their packet ids in
    /// the order written, for the session's ack bookkeeping.
    pub fn write_replays(replays: &[Replay], v5: bool, out: &mut BytesMut) -> Vec<u16> {
        replays
            .iter()
            .map(|r| {
                publish_frame(&r.topic, &r.payload, r.pkid, v5, out);
                r.pkid
            })
            .collect()
    }

    /// A client packet the gateway checked and is about to hand to the router (`header`:
    /// the PUBLISH's QoS and packet id off the wire). Returns false for an ack of a message
    /// the gateway replayed: the router never sent it, so it must not see the ack.
    pub fn inbound(&self, packet: &Packet, header: Option<(u8, u16)>) -> bool {
        let Some(durable) = &self.durable else {
            return true;
        };
        let persistent = self.persistent.as_deref();
        match (packet, persistent) {
            (Packet::Publish(p, _), _) => {
                let qos = header.map_or(0, |(q, _)| q);
                durable.published(&p.topic, &p.payload, p.retain, qos);
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
        !matches!(packet, Packet::PubAck(a, _) if a.pkid >= REPLAY_PKID_BASE)
    }

    /// A router notification about to be encoded: a forwarded publish is held (cheap
    /// clones) when the session is persistent.
    pub fn seen(
        &self,
        n: &Result<Option<Notification>, rumqttd::local::LinkError>,
    ) -> Option<Seen> {
        self.persistent.as_ref()?;
        match n {
            Ok(Some(Notification::Forward(f))) => {
                Some(Seen(f.publish.topic.clone(), f.publish.payload.clone()))
            }
            _ => None,
        }
    }

    /// `written` is what encoding the held publish appended: its QoS and packet id.
    pub fn sent(&self, seen: Option<Seen>, written: &[u8]) {
        let (Some(Seen(topic, payload)), Some(durable), Some(id)) =
            (seen, &self.durable, &self.persistent)
        else {
            return;
        };
        // QoS 0 copies are not acknowledged, so never owed.
        if let Some((1..=2, pkid)) = crate::gateway::frame::publish_qos_pkid(written) {
            durable.forwarded(id, &topic, &payload, pkid);
        }
    }

    /// The session is publishing its will.
    pub fn will(&self, will: &LastWill) {
        if let Some(durable) = &self.durable {
            // Wills enter the router at QoS 0 (see the session).
            let topic = will.topic.clone();
            durable.published(&topic, &will.message, will.retain, 0);
        }
    }

    /// The connection ended.
    pub fn close(&self) {
        if let (Some(durable), Some(id)) = (&self.durable, &self.persistent) {
            durable.disconnected(id);
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
            let replays = [Replay {
                topic: Bytes::from("alerts/1"),
                payload: payload.clone(),
                pkid: 1_000,
            }];
            let mut out = BytesMut::new();
            assert_eq!(Tap::write_replays(&replays, v5, &mut out), [1_000]);
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
