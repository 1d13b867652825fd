//! Subscription options (3.8.3.1) and subscription identifiers (3.8.2.1.2), with
//! rumqttc's v5 client: no-local, retain-as-published, retain handling 0/1/2, the id of
//! the matching subscription on each PUBLISH, and id 0 refused as a protocol error.

use crate::raw::Raw;
use crate::v5::{filter, text, V5};
use crate::wire::{id, options, Props};
use crate::{both, Broker};
use rumqttc::v5::mqttbytes::v5::RetainForwardRule;
use rumqttc::v5::mqttbytes::QoS;
use std::time::Duration;

/// How long a message that must not come is waited for.
const QUIET: Duration = Duration::from_secs(1);

async fn no_local(b: Broker) {
    let who = b.name;
    let topic = "mqtt5/nolocal";
    let mut own = V5::connect(b, &b.id("nl-own")).await;
    own.subscribe(
        vec![filter(topic, QoS::AtLeastOnce, |f| f.nolocal = true)],
        None,
    )
    .await;
    let mut other = V5::connect(b, &b.id("nl-other")).await;
    other
        .subscribe(vec![filter(topic, QoS::AtLeastOnce, |_| {})], None)
        .await;

    own.publish(topic, QoS::AtLeastOnce, false, "from-own")
        .await;
    let p = other.expect_publish("the no-local client's publish").await;
    assert_eq!(text(&p.payload), "from-own", "[{who}]");
    // The next thing the no-local client receives is the other's message, not its own.
    other
        .publish(topic, QoS::AtLeastOnce, false, "from-other")
        .await;
    let p = own.expect_publish("the other client's publish").await;
    assert_eq!(
        text(&p.payload),
        "from-other",
        "[{who}] a no-local subscription received its own publish"
    );
    assert!(
        own.publish_within(QUIET).await.is_none(),
        "[{who}] one message only"
    );
}

#[tokio::test]
async fn no_local_keeps_a_clients_own_publishes_from_it() {
    both("", "", no_local).await;
}

async fn retain_as_published(b: Broker) {
    let who = b.name;
    let mut kept = V5::connect(b, &b.id("rap-on")).await;
    kept.subscribe(
        vec![filter("mqtt5/rap/#", QoS::AtLeastOnce, |f| {
            f.preserve_retain = true
        })],
        None,
    )
    .await;
    let mut cleared = V5::connect(b, &b.id("rap-off")).await;
    cleared
        .subscribe(vec![filter("mqtt5/rap/#", QoS::AtLeastOnce, |_| {})], None)
        .await;
    let publisher = V5::connect(b, &b.id("rap-pub")).await;
    for (payload, retain) in [("retained", true), ("live", false)] {
        publisher
            .publish("mqtt5/rap/x", QoS::AtLeastOnce, retain, payload)
            .await;
        let p = kept.expect_publish(payload).await;
        assert_eq!(text(&p.payload), payload, "[{who}]");
        assert_eq!(
            p.retain, retain,
            "[{who}] retain-as-published: the flag as the publisher set it ({payload})"
        );
        let p = cleared.expect_publish(payload).await;
        assert_eq!(text(&p.payload), payload, "[{who}]");
        assert!(
            !p.retain,
            "[{who}] without retain-as-published a live delivery has retain 0 ({payload})"
        );
    }
}

#[tokio::test]
async fn retain_as_published_keeps_the_retain_flag_on_live_delivery() {
    both("", "", retain_as_published).await;
}

