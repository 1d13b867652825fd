//! "Track my ride" share links: a page for a rider's phone that shows one driver, over the
//! map's WebSocket with the link's token, until the link expires, is revoked or its trip is
//! over (then 410 Gone, and an open page is closed).

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::{example_auth, http_get, tcp_options, TestClient};
use futures_util::StreamExt;
use rumqttc::QoS;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::{timeout, Instant};

fn fix(id: &str, seq: u64) -> String {
    let now = fleetcast_proto::time::now_ms();
    format!(
        r#"{{"id":"{id}","lat":60.17,"lon":24.94,"heading":45,"speed":10,"accuracy":5,"status":"to_pickup","seq":{seq},"ts":{now}}}"#
    )
}

/// Two drivers (with their own accounts) publishing a fix every 200 ms until dropped.
async fn drivers(addrs: &fleetcast_broker::Addrs) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (id, password) in [("drv-000001", "drv1-demo"), ("drv-000002", "drv2-demo")] {
        let mut options = tcp_options(id, addrs);
        options.set_credentials(id, password);
        let driver = TestClient::connect(options).await;
        tasks.push(tokio::spawn(async move {
            for seq in 1.. {
                let topic = format!("drivers/{id}/location");
                let _ = driver
                    .client
                    .publish(topic, QoS::AtMostOnce, true, fix(id, seq))
                    .await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }
    tasks
}

/// The status of `GET path`.
async fn status(http: SocketAddr, path: &str) -> u16 {
    let answer = http_get(http, path).await;
    answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// `METHOD path` on the share API as `login`: the status and the body.
async fn share_api(
    http: SocketAddr,
    method: &str,
    path: &str,
    login: Option<(&str, &str)>,
) -> (u16, String) {
    let auth = login.map(|(u, p)| common::basic_auth(u, p));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    let a = common::http_request(http, method, path, &headers, b"").await;
    (a.status, a.body)
}

async fn post_share(http: SocketAddr, query: &str, login: Option<(&str, &str)>) -> (u16, String) {
    share_api(http, "POST", &format!("/api/share?{query}"), login).await
}

async fn delete_share(http: SocketAddr, token: &str, login: (&str, &str)) -> (u16, String) {
    share_api(http, "DELETE", &format!("/api/share/{token}"), Some(login)).await
}

/// `serve`'s stack with the example accounts, in memory.
async fn share_stack(
    auth: &std::sync::Arc<fleetcast_broker::auth::Auth>,
) -> fleetcast::stack::Stack {
    let options = fleetcast::stack::offline_dashboard().unwrap();
    let config = fleetcast_broker::Config::ephemeral();
    common::start_stack_with_config(config, options, Some(auth.clone())).await
}

#[tokio::test]
async fn a_share_link_shows_one_driver_and_ends() {
    let auth = example_auth();
    let stack = share_stack(&auth).await;
    let addrs = stack.addrs();
    let http = addrs.http;
    let _drivers = drivers(&addrs).await;
    let now = fleetcast_proto::time::unix_now();
    // partner-1 may see drv-000001 and drv-000002; its link shows only the one it names.
    let (token, _) = auth
        .mint_share(Some("partner-1"), "drv-000001", now, 60, None)
        .unwrap();
    let page = http_get(http, &format!("/t/{token}")).await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.contains("Your ride") && page.contains("/share.js"),
        "{page}"
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/ws?token={token}"))
        .await
        .expect("the link's token opens the map's WebSocket");
    let mut seen = HashSet::new();
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let Ok(Some(Ok(msg))) = timeout(until - Instant::now(), ws.next()).await else {
            break;
        };
        if !msg.is_text() {
            continue;
        }
        let Ok(text) = msg.into_text() else { continue };
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        for p in v["positions"].as_array().into_iter().flatten() {
            seen.insert(p["id"].as_str().unwrap_or_default().to_owned());
        }
    }
    assert_eq!(
        seen,
        HashSet::from(["drv-000001".to_owned()]),
        "exactly one driver"
    );

    // Expired: 410 Gone; altered: 403; a map token that is no ride link: 403.
    let (expired, _) = auth
        .mint_share(Some("partner-1"), "drv-000001", now - 100, 10, None)
        .unwrap();
    assert_eq!(status(http, &format!("/t/{expired}")).await, 410);
    let mut forged = token.clone();
    let last = if forged.ends_with('A') { 'B' } else { 'A' };
    forged.pop();
    forged.push(last);
    assert_eq!(status(http, &format!("/t/{forged}")).await, 403);
    let map = auth.mint_token("rider-1", now, 60).unwrap();
    assert_eq!(status(http, &format!("/t/{map}")).await, 403);
    // An account cannot share a driver it may not see, nor a wildcard.
    assert!(auth
        .mint_share(Some("partner-1"), "drv-000003", now, 60, None)
        .is_err());
    assert!(auth.mint_share(None, "+", now, 60, None).is_err());

    // Over HTTP, for the account that asks.
    let partner = Some(("partner-1", "partner-demo"));
    let (code, body) = post_share(http, "driver=drv-000002&for=600", partner).await;
    assert_eq!(code, 200, "{body:?}");
    let made: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let url = made["url"].as_str().unwrap().to_owned();
    assert_eq!(status(http, &url).await, 200);
    let (code, _) = post_share(http, "driver=drv-000009", partner).await;
    assert_eq!(code, 403, "a driver the account may not see");
    let (code, _) = post_share(http, "driver=drv-000002", None).await;
    assert_eq!(code, 401);
}

/// One driver's fix in `status`, published now.
async fn publish_status(driver: &TestClient, id: &str, seq: u64, status: &str) {
    let body = fix(id, seq).replace("\"to_pickup\"", &format!("\"{status}\""));
    driver
        .client
        .publish(
            format!("drivers/{id}/location"),
            QoS::AtLeastOnce,
            false,
            body,
        )
        .await
        .unwrap();
}

/// Whether the map's WebSocket `ws` is closed by the server within `wait` (reading and
/// dropping what it sends until then).
async fn closed_within<S>(ws: &mut S, wait: Duration) -> bool
where
    S: futures_util::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
{
    let until = Instant::now() + wait;
    loop {
        match timeout(until.saturating_duration_since(Instant::now()), ws.next()).await {
            Err(_) => return false,
            Ok(None | Some(Err(_))) => return true,
            Ok(Some(Ok(m))) if m.is_close() => return true,
            Ok(Some(Ok(_))) => {}
        }
    }
}

#[tokio::test]
async fn a_link_until_available_ends_with_the_trip_and_stays_ended() {
    let auth = example_auth();
    let stack = share_stack(&auth).await;
    let addrs = stack.addrs();
    let http = addrs.http;
    let mut options = tcp_options("drv-000001", &addrs);
    options.set_credentials("drv-000001", "drv1-demo");
    let driver = TestClient::connect(options).await;
    // Waiting for a rider before the link is made: that wait does not end the link.
    publish_status(&driver, "drv-000001", 1, "available").await;
    let partner = Some(("partner-1", "partner-demo"));
    let (code, body) = post_share(http, "driver=drv-000001&until=sleeping", partner).await;
    assert_eq!(code, 400, "an unknown status: {body}");
    // The board must have seen the driver available before the link is made.
    let deadline = Instant::now() + common::PATIENCE;
    while stack.dashboard.board.online() == 0 {
        assert!(
            Instant::now() < deadline,
            "the driver never reached the map"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Links are made at a whole second: make sure the fix above is from an earlier one.
    let second = fleetcast_proto::time::unix_now();
    while fleetcast_proto::time::unix_now() == second {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, body) = post_share(http, "driver=drv-000001&until=available", partner).await;
    assert_eq!(code, 200, "{body}");
    let made: serde_json::Value = serde_json::from_str(&body).unwrap();
    let token = made["token"].as_str().unwrap().to_owned();
    assert!(made["id"].as_str().is_some_and(|id| !id.is_empty()));
    publish_status(&driver, "drv-000001", 2, "available").await;
    publish_status(&driver, "drv-000001", 3, "to_pickup").await;
    publish_status(&driver, "drv-000001", 4, "on_trip").await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/ws?token={token}"))
        .await
        .expect("the trip is not over yet");
    assert!(
        !closed_within(&mut ws, Duration::from_millis(600)).await,
        "open while on the trip"
    );
    assert_eq!(status(http, &format!("/t/{token}")).await, 200);
    // The trip ends: the open page is closed and the link answers 410 from now on, even
    // once the driver takes the next rider.
    publish_status(&driver, "drv-000001", 5, "available").await;
    assert!(
        closed_within(&mut ws, common::PATIENCE).await,
        "closed when the driver became available"
    );
    publish_status(&driver, "drv-000001", 6, "to_pickup").await;
    assert_eq!(status(http, &format!("/t/{token}")).await, 410);
    let refused = tokio_tungstenite::connect_async(format!("ws://{http}/ws?token={token}")).await;
    assert!(refused.is_err(), "no socket for a link whose trip is over");
}

#[tokio::test]
async fn a_revoked_link_is_gone_at_once_and_after_a_restart() {
    let auth = example_auth();
    let data = common::TempDir::new("share-revoke");
    let mut config = fleetcast_broker::Config::ephemeral();
    config.storage.dir = data.path.display().to_string();
    let options = fleetcast::stack::offline_dashboard().unwrap();
    let stack = common::start_stack_with_config(config.clone(), options, Some(auth.clone())).await;
    let http = stack.addrs().http;
    let partner = Some(("partner-1", "partner-demo"));
    let (code, body) = post_share(http, "driver=drv-000001&for=600", partner).await;
    assert_eq!(code, 200, "{body}");
    let made: serde_json::Value = serde_json::from_str(&body).unwrap();
    let token = made["token"].as_str().unwrap().to_owned();
    let (code, body) = post_share(http, "driver=drv-000002&for=600", partner).await;
    assert_eq!(code, 200, "{body}");
    let other: serde_json::Value = serde_json::from_str(&body).unwrap();
    let kept = other["token"].as_str().unwrap().to_owned();
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/ws?token={token}"))
        .await
        .expect("a fresh link opens");
    // Only its account (or an admin) may revoke it.
    let (code, _) = delete_share(http, &token, ("rider-1", "rider-demo")).await;
    assert_eq!(code, 403);
    let (code, body) = delete_share(http, &token, ("partner-1", "partner-demo")).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(made["id"].as_str().unwrap()), "{body}");
    assert!(
        closed_within(&mut ws, common::PATIENCE).await,
        "the open page is closed"
    );
    assert_eq!(status(http, &format!("/t/{token}")).await, 410);
    assert_eq!(
        status(http, &format!("/t/{kept}")).await,
        200,
        "one link only"
    );
    let (code, _) = delete_share(http, &token, ("partner-1", "partner-demo")).await;
    assert_eq!(code, 200, "revoking again changes nothing");
    let (code, _) = delete_share(http, "not-a-token", ("partner-1", "partner-demo")).await;
    assert_eq!(code, 400);
    stack.shutdown().await.unwrap();

    // With --data the revocation outlives the process (the accounts are read afresh, as
    // a new process would).
    let options = fleetcast::stack::offline_dashboard().unwrap();
    let stack = common::start_stack_with_config(config, options, Some(example_auth())).await;
    let http = stack.addrs().http;
    assert_eq!(status(http, &format!("/t/{token}")).await, 410);
    assert_eq!(status(http, &format!("/t/{kept}")).await, 200);
    stack.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_share_page_draws_the_driver_on_a_phone() {
    let Some(mut chrome) = common::chrome::Chrome::launch().await else {
        return;
    };
    let auth = example_auth();
    let stack = share_stack(&auth).await;
    let addrs = stack.addrs();
    let _drivers = drivers(&addrs).await;
    let now = fleetcast_proto::time::unix_now();
    let (token, _) = auth.mint_share(None, "drv-000001", now, 60, None).unwrap();
    let base = format!("http://{}", addrs.http);
    chrome.navigate(&format!("{base}/t/{token}")).await;
    let patience = Duration::from_secs(30);
    chrome
        .wait_for(
            "!!document.body && document.body.dataset.driver === 'drv-000001'",
            patience,
        )
        .await;
    // The rider drops a pin: distance and ETA appear.
    let rect = chrome
        .eval("(r => [r.left, r.top, r.width, r.height])(document.getElementById('view').getBoundingClientRect())")
        .await;
    let at = |i: usize| rect[i].as_f64().unwrap_or_default();
    chrome.click(at(0) + at(2) * 0.8, at(1) + at(3) * 0.3).await;
    let dist = chrome
        .wait_for(
            "(t => /\\d+ (m|km)$/.test(t) && t)(document.getElementById('sh-dist').textContent)",
            patience,
        )
        .await;
    assert!(dist.as_str().is_some(), "{dist:?}");
    let eta = chrome
        .eval("document.getElementById('sh-eta').textContent")
        .await;
    assert_ne!(eta.as_str(), Some("–"), "an ETA");
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("share-page.png");
    chrome.screenshot(&shot).await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 5_000);
    let foreign: Vec<_> = chrome
        .requests
        .iter()
        .filter(|u| !u.starts_with(&base) && !u.starts_with(&format!("ws://{}", addrs.http)))
        .collect();
    assert!(
        foreign.is_empty(),
        "requests leaving the server: {foreign:?}"
    );
}
