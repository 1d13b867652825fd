//! Geofences end to end: fences from a file and from the API, a driver's fixes over MQTT,
//! entries and exits on `geofences/{name}/events`, the count retained and as a gauge.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::{tcp_options, TempDir, TestClient, PATIENCE};
use rumqttc::QoS;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::timeout;

/// About 1.1 km by 1.1 km; its east edge is lon 24.95.
const SQUARE: &str = r#"{"type":"Polygon","coordinates":[[[24.93,60.16],[24.95,60.16],[24.95,60.17],[24.93,60.17],[24.93,60.16]]]}"#;

fn feature(name: &str) -> String {
    format!(r#"{{"type":"Feature","properties":{{"name":"{name}"}},"geometry":{SQUARE}}}"#)
}

fn fix(seq: u64, lat: f64, lon: f64) -> String {
    let now = fleetcast_proto::time::now_ms();
    format!(
        r#"{{"id":"drv-000001","lat":{lat},"lon":{lon},"heading":270,"speed":5,"accuracy":5,"status":"available","seq":{seq},"ts":{now}}}"#
    )
}

/// `METHOD path` with `headers` and `body`; the status and the body.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let a = common::http_request(addr, method, path, headers, body.as_bytes()).await;
    (a.status, a.body)
}

/// The next geofence event (skipping counts) within `wait`, as (event, fence, driver).
async fn next_event(sub: &mut TestClient, wait: Duration) -> Option<(String, String, String)> {
    timeout(wait, async {
        loop {
            let p = sub.next_publish().await?;
            if p.topic.ends_with("/events") {
                let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                let field = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
                return Some((field("event"), field("fence"), field("id")));
            }
        }
    })
    .await
    .ok()
    .flatten()
}

