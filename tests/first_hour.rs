//! A newcomer's first hour: the mistakes README's reader makes first each get a clear,
//! non-zero answer instead of a silent success (a config file that is obeyed is
//! `tests/config.rs`, README's credential examples `tests/readme.rs`).

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_fleetcast");

fn simulate(broker: &str, extra: &[&str]) -> Output {
    let duration: &[&str] = if extra.contains(&"--duration") {
        &[]
    } else {
        &["--duration", "3s"]
    };
    Command::new(BIN)
        .args(["simulate", "--broker", broker, "--drivers", "3"])
        .args(["--report-every", "1s"])
        .args(duration)
        .args(extra)
        .env("FLEETCAST_LOG", "warn")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn simulate_against_a_closed_port_fails_and_says_why() {
    let port = common::free_port();
    let out = simulate(&format!("mqtt://127.0.0.1:{port}"), &[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("driver cannot connect"), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(stderr.contains("refused"), "the OS error: {stderr}");
    assert!(
        stderr.contains(&format!(
            "no driver could connect to mqtt://127.0.0.1:{port} (unreachable="
        )),
        "{stderr}"
    );
    assert!(stdout.contains("failures: unreachable="), "{stdout}");
    // The WARN is rate-limited: one first line per kind, not one per attempt.
    assert_eq!(
        stderr.matches("driver cannot connect").count(),
        1,
        "{stderr}"
    );
}

#[test]
fn simulate_with_a_wrong_password_fails_and_says_why() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let broker = rt.block_on(common::TestBroker::with_example_credentials());
    let url = format!("mqtt://{}", broker.addrs.mqtt);
    // The right password first: after the wrong ones this address is in back-off (the
    // broker's failed-login limit), and even a right password waits.
    let ok = simulate(
        &url,
        &[
            "--username",
            "fleet",
            "--password",
            "fleet-demo",
            "--duration",
            "6s",
        ],
    );
    assert!(
        ok.status.success(),
        "{}{}",
        text(&ok.stdout),
        text(&ok.stderr)
    );
    let stdout = text(&ok.stdout);
    assert!(!stdout.contains("failures:"), "{stdout}");
    assert!(
        stdout.contains("skipped=0"),
        "a healthy run skips nothing: {stdout}"
    );

    let out = simulate(&url, &["--username", "fleet", "--password", "wrong"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains("reason=\"not_authorized\"") || stderr.contains("reason=not_authorized"),
        "{stderr}"
    );
    assert!(stderr.contains("no driver could connect"), "{stderr}");
    assert!(stdout.contains("failures: not_authorized="), "{stdout}");
}

#[test]
fn simulate_suggests_a_scheme_for_a_bare_address() {
    let out = simulate("127.0.0.1:1883", &[]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("did you mean mqtt://127.0.0.1:1883?"),
        "{stderr}"
    );
}

#[test]
fn demo_with_auth_but_no_fleet_credentials_refuses_to_start() {
    let out = Command::new(BIN)
        .arg("demo")
        .args(common::EPHEMERAL_LISTENERS)
        .args(["--auth", common::EXAMPLE_CREDENTIALS])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("--fleet-username"), "{stderr}");
    assert!(!text(&out.stdout).contains("fleetcast ready"));
}

#[test]
fn an_open_map_on_a_public_address_is_refused() {
    let out = Command::new(BIN)
        .args(["dashboard", "--http", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--allow-anonymous"));
}

/// `serve` says at INFO why it refused a client: the CONNACK code, the client id, the
/// peer and the reason in words, as mosquitto logs `not authorised`.
#[tokio::test]
async fn serve_logs_each_refusal_with_its_reason() {
    use std::io::{BufRead, Read};
    let mut child = Command::new(BIN)
        .arg("serve")
        .args(common::EPHEMERAL_LISTENERS)
        .args(["--auth", common::EXAMPLE_CREDENTIALS])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    let mqtt: std::net::SocketAddr = ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("mqtt="))
        .unwrap()
        .parse()
        .unwrap();
    // README's mistake: credentials without -i.
    let mut o = rumqttc::MqttOptions::new("random-1234", "127.0.0.1", mqtt.port());
    o.set_credentials("rider-1", "rider-demo");
    let (_c, mut events) = rumqttc::AsyncClient::new(o, 4);
    assert!(events.poll().await.is_err());
    // One line per reason a second: the next refusal of the same reason waits that out.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let mut o = rumqttc::v5::MqttOptions::new("drv-000001", "127.0.0.1", mqtt.port());
    o.set_credentials("drv-000001", "wrong");
    let (_c, mut events) = common::v5_client(o);
    let _ = common::v5_error(&mut events).await;
    let _ = child.kill();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let _ = child.wait();
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("connection refused"))
        .collect();
    assert!(
        lines.iter().any(|l| l.contains("INFO")
            && l.contains("CONNACK 0x05")
            && l.contains("client_id=random-1234")
            && l.contains("client id not allowed for this account")),
        "{stderr}"
    );
    assert!(
        lines.iter().any(|l| l.contains("CONNACK 0x86")
            && l.contains("client_id=drv-000001")
            && l.contains("wrong username or password")
            && l.contains("peer=127.0.0.1:")),
        "{stderr}"
    );
}
