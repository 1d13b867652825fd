//! Tests of the checks on each client packet (`inbound.rs`, `publishes.rs`).

use super::*;
use crate::config::Config;
use crate::gateway::frame::TopicError;
use crate::gateway::publishes::Verdict;
use crate::gateway::wire::{self, identity, publish, subscribe, unsubscribe};
use crate::policy::Grants;
use fleetcast_proto::location as validation;

const NOW_MS: u64 = 1_800_000_000_000;
const OWN: &str = "drivers/drv-1/location";

fn inbound(version: Version, grants: Grants, limits: &Limits) -> Inbound {
    let identity = identity("drv-1", grants);
    Inbound::new(version, identity, limits, || NOW_MS)
}

fn driver(version: Version) -> Inbound {
    inbound(version, Grants::driver(), &Config::default().limits)
}

fn location(lat: f64) -> String {
    format!(
        r#"{{"id":"drv-1","lat":{lat},"lon":24.9,"heading":0,"speed":0,"accuracy":3,"status":"available","seq":1,"ts":{NOW_MS}}}"#
    )
}

type Checked = (Result<Option<Packet>, End>, Vec<u8>, Tally);

/// What checking the frame `bytes` came to: the result, the answer written, the tally.
fn check(i: &mut Inbound, bytes: &[u8]) -> Checked {
    let header = frame::publish_qos_pkid(bytes);
    let (mut out, mut tally, mut to_router) = (BytesMut::new(), Tally::default(), Vec::new());
    let r = i.check(
        wire::read(i.version, bytes),
        header,
        &mut out,
        &mut tally,
        &mut to_router,
    );
    (r.map(|()| to_router.pop()), out.to_vec(), tally)
}

/// Whether `r` ends the session as a protocol error for `why`.
fn broke(r: &Result<Option<Packet>, End>, why: &str) -> bool {
    matches!(r, Err(End::Protocol(_, w)) if w == why)
}

#[test]
fn a_drivers_own_valid_location_goes_to_the_router() {
    for version in [Version::V311, Version::V5] {
        let mut i = driver(version);
        let (r, out, tally) = check(&mut i, &publish(version, 2, 3, OWN, &location(60.1)));
        let Ok(Some(Packet::Publish(p, None))) = r else {
            panic!("{r:?}")
        };
        assert_eq!(&p.topic[..], OWN.as_bytes());
        assert!(out.is_empty());
        assert_eq!(
            tally,
            Tally {
                publishes: 1,
                ..Tally::default()
            }
        );
        // A QoS 2 publish forwarded: its PUBREL goes to the router too.
        assert!(i.acks.pubrel(3));
    }
}

#[test]
fn the_last_granted_topic_passes_again_and_no_other_does() {
    // One session judges as a new session would every time: the kept name lets only
    // itself through unchecked.
    let mut i = driver(Version::V5);
    let cases = [
        (OWN, Some(Verdict::Accept)),
        ("drivers/drv-2/location", Some(Verdict::Denied)),
        (OWN, Some(Verdict::Accept)),
        ("drivers/drv-1/location/x", Some(Verdict::Denied)),
        ("drivers/drv-1/locatio", Some(Verdict::Denied)),
        ("drivers/drv-1/+", None),
        (OWN, Some(Verdict::Accept)),
        ("", None),
        ("$SYS/x", None),
    ];
    for (topic, want) in cases {
        let payload = location(60.1);
        let got = i.verdict(topic.as_bytes(), payload.as_bytes());
        let fresh = driver(Version::V5).verdict(topic.as_bytes(), payload.as_bytes());
        assert_eq!(got, fresh, "{topic:?}");
        match want {
            Some(want) => assert_eq!(got, want, "{topic:?}"),
            None => assert!(matches!(got, Verdict::BadTopic(_)), "{topic:?}: {got:?}"),
        }
    }
    assert_eq!(i.granted.as_deref(), Some(OWN.as_bytes()));
    // A name longer than the bound is checked every time and not kept.
    let everything = Grants {
        publish: vec!["#".into()],
        subscribe: vec!["#".into()],
    };
    let mut open = inbound(Version::V5, everything, &Config::default().limits);
    let long = "a/".repeat(GRANTED_MAX);
    assert_eq!(open.verdict(long.as_bytes(), b"x"), Verdict::Accept);
    assert_eq!(open.granted, None);
}

#[test]
fn a_topic_mqtt_forbids_ends_the_session_uncharged() {
    let (r, _, tally) = check(
        &mut driver(Version::V5),
        &publish(Version::V5, 0, 0, "a/+", "x"),
    );
    assert!(broke(&r, "invalid topic name in PUBLISH"), "{r:?}");
    assert_eq!(
        tally,
        Tally {
            invalid_topic: 1,
            ..Tally::default()
        }
    );
}