async fn retain_handling(b: Broker) {
    let who = b.name;
    let publisher = V5::connect(b, &b.id("rh-pub")).await;
    for rule in 0..3 {
        publisher
            .publish(&format!("mqtt5/rh/{rule}"), QoS::AtLeastOnce, true, "kept")
            .await;
    }
    // The publisher's QoS 1 flow is done when its last message can be read back.
    let mut check = V5::connect(b, &b.id("rh-check")).await;
    check
        .subscribe(vec![filter("mqtt5/rh/2", QoS::AtLeastOnce, |_| {})], None)
        .await;
    check.expect_publish("the retained message").await;

    let mut sub = V5::connect(b, &b.id("rh-sub")).await;
    // (rule, sent on the first subscribe, sent again on a re-subscribe)
    for (n, rule, first, again) in [
        (0, RetainForwardRule::OnEverySubscribe, true, true),
        (1, RetainForwardRule::OnNewSubscribe, true, false),
        (2, RetainForwardRule::Never, false, false),
    ] {
        let topic = format!("mqtt5/rh/{n}");
        for (round, expected) in [("first subscribe", first), ("re-subscribe", again)] {
            let f = filter(&topic, QoS::AtLeastOnce, |f| {
                f.retain_forward_rule = rule.clone()
            });
            sub.subscribe(vec![f], None).await;
            let got = sub.publish_within(QUIET).await;
            match (expected, got) {
                (true, Some(p)) => {
                    assert_eq!(
                        (p.topic.as_ref(), p.retain),
                        (topic.as_bytes(), true),
                        "[{who}]"
                    )
                }
                (true, None) => panic!("[{who}] {rule:?}: no retained message on the {round}"),
                (false, Some(p)) => panic!(
                    "[{who}] {rule:?}: a retained message on the {round}: {:?}",
                    p.payload
                ),
                (false, None) => {}
            }
        }
    }
}

#[tokio::test]
async fn retain_handling_0_1_2_on_subscribe_and_resubscribe() {
    both("", "", retain_handling).await;
}

async fn subscription_identifiers(b: Broker) {
    let who = b.name;
    let mut sub = V5::connect(b, &b.id("sid-sub")).await;
    let available = sub
        .connack
        .properties
        .as_ref()
        .and_then(|p| p.subscription_identifiers_available);
    assert_ne!(
        available,
        Some(0),
        "[{who}] CONNACK says Subscription Identifiers Available = 0"
    );
    let qos1 = |path: &str| filter(path, QoS::AtLeastOnce, |_| {});
    sub.subscribe(vec![qos1("mqtt5/sid/a/#")], Some(5)).await;
    // 300 takes two bytes as a variable byte integer.
    sub.subscribe(vec![qos1("mqtt5/sid/b/+")], Some(300)).await;
    sub.subscribe(vec![qos1("mqtt5/sid/c")], None).await;

    let publisher = V5::connect(b, &b.id("sid-pub")).await;
    for (topic, ids) in [
        ("mqtt5/sid/a/x", vec![5]),
        ("mqtt5/sid/b/y", vec![300]),
        ("mqtt5/sid/c", vec![]),
        ("mqtt5/sid/a/z", vec![5]),
    ] {
        publisher.publish(topic, QoS::AtLeastOnce, false, "x").await;
        let p = sub.expect_publish(topic).await;
        assert_eq!(p.topic.as_ref(), topic.as_bytes(), "[{who}]");
        let got = p
            .properties
            .map(|p| p.subscription_identifiers)
            .unwrap_or_default();
        assert_eq!(got, ids, "[{who}] subscription identifiers on {topic}");
    }
}

#[tokio::test]
async fn subscription_identifiers_come_back_on_matching_publishes() {
    both("", "", subscription_identifiers).await;
}

async fn subscription_identifier_0(b: Broker) {
    let who = b.name;
    let mut c = Raw::plain(b.addr, who, &b.id("sid-0")).await;
    let sub = crate::wire::subscribe(
        1,
        &Props::new().var(id::SUBSCRIPTION_ID, 0),
        &[("mqtt5/sid0", options(1, false, false, 0))],
    );
    c.send(&sub).await;
    let (reason, closed) = c.end(crate::raw::PATIENCE).await;
    assert!(
        closed,
        "[{who}] a SUBSCRIBE with subscription identifier 0 left the connection open"
    );
    // mosquitto 2.0.11 closes with DISCONNECT 0x81 (malformed packet); the spec calls id
    // 0 a protocol error, 0x82 (3.8.2.1.2). Only that byte is let pass for it.
    let allowed: &[u8] = if who == "mosquitto" {
        &[0x81, 0x82]
    } else {
        &[0x82]
    };
    assert!(
        reason.is_none_or(|r| allowed.contains(&r)),
        "[{who}] DISCONNECT 0x{:02x}, expected 0x82 (protocol error) or a plain close",
        reason.unwrap_or(0)
    );
}

#[tokio::test]
async fn subscription_identifier_0_is_a_protocol_error() {
    both("", "", subscription_identifier_0).await;
}
