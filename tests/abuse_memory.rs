//! Memory under password guessing from many addresses: every guess costs an argon2 check
//! (19 MiB of working memory), and the checks' memory must stay bounded by the checks
//! running at once, not grow with the guesses. Alone in its test binary, because it reads
//! the process's resident memory.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::*;
use fleetcast_broker::Config;
use fleetcast_loadtest::wire;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

/// This process's resident memory (MiB).
fn rss_mib() -> u64 {
    fleetcast_proto::process::own_usage()
        .expect("RSS from /proc")
        .rss_bytes
        / (1024 * 1024)
}

/// A wrong password from `source`; the CONNACK code.
async fn guess(source: [u8; 4], mqtt: SocketAddr) -> Option<u8> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::from((source, 0))).ok()?;
    let mut s = socket.connect(mqtt).await.ok()?;
    let hello = wire::connect("drv-000001", 30, Some(("drv-000001", "nope")));
    s.write_all(&hello).await.ok()?;
    let mut answer = [0u8; 4];
    let read = tokio::time::timeout(Duration::from_secs(20), s.read_exact(&mut answer));
    read.await.ok()?.ok()?;
    Some(answer[3])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guesses_from_200_addresses_do_not_grow_memory_with_each_check() {
    // Each address guesses once a round, under its failure limit: every guess is hashed.
    let mut config = Config::ephemeral();
    config.limits.auth_failures_per_source = 1_000;
    config.limits.auth_failures_per_account = 1_000;
    let b = TestBroker::with_config_and_example_credentials(config).await;
    let auth = b.broker.gateway().auth.clone().unwrap();
    let before = rss_mib();
    for round in 0..2 {
        let guesses: Vec<_> = (0..200u32)
            .map(|i| {
                let source = [127, 0, 1 + (i / 250) as u8, 1 + (i % 250) as u8];
                tokio::spawn(guess(source, b.addrs.mqtt))
            })
            .collect();
        for g in guesses {
            assert_eq!(g.await.unwrap(), Some(5));
        }
        eprintln!(
            "round {round}: {} checks, RSS {before} -> {} MiB",
            auth.argon2_runs(),
            rss_mib()
        );
    }
    // Two checks at once, 19 MiB each, plus 200 connections: well under 150 MiB. Before,
    // each check's freed memory stayed in a malloc arena: +350 MiB.
    assert!(
        rss_mib() < before + 150,
        "RSS {before} -> {} MiB",
        rss_mib()
    );
}