#[test]
fn a_denied_publish_closes_a_311_session_and_is_refused_in_5() {
    let other = "drivers/drv-2/location";
    let (r, out, tally) = check(
        &mut driver(Version::V311),
        &publish(Version::V311, 1, 9, other, "x"),
    );
    assert!(
        matches!(r, Err(End::PolicyViolation(ref t)) if t == other),
        "{r:?}"
    );
    assert!(out.is_empty());
    assert_eq!((tally.publishes, tally.policy_denied), (1, 1));
    let mut i = driver(Version::V5);
    // A client that asked for no problem information gets no Reason String.
    i.problem_info = false;
    let answers = [
        vec![],
        vec![0x40, 4, 0, 9, 0x87, 0],
        vec![0x50, 4, 0, 9, 0x87, 0],
    ];
    for (qos, answer) in answers.into_iter().enumerate() {
        let (r, out, _) = check(&mut i, &publish(Version::V5, qos as u8, 9, other, "x"));
        assert!(matches!(r, Ok(None)), "{r:?}");
        assert_eq!(out, answer, "QoS {qos}");
    }
    i.problem_info = true;
    let (_, out, _) = check(&mut i, &publish(Version::V5, 1, 9, other, "x"));
    let why = b"topic not granted to this account";
    assert_eq!(
        out[..7],
        [
            0x40,
            7 + why.len() as u8,
            0,
            9,
            0x87,
            3 + why.len() as u8,
            0x1F
        ]
    );
    assert!(out.ends_with(why), "a Reason String: {out:?}");
    assert!(
        !i.acks.pubrel(9),
        "a refused QoS 2 publish owes the router no PUBREL"
    );
}

#[test]
fn packet_id_0_bad_topic_aliases_and_bad_utf8_are_protocol_errors() {
    let refused = |r: &Result<Option<Packet>, End>, want: Violation| matches!(r, Err(End::Protocol(v, _)) if *v == want);
    for version in [Version::V311, Version::V5] {
        let mut i = driver(version);
        let (r, _, _) = check(&mut i, &subscribe(version, 0, &["a/b"]));
        assert!(refused(&r, Violation::Protocol), "{r:?}");
        let (r, _, _) = check(&mut i, &unsubscribe(version, 0, &["a/b"]));
        assert!(refused(&r, Violation::Protocol), "{r:?}");
    }
    for (alias, want) in [(0u16, Violation::Protocol), (11, Violation::TopicAlias)] {
        let mut body = Vec::new();
        wire::put_str(&mut body, "drivers/drv-1/status");
        body.extend_from_slice(&[3, 0x23]);
        body.extend_from_slice(&alias.to_be_bytes());
        body.push(b'x');
        let (r, _, _) = check(&mut driver(Version::V5), &wire::frame(0x30, body));
        assert!(refused(&r, want), "alias {alias}: {r:?}");
    }
    let mut body = Vec::new();
    body.extend_from_slice(&[0, 3, b'a', b'/', 0xFF, 0, b'x']);
    let (r, _, tally) = check(&mut driver(Version::V5), &wire::frame(0x30, body));
    assert!(refused(&r, Violation::Malformed), "{r:?}");
    assert_eq!((tally.publishes, tally.invalid_topic), (0, 1));
}

#[test]
fn an_invalid_location_is_dropped_yet_acked() {
    let bad = location(91.0);
    for (version, qos, answer) in [
        // 3.1.1 has no negative ack: a success, or the publisher resends forever.
        (Version::V311, 1, vec![0x40, 2, 0, 4]),
        (Version::V311, 2, vec![0x50, 2, 0, 4]),
        (Version::V5, 1, vec![0x40, 4, 0, 4, 0x99, 0]),
        (Version::V5, 2, vec![0x50, 4, 0, 4, 0x99, 0]),
    ] {
        let mut i = driver(version);
        i.problem_info = false;
        let (r, out, tally) = check(&mut i, &publish(version, qos, 4, OWN, &bad));
        assert!(matches!(r, Ok(None)), "{r:?}");
        assert_eq!(out, answer, "{version:?} QoS {qos}");
        assert_eq!((tally.publishes, tally.invalid_payload), (1, 1));
    }
    let limits = Limits {
        validate_locations: false,
        ..Config::default().limits
    };
    let mut unchecked = inbound(Version::V5, Grants::driver(), &limits);
    let (r, _, _) = check(&mut unchecked, &publish(Version::V5, 0, 0, OWN, &bad));
    assert!(matches!(r, Ok(Some(_))), "{r:?}");
}

