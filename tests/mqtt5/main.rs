//! MQTT 5 conformance (issue 12): what a v5 client gets from a standard broker beyond the
//! CONNECT. Every scenario runs against Debian's mosquitto 2.0.11 first, which shows the
//! expectation is the standard behaviour and not a reading of ours, then against an
//! in-process fleetcast with the same setting. A failure names the broker it came from.
//!
//! Clients: rumqttc's v5 client, Debian's `mosquitto_pub`/`mosquitto_sub -V mqttv5`, and
//! raw frames (`wire`, `raw`) wherever a library would hide the detail under test.
//!
//! Where mosquitto 2.0.11 strays from the spec, fleetcast is held to the spec and
//! mosquitto's half skips or tolerates only that detail, said at the test: Receive
//! Maximum after the first acks and an oversized QoS 1 message's in-flight slot
//! (`flow.rs`), DISCONNECT 0x81 instead of 0x82 for subscription id 0
//! (`subscriptions.rs`). It sends no Reason Strings, so that test is fleetcast's alone
//! (`connack.rs`), and `mosquitto_sub` has no no-local option (`cli.rs`).

#![allow(missing_docs, clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;

mod aliases;
mod cli;
mod connack;
mod expiry;
mod flow;
mod properties;
mod raw;
mod sessions;
mod subscriptions;
mod v5;
mod wire;

use common::{Mosquitto, TestBroker};
use fleetcast_broker::Config;
use std::future::Future;
use std::net::SocketAddr;

/// One broker under test: where it listens and its name for failure messages.
#[derive(Clone, Copy, Debug)]
pub struct Broker {
    pub addr: SocketAddr,
    pub name: &'static str,
}

impl Broker {
    /// A client id unique to this broker, so that the mosquitto and fleetcast halves of
    /// a test never share session state or connect quotas.
    pub fn id(&self, tag: &str) -> String {
        format!("{}-{tag}", &self.name[..4])
    }
}

/// A fleetcast configuration: listeners on port 0 and these `[limits]` lines. A key
/// fleetcast does not know yet fails the test here, naming it.
pub fn fleetcast_config(limits: &str) -> Config {
    if limits.is_empty() {
        return Config::ephemeral();
    }
    let text = format!(
        "[listen]\nmqtt = \"127.0.0.1:0\"\nws = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\n\
         mqtts = \"127.0.0.1:0\"\n[limits]\n{limits}\n"
    );
    Config::from_toml(&text).unwrap_or_else(|e| {
        let why = std::error::Error::source(&e).map(|s| format!(": {s}"));
        panic!(
            "[fleetcast] config `[limits] {limits}` is refused: {e}{}",
            why.unwrap_or_default()
        )
    })
}

/// Runs `scenario` against mosquitto (with `mosquitto_conf` lines added to its
/// configuration), then against fleetcast (with `fleetcast_limits`). Without mosquitto on
/// a laptop only the fleetcast half runs; under CI=true a missing mosquitto fails.
pub async fn both<F, Fut>(mosquitto_conf: &str, fleetcast_limits: &str, scenario: F)
where
    F: Fn(Broker) -> Fut,
    Fut: Future<Output = ()>,
{
    if let Some(m) = Mosquitto::start_with(mosquitto_conf).await {
        scenario(Broker {
            addr: m.addr,
            name: "mosquitto",
        })
        .await;
    }
    let f = TestBroker::with_config(fleetcast_config(fleetcast_limits)).await;
    scenario(Broker {
        addr: f.addrs.mqtt,
        name: "fleetcast",
    })
    .await;
}
