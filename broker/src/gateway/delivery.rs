//! What a publish the router forwards becomes for this client.
//!
//! The router forwards with the properties it was published with, the gateway's marks
//! (`marks.rs`) and the gateway's identifier of the subscription it came through
//! (`subscriptions.rs`). For an MQTT 5 client that subscription's options are applied here:
//! a retained message at subscribe time is not sent under Retain Handling 2, the client's
//! own under No Local, the retain flag is put back under Retain As Published, and the
//! client's own Subscription Identifier replaces the gateway's. Then the client's limits:
//! a topic it gets again goes out as a Topic Alias when it accepts them, and a packet over
//! its Maximum Packet Size is not sent (MQTT 5 3.1.2-25), counted. A 3.1.1 client gets the
//! publish without properties. A publish not sent is acked to the router by the gateway
//! (`acks.rs`), or the router would wait for it for ever.

use super::aliases::{self, Naming};
use super::codec::Version;
use super::end::End;
use super::frame;
use super::inbound::Inbound;
use super::marks;
use super::outbound::encode;
use bytes::{Bytes, BytesMut};
use rumqttd::protocol::{ConnectProperties, Packet, Publish, PublishProperties};
use rumqttd::Forward;

/// What a client can take from the server (MQTT 5 CONNECT properties; a 3.1.1 client
/// anything).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Takes {
    /// Receive Maximum: QoS 1/2 publishes it may have unacknowledged.
    pub(super) receive_max: u16,
    /// Maximum Packet Size (whole packet, bytes); None: no limit.
    pub(super) max_packet_size: Option<u32>,
    /// Topic Alias Maximum: aliases the server may set.
    pub(super) topic_alias_max: u16,
    /// Request Problem Information: Reason Strings are welcome on acks.
    pub(super) problem_info: bool,
}

impl Takes {
    /// What a 3.1.1 client, or an MQTT 5 one that says nothing, can take.
    pub(super) const ANYTHING: Takes = Takes {
        receive_max: u16::MAX,
        max_packet_size: None,
        topic_alias_max: 0,
        problem_info: true,
    };

    pub(super) fn of(p: Option<&ConnectProperties>) -> Takes {
        let Some(p) = p else {
            return Takes::ANYTHING;
        };
        Takes {
            receive_max: p.receive_maximum.unwrap_or(u16::MAX),
            max_packet_size: p.max_packet_size,
            topic_alias_max: p.topic_alias_max.unwrap_or(0),
            problem_info: p.request_problem_info != Some(0),
        }
    }
}

/// What a session knows of the client's side of deliveries.
#[derive(Debug)]
pub(super) struct Delivery {
    /// What the client can take.
    pub(super) takes: Takes,
    aliases: aliases::Outgoing,
    /// A publish the client's Receive Maximum holds back: nothing more is read from the
    /// router until the client acks enough for it. Boxed: a `Forward` is ~250 bytes that
    /// every session would carry for what only MQTT 5 clients with a Receive Maximum hold.
    pub(super) held: Option<Box<Forward>>,
    /// Publishes not sent for being over the client's Maximum Packet Size, not yet metered.
    pub(super) too_large: u64,
    /// Where each log this session reads was, to see what the router skipped.
    pub(super) gaps: super::gaps::Gaps,
    /// Messages the router skipped for this session, not yet metered.
    pub(super) behind: u64,
    /// Log bytes read (or skipped) since the last batch, for the mark below.
    pub(super) taken: i64,
    /// This session's mark as a subscriber behind (`backlog.rs`), while it is one. Boxed:
    /// most sessions never have one.
    pub(super) marked: Option<Box<super::backlog::Marked>>,
}

/// What became of a forwarded publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    /// Encoded for the client.
    Sent,
    /// Held back by the client's Receive Maximum.
    Held,
    /// Not for the client (its options or its Maximum Packet Size); acked by the gateway.
    Dropped,
}