#[test]
fn a_publish_is_judged_topic_first_then_policy_then_payload() {
    let mut i = driver(Version::V5);
    assert_eq!(
        i.verdict(b"drivers/#", b""),
        Verdict::BadTopic(TopicError::Protocol)
    );
    assert_eq!(
        i.verdict(b"drivers/\xff", b""),
        Verdict::BadTopic(TopicError::Malformed)
    );
    assert_eq!(i.verdict(b"drivers/drv-2/location", b"{}"), Verdict::Denied);
    let shape = Verdict::Invalid(validation::Invalid::Shape);
    assert_eq!(i.verdict(OWN.as_bytes(), b"{}"), shape);
    assert_eq!(i.verdict(b"drivers/drv-1/status", b"{}"), Verdict::Accept);
}

/// A SUBACK code as written on the wire in `version`.
fn code(c: rumqttd::protocol::SubscribeReasonCode, version: Version) -> u8 {
    let ack = rumqttd::protocol::SubAck {
        pkid: 1,
        return_codes: vec![c],
    };
    let mut out = BytesMut::new();
    encode(version, Packet::SubAck(ack, None), &mut out).expect("encoded");
    out[out.len() - 1]
}

#[test]
fn refused_filters_are_answered_in_each_versions_words() {
    for (version, denied) in [(Version::V5, [0x87, 0x8F]), (Version::V311, [0x80; 2])] {
        let mut i = inbound(version, Grants::rider(), &Config::default().limits);
        let filters = ["#", "drivers/+/location", "a/#/b"];
        let (r, out, tally) = check(&mut i, &subscribe(version, 5, &filters));
        let Ok(Some(Packet::Subscribe(s, _))) = r else {
            panic!("{r:?}")
        };
        assert_eq!(
            s.filters.len(),
            1,
            "the router gets the granted filter only"
        );
        assert_eq!((tally.subscriptions, tally.subscriptions_refused), (1, 2));
        assert!(out.is_empty(), "the SUBACK waits for the router's");
        // The gateway answers every filter, at its place.
        let [ack] = &i.acks.router_suback()[..] else {
            panic!("one SUBACK due")
        };
        let codes: Vec<u8> = ack.return_codes.iter().map(|c| code(*c, version)).collect();
        assert_eq!(codes, [denied[0], 0x01, denied[1]]);
        let (r, out, _) = check(&mut i, &subscribe(version, 6, &["#"]));
        assert!(matches!(r, Ok(None)), "{r:?}");
        assert_eq!(out.last(), Some(&denied[0]));
    }
}

#[test]
fn a_resubscription_asks_the_router_for_retained_messages_again() {
    let mut i = inbound(Version::V311, Grants::service(), &Config::default().limits);
    let (mut out, mut tally, mut to_router) = (BytesMut::new(), Tally::default(), Vec::new());
    for pkid in [1, 2] {
        let bytes = subscribe(Version::V311, pkid, &["drivers/#"]);
        let packet = wire::read(Version::V311, &bytes);
        i.check(packet, None, &mut out, &mut tally, &mut to_router)
            .expect("subscribed");
    }
    assert!(
        matches!(
            &to_router[..],
            [
                Packet::Subscribe(..),
                Packet::Unsubscribe(..),
                Packet::Subscribe(..)
            ]
        ),
        "{to_router:?}"
    );
    assert_eq!(tally.subscriptions, 2);
}

#[test]
fn unsubscribe_is_answered_here_and_still_forwarded() {
    let mut i = inbound(Version::V5, Grants::service(), &Config::default().limits);
    let (r, _, _) = check(&mut i, &subscribe(Version::V5, 1, &["drivers/a/#"]));
    assert!(matches!(r, Ok(Some(_))), "{r:?}");
    let (r, out, _) = check(
        &mut i,
        &unsubscribe(Version::V5, 2, &["drivers/a/#", "x/#"]),
    );
    assert!(matches!(r, Ok(Some(Packet::Unsubscribe(..)))), "{r:?}");
    assert_eq!(out, [0xB0, 5, 0, 2, 0, 0x00, 0x11]);
}

