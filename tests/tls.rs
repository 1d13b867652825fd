//! TLS with the development CA of `fleetcast certs`: MQTT over TLS and wss round trips,
//! https for the HTTP routes, clients that do not trust the CA or skip TLS are turned
//! away, client-certificate login (client id = the certificate's CN), and Debian's
//! mosquitto clients against our TLS listener.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::*;
use fleetcast_broker::Config;
use fleetcast_simulator::endpoint::{ClientOptions, ClientTls, Endpoint};
use rumqttc::QoS;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

/// A CA, a server certificate for 127.0.0.1/localhost, and client certificates.
fn dev_certs(dir: &Path, clients: &[&str]) {
    fleetcast::certs::make(&fleetcast::certs::CertsRequest {
        out: dir.to_owned(),
        hosts: vec!["localhost".into(), "127.0.0.1".into()],
        clients: clients.iter().map(|c| c.to_string()).collect(),
        days: 2,
    })
    .unwrap();
}

fn tls_config(dir: &Path, client_ca: bool) -> Config {
    let mut config = Config::ephemeral();
    config.tls.cert = dir.join("server.pem").display().to_string();
    config.tls.key = dir.join("server.key").display().to_string();
    if client_ca {
        config.tls.client_ca = dir.join("ca.pem").display().to_string();
    }
    config
}

fn trusting(dir: &Path) -> ClientTls {
    ClientTls::new(Some(&dir.join("ca.pem")), None).unwrap()
}

fn options(url: &str, id: &str, tls: &ClientTls) -> rumqttc::MqttOptions {
    let endpoint: Endpoint = url.parse().unwrap();
    let mut o = endpoint.options(id, Some(tls));
    o.set_keep_alive(Duration::from_secs(30));
    o
}

/// The first thing an event loop reports: Ok(CONNACK code) or the connection error.
async fn first_answer(o: rumqttc::MqttOptions) -> Result<rumqttc::ConnectReturnCode, String> {
    let (_c, mut events) = rumqttc::AsyncClient::new(o, 10);
    timeout(PATIENCE, async {
        loop {
            match events.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(a))) => return Ok(a.code),
                Ok(_) => {}
                Err(rumqttc::ConnectionError::ConnectionRefused(code)) => return Ok(code),
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .expect("an answer in time")
}

#[tokio::test]
async fn mqtts_and_wss_round_trip_with_the_dev_ca() {
    let dir = TempDir::new("tls");
    dev_certs(&dir.path, &[]);
    let b = TestBroker::with_config(tls_config(&dir.path, false)).await;
    let mqtts = b.addrs.mqtts.expect("mqtts bound when TLS is on");
    let tls = trusting(&dir.path);

    let mut sub = TestClient::connect(options(
        &format!("mqtts://127.0.0.1:{}", mqtts.port()),
        "tls-sub",
        &tls,
    ))
    .await;
    sub.subscribe("chat/#", QoS::AtLeastOnce).await;
    let wss = format!("wss://localhost:{}/mqtt", b.addrs.ws.port());
    let publisher = TestClient::connect(options(&wss, "wss-pub", &tls)).await;
    publisher
        .client
        .publish("chat/tls", QoS::AtLeastOnce, false, "over TLS")
        .await
        .unwrap();
    let got = sub.next_publish().await.expect("delivered over TLS");
    assert_eq!(&got.payload[..], b"over TLS");

    // The plain MQTT port still speaks plain MQTT; the TLS port does not.
    let plain = rumqttc::MqttOptions::new("plain", "127.0.0.1", mqtts.port());
    assert!(
        first_answer(plain).await.is_err(),
        "plain MQTT on the TLS port"
    );
    // A client that does not trust the development CA refuses the server.
    let untrusting = options(
        &format!("mqtts://127.0.0.1:{}", mqtts.port()),
        "x",
        &ClientTls::system(),
    );
    let err = first_answer(untrusting).await.expect_err("unknown CA");
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("Tls"),
        "{err}"
    );
}