impl Delivery {
    /// For a client that can take `takes`, with at most `our_aliases` Topic Aliases set.
    pub(super) fn new(version: Version, takes: Takes, our_aliases: u16) -> Delivery {
        let aliases = match version {
            Version::V5 => takes.topic_alias_max.min(our_aliases),
            Version::V311 => 0,
        };
        Delivery {
            takes,
            aliases: aliases::Outgoing::new(aliases),
            held: None,
            too_large: 0,
            gaps: super::gaps::Gaps::default(),
            behind: 0,
            taken: 0,
            marked: None,
        }
    }

    /// Whether the client may be sent another QoS 1/2 publish now.
    pub(super) fn may_send(&self, inbound: &Inbound) -> bool {
        inbound.acks.owed_by_client() < usize::from(self.takes.receive_max)
    }

    /// Encodes `f` onto `buf` as this client is to get it, or holds or drops it.
    pub(super) fn deliver(
        &mut self,
        inbound: &mut Inbound,
        buf: &mut BytesMut,
        f: Forward,
    ) -> Result<Fate, End> {
        let version = inbound.version;
        if version == Version::V5 && frame::above_qos0(&f.publish) && !self.may_send(inbound) {
            self.held = Some(Box::new(f));
            return Ok(Fate::Held);
        }
        let Forward {
            mut publish,
            mut properties,
            ..
        } = f;
        let marks = marks::take(&mut properties);
        let wanted = match version {
            Version::V5 => apply_options(inbound, &mut publish, &mut properties, &marks),
            Version::V311 => {
                properties = None;
                true
            }
        };
        let topic = publish.topic.clone();
        let naming = self.aliases.naming(&topic);
        name(&mut publish, &mut properties, naming);
        let at = buf.len();
        encode(version, Packet::Publish(publish, properties), buf)?;
        // rumqttd keeps the QoS and packet id private: read them off what was written.
        let (qos, pkid) = frame::publish_qos_pkid(&buf[at..]).unwrap_or((0, 0));
        let too_large = self
            .takes
            .max_packet_size
            .is_some_and(|max| (buf.len() - at) as u64 > u64::from(max));
        if !wanted || too_large {
            buf.truncate(at);
            inbound.acks.dropped(qos, pkid);
            self.too_large += u64::from(wanted && too_large);
            return Ok(Fate::Dropped);
        }
        self.aliases.commit(&topic, naming);
        inbound.acks.sent(qos, pkid);
        Ok(Fate::Sent)
    }
}

/// Applies the options of the subscription `publish` came through; false when the
/// client is not to get it.
fn apply_options(
    inbound: &Inbound,
    publish: &mut Publish,
    properties: &mut Option<PublishProperties>,
    marks: &marks::Marks,
) -> bool {
    let ids = properties
        .as_ref()
        .map_or(&[][..], |p| &p.subscription_identifiers[..]);
    let held = inbound.subscriptions.through(ids, &publish.topic).cloned();
    if let Some(p) = properties.as_mut() {
        p.subscription_identifiers.clear();
    }
    let Some(held) = held else {
        return true;
    };
    // The router sets the retain flag only on retained messages sent at subscribe time.
    if publish.retain && held.no_retained {
        return false;
    }
    if held.no_local && marks.origin.as_deref() == Some(inbound.identity.client_id()) {
        return false;
    }
    if held.retain_as_published && marks.retained {
        publish.retain = true;
    }
    if let Some(id) = held.client_id {
        properties
            .get_or_insert_with(PublishProperties::default)
            .subscription_identifiers
            .push(id);
    }
    true
}

/// Names the publish's topic as `naming` says.
fn name(publish: &mut Publish, properties: &mut Option<PublishProperties>, naming: Naming) {
    let alias = match naming {
        Naming::Topic => return,
        Naming::Set(a) => a,
        Naming::Alias(a) => {
            publish.topic = Bytes::new();
            a
        }
    };
    properties
        .get_or_insert_with(PublishProperties::default)
        .topic_alias = Some(alias);
}
