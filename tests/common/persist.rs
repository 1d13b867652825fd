//! Helpers for the durability tests: `serve --data` started, killed and started again,
//! location payloads with a `seq`, and reading the retained position of many drivers.

use super::{raw, spawn_ready_args, Served, TestClient, PATIENCE};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// What `serve --data` may lose to a kill -9, as README states it: the last second.
pub const LOSS_BOUND: Duration = Duration::from_secs(1);

/// The driver id of number `i`.
pub fn driver_id(i: usize) -> String {
    format!("drv-{i:06}")
}

/// A valid location of `id` with `seq`, taken now.
pub fn location(id: &str, seq: u64) -> Vec<u8> {
    let ts = fleetcast_proto::time::now_ms();
    format!(
        r#"{{"id":"{id}","lat":60.17,"lon":24.94,"heading":0,"speed":0,"accuracy":3,"status":"available","seq":{seq},"ts":{ts}}}"#
    )
    .into_bytes()
}

/// The `seq` of a location payload.
pub fn seq_of(payload: &[u8]) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(payload).expect("location JSON");
    v["seq"].as_u64().expect("seq")
}

/// `fleetcast serve --data DIR` on the given addresses (mqtt, ws, http), or on free ports.
pub fn serve_with_data(dir: &Path, at: Option<[SocketAddr; 3]>) -> Served {
    serve_with_data_and(dir, at, &[])
}

/// [`serve_with_data`] with more arguments.
pub fn serve_with_data_and(dir: &Path, at: Option<[SocketAddr; 3]>, extra: &[&str]) -> Served {
    let addrs = at.map(|a| a.map(|x| x.to_string()));
    let listen = match &addrs {
        Some([m, w, h]) => vec!["--mqtt", m, "--ws", w, "--http", h],
        None => super::EPHEMERAL_LISTENERS.to_vec(),
    };
    let dir = dir.to_str().expect("UTF-8 path");
    let mut args = listen;
    args.extend(["--data", dir]);
    args.extend_from_slice(extra);
    spawn_ready_args("serve", &args)
}

/// SIGKILL, and wait for the process to be gone.
pub fn kill_9(served: &mut Served) {
    served.child.kill().expect("SIGKILL");
    served.child.wait().expect("reaped");
}

/// SIGTERM, and wait for a clean exit.
pub fn sigterm(served: &mut Served) {
    let pid = served.child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(sent.success());
    let status = served.child.wait().expect("exit");
    assert!(status.success(), "serve exits 0 on SIGTERM: {status:?}");
}

/// One raw MQTT 3.1.1 connection: CONNECT sent, CONNACK read; returns the socket and the
/// CONNACK's session-present flag.
pub async fn raw_connect(addr: SocketAddr, client_id: &str, clean: bool) -> (TcpStream, bool) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(&super::connect_frame(client_id, 30, clean, None))
        .await
        .expect("CONNECT");
    let connack = raw::read_frame(&mut s, PATIENCE).await.expect("CONNACK");
    assert_eq!(connack[..2], [0x20, 2], "{connack:?}");
    assert_eq!(connack[3], 0, "accepted: {connack:?}");
    (s, connack[2] & 1 == 1)
}

/// Publishes at QoS 1 on a raw connection and waits for the PUBACK.
pub async fn publish_acked(
    s: &mut TcpStream,
    topic: &str,
    payload: &[u8],
    pkid: u16,
    retain: bool,
) {
    let frame = raw::publish(topic.as_bytes(), payload, 1, pkid, retain, None);
    s.write_all(&frame).await.expect("PUBLISH");
    loop {
        let f = raw::read_frame(s, PATIENCE).await.expect("PUBACK");
        if f[0] == 0x40 && f[2..4] == pkid.to_be_bytes() {
            return;
        }
    }
}

/// A PUBLISH frame's topic, payload and packet id (0 at QoS 0).
pub fn parse_publish(f: &[u8]) -> Option<(String, Vec<u8>, u16)> {
    if f[0] >> 4 != 3 {
        return None;
    }
    let qos = (f[0] >> 1) & 3;
    let mut at = 1;
    while f[at] & 0x80 != 0 {
        at += 1;
    }
    at += 1;
    let len = usize::from(u16::from_be_bytes([f[at], f[at + 1]]));
    let topic = String::from_utf8(f[at + 2..at + 2 + len].to_vec()).ok()?;
    at += 2 + len;
    let pkid = if qos > 0 {
        at += 2;
        u16::from_be_bytes([f[at - 2], f[at - 1]])
    } else {
        0
    };
    Some((topic, f[at..].to_vec(), pkid))
}

/// The retained location's `seq` of each of `ids`, read by new subscribers to each exact
/// topic (rumqttd hands a new wildcard subscriber at most `max_outgoing_packet_count`
/// retained messages, so a large fleet is read topic by topic, 50 per connection).
pub async fn retained_seqs(mqtt: SocketAddr, ids: &[String], tag: &str) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for (n, chunk) in ids.chunks(50).enumerate() {
        let mut o =
            rumqttc::MqttOptions::new(format!("{tag}-{n}"), mqtt.ip().to_string(), mqtt.port());
        o.set_keep_alive(Duration::from_secs(30));
        let mut c = TestClient::connect(o).await;
        let filters = chunk.iter().map(|id| {
            rumqttc::SubscribeFilter::new(
                format!("drivers/{id}/location"),
                rumqttc::QoS::AtMostOnce,
            )
        });
        c.client.subscribe_many(filters).await.expect("subscribe");
        let mut got = 0;
        while got < chunk.len() {
            let Some(p) = c.publish_within(Duration::from_secs(3)).await else {
                break;
            };
            if p.retain {
                let id = p.topic.split('/').nth(1).expect("drivers/{id}/location");
                out.insert(id.to_owned(), seq_of(&p.payload));
                got += 1;
            }
        }
        c.disconnect().await;
    }
    out
}
