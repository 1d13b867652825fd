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
    let out = simulate(&url, &["--username", "fleet", "--password", "wrong"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains("reason=\"not_authorized\"") || stderr.contains("reason=not_authorized"),
        "{stderr}"
    );
    assert!(stderr.contains("no driver could connect"), "{stderr}");
    assert!(stdout.contains("failures: not_authorized="), "{stdout}");
    // With the right password the same run succeeds and reports no failures.
    // Longer, so a loaded machine's argon2 checks cannot eat the whole run.
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
        .args([
            "demo",
            "--mqtt",
            "127.0.0.1:0",
            "--ws",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
        ])
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
