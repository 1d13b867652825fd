//! MQTT 5 Topic Aliases, both ways.
//!
//! A client may replace a PUBLISH's topic by a number it set earlier on the same
//! connection, up to the Topic Alias Maximum our CONNACK grants; the router knows nothing
//! of this connection's aliases, so [`Incoming`] puts the topic back before any check
//! sees the PUBLISH. The other way, a client that accepts aliases (its CONNECT's Topic
//! Alias Maximum) gets them from [`Outgoing`] for the topics it receives again and again
//! (a rider following a car gets one topic once a second): never above its maximum nor
//! ours, reusing the oldest alias once all are taken.

use bytes::Bytes;
use std::collections::HashMap;

/// Why a PUBLISH's Topic Alias cannot be honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AliasError {
    /// Alias 0, or an empty topic with an alias never set (MQTT 5 3.3.2-7, 3.3.4): a
    /// protocol error.
    Protocol(&'static str),
    /// An alias above the maximum granted (3.3.2-9): DISCONNECT 0x94.
    AboveMaximum,
}

/// The aliases a client set on its PUBLISHes.
#[derive(Debug, Default)]
pub(super) struct Incoming {
    /// Topic per alias - 1; as many as granted, filled as the client sets them.
    topics: Vec<Option<Bytes>>,
    max: u16,
}

impl Incoming {
    /// Up to `max` aliases (0: none granted).
    pub(super) fn new(max: u16) -> Incoming {
        Incoming {
            topics: Vec::new(),
            max,
        }
    }

    /// Sets or resolves `alias` for a PUBLISH with `topic`: a topic sets the alias (to an
    /// exact-size copy, so no read buffer is pinned), an empty one is replaced by the
    /// topic the alias stands for.
    pub(super) fn resolve(&mut self, topic: &mut Bytes, alias: u16) -> Result<(), AliasError> {
        if alias == 0 {
            return Err(AliasError::Protocol("Topic Alias 0 in PUBLISH"));
        }
        if alias > self.max {
            return Err(AliasError::AboveMaximum);
        }
        let slot = usize::from(alias - 1);
        if topic.is_empty() {
            return match self.topics.get(slot) {
                Some(Some(t)) => {
                    *topic = t.clone();
                    Ok(())
                }
                _ => Err(AliasError::Protocol(
                    "PUBLISH with an empty topic and a Topic Alias never set",
                )),
            };
        }
        if self.topics.len() <= slot {
            self.topics.resize(slot + 1, None);
        }
        let copy = Bytes::copy_from_slice(topic);
        *topic = copy.clone();
        self.topics[slot] = Some(copy);
        Ok(())
    }
}

/// How a PUBLISH to the client names its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Naming {
    /// The topic itself, no alias.
    Topic,
    /// The topic and an alias it sets from now on.
    Set(u16),
    /// An empty topic and the alias already set for it.
    Alias(u16),
}

/// The aliases the gateway set on PUBLISHes to the client.
#[derive(Debug, Default)]
pub(super) struct Outgoing {
    by_topic: HashMap<Bytes, u16>,
    /// Topic per alias - 1.
    topics: Vec<Bytes>,
    /// The alias to reuse next once all are taken.
    next: u16,
    max: u16,
}

impl Outgoing {
    /// Up to `max` aliases: the smaller of the client's maximum and ours.
    pub(super) fn new(max: u16) -> Outgoing {
        Outgoing {
            max,
            ..Outgoing::default()
        }
    }

    /// How `topic` would be named; nothing changes until [`Self::commit`].
    pub(super) fn naming(&self, topic: &[u8]) -> Naming {
        if self.max == 0 || topic.is_empty() {
            return Naming::Topic;
        }
        if let Some(&a) = self.by_topic.get(topic) {
            return Naming::Alias(a);
        }
        let taken = self.topics.len() as u16;
        if taken < self.max {
            Naming::Set(taken + 1)
        } else {
            Naming::Set(self.next % self.max + 1)
        }
    }

    /// The PUBLISH named `topic` as `naming` went out.
    pub(super) fn commit(&mut self, topic: &Bytes, naming: Naming) {
        let Naming::Set(alias) = naming else {
            return;
        };
        let slot = usize::from(alias - 1);
        if slot < self.topics.len() {
            let old = std::mem::replace(&mut self.topics[slot], topic.clone());
            self.by_topic.remove(&old);
            self.next = alias;
        } else {
            self.topics.push(topic.clone());
        }
        self.by_topic.insert(topic.clone(), alias);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_sets_an_alias_then_uses_it() {
        let mut a = Incoming::new(2);
        let mut t = Bytes::from_static(b"drivers/d1/location");
        assert_eq!(a.resolve(&mut t, 2), Ok(()));
        let mut empty = Bytes::new();
        assert_eq!(a.resolve(&mut empty, 2), Ok(()));
        assert_eq!(&empty[..], b"drivers/d1/location");
        let mut empty = Bytes::new();
        assert!(matches!(
            a.resolve(&mut empty, 1),
            Err(AliasError::Protocol(_))
        ));
        assert!(matches!(a.resolve(&mut t, 0), Err(AliasError::Protocol(_))));
        assert_eq!(a.resolve(&mut t, 3), Err(AliasError::AboveMaximum));
        let mut none = Incoming::new(0);
        assert_eq!(none.resolve(&mut t, 1), Err(AliasError::AboveMaximum));
    }

    #[test]
    fn aliases_out_stay_within_the_maximum_and_the_oldest_is_reused() {
        let mut o = Outgoing::new(2);
        let topic = |s: &'static str| Bytes::from_static(s.as_bytes());
        let (a, b, c) = (topic("a"), topic("b"), topic("c"));
        assert_eq!(o.naming(&a), Naming::Set(1));
        o.commit(&a, Naming::Set(1));
        assert_eq!(o.naming(&a), Naming::Alias(1));
        o.commit(&b, o.naming(&b));
        assert_eq!(o.naming(&b), Naming::Alias(2));
        // Full: c takes alias 1 from a, then d would take 2.
        assert_eq!(o.naming(&c), Naming::Set(1));
        o.commit(&c, Naming::Set(1));
        assert_eq!(o.naming(&a), Naming::Set(2));
        assert_eq!(o.naming(&c), Naming::Alias(1));
        assert_eq!(Outgoing::new(0).naming(&a), Naming::Topic);
    }
}
