//! Three fleetcast nodes over three clustered nats-servers act as one broker: a publish on
//! one node reaches subscribers on another exactly once, retained messages and wills
//! survive a node, a client id holds one connection fleet-wide, and delivery comes back
//! after a NATS server dies. Skipped without nats-server 2.11+ on a laptop; fails under
//! CI=true.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::nats::{node, NatsCluster};
use common::{http_get, Served, TempDir, TestClient, PATIENCE};
use rumqttc::{LastWill, MqttOptions, QoS};
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::{timeout, Instant};

/// A location payload the gateway's validation passes.
fn fix(id: &str, seq: u32) -> String {
    let ts = fleetcast_proto::time::now_ms();
    format!(
        r#"{{"id":"{id}","lat":60.17,"lon":24.94,"heading":0,"speed":0,"accuracy":3,"status":"available","seq":{seq},"ts":{ts}}}"#
    )
}

fn options(id: &str, node: &Served) -> MqttOptions {
    let mut o = MqttOptions::new(id, node.mqtt.ip().to_string(), node.mqtt.port());
    o.set_keep_alive(Duration::from_secs(30));
    o
}

async fn client(id: &str, node: &Served) -> TestClient {
    TestClient::connect(options(id, node)).await
}

/// Three nodes a, b, c, each on its own first NATS server.
async fn three_nodes() -> Option<(NatsCluster, TempDir, Vec<Served>)> {
    let nats = NatsCluster::start().await?;
    let dir = TempDir::new("cluster");
    let nodes = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, name)| node(&nats, name, i, &dir))
        .collect();
    Some((nats, dir, nodes))
}

/// Publishes `probe` payloads on `topic` from `publisher` until `subscriber` gets one:
/// the subscriber's node has told NATS what it listens to. Drains what came.
async fn until_routed(publisher: &TestClient, subscriber: &mut TestClient, topic: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        assert!(
            Instant::now() < deadline,
            "nothing on {topic} crossed the cluster"
        );
        publisher
            .client
            .publish(topic, QoS::AtLeastOnce, false, "probe")
            .await
            .unwrap();
        if subscriber
            .publish_within(Duration::from_millis(200))
            .await
            .is_some()
        {
            break;
        }
    }
    while subscriber
        .publish_within(Duration::from_millis(300))
        .await
        .is_some()
    {}
}

