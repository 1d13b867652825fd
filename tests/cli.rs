//! The `fleetcast` binary as a user runs it: the ready line, health over HTTP, the help
//! text's defaults, the printed config, and a graceful exit on SIGTERM.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::{connect_frame, example_auth, raw_exchange, spawn_ready, TempDir, PATIENCE};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_fleetcast");

/// Starts `fleetcast serve` on port 0 and reads its ready line.
fn serve() -> common::Served {
    common::spawn_ready("serve", &[])
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn ready_line_health_and_graceful_sigterm() {
    let mut served = serve();
    let health = http_get(served.http, "/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let ready = http_get(served.http, "/readyz");
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    assert!(ready.contains("\"ready\":true"), "{ready}");

    // A connected client, over each transport.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (client, _) = rt.block_on(raw_exchange(
        served.mqtt,
        &connect_frame("c1", 60, true, None),
        4,
    ));
    let ws_client = std::net::TcpStream::connect(served.ws).unwrap();

    let pid = served.child.id().to_string();
    let started = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = loop {
        if let Some(status) = served.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still running 5 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status:?}");

    // The client was disconnected: its socket reads EOF (or a reset).
    let mut client = client.into_std().unwrap();
    client.set_nonblocking(false).unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf = [0u8; 8];
    assert!(matches!(client.read(&mut buf), Ok(0) | Err(_)));
    drop(ws_client);
}

#[test]
fn help_shows_defaults() {
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for default in ["127.0.0.1:1883", "127.0.0.1:8083", "127.0.0.1:8080"] {
        assert!(help.contains(&format!("[default: {default}]")), "{help}");
    }
}

#[test]
fn printed_config_is_the_default_and_loads_back() {
    let out = Command::new(BIN).arg("config").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let parsed = fleetcast_broker::Config::from_toml(&text).unwrap();
    assert_eq!(parsed, fleetcast_broker::Config::default());

    // And `serve --config` reads a file, refusing unknown keys with a clear error.
    let dir = std::env::temp_dir().join(format!("fleetcast-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[limits]\nmax_conections = 5\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config", bad.to_str().unwrap()])
        .args(common::EPHEMERAL_LISTENERS)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_conections"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn busy_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--mqtt",
            &port,
            "--ws",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot listen for MQTT on"), "{err}");
}

