//! Debian's real Prometheus scraping a running `fleetcast serve` and a `fleetcast simulate
//! --metrics` fleet driving against it (plus a subscriber, a refused connect and a dropped
//! payload, so every key series moves) with `examples/prometheus/prometheus.yml` (its
//! targets and intervals changed): the key series through PromQL with sensible values,
//! every rule of `examples/prometheus/fleetcast.rules.yml` loaded into that
//! Prometheus and evaluated by it without error, and every query of the Grafana dashboard
//! `examples/grafana/fleetcast.json` answered.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::prometheus::{sample_label, sample_value, Prometheus};
use common::*;
use rumqttc::{MqttOptions, QoS};
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::time::Instant;

const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/prometheus/fleetcast.rules.yml"
);
const EXAMPLE_CONFIG: &str = include_str!("../examples/prometheus/prometheus.yml");
const DASHBOARD: &str = include_str!("../examples/grafana/fleetcast.json");
/// Drivers in the simulated fleet.
const DRIVERS: usize = 20;
/// The metric the cluster's rule is written against before it exists.
const FUTURE_METRIC: &str = "fleetcast_cluster_link_up";

/// `fleetcast simulate --metrics 127.0.0.1:0` against `mqtt`: the process and its
/// metrics address (from its `simulate: metrics at` line).
async fn simulate(mqtt: SocketAddr) -> (tokio::process::Child, SocketAddr) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fleetcast"))
        .args(["simulate", "--broker", &format!("mqtt://{mqtt}")])
        .args(["--drivers", &DRIVERS.to_string(), "--interval", "500ms"])
        .args(["--metrics", "127.0.0.1:0", "--duration", "300s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(PATIENCE * 3, async {
        loop {
            let line = lines.next_line().await.unwrap().expect("a metrics line");
            if let Some(rest) = line.strip_prefix("simulate: metrics at http://") {
                return rest.trim_end_matches("/metrics").parse().unwrap();
            }
        }
    })
    .await
    .expect("simulate names its metrics address");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

/// `examples/prometheus/prometheus.yml` as written, but for its targets (the running
/// `serve` and `simulate`), its intervals (every second) and the rules' path (absolute).
fn config(serve: SocketAddr, sim: SocketAddr) -> String {
    let rules = format!("  - {RULES}\n");
    let serve = format!("[\"{serve}\"]");
    let sim = format!("[\"{sim}\"]");
    let mut config = EXAMPLE_CONFIG.to_owned();
    for (from, to) in [
        ("scrape_interval: 15s", "scrape_interval: 1s"),
        ("evaluation_interval: 15s", "evaluation_interval: 1s"),
        ("  - fleetcast.rules.yml\n", rules.as_str()),
        ("[\"127.0.0.1:8080\"]", serve.as_str()),
        ("[\"127.0.0.1:9101\"]", sim.as_str()),
    ] {
        assert_eq!(config.matches(from).count(), 1, "{from} in the example");
        config = config.replace(from, to);
    }
    config
}

/// Traffic besides the fleet: a subscriber (so messages are delivered), a payload that is
/// not a location (dropped), a client id with `+` (refused).
async fn side_traffic(mqtt: SocketAddr) -> TestClient {
    let options = |id: &str| {
        let mut o = MqttOptions::new(id, mqtt.ip().to_string(), mqtt.port());
        o.set_keep_alive(Duration::from_secs(30));
        o
    };
    let mut rider = TestClient::connect(options("rider")).await;
    rider.subscribe("drivers/+/location", QoS::AtMostOnce).await;
    let bad = TestClient::connect(options("bad-publisher")).await;
    bad.client
        .publish(
            "drivers/bad/location",
            QoS::AtMostOnce,
            false,
            "not a location",
        )
        .await
        .unwrap();
    bad.disconnect().await;
    let _ = raw_exchange(mqtt, &connect_frame("bad+id", 30, true, None), 4).await;
    rider
}

