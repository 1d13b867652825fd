//! Publishing over HTTP (`POST /topics/{topic}`, OwnTracks' `POST /pub`): what arrives
//! reaches MQTT subscribers, and what a PUBLISH would be refused for is refused with the
//! HTTP status that says why.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::{basic_auth, tcp_options, HttpAnswer, TestBroker, TestClient};
use rumqttc::QoS;
use std::net::SocketAddr;

/// `POST path` with `headers` and `body`.
async fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpAnswer {
    common::http_request(addr, "POST", path, headers, body).await
}

/// A valid fix of `id` now.
fn location(id: &str, lat: f64) -> String {
    let now = fleetcast_proto::time::now_ms();
    format!(
        r#"{{"id":"{id}","lat":{lat},"lon":24.94,"heading":90,"speed":8,"accuracy":5,"status":"available","seq":1,"ts":{now}}}"#
    )
}

#[tokio::test]
async fn a_post_reaches_mqtt_subscribers_live_and_retained() {
    let b = TestBroker::start().await;
    let mut sub = TestClient::connect(tcp_options("http-sub", &b.addrs)).await;
    sub.subscribe("fleet/#", QoS::AtLeastOnce).await;
    for qos in [0, 1] {
        let path = format!("/topics/fleet/a?qos={qos}");
        let a = post(b.addrs.http, &path, &[], format!("hello {qos}").as_bytes()).await;
        assert_eq!(a.status, 200, "{}", a.head);
        assert_eq!(a.body, r#"{"message":"OK"}"#);
        let p = sub.next_publish().await.expect("the message over MQTT");
        assert_eq!(
            (p.topic.as_str(), &p.payload[..]),
            ("fleet/a", format!("hello {qos}").as_bytes())
        );
    }
    let a = post(
        b.addrs.http,
        "/topics/fleet/kept?retain=true&qos=1",
        &[],
        b"last",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.head);
    let mut late = TestClient::connect(tcp_options("http-late", &b.addrs)).await;
    late.subscribe("fleet/kept", QoS::AtLeastOnce).await;
    let p = late.next_publish().await.expect("the retained message");
    assert!(p.retain);
    assert_eq!(&p.payload[..], b"last");
    let a = post(b.addrs.http, "/topics/fleet/a?qos=2", &[], b"x").await;
    assert_eq!(a.status, 400, "QoS 2 over HTTP: {}", a.head);
}

#[tokio::test]
async fn each_refusal_answers_with_its_status() {
    let mut config = fleetcast_broker::Config::ephemeral();
    config.limits.max_packet_size = 1_024;
    let b = TestBroker::with_config_and_example_credentials(config).await;
    let http = b.addrs.http;
    let mut rider = TestClient::connect(
        tcp_options("rider-1", &b.addrs)
            .set_credentials("rider-1", "rider-demo")
            .clone(),
    )
    .await;
    rider
        .subscribe("drivers/+/location", QoS::AtLeastOnce)
        .await;
    let own = "/topics/drivers/drv-000001/location?qos=1";
    let driver = basic_auth("drv-000001", "drv1-demo");
    let auth = [("Authorization", driver.as_str())];

    let a = post(http, own, &[], location("drv-000001", 60.17).as_bytes()).await;
    assert_eq!(a.status, 401, "no credentials: {}", a.head);
    assert!(a.head.contains("www-authenticate: Basic"), "{}", a.head);

    let a = post(http, own, &auth, location("drv-000001", 60.17).as_bytes()).await;
    assert_eq!(a.status, 200, "{} {}", a.head, a.body);
    let p = rider.next_publish().await.expect("the driver's fix");
    assert_eq!(p.topic, "drivers/drv-000001/location");

    let a = post(http, own, &auth, location("drv-000001", 999.0).as_bytes()).await;
    assert_eq!(a.status, 400, "an invalid location: {}", a.body);
    assert!(a.body.contains("invalid location"), "{}", a.body);

    let other = "/topics/drivers/drv-000002/location";
    let a = post(http, other, &auth, location("drv-000002", 60.17).as_bytes()).await;
    assert_eq!(a.status, 403, "another driver's topic: {}", a.body);

    for bad in ["/topics/$foo/bar", "/topics/fleet/+/x"] {
        let a = post(http, bad, &auth, b"x").await;
        assert_eq!(a.status, 400, "{bad}: {}", a.body);
    }

    let big = vec![b'x'; 2_000];
    let a = post(http, "/topics/drivers/drv-000001/status", &auth, &big).await;
    assert_eq!(a.status, 413, "over max_packet_size: {}", a.head);

    // The fleet account may use drv-* client ids only.
    let fleet = basic_auth("fleet", "fleet-demo");
    let a = post(
        http,
        "/topics/drivers/x/status?client_id=x",
        &[("Authorization", fleet.as_str())],
        b"online",
    )
    .await;
    assert_eq!(
        a.status, 403,
        "a client id the account may not use: {}",
        a.body
    );

    let wrong = basic_auth("drv-000001", "nope");
    let a = post(http, own, &[("Authorization", wrong.as_str())], b"x").await;
    assert_eq!(a.status, 401, "a wrong password: {}", a.body);
    assert!(
        rider
            .publish_within(std::time::Duration::from_millis(300))
            .await
            .is_none(),
        "nothing refused reached the subscriber"
    );
}

#[tokio::test]
async fn a_publisher_over_its_quota_is_told_when_to_come_back() {
    let mut config = fleetcast_broker::Config::ephemeral();
    config.limits.publish_rate_per_connection = 1;
    let b = TestBroker::with_config(config).await;
    let first = post(b.addrs.http, "/topics/fleet/q?client_id=p1", &[], b"1").await;
    assert_eq!(first.status, 200, "{}", first.head);
    let second = post(b.addrs.http, "/topics/fleet/q?client_id=p1", &[], b"2").await;
    assert_eq!(second.status, 429, "{}", second.head);
    assert!(
        second.head.to_ascii_lowercase().contains("retry-after: 1"),
        "{}",
        second.head
    );
    let other = post(b.addrs.http, "/topics/fleet/q?client_id=p2", &[], b"3").await;
    assert_eq!(
        other.status, 200,
        "another publisher has its own quota: {}",
        other.head
    );
}

#[tokio::test]
async fn owntracks_http_mode_publishes_on_its_topic() {
    let b = TestBroker::start().await;
    let mut sub = TestClient::connect(tcp_options("ot-sub", &b.addrs)).await;
    sub.subscribe("owntracks/#", QoS::AtLeastOnce).await;
    let fix = format!(
        r#"{{"_type":"location","lat":60.17,"lon":24.94,"tst":{},"acc":5,"tid":"ph"}}"#,
        fleetcast_proto::time::unix_now()
    );
    let headers = [("X-Limit-U", "alice"), ("X-Limit-D", "phone")];
    let a = post(b.addrs.http, "/pub", &headers, fix.as_bytes()).await;
    assert_eq!(a.status, 200, "{} {}", a.head, a.body);
    assert_eq!(a.body, "[]", "the app expects an array");
    let p = sub.next_publish().await.expect("the fix over MQTT");
    assert_eq!(p.topic, "owntracks/alice/phone");
    assert_eq!(&p.payload[..], fix.as_bytes());
    let a = post(b.addrs.http, "/pub?u=bob&d=tab", &[], fix.as_bytes()).await;
    assert_eq!(a.status, 200, "user and device in the query: {}", a.body);
    let p = sub.next_publish().await.expect("the second fix");
    assert_eq!(p.topic, "owntracks/bob/tab");
    let a = post(b.addrs.http, "/pub", &[], fix.as_bytes()).await;
    assert_eq!(a.status, 400, "no user or device: {}", a.body);
}

#[tokio::test]
async fn http_publishes_are_counted_by_status() {
    let stack = common::start_stack(fleetcast::stack::offline_dashboard().unwrap()).await;
    let http = stack.addrs().http;
    for path in ["/topics/fleet/m", "/topics/fleet/m", "/topics/$x"] {
        post(http, path, &[], b"x").await;
    }
    let metrics = common::http_get(http, "/metrics").await;
    for line in [
        "fleetcast_http_publishes_total{code=\"200\"} 2",
        "fleetcast_http_publishes_total{code=\"400\"} 1",
        "fleetcast_publishes_received_total 2",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
}
