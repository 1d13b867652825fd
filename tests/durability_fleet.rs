//! A restart while 1,000 drivers keep publishing: `serve --data` is killed with SIGKILL in
//! the middle of a 1 Hz fleet and started again on the same ports. Every driver's restored
//! position is at least the last one the broker acknowledged a second (the stated bound)
//! before the kill; once the drivers are back, their fixes continue with no seq missing.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::persist::*;
use common::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const DRIVERS: usize = 1_000;

/// What one driver sent and what the broker acknowledged, with when.
#[derive(Debug, Default)]
struct Track {
    last_sent: u64,
    acked: Vec<(u64, Instant)>,
    /// The seq of the first fix on the latest connection.
    resumed: u64,
}

type Tracks = Arc<Vec<Mutex<Track>>>;

/// A CONNECT answered with CONNACK 0, or None (broker down, refused).
async fn dial(addr: SocketAddr, id: &str) -> Option<TcpStream> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(&connect_frame(id, 30, true, None)).await.ok()?;
    let connack = raw::read_frame(&mut s, PATIENCE).await?;
    (connack.get(..4) == Some(&[0x20, 2, 0, 0])).then_some(s)
}

/// Publishes its position (retained, QoS 1) once a second; reconnects when the broker is
/// back (`up`), until `stop`.
async fn drive(
    i: usize,
    addr: SocketAddr,
    tracks: Tracks,
    mut up: watch::Receiver<bool>,
    stop: CancellationToken,
) {
    let id = driver_id(i);
    let topic = format!("drivers/{id}/location");
    let phase = Duration::from_micros(i as u64 * 1_000_000 / DRIVERS as u64);
    let mut tick = tokio::time::interval_at(Instant::now() + phase, Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut seq = 0u64;
    while !stop.is_cancelled() {
        if up.wait_for(|u| *u).await.is_err() {
            return;
        }
        let Some(mut s) = dial(addr, &id).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tracks[i].lock().unwrap().resumed = seq + 1;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            seq += 1;
            tracks[i].lock().unwrap().last_sent = seq;
            let pkid = (seq % 60_000) as u16 + 1;
            let frame = raw::publish(topic.as_bytes(), &location(&id, seq), 1, pkid, true, None);
            if s.write_all(&frame).await.is_err() {
                break;
            }
            let acked = loop {
                match raw::read_frame(&mut s, Duration::from_secs(5)).await {
                    Some(f) if f[0] == 0x40 && f[2..4] == pkid.to_be_bytes() => break true,
                    Some(_) => {}
                    None => break false,
                }
            };
            if !acked {
                break;
            }
            tracks[i].lock().unwrap().acked.push((seq, Instant::now()));
        }
    }
}

/// Waits until every driver has had a fix acknowledged more than the bound ago.
async fn until_all_publish(tracks: &Tracks) {
    let deadline = Instant::now() + PATIENCE * 3;
    loop {
        let old = Instant::now() - LOSS_BOUND;
        let ready = tracks
            .iter()
            .filter(|t| t.lock().unwrap().acked.iter().any(|a| a.1 < old))
            .count();
        if ready == DRIVERS {
            return;
        }
        assert!(Instant::now() < deadline, "only {ready} drivers publishing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each restored seq is at least the last one acknowledged a bound before `killed`, and
/// was sent. Returns how many drivers lost their last acknowledged fix (within the bound).
fn check_restored(
    ids: &[String],
    restored: &HashMap<String, u64>,
    tracks: &Tracks,
    killed: Instant,
) -> usize {
    assert_eq!(
        restored.len(),
        DRIVERS,
        "a retained position for every driver"
    );
    let mut lost_within_bound = 0;
    for (i, id) in ids.iter().enumerate() {
        let t = tracks[i].lock().unwrap();
        let acked_before =
            |limit: Instant| t.acked.iter().filter(|a| a.1 <= limit).map(|a| a.0).max();
        let durable =
            acked_before(killed - LOSS_BOUND).expect("a fix acknowledged before the bound");
        let last_acked = acked_before(killed).unwrap_or(0);
        let got = restored[id];
        assert!(got >= durable, "{id}: restored seq {got}, but seq {durable} was acknowledged over a second before the kill");
        assert!(
            got <= t.last_sent,
            "{id}: restored seq {got} was never sent"
        );
        lost_within_bound += usize::from(got < last_acked);
    }
    lost_within_bound
}

/// A live subscriber (subscribed before the drivers are let back) sees each driver's fixes
/// continue from its first one after the restart, in order, none missing.
async fn check_continuity(
    mqtt: SocketAddr,
    ids: &[String],
    restored: &HashMap<String, u64>,
    tracks: &Tracks,
    up: &watch::Sender<bool>,
) {
    let mut o = rumqttc::MqttOptions::new("live", mqtt.ip().to_string(), mqtt.port());
    o.set_keep_alive(Duration::from_secs(30));
    let mut live = TestClient::connect(o).await;
    live.subscribe("drivers/+/location", rumqttc::QoS::AtLeastOnce)
        .await;
    up.send_replace(true);
    let mut seen: HashMap<String, Vec<u64>> = HashMap::new();
    let deadline = Instant::now() + PATIENCE;
    while seen.len() < DRIVERS || seen.values().any(|s| s.len() < 3) {
        assert!(Instant::now() < deadline, "{} drivers back", seen.len());
        let Some(p) = live.publish_within(Duration::from_secs(2)).await else {
            continue;
        };
        if p.retain {
            continue;
        }
        let id = p.topic.split('/').nth(1).unwrap().to_owned();
        seen.entry(id).or_default().push(seq_of(&p.payload));
    }
    for (i, id) in ids.iter().enumerate() {
        let seqs = &seen[id];
        let resumed = tracks[i].lock().unwrap().resumed;
        assert!(resumed > restored[id], "{id}: resumed at {resumed}");
        let expected: Vec<u64> = (0..seqs.len() as u64).map(|k| resumed + k).collect();
        assert_eq!(
            seqs, &expected,
            "{id}: fixes after the restart, in order, none missing"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_under_a_1000_driver_fleet_loses_nothing_beyond_the_bound() {
    let dir = TempDir::new("durable-fleet");
    let mut first = serve_with_data(&dir.path, None);
    let at = [first.mqtt, first.ws, first.http];
    let tracks: Tracks = Arc::new((0..DRIVERS).map(|_| Mutex::default()).collect());
    let (up_tx, up) = watch::channel(true);
    let stop = CancellationToken::new();
    let fleet: Vec<_> = (0..DRIVERS)
        .map(|i| {
            tokio::spawn(drive(
                i,
                first.mqtt,
                Arc::clone(&tracks),
                up.clone(),
                stop.clone(),
            ))
        })
        .collect();
    until_all_publish(&tracks).await;
    // Drivers that lose the broker wait until it is let back (after the check below).
    up_tx.send_replace(false);
    let killed = Instant::now();
    kill_9(&mut first);
    let second = serve_with_data(&dir.path, Some(at));
    let ids: Vec<String> = (0..DRIVERS).map(driver_id).collect();
    let restored = retained_seqs(second.mqtt, &ids, "check").await;
    let lost = check_restored(&ids, &restored, &tracks, killed);
    eprintln!("restart: {DRIVERS} drivers restored; {lost} lost their last acknowledged fix (within the bound)");
    check_continuity(second.mqtt, &ids, &restored, &tracks, &up_tx).await;
    stop.cancel();
    for driver in fleet {
        let _ = driver.await;
    }
}
