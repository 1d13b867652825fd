//! The bridge's Prometheus meters. Counts are kept in the bridge's and board's own atomics
//! (which the code also reads) and copied to the recorder at scrape time by [`export`]
//! (`DashboardMeters::export`); the two histograms are recorded as events happen, the
//! end-to-end latency's outside the recorder (`latency_histogram.rs`).

use crate::board::Board;
use crate::bridge::Bridge;
use crate::latency_histogram::LatencyHistogram;
use fleetcast_proto::meter::{counter, describe_counter, describe_gauge, gauge};
use metrics::{Counter, Gauge, Histogram, Key, Metadata, Recorder, SharedString, Unit};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The dashboard's meters.
#[derive(Debug, Clone)]
pub struct DashboardMeters {
    /// `fleetcast_e2e_latency_seconds`: driver's `ts` to bridge receive; kept outside
    /// the recorder (`latency_histogram.rs`), written out by the scrape.
    pub latency: Arc<LatencyHistogram>,
    /// `fleetcast_bridge_batch_positions`: positions per batch (a browser's queue depth).
    pub batch_positions: Histogram,
    clients: Gauge,
    batches: Counter,
    positions: Counter,
    filtered: Counter,
    slow: Counter,
    dead: Counter,
    refused: Counter,
    dropped_full: Counter,
    dropped_invalid: Counter,
    online: Gauge,
}

fn histogram(r: &dyn Recorder, name: &'static str, unit: Unit, help: &'static str) -> Histogram {
    r.describe_histogram(name.into(), Some(unit), SharedString::const_str(help));
    let meta = Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));
    r.register_histogram(&Key::from_name(name), &meta)
}

impl DashboardMeters {
    /// Registers the dashboard's meters on `r`.
    pub fn new(r: &dyn Recorder) -> DashboardMeters {
        describe_gauge(
            r,
            "fleetcast_bridge_clients",
            None,
            "Browsers connected to the bridge.",
        );
        describe_gauge(
            r,
            "fleetcast_drivers_online",
            None,
            "Drivers live on the board.",
        );
        describe_counter(
            r,
            "fleetcast_bridge_batches_total",
            None,
            "Batches sent to browsers.",
        );
        describe_counter(
            r,
            "fleetcast_bridge_positions_sent_total",
            None,
            "Positions sent to browsers.",
        );
        describe_counter(
            r,
            "fleetcast_bridge_positions_filtered_total",
            None,
            "Changed positions not sent because outside a browser's viewport or filters.",
        );
        describe_counter(
            r,
            "fleetcast_bridge_disconnects_total",
            None,
            "Browsers dropped by the bridge, by reason.",
        );
        describe_counter(
            r,
            "fleetcast_bridge_refused_total",
            None,
            "Browsers refused at the client limit.",
        );
        DashboardMeters {
            latency: Arc::new(LatencyHistogram::new()),
            batch_positions: histogram(
                r,
                "fleetcast_bridge_batch_positions",
                Unit::Count,
                "Positions per batch sent to a browser.",
            ),
            clients: gauge(r, "fleetcast_bridge_clients", &[]),
            online: gauge(r, "fleetcast_drivers_online", &[]),
            batches: counter(r, "fleetcast_bridge_batches_total", &[]),
            positions: counter(r, "fleetcast_bridge_positions_sent_total", &[]),
            filtered: counter(r, "fleetcast_bridge_positions_filtered_total", &[]),
            slow: counter(
                r,
                "fleetcast_bridge_disconnects_total",
                &[("reason", "slow")],
            ),
            dead: counter(
                r,
                "fleetcast_bridge_disconnects_total",
                &[("reason", "no_pong")],
            ),
            refused: counter(r, "fleetcast_bridge_refused_total", &[]),
            dropped_full: counter(
                r,
                "fleetcast_messages_dropped_total",
                &[("reason", "board_full")],
            ),
            dropped_invalid: counter(
                r,
                "fleetcast_messages_dropped_total",
                &[("reason", "bridge_unreadable")],
            ),
        }
    }

    /// Copies the bridge's and board's counts to the recorder (call before rendering).
    pub fn export(&self, bridge: &Bridge, board: &Board) {
        let s = &bridge.stats;
        self.clients.set(s.clients.load(Ordering::Relaxed) as f64);
        self.online.set(board.online() as f64);
        self.batches.absolute(s.batches.load(Ordering::Relaxed));
        self.positions.absolute(s.positions.load(Ordering::Relaxed));
        self.filtered
            .absolute(s.filtered_out.load(Ordering::Relaxed));
        self.slow
            .absolute(s.slow_disconnects.load(Ordering::Relaxed));
        self.dead
            .absolute(s.dead_disconnects.load(Ordering::Relaxed));
        self.refused.absolute(s.refused.load(Ordering::Relaxed));
        self.dropped_full
            .absolute(board.refused.load(Ordering::Relaxed));
        self.dropped_invalid
            .absolute(board.ignored.load(Ordering::Relaxed));
    }
}
