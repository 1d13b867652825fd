//! Interop with Debian's mosquitto clients (package mosquitto-clients): a second MQTT
//! implementation talking to fleetcast over TCP, in MQTT 3.1.1 and MQTT 5.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::{require_program, TestBroker};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;
use tokio::time::timeout;

/// A valid location payload (the gateway drops invalid ones).
const LOCATION: &str = r#"{"id":"drv-000001","lat":60.17,"lon":24.94,"heading":0,"speed":0,"accuracy":3,"status":"available","seq":1,"ts":1795963525273}"#;

#[tokio::test]
async fn mosquitto_pub_and_sub_talk_to_fleetcast() {
    if !require_program("mosquitto_pub") || !require_program("mosquitto_sub") {
        return;
    }
    let b = TestBroker::start().await;
    let port = b.addrs.mqtt.port().to_string();

    // A retained QoS 1 position from mosquitto_pub...
    let status = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-i",
            "drv-000001",
            "-q",
            "1",
            "-r",
        ])
        .args(["-t", "drivers/drv-000001/location", "-m", LOCATION])
        .status()
        .await
        .unwrap();
    assert!(status.success());

    // ...is read by a late mosquitto_sub through a wildcard, with its retain flag.
    let out = timeout(
        Duration::from_secs(10),
        Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-q",
                "1",
                "-C",
                "1",
                "-v",
                "-F",
                "%r %t %p",
            ])
            .args(["-t", "drivers/+/location"])
            .stdout(Stdio::piped())
            .output(),
    )
    .await
    .expect("mosquitto_sub got a message")
    .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("1 drivers/drv-000001/location {LOCATION}")
    );

    // Live messages: mosquitto_sub waits for three, mosquitto_pub sends them.
    let sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port, "-q", "1", "-C", "3", "-R"])
        .args(["-t", "live/#"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the subscription exists: poll the gateway's open connections.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while b.broker.gateway().stats.open_total() < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "mosquitto_sub never connected"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The SUBACK may trail the CONNACK: publish until mosquitto_sub has its three lines.
    let publish = |m: &'static str| {
        let port = port.clone();
        async move {
            Command::new("mosquitto_pub")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-q",
                    "1",
                    "-t",
                    "live/x",
                    "-m",
                    m,
                ])
                .status()
                .await
                .unwrap()
        }
    };
    let sub_out = tokio::spawn(async move { sub.wait_with_output().await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !sub_out.is_finished() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "mosquitto_sub did not get 3 messages"
        );
        assert!(publish("ping").await.success());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = sub_out.await.unwrap().unwrap();
    let delivered = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        delivered.lines().collect::<Vec<_>>(),
        ["ping", "ping", "ping"]
    );
}

/// `mosquitto_pub`/`mosquitto_sub -V mqttv5` as the accounts of examples/credentials.toml.
fn v5(program: &str, id: &str, user: &str, password: &str, port: &str) -> Command {
    let mut c = Command::new(program);
    c.args(["-V", "mqttv5", "-h", "127.0.0.1", "-p", port, "-i", id])
        .args(["-u", user, "-P", password]);
    c
}

#[tokio::test]
async fn mosquitto_clients_speak_mqtt5_to_fleetcast_with_its_reason_codes() {
    if !require_program("mosquitto_pub") || !require_program("mosquitto_sub") {
        return;
    }
    let b = TestBroker::with_example_credentials().await;
    let port = b.addrs.mqtt.port().to_string();

    let own = v5(
        "mosquitto_pub",
        "drv-000001",
        "drv-000001",
        "drv1-demo",
        &port,
    )
    .args([
        "-q",
        "1",
        "-r",
        "-t",
        "drivers/drv-000001/location",
        "-m",
        LOCATION,
    ])
    .output()
    .await
    .unwrap();
    assert!(own.status.success(), "{own:?}");

    // Another driver's topic: PUBACK 0x87, which mosquitto_pub reports by name.
    let forged = v5(
        "mosquitto_pub",
        "drv-000002",
        "drv-000002",
        "drv2-demo",
        &port,
    )
    .args([
        "-q",
        "1",
        "-t",
        "drivers/drv-000001/location",
        "-m",
        LOCATION,
    ])
    .output()
    .await
    .unwrap();
    let said = String::from_utf8_lossy(&forged.stderr);
    assert!(said.contains("Publish 1 failed: Not authorized"), "{said}");

    // A wrong password: CONNACK 0x86; mosquitto_pub exits with the reason code.
    let wrong = v5("mosquitto_pub", "drv-000001", "drv-000001", "nope", &port)
        .args(["-t", "drivers/drv-000001/location", "-m", LOCATION])
        .output()
        .await
        .unwrap();
    assert_eq!(wrong.status.code(), Some(0x86), "{wrong:?}");
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("Bad User Name or Password"));

    // A rider (MQTT 5) reads the retained position through a wildcard.
    let out = timeout(
        Duration::from_secs(10),
        v5("mosquitto_sub", "rider-1", "rider-1", "rider-demo", &port)
            .args([
                "-t",
                "drivers/+/location",
                "-C",
                "1",
                "-W",
                "5",
                "-F",
                "%r %t %p",
            ])
            .stdout(Stdio::piped())
            .output(),
    )
    .await
    .expect("mosquitto_sub in time")
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("1 drivers/drv-000001/location {LOCATION}")
    );
}

/// Issue 12's first-hour case: `mosquitto_pub -q 1 -t '$foo/bar'` used to lose its
/// connection; now it is acknowledged (3.1.1) or told 0x90 (MQTT 5) and exits as it would
/// against mosquitto. And the same client id twice in a row is not refused.
#[tokio::test]
async fn mosquitto_pub_to_a_dollar_topic_and_twice_with_one_id() {
    if !require_program("mosquitto_pub") {
        return;
    }
    let b = TestBroker::start().await;
    let port = b.addrs.mqtt.port().to_string();
    let publish = |version: &'static str| {
        let port = port.clone();
        async move {
            let out = Command::new("mosquitto_pub")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-i",
                    "dollar-pub",
                    "-V",
                    version,
                ])
                .args(["-q", "1", "-t", "$foo/bar", "-m", "x"])
                .stderr(Stdio::piped())
                .output();
            timeout(Duration::from_secs(10), out)
                .await
                .unwrap()
                .unwrap()
        }
    };
    for _ in 0..2 {
        let out = publish("mqttv311").await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = publish("mqttv5").await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("connection was lost"), "{stderr}");
    assert!(stderr.contains("Topic Name invalid"), "{stderr}");
}
