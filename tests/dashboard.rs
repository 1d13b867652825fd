//! The rider-side bridge over real sockets: the WebSocket protocol (viewport, follow,
//! subscribe), conflation, a stalled browser, offline and stale drivers, and the standalone
//! bridge against Debian's mosquitto.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::*;
use fleetcast::stack::Stack;
use fleetcast_dashboard::board::BoardConfig;
use fleetcast_dashboard::bridge::BridgeConfig;
use fleetcast_dashboard::service::DashboardOptions;
use fleetcast_proto::{Location, Status};
use futures_util::{SinkExt, StreamExt};
use rumqttc::QoS;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn stack(board: BoardConfig, bridge: BridgeConfig) -> Stack {
    start_stack(DashboardOptions {
        board,
        bridge,
        ..fleetcast::stack::offline_dashboard().unwrap()
    })
    .await
}

async fn browser(http: std::net::SocketAddr) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/ws"))
        .await
        .unwrap();
    let hello = next_json(&mut ws).await.expect("hello");
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["batch_ms"], 200);
    ws
}

async fn next_json(ws: &mut Ws) -> Option<Value> {
    loop {
        match timeout(PATIENCE, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return Some(serde_json::from_str(&t).unwrap()),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

fn location(id: &str, seq: u64, lat: f64, lon: f64) -> Vec<u8> {
    serde_json::to_vec(&Location {
        id: id.into(),
        lat,
        lon,
        heading: 90.0,
        speed: 5.0,
        accuracy: 3.0,
        status: Status::OnTrip,
        seq,
        ts: fleetcast_proto::time::now_ms(),
    })
    .unwrap()
}

/// Reads batches until `until` says stop, or `wait` passes; returns every position seen.
async fn positions_until(
    ws: &mut Ws,
    wait: Duration,
    mut until: impl FnMut(&Value) -> bool,
) -> Vec<Value> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        let Ok(Some(m)) = timeout(deadline - Instant::now(), next_json(ws)).await else {
            break;
        };
        if m["type"] != "batch" {
            continue;
        }
        for p in m["positions"].as_array().unwrap() {
            seen.push(p.clone());
            if until(p) {
                return seen;
            }
        }
    }
    seen
}

const INSIDE: (f64, f64) = (60.17, 24.94);
const OUTSIDE: (f64, f64) = (60.30, 25.30);
const BBOX: [f64; 4] = [24.93, 60.16, 24.96, 60.18];

#[tokio::test]
async fn viewport_follow_and_subscribe() {
    let s = stack(BoardConfig::default(), BridgeConfig::default()).await;
    let addrs = s.addrs();
    let publisher = TestClient::connect(tcp_options("pub", &addrs)).await;
    let mut ws = browser(addrs.http).await;
    send(&mut ws, json!({"op": "viewport", "bbox": BBOX})).await;
    for seq in 1..=3 {
        for (id, (lat, lon)) in [("drv-in", INSIDE), ("drv-out", OUTSIDE)] {
            publisher
                .client
                .publish(
                    format!("drivers/{id}/location"),
                    QoS::AtMostOnce,
                    false,
                    location(id, seq, lat, lon),
                )
                .await
                .unwrap();
        }
    }
    let seen = positions_until(&mut ws, PATIENCE, |p| p["id"] == "drv-in" && p["seq"] == 3).await;
    assert!(
        seen.iter().any(|p| p["id"] == "drv-in" && p["seq"] == 3),
        "{seen:?}"
    );
    assert!(
        seen.iter().all(|p| p["id"] != "drv-out"),
        "outside the viewport: {seen:?}"
    );

    // Following a driver sends it wherever it is.
    send(&mut ws, json!({"op": "follow", "id": "drv-out"})).await;
    let seen = positions_until(&mut ws, PATIENCE, |p| p["id"] == "drv-out").await;
    assert_eq!(seen.last().unwrap()["id"], "drv-out");

    // Subscribing to other topics hides driver topics (the followed one stays).
    send(&mut ws, json!({"op": "follow", "id": null})).await;
    send(
        &mut ws,
        json!({"op": "subscribe", "filters": ["owntracks/+/+"]}),
    )
    .await;
    publisher
        .client
        .publish(
            "drivers/drv-in/location",
            QoS::AtMostOnce,
            false,
            location("drv-in", 4, INSIDE.0, INSIDE.1),
        )
        .await
        .unwrap();
    let owntracks = json!({"_type": "location", "lat": INSIDE.0, "lon": INSIDE.1, "tst": fleetcast_proto::time::unix_now(), "acc": 9, "vel": 0, "cog": 0, "tid": "ph"});
    publisher
        .client
        .publish(
            "owntracks/alice/phone",
            QoS::AtMostOnce,
            false,
            owntracks.to_string(),
        )
        .await
        .unwrap();
    let seen = positions_until(&mut ws, PATIENCE, |p| p["id"] == "ot-alice-phone").await;
    assert_eq!(seen.last().unwrap()["id"], "ot-alice-phone");
    assert!(seen.iter().all(|p| p["id"] != "drv-in"), "{seen:?}");

    // A bad message gets an error, and the connection stays.
    send(
        &mut ws,
        json!({"op": "viewport", "bbox": [25.0, 60.0, 24.0, 61.0]}),
    )
    .await;
    loop {
        let m = next_json(&mut ws).await.expect("answer");
        if m["type"] == "error" {
            assert!(m["message"].as_str().unwrap().contains("bbox"));
            break;
        }
    }
}

#[tokio::test]
async fn a_fast_driver_is_conflated_to_its_latest_position() {
    let s = stack(BoardConfig::default(), BridgeConfig::default()).await;
    let addrs = s.addrs();
    let mut ws = browser(addrs.http).await;
    let publisher = TestClient::connect(tcp_options("fast", &addrs)).await;
    // 100 fixes in about half a second: far faster than the 200 ms batches.
    for seq in 1..=100 {
        publisher
            .client
            .publish(
                "drivers/drv-fast/location",
                QoS::AtMostOnce,
                false,
                location("drv-fast", seq, INSIDE.0, INSIDE.1),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seen = positions_until(&mut ws, PATIENCE, |p| p["seq"] == 100).await;
    assert_eq!(
        seen.last().unwrap()["seq"],
        100,
        "the latest position arrives"
    );
    assert!(
        seen.len() < 20,
        "{} positions sent for 100 fixes: not conflated",
        seen.len()
    );
}

#[tokio::test]
async fn a_stalled_browser_is_dropped_without_slowing_others() {
    let bridge = BridgeConfig {
        send_timeout: Duration::from_secs(1),
        // Positions one by one, the megabyte batches this is about (not cells).
        aggregate_above: 0,
        ..BridgeConfig::default()
    };
    let s = stack(BoardConfig::default(), bridge).await;
    let addrs = s.addrs();
    let board = std::sync::Arc::clone(&s.dashboard.board);
    let stats = std::sync::Arc::clone(&s.dashboard.bridge);
    // The stalled browser: upgrades, then never reads.
    let (stalled, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", addrs.http))
        .await
        .unwrap();
    let mut good = browser(addrs.http).await;

    // 5,000 drivers moving: each batch carries megabytes the stalled socket never takes.
    let feeder = tokio::spawn(async move {
        for round in 1..=200u64 {
            for i in 0..5_000 {
                let id = format!("drv-{i:06}");
                let lon = 24.94 + (round as f64) * 1e-5;
                board.ingest(
                    &format!("drivers/{id}/location"),
                    &location(&id, round, 60.17, lon),
                    fleetcast_proto::time::now_ms(),
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while stats.stats.slow_disconnects.load(Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "the stalled browser was never dropped"
        );
        // The good browser keeps getting batches meanwhile.
        let m = next_json(&mut good)
            .await
            .expect("good browser still served");
        assert_eq!(m["type"], "batch");
    }
    // And after the drop it is still served fresh positions.
    let seen = positions_until(&mut good, PATIENCE, |p| p["seq"].as_u64().unwrap_or(0) > 5).await;
    assert!(!seen.is_empty());
    feeder.abort();
    drop(stalled);
}

#[tokio::test]
async fn offline_and_stale_drivers_are_sent_as_gone() {
    let board = BoardConfig {
        stale_after: Duration::from_secs(1),
        ..BoardConfig::default()
    };
    let s = stack(board, BridgeConfig::default()).await;
    let addrs = s.addrs();
    let mut ws = browser(addrs.http).await;
    let publisher = TestClient::connect(tcp_options("p", &addrs)).await;
    for id in ["drv-a", "drv-b"] {
        publisher
            .client
            .publish(
                format!("drivers/{id}/location"),
                QoS::AtMostOnce,
                false,
                location(id, 1, INSIDE.0, INSIDE.1),
            )
            .await
            .unwrap();
    }
    let mut ids = std::collections::HashSet::new();
    positions_until(&mut ws, PATIENCE, |p| {
        ids.insert(p["id"].as_str().unwrap().to_owned());
        ids.len() == 2
    })
    .await;
    publisher
        .client
        .publish(
            "drivers/drv-a/status",
            QoS::AtLeastOnce,
            true,
            r#"{"id":"drv-a","status":"offline"}"#,
        )
        .await
        .unwrap();
    let mut gone = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while gone.len() < 2 && Instant::now() < deadline {
        let m = next_json(&mut ws).await.unwrap();
        for g in m["gone"].as_array().into_iter().flatten() {
            gone.push((
                g["id"].as_str().unwrap().to_owned(),
                g["reason"].as_str().unwrap().to_owned(),
            ));
        }
    }
    gone.sort();
    assert_eq!(
        gone,
        [
            ("drv-a".to_owned(), "offline".to_owned()),
            ("drv-b".to_owned(), "stale".to_owned())
        ]
    );
}

#[tokio::test]
async fn standalone_bridge_against_mosquitto() {
    let Some(m) = Mosquitto::start().await else {
        return;
    };
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fleetcast"))
        .args([
            "dashboard",
            "--broker",
            &format!("mqtt://{}", m.addr),
            "--http",
            "127.0.0.1:0",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let ready = timeout(PATIENCE, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let http: std::net::SocketAddr = ready
        .split(' ')
        .find_map(|w| w.strip_prefix("http="))
        .unwrap()
        .parse()
        .unwrap();
    let mut ws = browser(http).await;
    let mut o = rumqttc::MqttOptions::new("drv-m", "127.0.0.1", m.addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    let publisher = TestClient::connect(o).await;
    // The bridge may still be subscribing: publish until the position comes through.
    let deadline = Instant::now() + PATIENCE;
    let mut seq = 0;
    loop {
        seq += 1;
        publisher
            .client
            .publish(
                "drivers/drv-m/location",
                QoS::AtMostOnce,
                true,
                location("drv-m", seq, INSIDE.0, INSIDE.1),
            )
            .await
            .unwrap();
        let seen =
            positions_until(&mut ws, Duration::from_millis(500), |p| p["id"] == "drv-m").await;
        if !seen.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no position through the standalone bridge"
        );
    }
    let _ = child.start_kill();
}

/// Ids of every position a browser is sent within `wait`.
async fn ids_seen(ws: &mut Ws, wait: Duration) -> std::collections::BTreeSet<String> {
    positions_until(ws, wait, |_| false)
        .await
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn with_auth_the_map_needs_a_token_and_shows_what_its_account_may_see() {
    let auth = example_auth();
    let s = start_stack_with_auth(
        fleetcast::stack::offline_dashboard().unwrap(),
        Some(auth.clone()),
    )
    .await;
    let addrs = s.addrs();

    // No token, a forged one, an expired one: 401 before any WebSocket.
    let now = fleetcast_proto::time::unix_now();
    let expired = auth.mint_token("rider-1", now - 100, 10).unwrap();
    let forged = fleetcast_proto::token::mint(b"not the secret at all", "bridge", now + 60);
    for query in [
        String::new(),
        format!("?token={forged}"),
        format!("?token={expired}"),
    ] {
        match tokio_tungstenite::connect_async(format!("ws://{}/ws{query}", addrs.http)).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status(), 401, "{query}")
            }
            other => panic!("expected 401 for {query:?}, got {other:?}"),
        }
    }

    // Three drivers publish (one fleet account).
    let mut drivers = Vec::new();
    for id in ["drv-000001", "drv-000002", "drv-000003"] {
        let mut o = tcp_options(id, &addrs);
        o.set_credentials("fleet", "fleet-demo");
        drivers.push((id, TestClient::connect(o).await));
    }
    let open = |account: &str| {
        let token = auth.mint_token(account, now, 600).unwrap();
        let url = format!("ws://{}/ws?token={token}", addrs.http);
        async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
            assert_eq!(next_json(&mut ws).await.expect("hello")["type"], "hello");
            ws
        }
    };
    let mut partner = open("partner-1").await;
    let mut rider = open("rider-1").await;
    for seq in 1..=3 {
        for (id, c) in &drivers {
            c.client
                .publish(
                    format!("drivers/{id}/location"),
                    QoS::AtMostOnce,
                    false,
                    location(id, seq, INSIDE.0, INSIDE.1),
                )
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let partner_saw = ids_seen(&mut partner, Duration::from_secs(1)).await;
    let rider_saw = ids_seen(&mut rider, Duration::from_secs(1)).await;
    assert_eq!(
        partner_saw.into_iter().collect::<Vec<_>>(),
        ["drv-000001", "drv-000002"],
        "the partner role grants two cars"
    );
    assert_eq!(
        rider_saw.len(),
        3,
        "a rider may see every car: {rider_saw:?}"
    );
    // Following a car outside the grants shows nothing either.
    send(&mut partner, json!({"op": "follow", "id": "drv-000003"})).await;
    let followed = ids_seen(&mut partner, Duration::from_millis(800)).await;
    assert!(!followed.contains("drv-000003"), "{followed:?}");
}

#[tokio::test]
async fn a_browser_is_closed_when_its_token_expires() {
    let auth = example_auth();
    let s = start_stack_with_auth(
        fleetcast::stack::offline_dashboard().unwrap(),
        Some(auth.clone()),
    )
    .await;
    let now = fleetcast_proto::time::unix_now();
    // Valid for 2 s: accepted, then closed by the bridge once the time is up.
    let token = auth.mint_token("rider-1", now, 2).unwrap();
    let url = format!("ws://{}/ws?token={token}", s.addrs().http);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(next_json(&mut ws).await.expect("hello")["type"], "hello");
    let started = Instant::now();
    let closed = timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "still open 5 s after the token expired");
    assert!(started.elapsed() >= Duration::from_millis(500));
}

#[tokio::test]
async fn standalone_feed_moves_on_to_the_next_broker() {
    let b = TestBroker::start().await;
    // Nothing listens on the first URL.
    let dead = format!("mqtt://127.0.0.1:{}", free_port());
    let brokers = format!("{dead},mqtt://{}", b.addrs.mqtt);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fleetcast"))
        .args(["dashboard", "--broker", &brokers, "--http", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let ready = timeout(PATIENCE, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(ready.ends_with(&format!("broker={brokers}")), "{ready}");
    let http: std::net::SocketAddr = ready
        .split(' ')
        .find_map(|w| w.strip_prefix("http="))
        .unwrap()
        .parse()
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    while !http_get(http, "/readyz").await.contains("feed connected\n")
        || http_get(http, "/readyz").await.contains("not connected")
    {
        assert!(
            Instant::now() < deadline,
            "the feed never reached the second broker"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
