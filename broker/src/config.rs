//! Broker configuration: listener addresses, limits and router settings.
//!
//! The defaults live in `config/default.toml`, embedded in the binary so that
//! `fleetcast config` can print a commented file a user copies and edits. Every bound the
//! gateway enforces (connections, packet size, time-outs, ingest rates) is set here.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

mod cluster;
mod runtime;
pub use cluster::Cluster;
pub use runtime::Runtime;

/// The default configuration file, with comments.
pub const DEFAULT_CONFIG: &str = include_str!("../config/default.toml");

/// Everything `fleetcast serve` can be told.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listener addresses.
    pub listen: Listen,
    /// Bounds the gateway enforces.
    pub limits: Limits,
    /// Settings handed to the embedded rumqttd router.
    pub router: Router,
    /// Graceful shutdown.
    pub shutdown: Shutdown,
    /// TLS certificate and key; off while empty.
    pub tls: Tls,
    /// The data directory and how it is written; off while empty.
    pub storage: Storage,
    /// Several nodes over a NATS cluster as one broker; off while `servers` is empty.
    pub cluster: Cluster,
    /// Geofences; off while no file is given.
    pub geofences: Geofences,
    /// The live map: history kept, aggregation.
    pub map: Map,
    /// Threads connections run on.
    pub runtime: Runtime,
}

/// The live map (`[map]`): what `serve`'s dashboard keeps and when it aggregates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Map {
    /// Seconds of each driver's track kept in memory (`--history-window`); 0: none.
    pub history_window_s: u64,
    /// Seconds of each driver's track kept in the store with a data directory (`--data`),
    /// older records pruned; 0: none written.
    pub history_retention_s: u64,
    /// A browser whose view holds more drivers gets per-cell counts (`--aggregate-above`);
    /// 0: never.
    pub aggregate_above: usize,
}

impl Default for Map {
    fn default() -> Self {
        Map {
            history_window_s: 3_600,
            history_retention_s: 86_400,
            aggregate_above: 2_000,
        }
    }
}

/// Durable state (`serve --data DIR`): retained messages and persistent sessions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    /// Data directory; empty = in memory only.
    pub dir: String,
    /// Time between two flushes of what changed (ms): a kill -9 loses at most this plus
    /// one commit.
    pub flush_interval_ms: u64,
    /// Messages one persistent session may be owed; past it the oldest go.
    pub max_queued_per_session: usize,
    /// Persistent sessions kept on disk.
    pub max_sessions: usize,
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            dir: String::new(),
            flush_interval_ms: 200,
            max_queued_per_session: 1_000,
            max_sessions: 100_000,
        }
    }
}

impl Storage {
    /// The data directory, when durability is on.
    pub fn dir(&self) -> Option<std::path::PathBuf> {
        (!self.dir.is_empty()).then(|| self.dir.clone().into())
    }

    /// The flusher's settings.
    pub fn settings(&self) -> crate::durable::Settings {
        crate::durable::Settings {
            flush_interval: Duration::from_millis(self.flush_interval_ms),
            max_queued_per_session: self.max_queued_per_session,
            max_sessions: self.max_sessions,
        }
    }
}

/// Geofence events (`serve --geofences FILE`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Geofences {
    /// A GeoJSON FeatureCollection of the fences to start with; empty = geofences off.
    pub file: String,
    /// Fixes in a row inside a fence before a driver enters it.
    pub enter_fixes: u8,
    /// Fixes in a row beyond `exit_margin_m` outside before a driver leaves it.
    pub exit_fixes: u8,
    /// How far outside a fence (metres) a fix must be to count towards an exit.
    pub exit_margin_m: f64,
}

impl Default for Geofences {
    fn default() -> Self {
        Geofences {
            file: String::new(),
            enter_fixes: 2,
            exit_fixes: 2,
            exit_margin_m: 25.0,
        }
    }
}

/// TLS files (PEM). With `cert` and `key` set, `listen.mqtts` serves MQTT over TLS and the
/// WebSocket and HTTP listeners speak wss/https.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// Server certificate chain; empty = TLS off.
    pub cert: String,
    /// Server private key.
    pub key: String,
    /// CA whose client certificates log clients in on `mqtts`; empty = none.
    pub client_ca: String,
    /// With a client CA: `mqtts` accepts only clients with a certificate it signed.
    pub require_client_cert: bool,
}

