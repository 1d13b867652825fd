//! The gateway's Prometheus meters, registered on a `metrics` recorder the caller owns.
//!
//! Handles are registered once, so the hot path only bumps atomics. Label values are a
//! fixed set (transport, reason): never a client id. With `metrics::NoopRecorder` every
//! handle is a no-op, which is how "metrics off" is measured.

pub use fleetcast_proto::meter::{counter, describe_counter, describe_gauge, gauge};
use metrics::{Counter, Gauge, Recorder, Unit};

/// Why a connection ended, as the `reason` label of `fleetcast_disconnects_total`.
pub const DISCONNECT_REASONS: [&str; 11] = [
    "clean",
    "disconnect_with_will",
    "policy_violation",
    "peer_closed",
    "keepalive_timeout",
    "protocol_error",
    "taken_over",
    "shutdown",
    "router_dropped",
    "write_timeout",
    "io_error",
];

/// Why a connection was refused before it was served, as the `reason` label of
/// `fleetcast_connect_refusals_total`.
pub const REFUSAL_REASONS: [&str; 14] = [
    "unsupported_protocol",
    "connect_rate",
    "not_authorized",
    "bad_client_id",
    "server_full",
    "connect_timeout",
    "malformed_connect",
    "handshake_failed",
    "router_busy",
    "invalid_will",
    "auth_backoff",
    "auth_busy",
    "source_limit",
    "flapping",
];

/// Why the HTTP listener closed a connection at once, as the `reason` label of
/// `fleetcast_http_refusals_total`.
pub const HTTP_REFUSAL_REASONS: [&str; 2] = ["server_full", "source_limit"];

/// Why the gateway dropped a message, as the `reason` label of
/// `fleetcast_messages_dropped_total`.
pub const DROP_REASONS: [&str; 6] = [
    "invalid_topic",
    "malformed_packet",
    "policy_denied",
    "invalid_payload",
    // Larger than the subscriber's MQTT 5 Maximum Packet Size (never sent, MQTT 5 3.1.2-25).
    "too_large_for_client",
    // Overwritten in the router's log before a subscriber that fell behind read it
    // (`gateway/gaps.rs`).
    "subscriber_behind",
];

/// Every meter the gateway keeps.
#[derive(Debug)]
pub struct GatewayMeters {
    /// Open connections over TCP.
    pub connections_tcp: Gauge,
    /// Open connections over WebSocket.
    pub connections_ws: Gauge,
    /// Accepted CONNECTs over TCP.
    pub connects_tcp: Counter,
    /// Accepted CONNECTs over WebSocket.
    pub connects_ws: Counter,
    /// Open connections over MQTT over TLS.
    pub connections_tls: Gauge,
    /// Accepted CONNECTs over MQTT over TLS.
    pub connects_tls: Counter,
    /// Ends by reason, in [`DISCONNECT_REASONS`] order.
    pub disconnects: Vec<Counter>,
    /// Refusals by reason, in [`REFUSAL_REASONS`] order.
    pub refusals: Vec<Counter>,
    /// Drops by reason, in [`DROP_REASONS`] order.
    pub dropped: Vec<Counter>,
    /// PUBLISH packets from clients.
    pub publishes_received: Counter,
    /// PUBLISH packets written to clients.
    pub messages_delivered: Counter,
    /// Bytes read from clients.
    pub bytes_received: Counter,
    /// Bytes written to clients.
    pub bytes_sent: Counter,
    /// Wills published for connections that ended without DISCONNECT.
    pub wills: Counter,
    /// Times a publisher's socket reads were paused, by reason.
    pub pacing_pauses: Pauses,
    /// Subscription filters taken.
    pub subscriptions: Counter,
    /// Subscription filters refused (SUBACK 0x80).
    pub subscriptions_refused: Counter,
    /// HTTP publishes answered, by status, in [`HTTP_PUBLISH_CODES`] order.
    pub http_publishes: Vec<Counter>,
}

/// The statuses HTTP publishing answers with, as the `code` label of
/// `fleetcast_http_publishes_total` (413, over `max_packet_size`, is answered before the
/// request is read and counted with the rest of the HTTP listener's refusals).
pub const HTTP_PUBLISH_CODES: [(u16, &str); 6] = [
    (200, "200"),
    (400, "400"),
    (401, "401"),
    (403, "403"),
    (429, "429"),
    (503, "503"),
];

/// Name, unit and HELP text of every gateway counter.
const COUNTER_HELP: [(&str, Option<Unit>, &str); 13] = [
    (
        "fleetcast_http_publishes_total",
        None,
        "Publishes over HTTP (POST /topics/..., POST /pub) answered, by status code.",
    ),
    (
        "fleetcast_connects_total",
        None,
        "Client connections accepted (CONNACK 0), by transport.",
    ),
    (
        "fleetcast_disconnects_total",
        None,
        "Client connections ended, by reason.",
    ),
    (
        "fleetcast_connect_refusals_total",
        None,
        "Connections refused before being served, by reason.",
    ),
    (
        "fleetcast_messages_dropped_total",
        None,
        "Messages dropped by the gateway, by reason.",
    ),
    (
        "fleetcast_publishes_received_total",
        None,
        "PUBLISH packets received from clients.",
    ),
    (
        "fleetcast_messages_delivered_total",
        None,
        "PUBLISH packets delivered to clients.",
    ),
    (
        "fleetcast_received_bytes_total",
        Some(Unit::Bytes),
        "Bytes read from clients.",
    ),
    (
        "fleetcast_sent_bytes_total",
        Some(Unit::Bytes),
        "Bytes written to clients.",
    ),
    (
        "fleetcast_wills_published_total",
        None,
        "Last wills published.",
    ),
    (
        "fleetcast_pacing_pauses_total",
        None,
        "Times a publisher's reads were paused: for a publish quota, for the router to catch up, or held for a subscriber behind.",
    ),
    (
        "fleetcast_subscriptions_total",
        None,
        "Subscription filters accepted.",
    ),
    (
        "fleetcast_subscriptions_refused_total",
        None,
        "Subscription filters refused (SUBACK 0x80).",
    ),
];

