//! What an adversarial probe does against `serve --auth`, and what it must not get:
//! usernames told apart by timing, logins starved by a password-guessing flood, guesses
//! without limit, and one address holding every HTTP (or MQTT) connection. Each test plays
//! the attack from its own loopback address (127.0.0.2; the kernel routes all of
//! 127.0.0.0/8 to lo) and checks others from another one.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::*;
use fleetcast_broker::Config;
use fleetcast_loadtest::wire;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{timeout, Instant};

const ATTACKER: [u8; 4] = [127, 0, 0, 2];
const BYSTANDER: [u8; 4] = [127, 0, 0, 3];

/// A TCP connection to `addr` from the loopback address `source`.
async fn dial_from(source: [u8; 4], addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    socket.connect(addr).await
}

/// The CONNACK code a raw 3.1.1 CONNECT from `source` gets (None: closed without one), and
/// how long it took.
async fn connect_from(
    source: [u8; 4],
    addr: SocketAddr,
    id: &str,
    creds: (&str, &str),
) -> (Option<u8>, Duration) {
    let started = Instant::now();
    let Ok(mut s) = dial_from(source, addr).await else {
        return (None, started.elapsed());
    };
    if s.write_all(&wire::connect(id, 30, Some(creds)))
        .await
        .is_err()
    {
        return (None, started.elapsed());
    }
    let mut answer = [0u8; 4];
    let code = match timeout(Duration::from_secs(30), s.read_exact(&mut answer)).await {
        Ok(Ok(_)) if answer[0] == 0x20 => Some(answer[3]),
        _ => None,
    };
    (code, started.elapsed())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// This process's resident memory (MiB).
fn rss_mib() -> u64 {
    fleetcast_proto::process::own_usage()
        .expect("RSS from /proc")
        .rss_bytes
        / (1024 * 1024)
}

/// `name{labels}`'s value in `/metrics`, asked from the bystander's address.
async fn metric(http: SocketAddr, key: &str) -> f64 {
    let mut s = dial_from(BYSTANDER, http).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    timeout(PATIENCE, s.read_to_string(&mut body))
        .await
        .unwrap()
        .unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// `serve --auth examples/credentials.toml`'s stack (metrics on) with `config`.
async fn stack_with(config: Config) -> fleetcast::stack::Stack {
    let listeners = fleetcast_broker::Listeners::bind(&config).await.unwrap();
    fleetcast::stack::Stack::start(
        listeners,
        config,
        fleetcast::stack::offline_dashboard().unwrap(),
        fleetcast::stack::Metering::On,
        Some(example_auth()),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_takes_as_long_for_an_unknown_user_as_for_a_known_one() {
    // The failure limits are what a real guesser meets first; here they are out of the
    // way so that 15 samples of each are hashed and timed.
    let mut config = Config::ephemeral();
    config.limits.auth_failures_per_source = 1_000;
    config.limits.auth_failures_per_account = 1_000;
    let b = TestBroker::with_config_and_example_credentials(config).await;
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..15 {
        let wrong = format!("guess-{i}");
        let (code, t) =
            connect_from(ATTACKER, b.addrs.mqtt, "drv-000001", ("drv-000001", &wrong)).await;
        assert_eq!(code, Some(5));
        known.push(t);
        let (code, t) =
            connect_from(ATTACKER, b.addrs.mqtt, "drv-000001", ("drv-999999", &wrong)).await;
        assert_eq!(code, Some(5));
        unknown.push(t);
    }
    let (k, u) = (median(known), median(unknown));
    eprintln!("median CONNACK for a wrong password: known user {k:?}, unknown user {u:?}");
    assert!(k < u * 2 && u < k * 2, "known {k:?}, unknown {u:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_guessing_burst_starves_no_one_and_gets_only_a_few_guesses() {
    let stack = stack_with(Config::ephemeral()).await;
    let addrs = stack.broker.addrs();
    let auth = Arc::clone(stack.broker.gateway().auth.as_ref().unwrap());
    let rss_before = rss_mib();
    let runs_before = auth.argon2_runs();
    // Every guess on its own connection, all at once; the client side counts the
    // CONNECTs written.
    let sent = Arc::new(AtomicUsize::new(0));
    let burst: Vec<_> = (0..600)
        .map(|i| {
            let sent = Arc::clone(&sent);
            tokio::spawn(async move {
                let guess = format!("guess-{i}");
                let mut s = dial_from(ATTACKER, addrs.mqtt).await.ok()?;
                s.write_all(&wire::connect(
                    "drv-000001",
                    30,
                    Some(("drv-000001", &guess)),
                ))
                .await
                .ok()?;
                sent.fetch_add(1, Ordering::Relaxed);
                let mut answer = [0u8; 4];
                timeout(Duration::from_secs(30), s.read_exact(&mut answer))
                    .await
                    .ok()?
                    .ok()?;
                (answer[0] == 0x20).then_some(answer[3])
            })
        })
        .collect();
    // Once every guess is in, another device logs in from elsewhere.
    let deadline = Instant::now() + PATIENCE;
    while sent.load(Ordering::Relaxed) < 600 || auth.argon2_runs() == runs_before {
        assert!(Instant::now() < deadline, "the burst never got going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (code, waited) =
        connect_from(BYSTANDER, addrs.mqtt, "rider-1", ("rider-1", "rider-demo")).await;
    let rss_during = rss_mib();
    let mut codes = Vec::new();
    for guess in burst {
        codes.push(guess.await.unwrap());
    }
    let hashed = auth.argon2_runs() - runs_before - 1;
    eprintln!(
        "bystander's CONNACK after {waited:?}; RSS {rss_before} -> {rss_during} MiB; \
         {hashed} of 600 guesses hashed; answers 0x05: {}, 0x03: {}, none: {}",
        codes.iter().filter(|c| **c == Some(5)).count(),
        codes.iter().filter(|c| **c == Some(3)).count(),
        codes.iter().filter(|c| c.is_none()).count(),
    );
    assert_eq!(code, Some(0));
    assert!(waited < Duration::from_secs(2), "waited {waited:?}");
    // Every guess is answered: "bad password" while the source may still guess, "server
    // unavailable" (try later) once it may not or must wait its turn.
    assert!(
        codes.iter().all(|c| matches!(c, Some(5) | Some(3))),
        "{codes:?}"
    );
    assert!(hashed <= 5, "{hashed} guesses hashed");

    // The source is in back-off: refused before any hash, even with the right password.
    let runs = auth.argon2_runs();
    for guess in ["x", "y", "drv1-demo"] {
        let creds = ("drv-000001", guess);
        let (code, _) = connect_from(ATTACKER, addrs.mqtt, "drv-000001", creds).await;
        assert_eq!(code, Some(3));
    }
    assert_eq!(
        auth.argon2_runs(),
        runs,
        "a source in back-off costs no hash"
    );
    // The attacked account is slowed, not locked: its device logs in from its own address.
    let (code, waited) = connect_from(
        [127, 0, 0, 4],
        addrs.mqtt,
        "drv-000001",
        ("drv-000001", "drv1-demo"),
    )
    .await;
    assert_eq!(code, Some(0));
    assert!(waited < Duration::from_secs(2), "waited {waited:?}");
    let refused = "fleetcast_connect_refusals_total{reason=\"auth_backoff\"}";
    assert!(metric(addrs.http, refused).await >= 3.0);
    stack.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connect_timeout_bounds_the_wait_for_a_password_check() {
    // One check at a time, ~20 ms or more each: twenty logins from twenty addresses
    // cannot all be checked within 150 ms. Those still waiting then are told "server
    // unavailable" at the time-out instead of waiting their turn.
    let mut config = Config::ephemeral();
    config.limits.connect_timeout_ms = 150;
    config.limits.auth_concurrency = 1;
    let b = TestBroker::with_config_and_example_credentials(config).await;
    let logins: Vec<_> = (10..30u8)
        .map(|last| {
            let mqtt = b.addrs.mqtt;
            tokio::spawn(async move {
                let creds = ("drv-000001", "wrong");
                connect_from([127, 0, 0, last], mqtt, "drv-000001", creds).await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for login in logins {
        answers.push(login.await.unwrap());
    }
    eprintln!("{answers:?}");
    assert!(answers
        .iter()
        .all(|(code, _)| matches!(code, Some(5) | Some(3))));
    assert!(
        answers.iter().any(|(code, _)| *code == Some(3)),
        "none timed out"
    );
    let slowest = answers.iter().map(|(_, t)| *t).max().unwrap();
    assert!(
        slowest < Duration::from_secs(1),
        "slowest answer {slowest:?}"
    );
}

/// Holds `n` connections from `source` to `addr`, each with a partial HTTP request,
/// redialling a quarter second after the server closes one, until `stop`. Counts dials.
fn hold_partial_requests(
    source: [u8; 4],
    addr: SocketAddr,
    n: usize,
    stop: &Arc<AtomicBool>,
    dials: &Arc<AtomicUsize>,
) {
    for _ in 0..n {
        let (stop, dials) = (Arc::clone(stop), Arc::clone(dials));
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                dials.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut s) = dial_from(source, addr).await {
                    let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
                    let mut sink = [0u8; 256];
                    let _ = timeout(Duration::from_secs(1), async {
                        while !matches!(s.read(&mut sink).await, Ok(0) | Err(_)) {}
                    })
                    .await;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holding_2100_partial_requests_does_not_lock_others_out_of_http() {
    let stack = stack_with(Config::ephemeral()).await;
    let http = stack.broker.addrs().http;
    let (stop, dials) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    hold_partial_requests(ATTACKER, http, 2_100, &stop, &dials);
    let deadline = Instant::now() + PATIENCE;
    while dials.load(Ordering::Relaxed) < 2_100 {
        assert!(Instant::now() < deadline, "the holders never dialled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut answered = 0;
    for _ in 0..21 {
        let ask = async {
            let mut s = dial_from(BYSTANDER, http).await.ok()?;
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).await.ok()?;
            out.starts_with("HTTP/1.1 200").then_some(())
        };
        if timeout(Duration::from_secs(2), ask)
            .await
            .ok()
            .flatten()
            .is_some()
        {
            answered += 1;
        }
    }
    eprintln!("/healthz answered {answered} of 21 times");
    assert_eq!(answered, 21);
    let refused = "fleetcast_http_refusals_total{reason=\"source_limit\"}";
    assert!(metric(http, refused).await > 0.0);
    stop.store(true, Ordering::Relaxed);
    stack.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_per_source_cap_one_address_cannot_take_every_mqtt_connection() {
    let mut config = Config::ephemeral();
    config.limits.max_connections_per_source = 8;
    let stack = stack_with(config).await;
    let addrs = stack.broker.addrs();
    // Eight idle sockets (no CONNECT yet) over MQTT and WebSocket fill the source's share.
    let mut held = Vec::new();
    for i in 0..8 {
        let to = if i % 2 == 0 { addrs.mqtt } else { addrs.ws };
        held.push(dial_from(ATTACKER, to).await.unwrap());
    }
    for to in [addrs.mqtt, addrs.ws] {
        let mut s = dial_from(ATTACKER, to).await.unwrap();
        let mut b = [0u8; 1];
        let closed = timeout(Duration::from_secs(2), s.read(&mut b)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "not closed");
    }
    let (code, _) = connect_from(BYSTANDER, addrs.mqtt, "rider-1", ("rider-1", "rider-demo")).await;
    assert_eq!(code, Some(0));
    let refused = "fleetcast_connect_refusals_total{reason=\"source_limit\"}";
    assert_eq!(metric(addrs.http, refused).await, 2.0);
    drop(held);
    stack.shutdown().await.unwrap();
}