#[tokio::test]
async fn https_serves_the_http_routes() {
    let dir = TempDir::new("https");
    dev_certs(&dir.path, &[]);
    let b = TestBroker::with_config(tls_config(&dir.path, false)).await;
    let mut roots = rustls::RootCertStore::empty();
    for cert in fleetcast_broker::tls::load_certs(&dir.path.join("ca.pem")).unwrap() {
        roots.add(cert).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(b.addrs.http).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    timeout(PATIENCE, tls.read_to_string(&mut answer))
        .await
        .unwrap()
        .ok();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok\n"), "{answer}");
    // Plain HTTP on the HTTPS port gets no HTTP answer.
    let mut plain = tokio::net::TcpStream::connect(b.addrs.http).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = timeout(PATIENCE, plain.read_to_end(&mut buf)).await;
    assert!(!buf.starts_with(b"HTTP/1.1 200"));
}

#[tokio::test]
async fn a_client_certificate_logs_in_as_its_common_name() {
    let dir = TempDir::new("client-cert");
    dev_certs(&dir.path, &["drv-000001"]);
    let b = TestBroker::with_config_and_example_credentials(tls_config(&dir.path, true)).await;
    let port = b.addrs.mqtts.unwrap().port();
    let url = format!("mqtts://localhost:{port}");
    let ca = dir.path.join("ca.pem");
    let (cert, key) = (
        dir.path.join("drv-000001.pem"),
        dir.path.join("drv-000001.key"),
    );
    let with_cert = ClientTls::new(Some(&ca), Some((&cert, &key))).unwrap();

    // Certificate, no password: the account drv-000001, with its driver policy.
    let mut bridge_o = options(&url, "fleetcast-dashboard-tls", &trusting(&dir.path));
    bridge_o.set_credentials("bridge", "bridge-demo");
    let mut bridge = TestClient::connect(bridge_o).await;
    bridge.subscribe("drivers/#", QoS::AtLeastOnce).await;
    let driver = TestClient::connect(options(&url, "drv-000001", &with_cert)).await;
    driver
        .client
        .publish(
            "drivers/drv-000001/status",
            QoS::AtLeastOnce,
            false,
            "{\"online\":true}",
        )
        .await
        .unwrap();
    let got = bridge.next_publish().await.expect("the driver's own topic");
    assert_eq!(got.topic, "drivers/drv-000001/status");

    // The same certificate under another client id is refused.
    assert_eq!(
        first_answer(options(&url, "drv-000002", &with_cert)).await,
        Ok(rumqttc::ConnectReturnCode::NotAuthorized)
    );
    // No certificate and no password: refused as before.
    assert_eq!(
        first_answer(options(&url, "drv-000001", &trusting(&dir.path))).await,
        Ok(rumqttc::ConnectReturnCode::NotAuthorized)
    );
}

/// `POST path` with `body` over HTTPS to `addr`, trusting the dev CA in `dir`, with the
/// client certificate `client` (a name `dev_certs` made) if any; the whole answer.
async fn https_post(
    addr: std::net::SocketAddr,
    dir: &Path,
    client: Option<&str>,
    path: &str,
    body: &str,
) -> String {
    let mut roots = rustls::RootCertStore::empty();
    for cert in fleetcast_broker::tls::load_certs(&dir.join("ca.pem")).unwrap() {
        roots.add(cert).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match client {
        Some(name) => {
            let certs =
                fleetcast_broker::tls::load_certs(&dir.join(format!("{name}.pem"))).unwrap();
            let key = fleetcast_broker::tls::load_key(&dir.join(format!("{name}.key"))).unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    timeout(PATIENCE, tls.read_to_string(&mut answer))
        .await
        .unwrap()
        .ok();
    answer
}

#[tokio::test]
async fn https_publishing_takes_a_client_certificate_as_the_account() {
    let dir = TempDir::new("https-cert");
    dev_certs(&dir.path, &["drv-000001", "nobody"]);
    let b = TestBroker::with_config_and_example_credentials(tls_config(&dir.path, true)).await;
    let port = b.addrs.mqtts.unwrap().port();
    let url = format!("mqtts://localhost:{port}");
    let mut bridge_o = options(&url, "fleetcast-dashboard-https", &trusting(&dir.path));
    bridge_o.set_credentials("bridge", "bridge-demo");
    let mut bridge = TestClient::connect(bridge_o).await;
    bridge.subscribe("drivers/#", QoS::AtLeastOnce).await;
    let now = fleetcast_proto::time::now_ms();
    let fix = format!(
        r#"{{"id":"drv-000001","lat":60.17,"lon":24.94,"heading":0,"speed":0,"accuracy":5,"status":"available","seq":1,"ts":{now}}}"#
    );
    let own = "/topics/drivers/drv-000001/location?qos=1";
    let answer = https_post(b.addrs.http, &dir.path, Some("drv-000001"), own, &fix).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let got = bridge
        .next_publish()
        .await
        .expect("published as drv-000001");
    assert_eq!(got.topic, "drivers/drv-000001/location");
    // The certificate's account has the driver policy: another driver's topic is refused.
    let other = "/topics/drivers/drv-000002/location?qos=1";
    let answer = https_post(b.addrs.http, &dir.path, Some("drv-000001"), other, &fix).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    // A certificate the CA signed for a name with no account, or none at all: 401.
    let answer = https_post(b.addrs.http, &dir.path, Some("nobody"), own, &fix).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let answer = https_post(b.addrs.http, &dir.path, None, own, &fix).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
}

#[tokio::test]
async fn mosquitto_clients_speak_tls_to_fleetcast() {
    if !require_program("mosquitto_sub") || !require_program("mosquitto_pub") {
        return;
    }
    let dir = TempDir::new("mosquitto-tls");
    dev_certs(&dir.path, &[]);
    let b = TestBroker::with_config(tls_config(&dir.path, false)).await;
    let port = b.addrs.mqtts.unwrap().port().to_string();
    let ca = dir.path.join("ca.pem");
    let sub = tokio::process::Command::new(find_program("mosquitto_sub").unwrap())
        .args(["-h", "localhost", "-p", &port, "--cafile"])
        .arg(&ca)
        .args(["-t", "chat/#", "-C", "1", "-W", "10", "-i", "mosq-tls-sub"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Publish until the subscriber (whose SUBACK we cannot see) has one.
    let out = async {
        loop {
            let status = tokio::process::Command::new(find_program("mosquitto_pub").unwrap())
                .args(["-h", "localhost", "-p", &port, "--cafile"])
                .arg(&ca)
                .args([
                    "-t",
                    "chat/mosq",
                    "-m",
                    "hello over tls",
                    "-i",
                    "mosq-tls-pub",
                ])
                .status()
                .await
                .unwrap();
            assert!(status.success(), "mosquitto_pub over TLS failed");
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
    };
    let got = tokio::select! {
        o = sub.wait_with_output() => o.unwrap(),
        _ = out => unreachable!(),
    };
    assert!(got.status.success());
    assert_eq!(
        String::from_utf8_lossy(&got.stdout).trim(),
        "hello over tls"
    );
}

#[tokio::test]
async fn require_client_cert_turns_away_clients_without_one() {
    let dir = TempDir::new("require-cert");
    dev_certs(&dir.path, &["drv-000001"]);
    let mut config = tls_config(&dir.path, true);
    config.tls.require_client_cert = true;
    let b = TestBroker::with_config_and_example_credentials(config).await;
    let url = format!("mqtts://localhost:{}", b.addrs.mqtts.unwrap().port());
    // The right password, no certificate: the TLS handshake itself fails.
    let mut o = options(&url, "drv-000001", &trusting(&dir.path));
    o.set_credentials("drv-000001", "drv1-demo");
    assert!(
        first_answer(o).await.is_err(),
        "no certificate, no connection"
    );
    let (cert, key) = (
        dir.path.join("drv-000001.pem"),
        dir.path.join("drv-000001.key"),
    );
    let with_cert = ClientTls::new(Some(&dir.path.join("ca.pem")), Some((&cert, &key))).unwrap();
    assert_eq!(
        first_answer(options(&url, "drv-000001", &with_cert)).await,
        Ok(rumqttc::ConnectReturnCode::Success)
    );
}
