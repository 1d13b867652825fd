//! Driver history over real sockets: fixes published over MQTT come back from
//! `GET /api/drivers/{id}/track` in order and within the asked window, as GeoJSON; the
//! replay endpoint; and with `--auth`, only an account that may see the driver gets it
//! (HTTP Basic or a browser token).

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::*;
use fleetcast::stack::Stack;
use rumqttc::QoS;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;

fn fix(id: &str, seq: u64, lat: f64, lon: f64, ts: u64) -> String {
    format!(
        r#"{{"id":"{id}","lat":{lat},"lon":{lon},"heading":45,"speed":10,"accuracy":5,"status":"on_trip","seq":{seq},"ts":{ts}}}"#
    )
}

/// The answer to `GET path` (with `headers`), its body as JSON.
async fn get(http: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let a = http_request(http, "GET", path, headers, b"").await;
    (
        a.status,
        serde_json::from_str(&a.body).unwrap_or(Value::Null),
    )
}

/// Polls the track of `id` until it has `n` points.
async fn track_with(http: SocketAddr, id: &str, n: usize, headers: &[(&str, &str)]) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, body) = get(http, &format!("/api/drivers/{id}/track?since=0"), headers).await;
        let have = body["properties"]["times"].as_array().map_or(0, Vec::len);
        if status == 200 && have >= n {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "track of {id}: {status} {body} ({have} points)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// 20 fixes of `id` two seconds apart (by their `ts`), ending a minute ago; returns
/// (ts, lat, lon) of each.
async fn publish_track(client: &TestClient, id: &str) -> Vec<(u64, f64, f64)> {
    let t0 = fleetcast_proto::time::now_ms() - 100_000;
    let mut sent = Vec::new();
    for i in 0..20u64 {
        let (ts, lat, lon) = (
            t0 + i * 2_000,
            60.16 + i as f64 * 0.0005,
            24.93 + i as f64 * 0.0007,
        );
        client
            .client
            .publish(
                format!("drivers/{id}/location"),
                QoS::AtLeastOnce,
                false,
                fix(id, i + 1, lat, lon, ts),
            )
            .await
            .unwrap();
        sent.push((ts, lat, lon));
    }
    sent
}

async fn stack(auth: bool) -> Stack {
    let options = fleetcast::stack::offline_dashboard().unwrap();
    start_stack_with_auth(options, auth.then(example_auth)).await
}

#[tokio::test]
async fn track_api_returns_the_published_fixes_in_order_within_the_window() {
    let s = stack(false).await;
    let addrs = s.addrs();
    let client = TestClient::connect(tcp_options("drv-000042", &addrs)).await;
    let sent = publish_track(&client, "drv-000042").await;
    let other = publish_track(&client, "drv-000043").await;
    let f = track_with(addrs.http, "drv-000042", 20, &[]).await;
    assert_eq!(f["type"], "Feature");
    assert_eq!(f["geometry"]["type"], "LineString");
    let coords = f["geometry"]["coordinates"].as_array().unwrap();
    let times = f["properties"]["times"].as_array().unwrap();
    assert_eq!(coords.len(), 20);
    for (i, (ts, lat, lon)) in sent.iter().enumerate() {
        assert_eq!(times[i].as_u64(), Some(*ts), "point {i}");
        assert!(
            (coords[i][0].as_f64().unwrap() - lon).abs() < 1e-6,
            "point {i}"
        );
        assert!(
            (coords[i][1].as_f64().unwrap() - lat).abs() < 1e-6,
            "point {i}"
        );
    }
    assert_eq!(f["properties"]["status"][0], "on_trip");
    // A window: milliseconds and RFC 3339 both.
    let (since, until) = (sent[5].0, sent[9].0);
    let (status, part) = get(
        addrs.http,
        &format!("/api/drivers/drv-000042/track?since={since}&until={until}"),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    let got: Vec<u64> = part["properties"]["times"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect();
    assert_eq!(got, sent[5..=9].iter().map(|s| s.0).collect::<Vec<_>>());
    let (status, all) = get(addrs.http, "/api/drivers/drv-000042/track?since=2000-01-01T00:00:00Z&until=2999-01-01T00:00:00.5%2B01:00", &[]).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["properties"]["times"].as_array().unwrap().len(), 20);
    // Errors.
    assert_eq!(
        get(addrs.http, "/api/drivers/nobody/track", &[]).await.0,
        404
    );
    assert_eq!(
        get(
            addrs.http,
            "/api/drivers/drv-000042/track?since=yesterday",
            &[]
        )
        .await
        .0,
        400
    );
    assert_eq!(
        get(
            addrs.http,
            &format!("/api/drivers/drv-000042/track?since={until}&until={since}"),
            &[]
        )
        .await
        .0,
        400
    );

    // The replay: both drivers inside a box around them, thinned to one point per 4 s.
    let _ = track_with(addrs.http, "drv-000043", 20, &[]).await;
    let (status, r) = get(
        addrs.http,
        &format!(
            "/api/replay?since=0&bbox=24.9,60.1,25.0,60.2&step_ms=4000&until={}",
            other[19].0
        ),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{r}");
    let drivers = r["drivers"].as_array().unwrap();
    assert_eq!(drivers.len(), 2, "{r}");
    assert_eq!(drivers[0]["id"], "drv-000042");
    // One point per 4 s of fixes 2 s apart, and the last: 0, 4, .., 36 s, then 38 s.
    let points = drivers[0]["points"].as_array().unwrap();
    assert_eq!(points.len(), 11, "{r}");
    assert_eq!(points[1][0].as_u64(), Some(sent[2].0));
    assert_eq!(points[10][0].as_u64(), Some(sent[19].0));
    assert_eq!(r["truncated"], false);
    let (_, none) = get(addrs.http, "/api/replay?since=0&bbox=10,10,11,11", &[]).await;
    assert_eq!(none["drivers"].as_array().unwrap().len(), 0);
    assert_eq!(get(addrs.http, "/api/replay?bbox=1,2,3", &[]).await.0, 400);
    client.disconnect().await;
    s.shutdown().await.unwrap();
}

#[tokio::test]
async fn with_auth_only_an_account_that_may_see_the_driver_gets_its_track() {
    let s = stack(true).await;
    let addrs = s.addrs();
    let mut options = tcp_options("drv-000001", &addrs);
    options.set_credentials("drv-000001", "drv1-demo");
    let driver = TestClient::connect(options).await;
    publish_track(&driver, "drv-000001").await;
    let partner = basic_auth("partner-1", "partner-demo");
    let f = track_with(addrs.http, "drv-000001", 20, &[("Authorization", &partner)]).await;
    assert_eq!(f["geometry"]["coordinates"].as_array().unwrap().len(), 20);

    let path = "/api/drivers/drv-000001/track?since=0";
    let a = http_request(addrs.http, "GET", path, &[], b"").await;
    assert_eq!(a.status, 401);
    assert!(
        a.head
            .to_ascii_lowercase()
            .contains("www-authenticate: basic"),
        "{}",
        a.head
    );
    let wrong = basic_auth("partner-1", "nope");
    assert_eq!(
        get(addrs.http, path, &[("Authorization", &wrong)]).await.0,
        401
    );
    // Another driver's account may not see it: the same answer as no such driver.
    let other = basic_auth("drv-000002", "drv2-demo");
    assert_eq!(
        get(addrs.http, path, &[("Authorization", &other)]).await.0,
        404
    );
    // A browser token of an account that may see it, in the query or as Bearer.
    let now = fleetcast_proto::time::unix_now();
    let token = example_auth().mint_token("partner-1", now, 600).unwrap();
    let (status, body) = get(addrs.http, &format!("{path}&token={token}"), &[]).await;
    assert_eq!(status, 200, "{body}");
    let bearer = format!("Bearer {token}");
    assert_eq!(
        get(addrs.http, path, &[("Authorization", &bearer)]).await.0,
        200
    );
    let rider = example_auth().mint_token("drv-000002", now, 600).unwrap();
    assert_eq!(
        get(addrs.http, &format!("{path}&token={rider}"), &[])
            .await
            .0,
        404
    );
    assert_eq!(
        get(addrs.http, &format!("{path}&token=forged"), &[])
            .await
            .0,
        401
    );
    // The replay shows only what the account may see.
    let (_, r) = get(
        addrs.http,
        &format!("/api/replay?since=0&token={rider}"),
        &[],
    )
    .await;
    assert_eq!(r["drivers"].as_array().unwrap().len(), 0, "{r}");
    let (_, r) = get(
        addrs.http,
        &format!("/api/replay?since=0&token={token}"),
        &[],
    )
    .await;
    assert_eq!(r["drivers"].as_array().unwrap().len(), 1, "{r}");
    driver.disconnect().await;
    s.shutdown().await.unwrap();
}
