//! What one persistent session is owed, message by message, and where each message is:
//! queued for the router to deliver, in flight under a router packet id, or to be replayed
//! by the gateway after a restart.
//!
//! The router keeps a persistent session's queue in memory only. The gateway records the
//! same messages here as they are published (those at QoS 1 or 2 for a QoS 1 or 2
//! subscription, MQTT's rule), follows them out (`forwarded`) and drops them on the
//! client's ack, so what is left is exactly what the client has not acknowledged. After a
//! restart the router knows none of them: they become [`Where::Replay`], and the gateway
//! sends them itself when the client comes back, under packet ids the router never uses.

use super::super::store::{Queued, SavedSession};
use bytes::Bytes;
use std::collections::VecDeque;

/// First packet id of messages the gateway replays. rumqttd numbers its own 1..=100 (its
/// fixed in-flight window), so an ack at or above this one is the gateway's to take.
pub const REPLAY_PKID_BASE: u16 = 1_000;
/// The most messages one session may be owed: replays are numbered from
/// [`REPLAY_PKID_BASE`] up and must stay below 65,536.
pub const MAX_QUEUED_LIMIT: usize = 60_000;

/// Where an owed message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Where {
    /// The router has it queued and will forward it.
    Routed,
    /// Forwarded by the router under this packet id; waiting for the ack.
    Sent(u16),
    /// Known only to the store (loaded at start): the gateway sends it on the next connect.
    Replay,
    /// Sent by the gateway under this packet id; waiting for the ack.
    Replayed(u16),
}

#[derive(Debug, Clone)]
struct Entry {
    topic: Bytes,
    payload: Bytes,
    qos: u8,
    at: Where,
}

/// A message the gateway sends a returning client itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// Its topic.
    pub topic: Bytes,
    /// Its payload.
    pub payload: Bytes,
    /// The packet id it goes out under (at QoS 1).
    pub pkid: u16,
}

/// One persistent session: its filters and what it is owed, oldest first.
#[derive(Debug, Clone, Default)]
pub(super) struct Owed {
    filters: Vec<(String, u8)>,
    entries: VecDeque<Entry>,
    /// When the session ends unless its client comes back (unix seconds); 0: while
    /// connected, or never.
    pub(super) expires_at: u64,
    /// How long it outlives a connection (s; `u32::MAX`: for ever).
    pub(super) expiry: u32,
}

impl Owed {
    /// A session read back from the store: everything it was owed is the gateway's to send.
    pub(super) fn from_saved(saved: SavedSession) -> Owed {
        let entries = saved
            .queued
            .into_iter()
            .map(|q| Entry {
                topic: q.topic,
                payload: q.payload,
                qos: q.qos,
                at: Where::Replay,
            })
            .collect();
        Owed {
            filters: saved.filters,
            entries,
            expires_at: saved.expires_at,
            expiry: saved.expiry,
        }
    }

    /// The session as the store keeps it.
    pub(super) fn to_saved(&self, client_id: &str) -> SavedSession {
        SavedSession {
            client_id: client_id.to_owned(),
            expires_at: self.expires_at,
            expiry: self.expiry,
            filters: self.filters.clone(),
            queued: self
                .entries
                .iter()
                .map(|e| Queued {
                    topic: e.topic.clone(),
                    payload: e.payload.clone(),
                    qos: e.qos,
                })
                .collect(),
        }
    }

    /// Messages owed now.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Takes `filter` at `qos`, or renews it.
    pub(super) fn subscribe(&mut self, filter: &str, qos: u8) {
        match self.filters.iter_mut().find(|(f, _)| f == filter) {
            Some(held) => held.1 = qos,
            None => self.filters.push((filter.to_owned(), qos)),
        }
    }

    /// Lets `filter` go; whether it was held.
    pub(super) fn unsubscribe(&mut self, filter: &str) -> bool {
        let before = self.filters.len();
        self.filters.retain(|(f, _)| f != filter);
        self.filters.len() != before
    }

    /// The QoS a message on `topic` published at `qos` is owed at: the highest of the
    /// matching filters, capped by the publish's. Shared subscriptions (`$share/`) go to one
    /// member of their group, which the router picks: they are not kept.
    pub(super) fn due(&self, topic: &str, qos: u8) -> u8 {
        let granted = self
            .filters
            .iter()
            .filter(|(f, _)| !f.starts_with("$share/"))
            .filter(|(f, _)| fleetcast_proto::filter::matches(f, topic))
            .map(|(_, q)| *q)
            .max()
            .unwrap_or(0);
        granted.min(qos)
    }

    /// Queues a published message the router will forward; past `max`, the oldest goes.
    /// Returns how many were dropped for room.
    pub(super) fn queue(&mut self, topic: &Bytes, payload: &Bytes, qos: u8, max: usize) -> usize {
        let mut dropped = 0;
        while self.entries.len() >= max.max(1) {
            self.entries.pop_front();
            dropped += 1;
        }
        self.entries.push_back(Entry {
            topic: topic.clone(),
            payload: payload.clone(),
            qos,
            at: Where::Routed,
        });
        dropped
    }

    /// The router forwarded (`topic`, `payload`) under `pkid`: the oldest such message it
    /// had queued is now in flight. Returns whether one was. A copy of a retained message,
    /// or one published at QoS 0, matches none.
    pub(super) fn forwarded(&mut self, topic: &[u8], payload: &[u8], pkid: u16) -> bool {
        let found = self
            .entries
            .iter_mut()
            .find(|e| e.at == Where::Routed && e.topic[..] == *topic && e.payload[..] == *payload);
        match found {
            Some(e) => {
                e.at = Where::Sent(pkid);
                true
            }
            None => false,
        }
    }