#[test]
fn demo_runs_the_broker_and_200_drivers() {
    let mut served = common::spawn_ready("demo", &[]);
    let mqtt = served.mqtt;
    let demo = served.next_line().unwrap();
    assert!(demo.starts_with("demo: 200 drivers"), "{demo}");
    // Its state is kept where README says, by default.
    let kept = served.xdg_data.path.join("fleetcast").join("demo");
    assert!(
        demo.ends_with(&format!("state kept in {}", kept.display())),
        "{demo}"
    );
    assert!(kept.join("fleetcast.redb").is_file());

    let rt = tokio::runtime::Runtime::new().unwrap();
    let distinct = rt.block_on(async {
        let mut o = rumqttc::MqttOptions::new("demo-rider", mqtt.ip().to_string(), mqtt.port());
        o.set_keep_alive(Duration::from_secs(30));
        let mut rider = common::TestClient::connect(o).await;
        rider
            .subscribe("drivers/+/location", rumqttc::QoS::AtMostOnce)
            .await;
        let mut ids = std::collections::HashSet::new();
        while ids.len() < 200 {
            let Some(p) = rider.next_publish().await else {
                break;
            };
            ids.insert(p.topic);
        }
        ids.len()
    });
    assert_eq!(distinct, 200, "drivers seen on the map topics");

    let pid = served.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let started = Instant::now();
    let status = loop {
        if let Some(s) = served.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "demo still running 5 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
}

#[test]
fn simulate_prints_progress_and_a_final_summary() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let broker = rt.block_on(common::TestBroker::start());
    let out = Command::new(BIN)
        .args([
            "simulate",
            "--broker",
            &format!("mqtt://{}", broker.addrs.mqtt),
        ])
        .args([
            "--drivers",
            "5",
            "--interval",
            "200ms",
            "--duration",
            "3s",
            "--report-every",
            "1s",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("simulate: broker=mqtt://127.0.0.1:"),
        "{stdout}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("simulate: t=") && l.contains("connected=5/5")),
        "{stdout}"
    );
    let last = lines.last().unwrap();
    assert!(
        last.starts_with("simulate done: drivers=5 published="),
        "{stdout}"
    );
    let published: u64 = last
        .split(' ')
        .find_map(|w| w.strip_prefix("published="))
        .unwrap()
        .parse()
        .unwrap();
    // 5 drivers at 5 Hz for 3 s, less the connect time.
    assert!(published >= 50, "{stdout}");
    for field in ["reconnects=0", "cpu=", "rss="] {
        assert!(last.contains(field), "{last}");
    }
}

#[test]
fn tls_flags_fail_clearly() {
    let missing = "/nonexistent/ca.pem";
    let out = Command::new(BIN)
        .args([
            "simulate",
            "--broker",
            "mqtts://127.0.0.1:8883",
            "--ca",
            missing,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(missing), "{err}");
    // --ca is for TLS brokers only.
    let out = Command::new(BIN)
        .args([
            "simulate",
            "--broker",
            "mqtt://127.0.0.1:1883",
            "--ca",
            missing,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not TLS"));
    let out = Command::new(BIN)
        .args(["loadtest", "--broker", "mqtts://127.0.0.1:8883"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("mqtt:// and ws:// only"));
}

#[test]
fn certs_then_serve_over_tls_prints_mqtts_in_the_ready_line() {
    let dir = TempDir::new("cli-certs");
    let out_dir = dir.path.join("certs");
    let out = Command::new(BIN)
        .args(["certs", "--out"])
        .arg(&out_dir)
        .args(["--client", "drv-000001"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "ca.pem",
        "ca.key",
        "server.pem",
        "server.key",
        "drv-000001.pem",
        "drv-000001.key",
    ] {
        assert!(out_dir.join(f).exists(), "{f}");
    }
    // A second run signs with the same CA: the first CA still verifies the new cert.
    let ca_before = std::fs::read(out_dir.join("ca.pem")).unwrap();
    let out = Command::new(BIN)
        .args(["certs", "--out"])
        .arg(&out_dir)
        .args(["--client", "drv-000002"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(std::fs::read(out_dir.join("ca.pem")).unwrap(), ca_before);

    // A client name that would overwrite the CA, or leave the directory, is refused.
    for bad in ["ca", "server", "../escape"] {
        let out = Command::new(BIN)
            .args(["certs", "--out"])
            .arg(&out_dir)
            .args(["--client", bad])
            .output()
            .unwrap();
        assert!(!out.status.success(), "--client {bad}");
    }
    assert_eq!(std::fs::read(out_dir.join("ca.pem")).unwrap(), ca_before);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out_dir.join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let cert = out_dir.join("server.pem").display().to_string();
    let key = out_dir.join("server.key").display().to_string();
    let mut served = spawn_ready(
        "serve",
        &[
            "--mqtts",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
    );
    let ready = served.ready.clone();
    assert!(ready.contains(" mqtts=127.0.0.1:"), "{ready}");
    assert!(!ready.contains("mqtts=127.0.0.1:0"), "{ready}");
    served.drain_output();
}

#[test]
fn token_prints_a_token_the_credentials_accept() {
    let creds = common::EXAMPLE_CREDENTIALS;
    let out = Command::new(BIN)
        .args([
            "token",
            "--auth",
            creds,
            "--account",
            "partner-1",
            "--ttl",
            "1h",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let auth = example_auth();
    let now = fleetcast_proto::time::unix_now();
    let access = auth.check_token(&token, now).expect("valid");
    assert_eq!(access.account, "partner-1");
    assert!((now + 3_590..=now + 3_600).contains(&access.expires_at));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/?token="));
    let out = Command::new(BIN)
        .args(["token", "--auth", creds, "--account", "nobody"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// Threads of process `pid` whose name (`comm`) `matches`.
fn threads_named(pid: u32, matches: impl Fn(&str) -> bool) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter(|t| {
            let comm = t.as_ref().unwrap().path().join("comm");
            std::fs::read_to_string(comm).is_ok_and(|c| matches(c.trim_end()))
        })
        .count()
}

#[test]
fn workers_sets_the_runtime_threads_zero_means_one_per_core_unset_what_io_threads_leave() {
    let cores = std::thread::available_parallelism().unwrap().get();
    // 3: neither tokio's default on this machine nor 1, whatever the cores.
    let three = if cores == 3 { 4 } else { 3 };
    let three_arg = three.to_string();
    for (extra, want) in [
        (vec!["--workers", "1"], 1),
        (vec!["--workers", three_arg.as_str()], three),
        (vec!["--workers", "0"], cores),
        // Unset: the cores the connection threads (one per two cores) leave.
        (vec![], cores.saturating_sub((cores / 2).max(1)).max(1)),
        (vec!["--io-threads", "0"], cores),
    ] {
        let served = common::spawn_ready("serve", &extra);
        // The runtime starts its workers before the ready line is printed; tokio's blocking
        // threads share their name, but without --data none runs before it.
        let n = threads_named(served.child.id(), |n| n == "tokio-rt-worker");
        drop(served);
        assert_eq!(n, want, "serve {extra:?}");
    }
}

#[test]
fn io_threads_come_from_the_flag_then_the_file_then_half_the_cores() {
    let cores = std::thread::available_parallelism().unwrap().get();
    let dir = common::TempDir::new("io-threads");
    let file = dir.path.join("fleetcast.toml");
    std::fs::write(&file, "[runtime]\nio_threads = 2\n").unwrap();
    let file = file.to_str().unwrap();
    for (extra, want) in [
        (vec![], (cores / 2).max(1)),
        (vec!["--io-threads", "3"], 3),
        (vec!["--io-threads", "0"], 0),
        (vec!["--config", file], 2),
        (vec!["--config", file, "--io-threads", "1"], 1),
    ] {
        let served = common::spawn_ready("serve", &extra);
        // The threads start before the listeners serve, so before the ready line.
        let n = threads_named(served.child.id(), |n| n.starts_with("fleetcast-io-"));
        drop(served);
        assert_eq!(n, want, "serve {extra:?}");
    }
}