/// Polls until Prometheus scrapes both targets.
async fn until_targets_up(p: &Prometheus) {
    let deadline = Instant::now() + common::prometheus::PROMETHEUS_PATIENCE;
    loop {
        let targets = p.api("/api/v1/targets").await.unwrap();
        let active = targets["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if active.len() == 2 && active.iter().all(|t| t["health"] == "up") {
            return;
        }
        assert!(Instant::now() < deadline, "targets: {targets}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_serve_and_simulate() {
    if !require_program("prometheus") {
        return;
    }
    let mut served = spawn_ready("serve", &[]);
    served.drain_output();
    let rider = side_traffic(served.mqtt).await;
    let (_sim, sim_addr) = simulate(served.mqtt).await;
    let Some(p) = Prometheus::start(&config(served.http, sim_addr)).await else {
        return;
    };
    until_targets_up(&p).await;
    traffic_series(&p, served.http).await;
    health_series(&p).await;
    rules_evaluate(&p).await;
    dashboard_queries(&p, served.http).await;
    rider.disconnect().await;
}

/// Connections by transport, publishes in, messages out.
async fn traffic_series(p: &Prometheus, serve: SocketAddr) {
    let drivers = DRIVERS as f64;
    let by_transport = p
        .until(
            "sum by (transport) (fleetcast_connections{job=\"fleetcast\"})",
            |v| {
                v.iter().any(|s| {
                    sample_label(s, "transport") == "tcp" && sample_value(s) == drivers + 1.0
                })
            },
        )
        .await;
    let transports: BTreeSet<&str> = by_transport
        .iter()
        .map(|s| sample_label(s, "transport"))
        .collect();
    assert_eq!(
        transports,
        BTreeSet::from(["tcp", "tls", "ws"]),
        "{by_transport:?}"
    );
    // The fleet and the rider (the bad publisher has left); nothing over WebSocket or TLS.
    for s in &by_transport {
        if sample_label(s, "transport") != "tcp" {
            assert_eq!(sample_value(s), 0.0, "{by_transport:?}");
        }
    }

    // 20 drivers at 2 Hz: 40 publishes/s in, as many delivered to the rider. Over a 10 s
    // window (a 1 m one under-counts while Prometheus has seconds of data): polled until
    // the window is full of traffic; a rate that never gets there times out.
    let steady = |v: &[Value]| v.iter().all(|s| (30.0..=50.0).contains(&sample_value(s)));
    p.until("rate(fleetcast_publishes_received_total[10s])", steady)
        .await;
    let out = p
        .until("rate(fleetcast_messages_delivered_total[10s])", steady)
        .await;
    assert_eq!(out[0]["metric"]["instance"], serve.to_string());
    assert_eq!(out[0]["metric"]["job"], "fleetcast");
}

/// Drops and refusals by reason (the side traffic's among them), e2e latency quantiles,
/// process gauges, the simulator's counters.
async fn health_series(p: &Prometheus) {
    let drops = p
        .until("sum by (reason) (fleetcast_messages_dropped_total)", |v| {
            v.iter()
                .any(|s| sample_label(s, "reason") == "invalid_payload" && sample_value(s) >= 1.0)
        })
        .await;
    let reasons: BTreeSet<&str> = drops.iter().map(|s| sample_label(s, "reason")).collect();
    for reason in [
        "invalid_topic",
        "malformed_packet",
        "policy_denied",
        "invalid_payload",
    ] {
        assert!(reasons.contains(reason), "{reason} missing: {drops:?}");
    }
    p.until(
        "fleetcast_connect_refusals_total{reason=\"bad_client_id\"} >= 1",
        |_| true,
    )
    .await;

    for q in [0.5, 0.99] {
        let latency = p
            .until(
                &format!("histogram_quantile({q}, sum by (le) (rate(fleetcast_e2e_latency_seconds_bucket[10s])))"),
                |v| sample_value(&v[0]).is_finite(),
            )
            .await;
        let s = sample_value(&latency[0]);
        assert!(s > 0.0 && s < 5.0, "p{} latency {s} s", q * 100.0);
    }

    let fds = p
        .until(
            "fleetcast_process_open_fds / fleetcast_process_max_fds",
            |v| v.len() == 2,
        )
        .await;
    for s in &fds {
        assert!(
            (0.0..0.5).contains(&sample_value(s)),
            "open files / limit: {fds:?}"
        );
    }
    let rss = p
        .query("fleetcast_process_resident_memory_bytes{job=\"fleetcast\"}")
        .await
        .unwrap();
    assert!(sample_value(&rss[0]) > 1e6, "{rss:?}");
    p.until(
        &format!("fleetcast_sim_drivers_connected == {DRIVERS}"),
        |_| true,
    )
    .await;
}

/// Every rule group of the example file is loaded and every rule evaluates without error
/// (Prometheus's own verdict, and again through the query API); every metric a rule names
/// exists, but the cluster's future one.
async fn rules_evaluate(p: &Prometheus) {
    let deadline = Instant::now() + common::prometheus::PROMETHEUS_PATIENCE;
    let rules: Vec<Value> = loop {
        let data = p.api("/api/v1/rules").await.unwrap();
        let rules: Vec<Value> = data["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        for r in &rules {
            assert_ne!(
                r["health"], "err",
                "{} failed: {}",
                r["name"], r["lastError"]
            );
        }
        if !rules.is_empty() && rules.iter().all(|r| r["health"] == "ok") {
            break rules;
        }
        assert!(Instant::now() < deadline, "rules not evaluated: {data}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let names: BTreeSet<&str> = rules.iter().filter_map(|r| r["name"].as_str()).collect();
    for alert in [
        "FleetcastDropsRising",
        "FleetcastLatencyHigh",
        "FleetcastConnectRefusalsSpiking",
        "FleetcastOpenFilesNearLimit",
        "FleetcastClusterLinkDown",
    ] {
        assert!(names.contains(alert), "{alert} missing: {names:?}");
    }
    for r in &rules {
        let query = r["query"].as_str().unwrap();
        p.query(query)
            .await
            .unwrap_or_else(|e| panic!("{query}: {e}"));
        for metric in metric_names(query) {
            if metric != FUTURE_METRIC {
                let found = p.query(&format!("count({metric})")).await.unwrap();
                assert!(
                    !found.is_empty(),
                    "{} names {metric}, which nothing exports",
                    r["name"]
                );
            }
        }
    }
}

/// The `fleetcast_*` metric names in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("fleetcast_"))
        .map(str::to_owned)
        .collect()
}

/// Every panel target of the Grafana dashboard, its variables filled in, answers with
/// data; the `node` variable's query lists this broker.
async fn dashboard_queries(p: &Prometheus, serve: SocketAddr) {
    let dash: Value = serde_json::from_str(DASHBOARD).unwrap();
    assert!(dash["schemaVersion"].as_u64().unwrap() >= 39);
    let vars = dash["templating"]["list"].as_array().unwrap();
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no ${name}"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    let node = var("node")["definition"].as_str().unwrap();
    assert_eq!(node, "label_values(fleetcast_connections, instance)");
    let instances = p
        .api("/api/v1/label/instance/values?match%5B%5D=fleetcast_connections")
        .await
        .unwrap();
    assert_eq!(instances, serde_json::json!([serve.to_string()]));

    let exprs = panel_exprs(&dash);
    assert!(exprs.len() >= 15, "{exprs:?}");
    for (title, expr) in exprs {
        assert!(
            expr.contains("instance=~\"$node\""),
            "{title}: {expr} ignores $node"
        );
        let promql = expr
            .replace("$node", ".*")
            .replace("$__rate_interval", "1m")
            .replace("$__interval", "1m")
            .replace("$__range", "5m");
        let got = p
            .query(&promql)
            .await
            .unwrap_or_else(|e| panic!("panel {title}: {promql}: {e}"));
        assert!(!got.is_empty(), "panel {title}: {promql} has no data");
    }
}

/// (panel title, expr) of every target of every panel, rows' nested panels included.
fn panel_exprs(dash: &Value) -> Vec<(String, String)> {
    let mut panels: Vec<&Value> = dash["panels"].as_array().unwrap().iter().collect();
    let nested: Vec<&Value> = panels
        .iter()
        .filter_map(|p| p["panels"].as_array())
        .flatten()
        .collect();
    panels.extend(nested);
    panels
        .iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or("").to_owned();
            let targets = panel["targets"].as_array().cloned().unwrap_or_default();
            targets
                .into_iter()
                .map(move |t| (title.clone(), t["expr"].as_str().unwrap().to_owned()))
        })
        .collect()
}