    /// The router forwarded (`topic`, `payload`) but the gateway did not send it (MQTT 5
    /// No Local, Retain Handling, the client's Maximum Packet Size) and acked it itself: the
    /// oldest such queued message is no longer owed. Returns whether one was.
    pub(super) fn dropped(&mut self, topic: &[u8], payload: &[u8]) -> bool {
        let found = self.entries.iter().position(|e| {
            e.at == Where::Routed && e.topic[..] == *topic && e.payload[..] == *payload
        });
        found.map(|i| self.entries.remove(i)).is_some()
    }

    /// The client acknowledged `pkid` (PUBACK, or PUBREC at QoS 2): the message is no longer
    /// owed. Returns whether one was.
    pub(super) fn acked(&mut self, pkid: u16) -> bool {
        let at = if pkid >= REPLAY_PKID_BASE {
            Where::Replayed(pkid)
        } else {
            Where::Sent(pkid)
        };
        match self.entries.iter().position(|e| e.at == at) {
            Some(i) => {
                self.entries.remove(i);
                true
            }
            None => false,
        }
    }

    /// The connection ended: the router resends what it had in flight (it rewinds to the
    /// first unacknowledged message), and the gateway what it replayed.
    pub(super) fn offline(&mut self) {
        for e in &mut self.entries {
            e.at = match e.at {
                Where::Sent(_) => Where::Routed,
                Where::Replayed(_) => Where::Replay,
                other => other,
            };
        }
    }

    /// The messages for the gateway to send on this connection, numbered; they are in
    /// flight from now on.
    pub(super) fn replay(&mut self) -> Vec<Replay> {
        let mut out = Vec::new();
        for e in self.entries.iter_mut().filter(|e| e.at == Where::Replay) {
            // Below MAX_QUEUED_LIMIT entries, so the id stays within u16.
            let pkid = REPLAY_PKID_BASE.saturating_add(out.len() as u16);
            e.at = Where::Replayed(pkid);
            out.push(Replay {
                topic: e.topic.clone(),
                payload: e.payload.clone(),
                pkid,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn session() -> Owed {
        let mut o = Owed::default();
        o.subscribe("alerts/#", 1);
        o.subscribe("$share/g/alerts/#", 1);
        o
    }

    #[test]
    fn only_qos_1_messages_for_qos_1_filters_are_owed() {
        let mut o = session();
        assert_eq!(o.due("alerts/1", 1), 1);
        assert_eq!(o.due("alerts/1", 2), 1, "capped by the filter");
        assert_eq!(o.due("alerts/1", 0), 0, "QoS 0 is not kept");
        assert_eq!(o.due("other/1", 1), 0);
        o.subscribe("alerts/#", 0);
        assert_eq!(o.due("alerts/1", 1), 0, "renewed at QoS 0");
        assert!(o.unsubscribe("alerts/#"));
        assert!(!o.unsubscribe("alerts/#"));
    }

    #[test]
    fn a_message_is_owed_until_the_client_acks_it() {
        let mut o = session();
        o.queue(&b("alerts/1"), &b("a"), 1, 10);
        o.queue(&b("alerts/1"), &b("b"), 1, 10);
        assert!(o.forwarded(b"alerts/1", b"a", 1));
        assert!(!o.forwarded(b"alerts/1", b"retained copy", 2));
        assert!(o.acked(1));
        assert!(!o.acked(1));
        assert_eq!(o.len(), 1);
        // Gone before its ack: the router resends it, and it is matched again.
        assert!(o.forwarded(b"alerts/1", b"b", 2));
        o.offline();
        assert!(o.forwarded(b"alerts/1", b"b", 1));
        assert!(o.acked(1));
        assert_eq!(o.len(), 0);
    }

    #[test]
    fn after_a_restart_the_gateway_replays_and_takes_their_acks() {
        let saved = SavedSession {
            client_id: "c".into(),
            expires_at: 0,
            expiry: u32::MAX,
            filters: vec![("alerts/#".into(), 1)],
            queued: (0..3)
                .map(|i| Queued {
                    topic: b("alerts/1"),
                    payload: b(&i.to_string()),
                    qos: 1,
                })
                .collect(),
        };
        let mut o = Owed::from_saved(saved.clone());
        let replays = o.replay();
        let pkids: Vec<u16> = replays.iter().map(|r| r.pkid).collect();
        assert_eq!(pkids, [1000, 1001, 1002]);
        assert!(o.replay().is_empty(), "in flight now");
        assert!(o.acked(1000));
        o.offline();
        let again = o.replay();
        assert_eq!(again.len(), 2, "the unacknowledged ones, once more");
        assert_eq!(&again[0].payload[..], b"1");
        assert_eq!(o.to_saved("c").queued, saved.queued[1..]);
    }

    #[test]
    fn the_oldest_go_first_past_the_bound() {
        let mut o = session();
        let dropped: usize = (0..5)
            .map(|i| o.queue(&b("alerts/1"), &b(&i.to_string()), 1, 3))
            .sum();
        assert_eq!((dropped, o.len()), (2, 3));
        assert_eq!(&o.to_saved("c").queued[0].payload[..], b"2");
    }
}