/// The HTTP listener's refusals, in [`HTTP_REFUSAL_REASONS`] order.
#[derive(Debug, Clone)]
pub struct HttpMeters {
    /// `http_max_connections` were open.
    pub server_full: Counter,
    /// The source held `http_connections_per_source`.
    pub source_limit: Counter,
}

impl HttpMeters {
    /// Registers (and describes) the HTTP listener's meters on `r`.
    pub fn new(r: &dyn Recorder) -> HttpMeters {
        let name = "fleetcast_http_refusals_total";
        describe_counter(r, name, None, "HTTP connections closed at once, by reason.");
        let [full, source] = HTTP_REFUSAL_REASONS;
        HttpMeters {
            server_full: counter(r, name, &[("reason", full)]),
            source_limit: counter(r, name, &[("reason", source)]),
        }
    }
}

/// Why a publisher's reads paused, as the `reason` label of
/// `fleetcast_pacing_pauses_total`: its publish quota (or the global one), the router
/// behind (its queue, or what waits in a link), a subscriber behind (`backlog.rs`).
pub const PAUSE_REASONS: [&str; 3] = ["quota", "router", "subscriber_behind"];

/// `fleetcast_pacing_pauses_total`, one counter per [`PAUSE_REASONS`].
#[derive(Debug)]
pub struct Pauses([Counter; 3]);

impl Pauses {
    fn new(r: &dyn Recorder) -> Pauses {
        Pauses(
            PAUSE_REASONS
                .map(|reason| counter(r, "fleetcast_pacing_pauses_total", &[("reason", reason)])),
        )
    }

    /// Counts one pause for `reason` (one of [`PAUSE_REASONS`]).
    pub fn count(&self, reason: &str) {
        let i = PAUSE_REASONS.iter().position(|r| *r == reason).unwrap_or(0);
        self.0[i].increment(1);
    }
}

impl GatewayMeters {
    /// Registers (and describes) every gateway meter on `r`.
    pub fn new(r: &dyn Recorder) -> GatewayMeters {
        describe_gauge(
            r,
            "fleetcast_connections",
            None,
            "Client connections open, by transport.",
        );
        for (name, unit, help) in COUNTER_HELP {
            describe_counter(r, name, unit, help);
        }
        GatewayMeters {
            connections_tcp: gauge(r, "fleetcast_connections", &[("transport", "tcp")]),
            connections_ws: gauge(r, "fleetcast_connections", &[("transport", "ws")]),
            connects_tcp: counter(r, "fleetcast_connects_total", &[("transport", "tcp")]),
            connects_ws: counter(r, "fleetcast_connects_total", &[("transport", "ws")]),
            connections_tls: gauge(r, "fleetcast_connections", &[("transport", "tls")]),
            connects_tls: counter(r, "fleetcast_connects_total", &[("transport", "tls")]),
            disconnects: DISCONNECT_REASONS
                .iter()
                .map(|reason| counter(r, "fleetcast_disconnects_total", &[("reason", reason)]))
                .collect(),
            refusals: REFUSAL_REASONS
                .iter()
                .map(|reason| counter(r, "fleetcast_connect_refusals_total", &[("reason", reason)]))
                .collect(),
            dropped: DROP_REASONS
                .iter()
                .map(|reason| counter(r, "fleetcast_messages_dropped_total", &[("reason", reason)]))
                .collect(),
            publishes_received: counter(r, "fleetcast_publishes_received_total", &[]),
            messages_delivered: counter(r, "fleetcast_messages_delivered_total", &[]),
            bytes_received: counter(r, "fleetcast_received_bytes_total", &[]),
            bytes_sent: counter(r, "fleetcast_sent_bytes_total", &[]),
            wills: counter(r, "fleetcast_wills_published_total", &[]),
            pacing_pauses: Pauses::new(r),
            subscriptions: counter(r, "fleetcast_subscriptions_total", &[]),
            subscriptions_refused: counter(r, "fleetcast_subscriptions_refused_total", &[]),
            http_publishes: HTTP_PUBLISH_CODES
                .iter()
                .map(|(_, code)| counter(r, "fleetcast_http_publishes_total", &[("code", code)]))
                .collect(),
        }
    }

    /// The disconnect counter for `reason` (one of [`DISCONNECT_REASONS`]).
    pub fn disconnect(&self, reason: &str) -> &Counter {
        let i = DISCONNECT_REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(DISCONNECT_REASONS.len() - 1);
        &self.disconnects[i]
    }

    /// The refusal counter for `reason` (one of [`REFUSAL_REASONS`]).
    pub fn refusal(&self, reason: &str) -> &Counter {
        let i = REFUSAL_REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        &self.refusals[i]
    }

    /// The HTTP publish counter for `code` (one of [`HTTP_PUBLISH_CODES`]; others count
    /// as 503).
    pub fn http_publish(&self, code: u16) -> &Counter {
        let i = HTTP_PUBLISH_CODES
            .iter()
            .position(|(c, _)| *c == code)
            .unwrap_or(HTTP_PUBLISH_CODES.len() - 1);
        &self.http_publishes[i]
    }

    /// The drop counter for `reason` (one of [`DROP_REASONS`]).
    pub fn drop_for(&self, reason: &str) -> &Counter {
        let i = DROP_REASONS.iter().position(|r| *r == reason).unwrap_or(0);
        &self.dropped[i]
    }
}
