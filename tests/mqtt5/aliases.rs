//! Topic aliases (3.3.2.3.4) in both directions, over raw frames since a client library
//! resolves them out of sight. Client to server: the CONNACK grants a Topic Alias
//! Maximum, an alias set with a topic stands for it afterwards, an alias above the
//! maximum is 0x94 and an alias never set is a protocol error. Server to client: no
//! alias for a client that allowed none, never one above the client's maximum, and
//! every message resolvable to its topic.

use crate::raw::Raw;
use crate::wire::{id, options, Connect, Props, Publish};
use crate::{both, Broker};
use std::collections::HashMap;
use std::time::Duration;

fn alias(n: u16) -> Props {
    Props::new().u16(id::TOPIC_ALIAS, n)
}

/// The Topic Alias Maximum a CONNACK grants; fails when it grants none.
async fn granted_maximum(b: Broker, client: &str) -> (Raw, u16) {
    let (c, ack) = Raw::connect(b.addr, b.name, &Connect::new(client)).await;
    let max = ack.props.num(id::TOPIC_ALIAS_MAXIMUM).unwrap_or(0);
    assert!(
        max > 0,
        "[{}] the CONNACK grants no topic aliases (Topic Alias Maximum absent or 0): {:?}",
        b.name,
        ack.props
    );
    (c, max as u16)
}

async fn client_to_server(b: Broker) {
    let who = b.name;
    let mut watcher = Raw::plain(b.addr, who, &b.id("alias-watch")).await;
    watcher
        .sub("mqtt5/alias/#", options(1, false, false, 0))
        .await;

    let (mut c, max) = granted_maximum(b, &b.id("alias-pub")).await;
    let (r, _) = c
        .publish1("mqtt5/alias/a", b"one", 1, false, &alias(1))
        .await;
    assert_eq!(r, 0, "[{who}] PUBACK for topic + alias 1");
    let (r, _) = c.publish1("", b"two", 2, false, &alias(1)).await;
    assert_eq!(r, 0, "[{who}] PUBACK for alias 1 alone");
    // The highest alias granted works too.
    c.publish1("mqtt5/alias/top", b"three", 3, false, &alias(max))
        .await;
    c.publish1("", b"four", 4, false, &alias(max)).await;
    for (topic, payload) in [
        ("mqtt5/alias/a", "one"),
        ("mqtt5/alias/a", "two"),
        ("mqtt5/alias/top", "three"),
        ("mqtt5/alias/top", "four"),
    ] {
        let p = watcher.expect_publish(payload).await;
        assert_eq!(
            (p.topic.as_str(), p.text().as_str()),
            (topic, payload),
            "[{who}] delivered under the full topic"
        );
        assert!(
            !p.props.has(id::TOPIC_ALIAS),
            "[{who}] the watcher allowed no aliases"
        );
    }

    // One above the maximum: DISCONNECT 0x94, Topic Alias invalid (3.3.2-9).
    c.publish0("mqtt5/alias/b", b"x", false, &alias(max + 1))
        .await;
    let (reason, closed) = c.end(crate::raw::PATIENCE).await;
    assert_eq!(
        (reason, closed),
        (Some(0x94), true),
        "[{who}] alias {} above the maximum {max}",
        max + 1
    );

    // An alias this connection never set, with an empty topic: protocol error (3.3.4).
    let mut c = Raw::plain(b.addr, who, &b.id("alias-unset")).await;
    c.publish0("", b"x", false, &alias(1)).await;
    let (reason, closed) = c.end(crate::raw::PATIENCE).await;
    assert_eq!(
        (reason, closed),
        (Some(0x82), true),
        "[{who}] an empty topic with an alias never set"
    );
    assert!(
        watcher
            .publish_within(Duration::from_millis(500))
            .await
            .is_none(),
        "[{who}] a refused PUBLISH was delivered"
    );
}

#[tokio::test]
async fn topic_aliases_from_the_client_are_resolved_and_checked() {
    both("", "", client_to_server).await;
}

async fn advertised_maximum(b: Broker) {
    let (c, max) = granted_maximum(b, &b.id("alias-max")).await;
    assert_eq!(max, 3, "[{}] Topic Alias Maximum as configured", b.name);
    c.bye().await;
}

#[tokio::test]
async fn the_topic_alias_maximum_granted_is_the_configured_one() {
    both(
        "max_topic_alias 3",
        "topic_alias_maximum = 3",
        advertised_maximum,
    )
    .await;
}