impl Tls {
    /// The files, when TLS is on.
    pub fn files(&self) -> Option<crate::tls::TlsFiles> {
        (!self.cert.is_empty() && !self.key.is_empty()).then(|| crate::tls::TlsFiles {
            cert: self.cert.clone().into(),
            key: self.key.clone().into(),
            client_ca: (!self.client_ca.is_empty()).then(|| self.client_ca.clone().into()),
            require_client_cert: self.require_client_cert,
        })
    }
}

/// Listener addresses; port 0 picks a free port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// MQTT over TCP.
    pub mqtt: SocketAddr,
    /// MQTT over WebSocket (path `/mqtt`).
    pub ws: SocketAddr,
    /// HTTP (health, readiness).
    pub http: SocketAddr,
    /// MQTT over TLS; bound only when TLS is on.
    pub mqtts: SocketAddr,
}

/// Bounds on clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Client connections over all listeners.
    pub max_connections: usize,
    /// Largest MQTT packet accepted (remaining length, bytes).
    pub max_packet_size: usize,
    /// Time from TCP accept to CONNECT (ms).
    pub connect_timeout_ms: u64,
    /// Time from TCP accept to a finished WebSocket upgrade (ms).
    pub ws_handshake_timeout_ms: u64,
    /// Time a socket write may take before the client is dropped (ms).
    pub write_timeout_ms: u64,
    /// Longest client id accepted (bytes).
    pub max_client_id_len: usize,
    /// PUBLISH packets per second read from one connection.
    pub publish_rate_per_connection: u32,
    /// PUBLISH packets per second read from all connections together.
    pub publish_rate_global: u32,
    /// Longest a publisher's reads hold for a subscriber of its topics that fell behind
    /// in the router's log (ms); 0 turns holding off (`gateway/backlog.rs`).
    pub behind_hold_ms: u64,
    /// Connections over the limit accepted at once only to be refused with a CONNACK.
    pub reject_slots: usize,
    /// Check `drivers/{id}/location` payloads and drop invalid ones.
    pub validate_locations: bool,
    /// Subscription filters one connection may hold at once (more get SUBACK 0x80).
    pub max_subscriptions_per_connection: usize,
    /// MQTT 5 Topic Aliases a client may set (our CONNACK's Topic Alias Maximum), and the
    /// most the gateway sets for a client that accepts them; 0: none either way.
    pub topic_alias_maximum: u16,
    /// QoS 1 and 2 publishes an MQTT 5 client may have unacknowledged at once (our
    /// CONNACK's Receive Maximum); more is DISCONNECT 0x93.
    pub receive_maximum: u16,
    /// The longest keep alive (s) a client may ask for; one asking more or 0 (none) gets
    /// this instead, told as Server Keep Alive in MQTT 5. 0: whatever the client asks.
    pub max_keep_alive_secs: u16,
    /// The longest MQTT 5 session expiry (s) granted; a client asking more gets this,
    /// told in the CONNACK.
    pub max_session_expiry_secs: u32,
    /// Accepted connects per second for one client id, strictly (0: no strict rate).
    pub connect_rate_per_client_id: u32,
    /// More accepted connects of one client id than this within `flap_window_ms` ban the
    /// id for `flap_ban_ms` (0: no flapping detection).
    pub flap_max_connects: u32,
    /// The flapping window (ms).
    pub flap_window_ms: u64,
    /// How long a flapping client id is refused (ms).
    pub flap_ban_ms: u64,
    /// Connects per second over all clients (more are refused before authentication).
    pub connect_rate_global: u32,
    /// Connections one source address (IPv4, IPv6 /64) may hold over the MQTT, MQTT/TLS
    /// and WebSocket listeners together; 0: no limit.
    pub max_connections_per_source: usize,
    /// HTTP connections open at once.
    pub http_max_connections: usize,
    /// HTTP connections one source address may hold; 0: no limit.
    pub http_connections_per_source: usize,
    /// How long a failed login counts (ms).
    pub auth_failure_window_ms: u64,
    /// Failed logins from one source within the window that start its back-off.
    pub auth_failures_per_source: u32,
    /// A source's first back-off (ms); doubles with each further round.
    pub auth_backoff_ms: u64,
    /// The longest back-off (ms); a source quiet for this long starts over.
    pub auth_backoff_max_ms: u64,
    /// Failed logins of one username within the window past which it is paced.
    pub auth_failures_per_account: u32,
    /// A paced username gets one password check per this interval (ms).
    pub auth_account_check_interval_ms: u64,
    /// argon2 password checks running at once.
    pub auth_concurrency: usize,
    /// Logins waiting for a password check, over all sources.
    pub auth_queue: usize,
    /// Logins of one source waiting behind its one place in that line.
    pub auth_pending_per_source: usize,
    /// Sources, and usernames, the failed-login tables remember at most.
    pub auth_tracked_max: usize,
}

