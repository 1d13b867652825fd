//! What an operator installs besides the binary: shell completions from `fleetcast
//! completions SHELL`, and `examples/systemd/fleetcast.service`, which `systemd-analyze
//! verify` accepts (on a copy whose ExecStart is this build's binary, since
//! `/usr/local/bin/fleetcast` need not exist here) and rates as well sandboxed.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::*;
use std::process::Command;

const UNIT: &str = include_str!("../examples/systemd/fleetcast.service");

fn completions(shell: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetcast"))
        .args(["completions", shell])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn completions_cover_commands_and_flags() {
    let bash = completions("bash");
    for word in [
        "serve",
        "loadtest",
        "completions",
        "--mqtt",
        "--html",
        "--broker",
    ] {
        assert!(bash.contains(word), "bash completions lack {word}");
    }
    assert!(bash.contains("complete -F"), "a bash completion function");
    assert!(completions("zsh").starts_with("#compdef fleetcast"));
    let fish = completions("fish");
    assert!(fish.contains("complete -c fleetcast") && fish.contains("-l mqtt"));
    let out = Command::new(env!("CARGO_BIN_EXE_fleetcast"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "an unknown shell is refused");
}

#[test]
fn the_unit_file_asks_for_what_the_issue_says() {
    for line in [
        "User=fleetcast",
        "LimitNOFILE=20000",
        "StateDirectory=fleetcast",
        "ExecStart=/usr/local/bin/fleetcast serve --config /etc/fleetcast/fleetcast.toml --auth /etc/fleetcast/credentials.toml --data /var/lib/fleetcast",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "CapabilityBoundingSet=",
    ] {
        assert!(UNIT.lines().any(|l| l == line), "{line} missing");
    }
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    if !require_program("systemd-analyze") {
        return;
    }
    let dir = TempDir::new("systemd");
    let unit = dir.path.join("fleetcast.service");
    let exec = UNIT.replace(
        "ExecStart=/usr/local/bin/fleetcast ",
        &format!("ExecStart={} ", env!("CARGO_BIN_EXE_fleetcast")),
    );
    assert_ne!(exec, UNIT);
    std::fs::write(&unit, exec).unwrap();
    let verify = Command::new(find_program("systemd-analyze").unwrap())
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verify.stderr).into_owned()
        + &String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{said}");
    assert!(
        said.trim().is_empty(),
        "systemd-analyze verify complained: {said}"
    );
    // An exposure of 2.0 or less on systemd's 0-10 scale ("OK").
    let security = Command::new(find_program("systemd-analyze").unwrap())
        .args(["security", "--offline=true", "--threshold=20"])
        .arg(&unit)
        .output()
        .unwrap();
    assert!(
        security.status.success(),
        "{}",
        String::from_utf8_lossy(&security.stdout)
    );
}