/// Reads `n` PUBLISHes, resolving topic aliases as a client must: an alias with a topic
/// (re)binds it, an alias alone stands for its binding. Returns (topic, payload) pairs.
async fn resolved(c: &mut Raw, n: usize, allowed: u16) -> Vec<(String, String)> {
    let who = c.who.clone();
    let mut bound: HashMap<u16, String> = HashMap::new();
    let mut out = Vec::new();
    for i in 0..n {
        let p: Publish = c.expect_publish(&format!("message {i} of {n}")).await;
        let topic = match p.props.num(id::TOPIC_ALIAS) {
            None => {
                assert!(
                    !p.topic.is_empty(),
                    "[{who}] empty topic and no alias: {p:?}"
                );
                p.topic.clone()
            }
            Some(a) => {
                let a = a as u16;
                assert!(
                    (1..=allowed).contains(&a),
                    "[{who}] topic alias {a} sent to a client whose Topic Alias Maximum is {allowed}"
                );
                if p.topic.is_empty() {
                    bound
                        .get(&a)
                        .unwrap_or_else(|| panic!("[{who}] alias {a} used before it was set"))
                        .clone()
                } else {
                    bound.insert(a, p.topic.clone());
                    p.topic.clone()
                }
            }
        };
        out.push((topic, p.text()));
    }
    out
}

async fn server_to_client(b: Broker) {
    let who = b.name;
    let filter = options(0, false, false, 0);
    let mut none = Raw::plain(b.addr, who, &b.id("alias-none")).await;
    none.sub("mqtt5/out/#", filter).await;
    let two = Connect::new(&b.id("alias-two")).props(Props::new().u16(id::TOPIC_ALIAS_MAXIMUM, 2));
    let (mut two, _) = Raw::connect(b.addr, who, &two).await;
    two.sub("mqtt5/out/#", filter).await;

    let topics = [
        "mqtt5/out/north",
        "mqtt5/out/south",
        "mqtt5/out/east",
        "mqtt5/out/west",
    ];
    let mut sent = Vec::new();
    let mut publisher = Raw::plain(b.addr, who, &b.id("alias-src")).await;
    for round in 0..4 {
        for t in topics {
            let payload = format!("{t}#{round}");
            publisher
                .publish0(t, payload.as_bytes(), false, &Props::new())
                .await;
            sent.push((t.to_string(), payload));
        }
    }
    publisher.sync().await;

    let got = resolved(&mut none, sent.len(), 0).await;
    assert_eq!(
        per_topic(&got),
        per_topic(&sent),
        "[{who}] a client without Topic Alias Maximum"
    );
    let got = resolved(&mut two, sent.len(), 2).await;
    assert_eq!(
        per_topic(&got),
        per_topic(&sent),
        "[{who}] a client with Topic Alias Maximum 2"
    );
}

/// Each topic's payloads in order: MQTT orders messages per topic (4.6), not across
/// topics, so a wildcard subscriber may see topics interleaved differently.
fn per_topic(messages: &[(String, String)]) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out = std::collections::BTreeMap::<String, Vec<String>>::new();
    for (t, p) in messages {
        out.entry(t.clone()).or_default().push(p.clone());
    }
    out
}

#[tokio::test]
async fn topic_aliases_to_the_client_respect_its_maximum() {
    both("", "", server_to_client).await;
}

/// A fake server that accepts one client and sends it these PUBLISHes (topic, alias):
/// the resolver above must be able to fail, and mosquitto never sends aliases.
async fn fake_server(publishes: &'static [(&'static str, u16)]) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut connect = [0u8; 256];
        let _ = s.read(&mut connect).await.unwrap();
        let mut out = vec![0x20, 0x03, 0x00, 0x00, 0x00];
        for (i, (topic, a)) in publishes.iter().enumerate() {
            let payload = format!("m{i}");
            out.extend(crate::wire::publish(
                topic,
                payload.as_bytes(),
                0,
                0,
                false,
                &alias(*a),
            ));
        }
        s.write_all(&out).await.unwrap();
        let _ = s.read(&mut connect).await;
    });
    addr
}

#[tokio::test]
async fn the_alias_resolver_binds_rebinds_and_refuses_aliases_above_the_maximum() {
    let fake = Broker {
        addr: fake_server(&[
            ("t/a", 1),
            ("", 1),
            ("t/b", 2),
            ("", 2),
            ("t/c", 1),
            ("", 1),
        ])
        .await,
        name: "fake",
    };
    let mut c = Raw::plain(fake.addr, fake.name, "resolver").await;
    let topics: Vec<String> = resolved(&mut c, 6, 2)
        .await
        .into_iter()
        .map(|m| m.0)
        .collect();
    assert_eq!(topics, ["t/a", "t/a", "t/b", "t/b", "t/c", "t/c"]);

    let fake = fake_server(&[("t/a", 3)]).await;
    let mut c = Raw::plain(fake, "fake", "resolver").await;
    let above = tokio::spawn(async move { resolved(&mut c, 1, 2).await });
    let err = above
        .await
        .expect_err("alias 3 over a maximum of 2 must fail");
    let said = err.into_panic();
    let said = said.downcast_ref::<String>().unwrap();
    assert!(
        said.contains("topic alias 3 sent to a client whose Topic Alias Maximum is 2"),
        "{said}"
    );
}
