//! `serve --config FILE` obeys the file: each section reaches the running broker, and a flag
//! wins over the file only when it is given. (Every key of every section is read into the
//! configuration: `broker/src/config.rs`'s `every_key_of_every_section_takes_effect`.)

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::*;
use rumqttc::{QoS, SubscribeReasonCode};

fn write_config(dir: &TempDir, text: &str) -> String {
    let path = dir.path.join("fleetcast.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// `[listen]`: the file's addresses are served when no address flag is given.
#[test]
fn listen_section_is_obeyed_without_flags() {
    let dir = TempDir::new("config-listen");
    let (mqtt, ws, http) = (free_port(), free_port(), free_port());
    let file = write_config(
        &dir,
        &format!(
            "[listen]\nmqtt = \"127.0.0.1:{mqtt}\"\nws = \"127.0.0.1:{ws}\"\nhttp = \"127.0.0.1:{http}\"\n"
        ),
    );
    let served = spawn_ready_args("serve", &["--config", &file]);
    assert_eq!(served.mqtt.port(), mqtt, "{}", served.ready);
    assert_eq!(served.ws.port(), ws, "{}", served.ready);
    assert_eq!(served.http.port(), http, "{}", served.ready);
}

/// A flag given on the command line wins over the file, for that address only.
#[test]
fn a_given_flag_wins_over_the_file() {
    let dir = TempDir::new("config-flag");
    let (mqtt, http) = (free_port(), free_port());
    let file = write_config(
        &dir,
        &format!("[listen]\nmqtt = \"127.0.0.1:{mqtt}\"\nws = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:{http}\"\n"),
    );
    let served = spawn_ready_args("serve", &["--config", &file, "--http", "127.0.0.1:0"]);
    assert_eq!(served.mqtt.port(), mqtt, "{}", served.ready);
    assert_ne!(served.http.port(), http, "the flag wins: {}", served.ready);
}

/// `[limits]`: a subscription limit of 1 refuses the second filter.
#[tokio::test]
async fn limits_section_is_obeyed() {
    let dir = TempDir::new("config-limits");
    let file = write_config(
        &dir,
        "[listen]\nmqtt = \"127.0.0.1:0\"\nws = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\n\
         [limits]\nmax_subscriptions_per_connection = 1\n",
    );
    let served = spawn_ready_args("serve", &["--config", &file]);
    let mut options = rumqttc::MqttOptions::new("limits", "127.0.0.1", served.mqtt.port());
    options.set_keep_alive(std::time::Duration::from_secs(30));
    let mut client = TestClient::connect(options).await;
    let first = client
        .subscribe("drivers/+/location", QoS::AtMostOnce)
        .await;
    assert_eq!(first, [SubscribeReasonCode::Success(QoS::AtMostOnce)]);
    let second = client.subscribe("drivers/+/status", QoS::AtMostOnce).await;
    assert_eq!(second, [SubscribeReasonCode::Failure]);
}

/// `[tls]`: a certificate and key in the file turn MQTT over TLS on, at `[listen] mqtts`.
#[test]
fn tls_section_is_obeyed() {
    let dir = TempDir::new("config-tls");
    fleetcast::certs::make(&fleetcast::certs::CertsRequest {
        out: dir.path.clone(),
        hosts: vec!["127.0.0.1".into()],
        clients: vec![],
        days: 2,
    })
    .unwrap();
    let mqtts = free_port();
    let file = write_config(
        &dir,
        &format!(
            "[listen]\nmqtt = \"127.0.0.1:0\"\nws = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\nmqtts = \"127.0.0.1:{mqtts}\"\n\
             [tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            dir.path.join("server.pem").display(),
            dir.path.join("server.key").display()
        ),
    );
    let served = spawn_ready_args("serve", &["--config", &file]);
    assert!(
        served.ready.contains(&format!("mqtts=127.0.0.1:{mqtts}")),
        "{}",
        served.ready
    );
}

/// `[router]` reaches the broker too: a router value it cannot run with is refused by name.
#[test]
fn router_section_is_checked_by_serve() {
    let dir = TempDir::new("config-router");
    let file = write_config(
        &dir,
        "[listen]\nmqtt = \"127.0.0.1:0\"\nws = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\n\
         [router]\nmax_segment_size = 100\n",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fleetcast"))
        .args(["serve", "--config", &file])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("router.max_segment_size"), "{err}");
}
