//! One schema, one set of rules: a fix the gateway accepts is one the map's board shows,
//! and a fix the board would ignore is one the gateway refuses. The same table of good and
//! bad payloads goes through both: over MQTT 5 into `serve`'s stack (the PUBACK says what
//! the gateway did, the board what the map got) and, for the standalone dashboard that
//! reads a broker which checks nothing, straight into a board.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::*;
use fleetcast_dashboard::board::{Board, BoardConfig, Ingested, View};
use std::time::Duration;

/// (what it is, payload with `{id}` and `{ts}` to fill, whether it is a valid fix).
fn table(now: u64) -> Vec<(&'static str, String, bool)> {
    let fix = |field: &str, value: &str| {
        let mut v = serde_json::json!({
            "id": "{id}", "lat": 60.17, "lon": 24.94, "heading": 90.0, "speed": 8.5,
            "accuracy": 4.0, "status": "available", "seq": 1, "ts": now,
        });
        match value {
            "<absent>" => {
                v.as_object_mut().unwrap().remove(field);
            }
            _ => v[field] = serde_json::from_str(value).unwrap(),
        }
        v.to_string()
    };
    vec![
        ("a good fix", fix("seq", "1"), true),
        ("status busy", fix("status", r#""busy""#), false),
        ("status on_trip", fix("status", r#""on_trip""#), true),
        ("status missing", fix("status", "<absent>"), false),
        ("heading 720", fix("heading", "720"), false),
        ("heading -5", fix("heading", "-5"), false),
        ("heading 360", fix("heading", "360"), true),
        ("lat 999", fix("lat", "999"), false),
        ("lon -181", fix("lon", "-181"), false),
        ("speed -1", fix("speed", "-1"), false),
        ("accuracy -1", fix("accuracy", "-1"), false),
        ("ts in 1970", fix("ts", "12"), false),
        (
            "ts two hours ahead",
            fix("ts", &(now + 7_200_000).to_string()),
            false,
        ),
        ("seq missing", fix("seq", "<absent>"), false),
        ("another driver's id", fix("id", r#""drv-other""#), false),
        ("not JSON", "not json".to_owned(), false),
        ("an empty object", "{}".to_owned(), false),
        ("a number as lat", fix("lat", r#""60.1""#), false),
    ]
}

/// The JSON-escaped spelling of `id` (`\u0064rv-...`): the same id to a JSON reader.
fn escaped(id: &str) -> String {
    format!("\\u{:04x}{}", u32::from(id.as_bytes()[0]), &id[1..])
}

fn fill(payload: &str, id: &str) -> String {
    payload.replace("{id}", id)
}

#[test]
fn the_gateway_and_the_board_judge_every_payload_alike() {
    let now = fleetcast_proto::time::now_ms();
    let board = Board::new(BoardConfig::default());
    let mut rows = table(now);
    rows.push((
        "an escaped id",
        table(now)[0].1.replace("{id}", "{escaped}"),
        true,
    ));
    for (i, (what, payload, valid)) in rows.iter().enumerate() {
        let id = format!("drv-s{i:03}");
        let body = fill(payload, &id).replace("{escaped}", &escaped(&id));
        let topic = format!("drivers/{id}/location");
        let gateway = fleetcast_proto::location::check(topic.as_bytes(), body.as_bytes(), now);
        let shown = matches!(
            board.ingest(&topic, body.as_bytes(), now),
            Ingested::Position { .. }
        );
        assert_eq!(gateway.is_ok(), *valid, "gateway on {what}: {gateway:?}");
        assert_eq!(shown, *valid, "board on {what}");
    }
}

/// Over real sockets: every fix the gateway acknowledges with 0x00 appears on the map's
/// board, none it refuses with 0x99 does.
#[tokio::test]
async fn what_the_gateway_accepts_is_what_the_map_shows() {
    use rumqttc::v5::mqttbytes::v5::{Packet as P5, PubAckReason};
    use rumqttc::v5::mqttbytes::QoS as Q5;
    use rumqttc::v5::MqttOptions;
    let stack = start_stack(fleetcast::stack::offline_dashboard().unwrap()).await;
    let port = stack.addrs().mqtt.port();
    let (client, mut events) = v5_client(MqttOptions::new("schema-test", "127.0.0.1", port));
    let now = fleetcast_proto::time::now_ms();
    let mut accepted = Vec::new();
    for (i, (what, payload, valid)) in table(now).into_iter().enumerate() {
        let id = format!("drv-s{i:03}");
        let topic = format!("drivers/{id}/location");
        client
            .publish(topic, Q5::AtLeastOnce, false, fill(&payload, &id))
            .await
            .unwrap();
        let reason = v5_until(&mut events, |p| match p {
            P5::PubAck(a) => Some(a.reason),
            _ => None,
        })
        .await;
        let expected = if valid {
            PubAckReason::Success
        } else {
            PubAckReason::PayloadFormatInvalid
        };
        assert_eq!(reason, expected, "{what}");
        if valid {
            accepted.push(id);
        }
    }
    let good_rows = table(now).iter().filter(|r| r.2).count();
    assert_eq!(accepted.len(), good_rows);
    // The board is fed in-process, after the router: wait for the accepted ones.
    let board = std::sync::Arc::clone(&stack.dashboard.board);
    let shown = tokio::time::timeout(PATIENCE, async {
        loop {
            let mut ids: Vec<String> = board
                .changes_since(0, &View::default(), 1_000)
                .positions
                .into_iter()
                .map(|l| l.id)
                .collect();
            ids.sort();
            if ids.len() >= accepted.len() {
                return ids;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the accepted fixes reach the board");
    assert_eq!(shown, accepted);
    assert_eq!(
        board.ignored.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "the board ignored nothing the gateway let through"
    );
    stack.shutdown().await.unwrap();
}
