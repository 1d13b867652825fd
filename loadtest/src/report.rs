//! The load test's report: the final table and the same figures as JSON.

use crate::series::Sample;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// p50/p90/p99/p99.9/max in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

impl Quantiles {
    /// From a histogram of microseconds.
    pub fn of_us(h: &Histogram<u64>) -> Quantiles {
        if h.is_empty() {
            return Quantiles::default();
        }
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Quantiles {
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            p999: ms(0.999),
            max: h.max() as f64 / 1000.0,
        }
    }
}

/// A histogram as (value, count) pairs, so worker processes can hand theirs over.
pub fn to_pairs(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

/// Adds (value, count) pairs into `h`.
pub fn add_pairs(h: &mut Histogram<u64>, pairs: &[(u64, u64)]) {
    for &(v, c) in pairs {
        let _ = h.record_n(v.max(1), c);
    }
}

/// Messages the subscribers should receive: each one gets every message, or the shared
/// group gets each once.
pub(crate) fn expected_of(published: u64, subscribers: usize, shared: bool) -> u64 {
    match (subscribers, shared) {
        (0, _) => 0,
        (_, true) => published,
        (n, false) => published * n as u64,
    }
}

/// Everything a run measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// fleet, throughput, idle or storm.
    pub scenario: String,
    /// The broker URL.
    pub broker: String,
    /// Connections asked for (publishers, or idle/storm connections).
    pub connections: usize,
    /// Subscribers.
    pub subscribers: usize,
    /// They subscribed as one shared group.
    pub shared_subscription: bool,
    /// QoS of publishes and subscriptions.
    pub qos: u8,
    /// Seconds the load ran (after connecting).
    pub duration_s: f64,
    /// Connections that got CONNACK 0.
    pub connected: u64,
    /// Failed connects by kind.
    pub connect_errors: BTreeMap<String, u64>,
    /// Time from starting a connect to its CONNACK.
    pub connect_ms: Quantiles,
    /// Messages published.
    pub published: u64,
    /// Messages the subscribers should have received.
    pub expected: u64,
    /// Messages received (duplicates included).
    pub received: u64,
    /// Expected but never received.
    pub lost: u64,
    /// Received more than once.
    pub duplicates: u64,
    /// Received after a newer one from the same publisher.
    pub out_of_order: u64,
    /// Subscribers whose connection ended before the run stopped them (what they would
    /// have received after is in `lost`).
    #[serde(default)]
    pub subscribers_dropped: u64,
    /// End-to-end latency (publish to subscriber receive).
    pub latency_ms: Quantiles,
    /// Published per second.
    pub published_per_s: f64,
    /// Received per second.
    pub received_per_s: f64,
    /// Storm: seconds from the mass disconnect until the last reconnect.
    pub reconnect_all_s: Option<f64>,
    /// This tool's CPU, percent of one core, over the run.
    pub own_cpu_percent: f64,
    /// This tool's resident memory at the end, MiB.
    pub own_rss_mib: f64,
    /// The broker's CPU over the run (with --broker-pid).
    pub broker_cpu_percent: Option<f64>,
    /// The broker's resident memory at the end, MiB (with --broker-pid).
    pub broker_rss_mib: Option<f64>,
    /// Idle: the broker's memory growth per connection, KiB (with --broker-pid).
    pub broker_kib_per_connection: Option<f64>,
    /// Raw histograms for merging worker reports (latency, connect), microseconds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency_us_pairs: Vec<(u64, u64)>,
    /// See `latency_us_pairs`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connect_us_pairs: Vec<(u64, u64)>,
    /// The run second by second (see [`crate::series`]); absent from the JSON when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<Sample>,
}

/// One row of the table: the name padded to a column, then the figures.
fn row(f: &mut fmt::Formatter<'_>, k: &str, v: String) -> fmt::Result {
    writeln!(f, "  {k:<22} {v}")
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "loadtest {} against {}", self.scenario, self.broker)?;
        self.fmt_connections(f)?;
        self.fmt_messages(f)?;
        self.fmt_costs(f)
    }
}