#[tokio::test]
async fn a_driver_wobbling_across_an_edge_enters_once_and_leaves_once() {
    let dir = TempDir::new("geofences");
    let file = dir.path.join("fences.geojson");
    let collection = format!(
        r#"{{"type":"FeatureCollection","features":[{}]}}"#,
        feature("airport")
    );
    std::fs::write(&file, collection).unwrap();
    let mut config = fleetcast_broker::Config::ephemeral();
    config.geofences.file = file.display().to_string();
    let options = fleetcast::stack::offline_dashboard().unwrap();
    let stack = common::start_stack_with_config(config, options, None).await;
    let addrs = stack.addrs();
    let mut watcher = TestClient::connect(tcp_options("fence-watch", &addrs)).await;
    watcher
        .subscribe("geofences/+/events", QoS::AtLeastOnce)
        .await;
    let driver = TestClient::connect(tcp_options("drv-000001", &addrs)).await;
    // At 60.165, 0.0001 degree of longitude is about 5.6 m: the wobble stays within 17 m
    // of the edge, inside the 25 m exit margin.
    let wobble = [-0.0003, 0.0001, -0.0001, 0.0002, -0.0002, 0.0001];
    let mut path: Vec<f64> = wobble.iter().map(|d| 24.95 + d).collect();
    path.extend([24.94; 4]);
    path.extend(wobble.iter().map(|d| 24.95 + d));
    path.extend([24.952; 3]);
    for (seq, lon) in path.iter().enumerate() {
        let payload = fix(seq as u64 + 1, 60.165, *lon);
        driver
            .client
            .publish(
                "drivers/drv-000001/location",
                QoS::AtLeastOnce,
                true,
                payload,
            )
            .await
            .unwrap();
    }
    let enter = next_event(&mut watcher, PATIENCE).await;
    let want = |e: &str| Some((e.to_owned(), "airport".to_owned(), "drv-000001".to_owned()));
    assert_eq!(enter, want("enter"));
    assert_eq!(next_event(&mut watcher, PATIENCE).await, want("exit"));
    assert_eq!(
        next_event(&mut watcher, Duration::from_millis(500)).await,
        None,
        "one entry and one exit, whatever the noise"
    );
    // The count is retained for whoever comes later, and is a gauge.
    let mut late = TestClient::connect(tcp_options("fence-late", &addrs)).await;
    late.subscribe("geofences/airport/count", QoS::AtLeastOnce)
        .await;
    let count = late.next_publish().await.expect("the retained count");
    assert!(count.retain);
    assert_eq!(&count.payload[..], br#"{"count":0,"fence":"airport"}"#);
    let metrics = common::http_get(addrs.http, "/metrics").await;
    assert!(
        metrics.contains("fleetcast_geofence_drivers{fence=\"airport\"} 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn fences_are_changed_over_http_by_admins_only() {
    let admin_hash = fleetcast_broker::auth::hash_password("admin-pw").unwrap();
    let driver_hash = fleetcast_broker::auth::hash_password("drv-pw").unwrap();
    let accounts = format!(
        "[[account]]\nusername = \"ops\"\npassword_hash = \"{admin_hash}\"\nrole = \"admin\"\n\n\
         [[account]]\nusername = \"drv-000001\"\npassword_hash = \"{driver_hash}\"\nrole = \"driver\"\n"
    );
    let auth = Arc::new(fleetcast_broker::auth::Auth::from_toml(&accounts).unwrap());
    let dir = TempDir::new("geofences-api");
    let file = dir.path.join("none.geojson");
    std::fs::write(&file, r#"{"type":"FeatureCollection","features":[]}"#).unwrap();
    let mut config = fleetcast_broker::Config::ephemeral();
    config.geofences.file = file.display().to_string();
    let options = fleetcast::stack::offline_dashboard().unwrap();
    let stack = common::start_stack_with_config(config, options, Some(auth)).await;
    let http = stack.addrs().http;
    let (admin, driver) = (
        common::basic_auth("ops", "admin-pw"),
        common::basic_auth("drv-000001", "drv-pw"),
    );
    let path = "/api/geofences/depot";
    let (code, _) = request(http, "PUT", path, &[], &feature("x")).await;
    assert_eq!(code, 401, "no credentials");
    let (code, _) = request(
        http,
        "PUT",
        path,
        &[("Authorization", &driver)],
        &feature("x"),
    )
    .await;
    assert_eq!(code, 403, "not an admin");
    let (code, body) = request(http, "PUT", path, &[("Authorization", &admin)], "{}").await;
    assert_eq!(code, 400, "not a fence: {body}");
    let (code, body) = request(
        http,
        "PUT",
        path,
        &[("Authorization", &admin)],
        &feature("x"),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = request(
        http,
        "GET",
        "/api/geofences",
        &[("Authorization", &admin)],
        "",
    )
    .await;
    assert_eq!(code, 200);
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        list["features"][0]["properties"]["name"], "depot",
        "named by the path"
    );
    assert_eq!(list["features"][0]["properties"]["count"], 0);
    let (code, _) = request(http, "DELETE", path, &[("Authorization", &admin)], "").await;
    assert_eq!(code, 200);
    let (code, _) = request(http, "DELETE", path, &[("Authorization", &admin)], "").await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn fences_changed_over_http_survive_a_restart_with_data() {
    let admin_hash = fleetcast_broker::auth::hash_password("admin-pw").unwrap();
    let accounts = format!(
        "[[account]]\nusername = \"ops\"\npassword_hash = \"{admin_hash}\"\nrole = \"admin\"\n"
    );
    let auth = || Arc::new(fleetcast_broker::auth::Auth::from_toml(&accounts).unwrap());
    let files = TempDir::new("geofences-kept-file");
    let data = TempDir::new("geofences-kept-data");
    let file = files.path.join("fences.geojson");
    let collection = format!(
        r#"{{"type":"FeatureCollection","features":[{},{}]}}"#,
        feature("airport"),
        feature("harbour")
    );
    std::fs::write(&file, collection).unwrap();
    let mut config = fleetcast_broker::Config::ephemeral();
    config.geofences.file = file.display().to_string();
    config.storage.dir = data.path.display().to_string();
    let admin = common::basic_auth("ops", "admin-pw");
    let names = |body: &str| {
        let list: serde_json::Value = serde_json::from_str(body).unwrap();
        let mut names: Vec<String> = list["features"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["properties"]["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    let options = fleetcast::stack::offline_dashboard().unwrap();
    let stack = common::start_stack_with_config(config.clone(), options, Some(auth())).await;
    let http = stack.addrs().http;
    let with_admin = [("Authorization", admin.as_str())];
    // Added, replaced (the file's harbour), deleted (the file's airport).
    let (code, _) = request(
        http,
        "PUT",
        "/api/geofences/depot",
        &with_admin,
        &feature("x"),
    )
    .await;
    assert_eq!(code, 200);
    let moved = feature("x").replace("24.93", "24.90");
    let (code, _) = request(http, "PUT", "/api/geofences/harbour", &with_admin, &moved).await;
    assert_eq!(code, 200);
    let (code, _) = request(http, "DELETE", "/api/geofences/airport", &with_admin, "").await;
    assert_eq!(code, 200);
    let (_, before) = request(http, "GET", "/api/geofences", &with_admin, "").await;
    assert_eq!(names(&before), ["depot", "harbour"]);
    stack.shutdown().await.unwrap();

    let options = fleetcast::stack::offline_dashboard().unwrap();
    let stack = common::start_stack_with_config(config, options, Some(auth())).await;
    let http = stack.addrs().http;
    let (code, after) = request(http, "GET", "/api/geofences", &with_admin, "").await;
    assert_eq!(code, 200);
    assert_eq!(names(&after), ["depot", "harbour"], "{after}");
    assert!(
        after.contains("24.9,") || after.contains("24.9]"),
        "harbour as moved: {after}"
    );
    stack.shutdown().await.unwrap();
}

#[test]
fn a_bad_fence_file_stops_serve_naming_it() {
    let dir = TempDir::new("geofences-bad");
    let file = dir.path.join("bad.geojson");
    std::fs::write(
        &file,
        r#"{"type":"FeatureCollection","features":[{"type":"Feature"}]}"#,
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fleetcast"))
        .args([
            "serve",
            "--mqtt",
            "127.0.0.1:0",
            "--ws",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
        ])
        .arg("--geofences")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.geojson") && err.contains("feature 0"),
        "{err}"
    );
}

#[tokio::test]
async fn the_map_draws_the_fences_with_their_counts_and_events() {
    let Some(mut chrome) = common::chrome::Chrome::launch().await else {
        return;
    };
    let dir = TempDir::new("geofences-map");
    let file = dir.path.join("centre.geojson");
    // Most of the demo city's roads: the fleet starts inside it.
    let centre = r#"{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"name":"centre"},"geometry":{"type":"Polygon","coordinates":[[[24.90,60.15],[24.99,60.15],[24.99,60.20],[24.90,60.20],[24.90,60.15]]]}}]}"#;
    std::fs::write(&file, centre).unwrap();
    let file = file.display().to_string();
    let mut served = common::spawn_ready("demo", &["--drivers", "40", "--geofences", &file]);
    served.drain_output();
    chrome.navigate(&format!("http://{}/", served.http)).await;
    let patience = Duration::from_secs(30);
    let count = chrome
        .wait_for(
            "window.fleetcast && (n => n > 0 && n)(fleetcast.fences().get('centre'))",
            patience,
        )
        .await;
    assert!(count.as_u64().is_some_and(|n| n > 0), "{count:?}");
    let label = chrome
        .wait_for(
            "(e => e && e.textContent)(document.querySelector('.fence-label'))",
            patience,
        )
        .await;
    assert!(
        label.as_str().is_some_and(|t| t.starts_with("centre: ")),
        "{label:?}"
    );
    let events = chrome
        .wait_for(
            "(l => l.length > 0 && l[0].textContent)(document.querySelectorAll('#fence-events li'))",
            patience,
        )
        .await;
    assert!(
        events
            .as_str()
            .is_some_and(|t| t.contains("entered centre")),
        "{events:?}"
    );
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("geofences-map.png");
    chrome.screenshot(&shot).await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
}
