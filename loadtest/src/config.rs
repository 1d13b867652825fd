//! What a run is asked to do: the [`Scenario`] and the [`LoadConfig`] around it, as the
//! `loadtest` command's flags give them (one worker process's share included).

use crate::target::Target;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// N drivers publishing every interval, M subscribers.
    Fleet,
    /// N publishers as fast as the broker takes them (QoS 0), M subscribers.
    Throughput,
    /// Hold N idle connections.
    Idle,
    /// Connect N, drop all at once, reconnect.
    Storm,
}

/// A `--scenario` that is none of the four.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scenario {0} (fleet, throughput, idle, storm)")]
pub struct UnknownScenario(String);

impl FromStr for Scenario {
    type Err = UnknownScenario;
    fn from_str(s: &str) -> Result<Scenario, UnknownScenario> {
        Ok(match s {
            "fleet" => Scenario::Fleet,
            "throughput" => Scenario::Throughput,
            "idle" => Scenario::Idle,
            "storm" => Scenario::Storm,
            other => return Err(UnknownScenario(other.to_owned())),
        })
    }
}

impl Scenario {
    /// The name the command line and the report use.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Fleet => "fleet",
            Scenario::Throughput => "throughput",
            Scenario::Idle => "idle",
            Scenario::Storm => "storm",
        }
    }
}

/// How to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The scenario.
    pub scenario: Scenario,
    /// The broker.
    pub broker: Target,
    /// More brokers (a cluster's nodes): connection `n` (publishers and subscribers each
    /// counted from 0) goes to broker `n` modulo how many there are, `broker` first.
    pub more_brokers: Vec<Target>,
    /// Publishers (fleet, throughput) or connections (idle, storm).
    pub connections: usize,
    /// Connects per second.
    pub connect_rate: u32,
    /// Fleet: time between two publishes of one connection.
    pub interval: Duration,
    /// Pad payloads to at least this many bytes.
    pub payload_size: Option<usize>,
    /// QoS of publishes (fleet) and subscriptions: 0 or 1.
    pub qos: u8,
    /// Fleet: publish retained, as drivers publish their position.
    pub retain: bool,
    /// Subscribers to `drivers/+/location`.
    pub subscribers: usize,
    /// Subscribe as one shared group (`$share/loadtest/...`).
    pub shared: bool,
    /// Load phase length.
    pub duration: Duration,
    /// Keep-alive in every CONNECT (whole seconds, 1 to 65,535); quiet connections and
    /// subscribers send a PINGREQ every half of it.
    pub keep_alive: Duration,
    /// Source addresses, used round robin (past 64k ports on loopback).
    pub source_ips: Vec<IpAddr>,
    /// The broker's pid, to report its CPU and memory.
    pub broker_pid: Option<u32>,
    /// Storm: spread reconnects randomly over N / connect-rate seconds.
    pub jitter: bool,
    /// Client id and topic prefix.
    pub id_prefix: String,
    /// This process's share: (index, of processes). Subscribers run in index 0.
    pub worker: (usize, usize),
    /// MQTT credentials.
    pub credentials: Option<(String, String)>,
}

impl LoadConfig {
    /// The CONNECT's keep-alive field: whole seconds, at least 1.
    pub fn keep_alive_secs(&self) -> u16 {
        u16::try_from(self.keep_alive.as_secs())
            .unwrap_or(u16::MAX)
            .max(1)
    }

    /// How often a connection with nothing else to send pings: half the keep-alive, well
    /// inside the 1.5 times it after which a broker closes a silent connection.
    pub fn ping_every(&self) -> Duration {
        Duration::from_secs(u64::from(self.keep_alive_secs())) / 2
    }

    /// The broker connection number `n` goes to.
    pub fn broker_at(&self, n: usize) -> &Target {
        match n % (1 + self.more_brokers.len()) {
            0 => &self.broker,
            k => &self.more_brokers[k - 1],
        }
    }
}