impl Report {
    /// Connections, their failures and connect times; the storm's recovery.
    fn fmt_connections(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        row(
            f,
            "connections",
            format!(
                "{} connected of {} ({} + {} subscribers)",
                self.connected,
                self.connections + self.subscribers,
                self.connections,
                self.subscribers
            ),
        )?;
        let errors = if self.connect_errors.is_empty() {
            "none".to_owned()
        } else {
            self.connect_errors
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        row(f, "connect errors", errors)?;
        let c = self.connect_ms;
        row(
            f,
            "connect time ms",
            format!("p50 {:.2}  p99 {:.2}  max {:.2}", c.p50, c.p99, c.max),
        )?;
        if let Some(s) = self.reconnect_all_s {
            row(f, "all reconnected in", format!("{s:.2} s"))?;
        }
        Ok(())
    }

    /// Messages: rates, loss, duplicates, order, latency.
    fn fmt_messages(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        row(
            f,
            "published",
            format!(
                "{} ({:.1}/s over {:.1} s)",
                self.published, self.published_per_s, self.duration_s
            ),
        )?;
        row(
            f,
            "received",
            format!(
                "{} ({:.1}/s) of {} expected",
                self.received, self.received_per_s, self.expected
            ),
        )?;
        let loss = if self.expected > 0 {
            self.lost as f64 / self.expected as f64 * 100.0
        } else {
            0.0
        };
        let dropped = match self.subscribers_dropped {
            0 => String::new(),
            n => format!(", {n} subscriber(s) disconnected before the end"),
        };
        row(f, "lost", format!("{} ({loss:.3}%){dropped}", self.lost))?;
        row(
            f,
            "duplicates, reordered",
            format!("{}, {}", self.duplicates, self.out_of_order),
        )?;
        let l = self.latency_ms;
        row(
            f,
            "latency ms",
            format!(
                "p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
                l.p50, l.p90, l.p99, l.p999, l.max
            ),
        )
    }

    /// What the run cost this tool and (with `--broker-pid`) the broker.
    fn fmt_costs(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        row(
            f,
            "loadtest cpu, rss",
            format!(
                "{:.1}% of a core, {:.1} MiB",
                self.own_cpu_percent, self.own_rss_mib
            ),
        )?;
        if let (Some(cpu), Some(rss)) = (self.broker_cpu_percent, self.broker_rss_mib) {
            row(
                f,
                "broker cpu, rss",
                format!("{cpu:.1}% of a core, {rss:.1} MiB"),
            )?;
        }
        if let Some(k) = self.broker_kib_per_connection {
            row(f, "broker per connection", format!("{k:.1} KiB"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_keeps_its_rows() {
        let r = Report {
            scenario: "idle".into(),
            broker: "mqtt://h:1".into(),
            connections: 2,
            connected: 2,
            expected: 4,
            lost: 1,
            subscribers_dropped: 1,
            reconnect_all_s: Some(0.5),
            broker_cpu_percent: Some(1.0),
            broker_rss_mib: Some(2.0),
            broker_kib_per_connection: Some(3.0),
            connect_errors: [("refused".to_owned(), 1), ("timeout".to_owned(), 2)].into(),
            ..Report::default()
        };
        let table = r.to_string();
        // The heading, then one row per figure, names in a 22-wide column.
        let names: Vec<&str> = table
            .lines()
            .skip(1)
            .map(|l| l.get(2..24).unwrap_or(l).trim())
            .collect();
        assert_eq!(
            names,
            [
                "connections",
                "connect errors",
                "connect time ms",
                "all reconnected in",
                "published",
                "received",
                "lost",
                "duplicates, reordered",
                "latency ms",
                "loadtest cpu, rss",
                "broker cpu, rss",
                "broker per connection",
            ]
        );
        assert!(table.starts_with("loadtest idle against mqtt://h:1\n"));
        assert!(table.contains("  connect errors         refused=1 timeout=2\n"));
        assert!(table.contains(
            "  lost                   1 (25.000%), 1 subscriber(s) disconnected before the end\n"
        ));
    }
}