/// rumqttd router settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Router {
    /// Size of one commit-log segment (bytes).
    pub max_segment_size: usize,
    /// Segments kept per topic.
    pub max_segment_count: usize,
    /// Packets queued for one client before the router waits for it.
    pub max_outgoing_packet_count: u64,
    /// Under load, how long (µs) publishes of devices without a link of their own wait
    /// to go to the router together; 0: each goes at once (lower latency, more CPU).
    pub coalesce_window_us: u64,
}

/// Graceful shutdown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Shutdown {
    /// How long to wait for connections to close (ms).
    pub grace_ms: u64,
}

/// A configuration that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid configuration")]
    Parse(#[from] toml::de::Error),
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Default for Listen {
    fn default() -> Self {
        let at = |port| SocketAddr::from(([127, 0, 0, 1], port));
        Listen {
            mqtt: at(1883),
            ws: at(8083),
            http: at(8080),
            mqtts: at(8883),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 19_900,
            max_packet_size: 131_072,
            connect_timeout_ms: 10_000,
            ws_handshake_timeout_ms: 10_000,
            write_timeout_ms: 30_000,
            max_client_id_len: 128,
            publish_rate_per_connection: 100,
            publish_rate_global: 200_000,
            behind_hold_ms: 500,
            reject_slots: 64,
            validate_locations: true,
            max_subscriptions_per_connection: 50,
            topic_alias_maximum: 10,
            receive_maximum: 100,
            max_keep_alive_secs: 0,
            max_session_expiry_secs: 7 * 86_400,
            connect_rate_per_client_id: 0,
            flap_max_connects: 15,
            flap_window_ms: 60_000,
            flap_ban_ms: 300_000,
            connect_rate_global: 2_000,
            max_connections_per_source: 0,
            http_max_connections: 2_048,
            http_connections_per_source: 64,
            auth_failure_window_ms: 60_000,
            auth_failures_per_source: 5,
            auth_backoff_ms: 10_000,
            auth_backoff_max_ms: 600_000,
            auth_failures_per_account: 5,
            auth_account_check_interval_ms: 1_000,
            auth_concurrency: 2,
            auth_queue: 256,
            auth_pending_per_source: 16,
            auth_tracked_max: 65_536,
        }
    }
}

/// The longest coalescing window accepted (100 ms: past that a map visibly lags).
const MAX_WINDOW_US: u64 = 100_000;

impl Router {
    /// The shared links' coalescing window; None when set to 0 (off).
    pub fn coalesce_window(&self) -> Option<Duration> {
        (self.coalesce_window_us > 0).then(|| Duration::from_micros(self.coalesce_window_us))
    }
}

impl Default for Router {
    fn default() -> Self {
        Router {
            max_segment_size: 1 << 20,
            max_segment_count: 4,
            max_outgoing_packet_count: 1000,
            coalesce_window_us: crate::router::DEFAULT_WINDOW.as_micros() as u64,
        }
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown { grace_ms: 3_000 }
    }
}

impl Config {
    /// Reads a TOML file; keys it leaves out keep their defaults.
    ///
    /// # Errors
    /// The file cannot be read, is not valid TOML, has unknown keys or out-of-range values.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_toml(&text)
    }

    /// Parses TOML text; keys it leaves out keep their defaults.
    ///
    /// # Errors
    /// Invalid TOML, unknown keys or out-of-range values.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// A configuration for tests and embedding: every listener on 127.0.0.1 port 0.
    pub fn ephemeral() -> Config {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Config {
            listen: Listen {
                mqtt: any,
                ws: any,
                http: any,
                mqtts: any,
            },
            ..Config::default()
        }
    }

    /// Checks the values that would make the gateway or router misbehave.
    ///
    /// # Errors
    /// The first out-of-range value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.cluster.validate()?;
        let l = &self.limits;
        let r = &self.router;
        let bad = |what: &str| Err(ConfigError::Invalid(what.to_owned()));
        if l.max_connections == 0 {
            return bad("limits.max_connections must be at least 1");
        }
        if l.max_packet_size < 64 || l.max_packet_size > 268_435_455 {
            return bad("limits.max_packet_size must be within 64..=268435455");
        }
        if l.publish_rate_per_connection == 0 || l.publish_rate_global == 0 {
            return bad("limits.publish_rate_* must be at least 1");
        }
        if l.receive_maximum == 0 {
            return bad("limits.receive_maximum must be at least 1");
        }
        if l.connect_rate_global == 0 {
            return bad("limits.connect_rate_global must be at least 1");
        }
        if l.flap_max_connects > 0 && (l.flap_window_ms == 0 || l.flap_ban_ms == 0) {
            return bad("limits.flap_window_ms and flap_ban_ms must be at least 1");
        }
        if l.connect_timeout_ms == 0 || l.ws_handshake_timeout_ms == 0 || l.write_timeout_ms == 0 {
            return bad("limits.*_timeout_ms must be at least 1");
        }
        if l.max_client_id_len == 0 || l.max_client_id_len > 65_535 {
            return bad("limits.max_client_id_len must be within 1..=65535");
        }
        if l.http_max_connections == 0 {
            return bad("limits.http_max_connections must be at least 1");
        }
        validate_auth(l)?;
        // rumqttd panics on a zero segment size and needs room for the largest packet.
        if r.max_segment_size < l.max_packet_size {
            return bad("router.max_segment_size must be at least limits.max_packet_size");
        }
        if self.tls.cert.is_empty() != self.tls.key.is_empty() {
            return bad("tls.cert and tls.key go together");
        }
        if !self.tls.client_ca.is_empty() && self.tls.cert.is_empty() {
            return bad("tls.client_ca needs tls.cert and tls.key");
        }
        if self.tls.require_client_cert && self.tls.client_ca.is_empty() {
            return bad("tls.require_client_cert needs tls.client_ca");
        }
        let s = &self.storage;
        if s.flush_interval_ms == 0 || s.flush_interval_ms > 60_000 {
            return bad("storage.flush_interval_ms must be within 1..=60000");
        }
        if s.max_queued_per_session == 0
            || s.max_queued_per_session > crate::durable::MAX_QUEUED_LIMIT
        {
            return bad("storage.max_queued_per_session must be within 1..=60000");
        }
        if s.max_sessions == 0 {
            return bad("storage.max_sessions must be at least 1");
        }
        if r.max_segment_count == 0 || r.max_outgoing_packet_count == 0 {
            return bad(
                "router.max_segment_count and max_outgoing_packet_count must be at least 1",
            );
        }
        if r.coalesce_window_us > MAX_WINDOW_US {
            return bad("router.coalesce_window_us must be within 0..=100000");
        }
        self.runtime.validate().map_err(ConfigError::Invalid)
    }

    /// Time from TCP accept to CONNACK: reading the CONNECT and checking its password.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.limits.connect_timeout_ms)
    }

    /// Time from TCP accept to a finished WebSocket upgrade.
    pub fn ws_handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.limits.ws_handshake_timeout_ms)
    }

    /// Time one socket write may take.
    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.limits.write_timeout_ms)
    }
}

/// The failed-login limits and the password check line.
fn validate_auth(l: &Limits) -> Result<(), ConfigError> {
    let bad = |what: &str| Err(ConfigError::Invalid(what.to_owned()));
    if l.auth_failures_per_source == 0 || l.auth_failures_per_account == 0 {
        return bad("limits.auth_failures_per_* must be at least 1");
    }
    if l.auth_failure_window_ms == 0 || l.auth_backoff_ms == 0 {
        return bad("limits.auth_failure_window_ms and auth_backoff_ms must be at least 1");
    }
    if l.auth_backoff_max_ms < l.auth_backoff_ms {
        return bad("limits.auth_backoff_max_ms must be at least auth_backoff_ms");
    }
    if l.auth_concurrency == 0 || l.auth_queue == 0 || l.auth_pending_per_source == 0 {
        return bad(
            "limits.auth_concurrency, auth_queue and auth_pending_per_source must be at least 1",
        );
    }
    if l.auth_tracked_max < 16 {
        return bad("limits.auth_tracked_max must be at least 16");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
