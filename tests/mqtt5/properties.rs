//! PUBLISH properties travel from a v5 publisher to v5 subscribers unchanged (3.3.2.3):
//! user properties in their order with repeated keys, content type, payload format
//! indicator, response topic and correlation data, which together make MQTT 5's
//! request/response. A 3.1.1 subscriber of the same topic still gets the message.
//! Here with rumqttc on both ends; `cli.rs` does the same with mosquitto_pub/sub.

use crate::common::TestClient;
use crate::v5::{filter, text, V5};
use crate::{both, Broker};
use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use rumqttc::v5::mqttbytes::QoS;
use std::time::Duration;

fn user(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn properties_reach_v5_and_v311_subscribers(b: Broker) {
    let topic = "mqtt5/props/drv-1";
    let mut sub = V5::connect(b, &b.id("props-sub")).await;
    sub.subscribe(vec![filter(topic, QoS::AtLeastOnce, |_| {})], None)
        .await;
    let mut o =
        rumqttc::MqttOptions::new(b.id("props-v311"), b.addr.ip().to_string(), b.addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    let mut old = TestClient::connect(o).await;
    old.subscribe(topic, rumqttc::QoS::AtLeastOnce).await;

    let sent = PublishProperties {
        payload_format_indicator: Some(1),
        content_type: Some("application/json".into()),
        response_topic: Some("mqtt5/props/replies".into()),
        correlation_data: Some(Bytes::from_static(b"\x00req-1\xff")),
        user_properties: user(&[("fleet", "north"), ("trip", "7"), ("fleet", "south")]),
        ..PublishProperties::default()
    };
    let publisher = V5::connect(b, &b.id("props-pub")).await;
    publisher
        .publish_with(
            topic,
            QoS::AtLeastOnce,
            false,
            r#"{"lat":60.17}"#,
            sent.clone(),
        )
        .await;

    let who = b.name;
    let got = sub.expect_publish("the message with properties").await;
    assert_eq!(text(&got.payload), r#"{"lat":60.17}"#, "[{who}]");
    let p = got.properties.unwrap_or_else(|| {
        panic!("[{who}] the PUBLISH reached the v5 subscriber without properties")
    });
    assert_eq!(
        p.user_properties, sent.user_properties,
        "[{who}] user properties, in order, repeated key kept"
    );
    assert_eq!(p.content_type, sent.content_type, "[{who}] content type");
    assert_eq!(
        p.payload_format_indicator, sent.payload_format_indicator,
        "[{who}] payload format indicator"
    );
    assert_eq!(
        p.response_topic, sent.response_topic,
        "[{who}] response topic"
    );
    assert_eq!(
        p.correlation_data, sent.correlation_data,
        "[{who}] correlation data"
    );

    let v311 = old
        .next_publish()
        .await
        .unwrap_or_else(|| panic!("[{who}] the 3.1.1 subscriber got nothing"));
    assert_eq!(
        (v311.topic.as_str(), text(&v311.payload).as_str()),
        (topic, r#"{"lat":60.17}"#),
        "[{who}] 3.1.1 delivery"
    );
}

#[tokio::test]
async fn publish_properties_reach_a_v5_subscriber_and_a_v311_one_gets_the_message() {
    both("", "", properties_reach_v5_and_v311_subscribers).await;
}

/// A responder answers on the request's response topic with its correlation data; the
/// requester matches the answer to its request by that data.
async fn request_response(b: Broker) {
    let who = b.name;
    let mut responder = V5::connect(b, &b.id("rr-responder")).await;
    responder
        .subscribe(
            vec![filter("mqtt5/rr/requests", QoS::AtLeastOnce, |_| {})],
            None,
        )
        .await;
    let answering = tokio::spawn(async move {
        let req = responder.expect_publish("a request").await;
        let props = req.properties.clone().unwrap_or_else(|| {
            panic!("[{who}] the request reached the responder without properties")
        });
        let reply_to = props
            .response_topic
            .unwrap_or_else(|| panic!("[{who}] the request lost its response topic"));
        let answer = PublishProperties {
            correlation_data: props.correlation_data,
            ..PublishProperties::default()
        };
        let body = format!("pong:{}", String::from_utf8_lossy(&req.payload));
        responder
            .publish_with(&reply_to, QoS::AtLeastOnce, false, &body, answer)
            .await;
        responder
    });

    let reply_topic = format!("mqtt5/rr/replies/{}", b.id("requester"));
    let mut requester = V5::connect(b, &b.id("requester")).await;
    requester
        .subscribe(vec![filter(&reply_topic, QoS::AtLeastOnce, |_| {})], None)
        .await;
    let ask = PublishProperties {
        response_topic: Some(reply_topic.clone()),
        correlation_data: Some(Bytes::from_static(b"c-42")),
        ..PublishProperties::default()
    };
    requester
        .publish_with("mqtt5/rr/requests", QoS::AtLeastOnce, false, "ping", ask)
        .await;
    let Some(answer) = requester.publish_within(crate::v5::PATIENCE).await else {
        // The responder's own failure says more (a request without properties).
        if let Err(e) = answering.await {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("[{who}] no response came");
    };
    assert_eq!(text(&answer.payload), "pong:ping", "[{who}]");
    assert_eq!(
        answer.properties.and_then(|p| p.correlation_data),
        Some(Bytes::from_static(b"c-42")),
        "[{who}] the response carries the request's correlation data"
    );
    answering.await.unwrap().disconnect().await;
}

#[tokio::test]
async fn request_response_with_response_topic_and_correlation_data() {
    both("", "", request_response).await;
}