#[test]
fn acks_from_the_client_must_follow_what_was_sent() {
    let mut i = driver(Version::V311);
    let (r, _, _) = check(&mut i, &[0x40, 2, 0, 1]);
    assert!(broke(&r, "PUBACK out of order or unsolicited"), "{r:?}");
    i.acks.sent(1, 1);
    i.acks.sent(2, 2);
    let forwarded = |c: Checked| matches!(c, (Ok(Some(_)), ref out, _) if out.is_empty());
    assert!(forwarded(check(&mut i, &[0x40, 2, 0, 1])));
    assert!(forwarded(check(&mut i, &[0x50, 2, 0, 2])));
    assert!(forwarded(check(&mut i, &[0x70, 2, 0, 2])));
    let (r, _, _) = check(&mut i, &[0x70, 2, 0, 2]);
    assert!(broke(&r, "PUBCOMP out of order or unsolicited"), "{r:?}");
    let (r, _, _) = check(&mut i, &[0x50, 2, 0, 3]);
    assert!(broke(&r, "PUBREC out of order or unsolicited"), "{r:?}");
    // A PUBREL nobody waits for is a resend: the gateway completes it.
    let (r, out, _) = check(&mut i, &[0x62, 2, 0, 8]);
    assert!(matches!(r, Ok(None)), "{r:?}");
    assert_eq!(out, [0x70, 2, 0, 8]);
}

#[test]
fn pings_disconnects_and_a_second_connect() {
    let mut i = driver(Version::V5);
    let (r, out, _) = check(&mut i, &[0xC0, 0]);
    assert!(matches!(r, Ok(None)), "{r:?}");
    assert_eq!(out, frame::PINGRESP);
    let (r, _, _) = check(&mut i, &[0xE0, 0]);
    assert!(matches!(r, Err(End::ClientDisconnect)), "{r:?}");
    let (r, _, _) = check(&mut i, &[0xE0, 1, 0x04]);
    assert!(matches!(r, Err(End::ClientDisconnectWithWill)), "{r:?}");
    let (r, _, _) = check(
        &mut i,
        &wire::connect(Version::V5, true, "drv-1", None, &[]),
    );
    assert!(broke(&r, "second CONNECT"), "{r:?}");
}

#[test]
fn on_a_lane_the_gateway_acks_qos1_until_a_packet_needs_a_link() {
    for version in [Version::V311, Version::V5] {
        for lane in [true, false] {
            let mut i = driver(version);
            i.new_read(lane);
            let (mut out, mut tally, mut to_router) =
                (BytesMut::new(), Tally::default(), Vec::new());
            let frames = [
                publish(version, 0, 0, OWN, &location(60.1)),
                publish(version, 1, 7, OWN, &location(60.2)),
                wire::frame(0xC0, Vec::new()), // PINGREQ: nothing for the router
                publish(version, 2, 8, OWN, &location(60.3)),
                publish(version, 1, 9, OWN, &location(60.4)),
            ];
            for f in &frames {
                let header = frame::publish_qos_pkid(f);
                i.check(
                    wire::read(version, f),
                    header,
                    &mut out,
                    &mut tally,
                    &mut to_router,
                )
                .expect("accepted");
            }
            assert_eq!(to_router.len(), 4, "{to_router:?}");
            // Through a lane: 7 acked here; the QoS 2 publish and what follows it need
            // the router's answers, through a link of its own.
            let mut answers = BytesMut::from(&out[..]);
            let mut acked = Vec::new();
            while !answers.is_empty() {
                // The server's codec reads no PINGRESP.
                if answers.starts_with(&frame::PINGRESP) {
                    let _ = answers.split_to(2);
                    continue;
                }
                match version.read(&mut answers, 1 << 20).expect("an answer") {
                    Packet::PubAck(a, _) => acked.push(a.pkid),
                    other => panic!("{other:?}"),
                }
            }
            if lane {
                assert_eq!(acked, [7]);
                assert_eq!(i.lane_len, 2);
                assert!(!i.lane);
                assert_eq!(i.acks.incoming_open(), 2);
            } else {
                assert!(acked.is_empty(), "{acked:?}");
                assert_eq!(i.acks.incoming_open(), 3);
            }
        }
    }
}

#[test]
fn a_lane_read_of_publishes_only_stays_on_the_lane() {
    let mut i = driver(Version::V311);
    i.new_read(true);
    let (mut out, mut tally, mut to_router) = (BytesMut::new(), Tally::default(), Vec::new());
    for pkid in 1..=3 {
        let f = publish(Version::V311, 1, pkid, OWN, &location(60.1));
        let header = frame::publish_qos_pkid(&f);
        i.check(
            wire::read(Version::V311, &f),
            header,
            &mut out,
            &mut tally,
            &mut to_router,
        )
        .expect("accepted");
    }
    assert!(i.lane);
    assert_eq!(i.lane_len, 3);
    assert_eq!(i.acks.incoming_open(), 0);
    assert_eq!(&out[..], [0x40, 2, 0, 1, 0x40, 2, 0, 2, 0x40, 2, 0, 3]);
}