/// `POST path` with `body`; the whole answer.
async fn http_post(addr: std::net::SocketAddr, path: &str, body: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = String::new();
    timeout(PATIENCE, s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

/// Payloads received within `quiet` of each other, counted.
async fn tally(c: &mut TestClient, quiet: Duration) -> HashMap<String, usize> {
    let mut got = HashMap::new();
    while let Some(p) = c.publish_within(quiet).await {
        *got.entry(String::from_utf8_lossy(&p.payload).into_owned())
            .or_insert(0) += 1;
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_on_a_arrives_once_on_c_for_exact_plus_and_hash_filters() {
    let Some((_nats, _dir, nodes)) = three_nodes().await else {
        return;
    };
    let publisher = client("pub-a", &nodes[0]).await;
    let mut subs = Vec::new();
    for (i, filter) in ["t/a/x", "t/+/x", "t/#"].iter().enumerate() {
        let mut s = client(&format!("sub-c{i}"), &nodes[2]).await;
        s.subscribe(filter, QoS::AtLeastOnce).await;
        until_routed(&publisher, &mut s, "t/a/x").await;
        subs.push(s);
    }
    for s in &mut subs {
        while s.publish_within(Duration::from_millis(300)).await.is_some() {}
    }
    for i in 0..20 {
        let payload = format!("m{i}");
        publisher
            .client
            .publish("t/a/x", QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }
    // MQTT's `t/#` matches `t` itself.
    publisher
        .client
        .publish("t", QoS::AtLeastOnce, false, "parent")
        .await
        .unwrap();
    // Publishing over HTTP on a node is publishing there.
    let answer = http_post(nodes[0].http, "/topics/t/a/x?qos=1", b"over-http").await;
    assert!(answer.starts_with("HTTP/1.1 2"), "{answer}");
    for (i, s) in subs.iter_mut().enumerate() {
        let mut got = tally(s, Duration::from_secs(2)).await;
        assert_eq!(got.remove("over-http"), Some(1), "filter {i}: {got:?}");
        for n in 0..20 {
            assert_eq!(got.get(&format!("m{n}")), Some(&1), "filter {i}: {got:?}");
        }
        let parent = got.get("parent").copied().unwrap_or(0);
        assert_eq!(parent, usize::from(i == 2), "filter {i}: {got:?}");
        assert_eq!(
            got.values().sum::<usize>(),
            20 + usize::from(i == 2),
            "{got:?}"
        );
    }
    let metrics = http_get(nodes[0].http, "/metrics").await;
    assert!(
        metrics.contains("fleetcast_cluster_link_up{peer=\"nats\"} 1"),
        "{metrics}"
    ); // b holds no filter matching t/...: NATS sent it nothing.
    let metrics = http_get(nodes[1].http, "/metrics").await;
    assert_eq!(metric(&metrics, "fleetcast_cluster_messages_in_total"), 0.0);
}

/// The value of a metric line `name value` in a scrape.
fn metric(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_nats_local_delivery_goes_on_drops_are_counted_and_the_nodes_reconnect() {
    let Some((mut nats, _dir, nodes)) = three_nodes().await else {
        return;
    };
    for i in 0..3 {
        nats.kill(i);
    }
    let link = r#"fleetcast_cluster_link_up{peer="nats"}"#;
    let deadline = Instant::now() + PATIENCE;
    while metric(&http_get(nodes[0].http, "/metrics").await, link) != 0.0 {
        assert!(Instant::now() < deadline, "the link never went down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let publisher = client("pub-alone", &nodes[0]).await;
    let mut sub = client("sub-alone", &nodes[0]).await;
    sub.subscribe("alone/#", QoS::AtLeastOnce).await;
    // Publishers never wait for NATS: every QoS 1 publish is acked and delivered here.
    for i in 0..500 {
        let payload = format!("{i}");
        publisher
            .client
            .publish("alone/x", QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }
    let got = tally(&mut sub, Duration::from_secs(2)).await;
    assert_eq!(got.len(), 500, "local delivery without NATS");
    let scrape = http_get(nodes[0].http, "/metrics").await;
    let dropped = r#"fleetcast_cluster_dropped_total{reason="disconnected"}"#;
    assert!(metric(&scrape, dropped) >= 500.0, "{scrape}");
    // A server back: the nodes reconnect by themselves, and messages cross again.
    nats.restart(2).await;
    let mut far = client("far-c", &nodes[2]).await;
    far.subscribe("alone/#", QoS::AtLeastOnce).await;
    until_routed(&publisher, &mut far, "alone/again").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_on_a_is_served_by_b_and_by_a_node_that_starts_late() {
    let Some((nats, dir, nodes)) = three_nodes().await else {
        return;
    };
    let publisher = client("pub-r", &nodes[0]).await;
    publisher
        .client
        .publish("drivers/d1/location", QoS::AtLeastOnce, true, fix("d1", 1))
        .await
        .unwrap();
    let late = node(&nats, "d", 1, &dir);
    for (name, n) in [("b", &nodes[1]), ("d (started late)", &late)] {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let mut s = client(&format!("late-{}", &name[..1]), n).await;
            s.subscribe("drivers/+/location", QoS::AtLeastOnce).await;
            if let Some(p) = s.publish_within(Duration::from_millis(500)).await {
                assert!(p.payload.starts_with(br#"{"id":"d1""#), "{name}");
                assert!(p.retain, "{name}: served as retained");
                s.disconnect().await;
                break;
            }
            // The late node must have it at once: it said ready after catching up.
            assert!(
                !name.starts_with('d'),
                "{name} said ready without the retained message"
            );
            assert!(
                Instant::now() < deadline,
                "{name} never served the retained message"
            );
            s.disconnect().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_client_id_on_b_closes_the_connection_on_a_and_its_will_fires_once() {
    let Some((_nats, _dir, nodes)) = three_nodes().await else {
        return;
    };
    let mut watcher = client("watcher", &nodes[2]).await;
    watcher.subscribe("wills/#", QoS::AtLeastOnce).await;
    let probe = client("probe-a", &nodes[0]).await;
    until_routed(&probe, &mut watcher, "wills/probe").await;
    let mut o = options("phone-1", &nodes[0]);
    o.set_last_will(LastWill::new(
        "wills/phone-1",
        "gone",
        QoS::AtLeastOnce,
        false,
    ));
    let mut first = TestClient::connect(o).await;
    let mut second = client("phone-1", &nodes[1]).await;
    assert!(
        first.closed().await.is_some(),
        "a's connection was not closed"
    );
    let got = tally(&mut watcher, Duration::from_secs(2)).await;
    assert_eq!(got.get("gone"), Some(&1), "{got:?}");
    // The newer connection stays.
    second
        .client
        .publish("x/y", QoS::AtLeastOnce, false, "still here")
        .await
        .unwrap();
    assert!(
        timeout(Duration::from_secs(1), second.closed())
            .await
            .is_err(),
        "b's connection must stay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_leaves_its_retained_positions_and_its_clients_wills_fire_once() {
    let Some((_nats, _dir, mut nodes)) = three_nodes().await else {
        return;
    };
    let mut watcher = client("watcher-k", &nodes[2]).await;
    watcher.subscribe("wills/#", QoS::AtLeastOnce).await;
    let probe = client("probe-k", &nodes[0]).await;
    until_routed(&probe, &mut watcher, "wills/probe").await;
    let mut o = options("drv-k", &nodes[0]);
    o.set_last_will(LastWill::new(
        "wills/drv-k",
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    let driver = TestClient::connect(o).await;
    driver
        .client
        .publish(
            "drivers/drv-k/location",
            QoS::AtLeastOnce,
            true,
            fix("drv-k", 7),
        )
        .await
        .unwrap();
    // The retained position reached b's mirror before a dies.
    let deadline = Instant::now() + PATIENCE;
    while !http_get(nodes[1].http, "/metrics")
        .await
        .contains("fleetcast_cluster_kv_mirror_size 1")
    {
        assert!(Instant::now() < deadline, "b never mirrored the position");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a = nodes.remove(0);
    drop(a); // kill -9
    drop(driver);
    let got = tally(&mut watcher, Duration::from_secs(8)).await;
    assert_eq!(got.get("offline"), Some(&1), "the will, once: {got:?}");
    let mut late = client("late-k", &nodes[0]).await;
    late.subscribe("drivers/+/location", QoS::AtLeastOnce).await;
    let p = late
        .next_publish()
        .await
        .expect("the dead node's retained position");
    assert!(p.payload.starts_with(br#"{"id":"drv-k""#));
    // b and c go on.
    let publisher = client("pub-b", &nodes[0]).await;
    let mut sub = client("sub-c", &nodes[1]).await;
    sub.subscribe("after/kill", QoS::AtLeastOnce).await;
    until_routed(&publisher, &mut sub, "after/kill").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_comes_back_after_a_nats_server_dies_without_duplicates() {
    let Some((mut nats, _dir, nodes)) = three_nodes().await else {
        return;
    };
    let publisher = client("pub-n", &nodes[0]).await;
    let mut sub = client("sub-n", &nodes[2]).await;
    sub.subscribe("live/#", QoS::AtLeastOnce).await;
    until_routed(&publisher, &mut sub, "live/x").await;
    // Two of three: every node on either fails over to the last one.
    nats.kill(0);
    nats.kill(1);
    let killed = Instant::now();
    let mut seen: HashMap<u32, usize> = HashMap::new();
    let mut n = 0u32;
    // Publish every 50 ms until ten in a row arrive after the kill.
    let mut last_gap_end = None;
    while Instant::now() < killed + Duration::from_secs(20) {
        publisher
            .client
            .publish("live/x", QoS::AtLeastOnce, false, n.to_string())
            .await
            .unwrap();
        n += 1;
        while let Some(p) = sub.publish_within(Duration::from_millis(50)).await {
            let k: u32 = String::from_utf8_lossy(&p.payload).parse().unwrap();
            *seen.entry(k).or_insert(0) += 1;
        }
        let tail = (n.saturating_sub(20)..n.saturating_sub(10)).all(|k| seen.contains_key(&k));
        if n > 20 && tail {
            last_gap_end = Some(killed.elapsed());
            break;
        }
    }
    let back = last_gap_end.expect("delivery did not come back within 20 s of the kill");
    let lost = (0..n).filter(|k| !seen.contains_key(k)).count();
    eprintln!("delivery back {back:?} after two NATS servers were killed; {n} sent, {lost} lost");
    assert!(seen.values().all(|c| *c == 1), "duplicates: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadtest_over_three_nodes_loses_and_duplicates_nothing() {
    let Some((_nats, _dir, nodes)) = three_nodes().await else {
        return;
    };
    let url = |n: &Served| format!("mqtt://{}", n.mqtt).parse().unwrap();
    // Publishers round robin over a, b, c; the subscriber on a: two thirds cross nodes.
    let config = fleetcast_loadtest::LoadConfig {
        scenario: fleetcast_loadtest::Scenario::Fleet,
        broker: url(&nodes[0]),
        more_brokers: vec![url(&nodes[1]), url(&nodes[2])],
        connections: 6,
        connect_rate: 1000,
        interval: Duration::from_millis(50),
        payload_size: None,
        qos: 0,
        subscribers: 1,
        shared: false,
        duration: Duration::from_secs(3),
        keep_alive: Duration::from_secs(60),
        source_ips: vec![],
        broker_pid: None,
        jitter: false,
        retain: false,
        id_prefix: "lt-".into(),
        worker: (0, 1),
        credentials: None,
    };
    let r = fleetcast_loadtest::run(config, |_| {}).await.unwrap();
    eprintln!(
        "loadtest over three nodes: published {} received {} lost {} duplicates {} p99 {:?} ms",
        r.published, r.received, r.lost, r.duplicates, r.latency_ms
    );
    assert!(r.published >= 200, "{r:?}");
    assert_eq!((r.lost, r.duplicates), (0, 0), "{r:?}");
    assert_eq!(r.received, r.expected, "{r:?}");
}

#[test]
fn serve_with_no_reachable_nats_says_so_and_exits_without_a_ready_line() {
    let dir = TempDir::new("nonats");
    let config = dir.path.join("c.toml");
    std::fs::write(&config, "[cluster]\nstartup_timeout_ms = 1000\n").unwrap();
    let nowhere = format!("nats://127.0.0.1:{}", common::free_port());
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
        .args([
            "--config",
            &config.display().to_string(),
            "--cluster",
            &nowhere,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not ready within 1s"), "{stderr}");
    assert!(stderr.contains(&nowhere), "{stderr}");
    assert!(out.stdout.is_empty(), "no ready line");
}

/// Connects `id` to `node`: Ok with a receiver that resolves when the connection ends, or
/// the refusal.
async fn try_connect(
    id: &str,
    node: &Served,
) -> Result<tokio::sync::oneshot::Receiver<()>, String> {
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options(id, node), 10);
    loop {
        match timeout(PATIENCE, eventloop.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)))) => break,
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("no CONNACK".into()),
        }
    }
    let (ended, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _client = client;
        while eventloop.poll().await.is_ok() {}
        let _ = ended.send(());
    });
    Ok(rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_id_flapping_between_two_nodes_is_banned_as_on_one() {
    let Some((_nats, _dir, nodes)) = three_nodes().await else {
        return;
    };
    // 15 connects a minute are allowed (limits.flap_max_connects). Alternating over two
    // nodes, each node accepts only half of them itself: only counting the other node's
    // connects too bans the id.
    let mut previous: Option<tokio::sync::oneshot::Receiver<()>> = None;
    let mut refused_at = None;
    for i in 0..24 {
        match try_connect("flapper", &nodes[i % 2]).await {
            Ok(ended) => {
                if let Some(old) = previous.take() {
                    // The older connection on the other node is closed: the connect crossed.
                    if timeout(PATIENCE, old).await.is_err() {
                        panic!(
                            "connect {i} did not close the older connection on the other node; \
                             what the nodes logged of it:\na: {}\nb: {}",
                            nodes[0].log_lines("flapper"),
                            nodes[1].log_lines("flapper")
                        );
                    }
                }
                previous = Some(ended);
            }
            Err(e) => {
                refused_at = Some((i, e));
                break;
            }
        }
    }
    let (i, why) = refused_at.expect("never banned across nodes");
    assert!(i <= 16, "banned only at connect {i}");
    assert!(
        why.contains("ConnectionRefused") || why.contains("refused"),
        "{why}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_hears_takeovers_from_the_moment_it_says_ready() {
    let Some((nats, dir, nodes)) = three_nodes().await else {
        return;
    };
    // Each round a node starts; the first thing it sees is a connect, and at once the same
    // client id connects on a. The new node must already listen to a's announcements.
    for round in 0..4 {
        let late = node(&nats, &format!("late{round}"), round % 3, &dir);
        let id = format!("mover-{round}");
        let on_late = try_connect(&id, &late)
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let _on_a = try_connect(&id, &nodes[0])
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(
            timeout(PATIENCE, on_late).await.is_ok(),
            "round {round}: the node that had just said ready kept the older connection; it logged:\n{}",
            late.log_lines(&id)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_persistent_session_hears_the_other_nodes_without_subscribing_again() {
    let Some((_nats, _dir, nodes)) = three_nodes().await else {
        return;
    };
    let mut o = options("keeper", &nodes[2]);
    o.set_clean_session(false);
    let mut first = TestClient::connect(o.clone()).await;
    first.subscribe("kept/#", QoS::AtLeastOnce).await;
    first.disconnect().await;
    // Back on the same node: the router restores the filter; the client does not resubscribe.
    let mut again = TestClient::connect(o).await;
    let publisher = client("pub-kept", &nodes[0]).await;
    until_routed(&publisher, &mut again, "kept/x").await;
}
