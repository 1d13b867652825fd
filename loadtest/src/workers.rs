//! `--procs N`: one run spread over N processes, each with its own open-files limit, so a
//! run can hold more connections than one process may open.
//!
//! The parent starts N copies of its own program with its own arguments plus
//! `--worker INDEX`. Each worker runs [`run`](crate::run) with `worker: (INDEX, N)`: it
//! takes every N-th connection from INDEX on and the connect rate divided by N (see
//! `schedule.rs`), uses the source addresses by each connection's run-wide index, and only
//! worker 0 runs subscribers. Each prints its report as one line of JSON ([`encode`]); the
//! parent reads them back and [`merge`]s them into the run's report, their timelines
//! second by second ([`series::merge`]).

use crate::accounting::new_histogram;
use crate::report::{add_pairs, expected_of, Quantiles, Report};
use crate::series;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;
use std::process::Stdio;
use tokio::process::{Child, Command};

/// The flag, followed by the worker's index, that makes a process a worker.
pub const WORKER_FLAG: &str = "--worker";

/// Why worker processes gave no report.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A worker could not be started.
    #[error("starting a worker process")]
    Spawn(#[source] std::io::Error),
    /// Waiting for a worker failed.
    #[error(transparent)]
    Wait(std::io::Error),
    /// A worker exited with a failure.
    #[error("a worker process failed")]
    Failed,
    /// A worker's output was not a report.
    #[error("reading a worker's report")]
    Report(#[source] serde_json::Error),
    /// There were no workers.
    #[error("no worker reports")]
    NoReports,
}

/// Worker processes of one run, running.
#[derive(Debug)]
pub struct Workers {
    children: Vec<Child>,
}

impl Workers {
    /// Starts `procs` copies of `program` with `args` and `--worker INDEX` (0 to procs - 1).
    /// They are killed if this value is dropped before they finish.
    ///
    /// # Errors
    /// A process could not be started (those already started are killed).
    pub fn spawn(
        program: &Path,
        args: &[impl AsRef<OsStr>],
        procs: usize,
    ) -> Result<Workers, WorkerError> {
        let mut children = Vec::with_capacity(procs);
        for i in 0..procs {
            let child = Command::new(program)
                .args(args)
                .args([WORKER_FLAG, &i.to_string()])
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(WorkerError::Spawn)?;
            children.push(child);
        }
        Ok(Workers { children })
    }

    /// Waits for every worker and merges their reports.
    ///
    /// # Errors
    /// A worker failed or printed no report (the others are killed).
    pub async fn report(self) -> Result<Report, WorkerError> {
        let mut parts = Vec::with_capacity(self.children.len());
        for child in self.children {
            let out = child.wait_with_output().await.map_err(WorkerError::Wait)?;
            if !out.status.success() {
                return Err(WorkerError::Failed);
            }
            parts.push(serde_json::from_slice(&out.stdout).map_err(WorkerError::Report)?);
        }
        merge(&parts).ok_or(WorkerError::NoReports)
    }
}

/// What a worker prints on standard output: its report, one line of JSON, with the raw
/// histograms the parent needs to merge latencies.
///
/// # Errors
/// Serialization failed (not expected for a report).
pub fn encode(report: &Report) -> Result<String, serde_json::Error> {
    serde_json::to_string(report)
}

/// Combines the reports of worker processes into one.
pub fn merge(parts: &[Report]) -> Option<Report> {
    let first = parts.first()?;
    let mut out = first.clone();
    let mut latency = new_histogram();
    let mut connect = new_histogram();
    let (mut published, mut connected, mut cpu, mut rss) = (0, 0, 0.0, 0.0);
    let mut errors = BTreeMap::new();
    for p in parts {
        published += p.published;
        connected += p.connected;
        cpu += p.own_cpu_percent;
        rss += p.own_rss_mib;
        add_pairs(&mut latency, &p.latency_us_pairs);
        add_pairs(&mut connect, &p.connect_us_pairs);
        for (k, v) in &p.connect_errors {
            *errors.entry(k.clone()).or_insert(0) += v;
        }
        out.duration_s = out.duration_s.max(p.duration_s);
    }
    // Subscribers ran in the first worker only; expectations follow the total published.
    out.expected = expected_of(published, first.subscribers, first.shared_subscription);
    out.published = published;
    out.connected = connected;
    out.connect_errors = errors;
    out.lost = out.expected.saturating_sub(out.received - out.duplicates);
    out.latency_ms = Quantiles::of_us(&latency);
    out.connect_ms = Quantiles::of_us(&connect);
    out.published_per_s = published as f64 / out.duration_s.max(1e-9);
    out.own_cpu_percent = cpu;
    out.own_rss_mib = rss;
    out.timeline = series::merge(parts.iter().map(|p| p.timeline.as_slice()));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::Sample;

    fn part(published: u64, received: u64, latency_us: u64) -> Report {
        Report {
            subscribers: 1,
            published,
            received,
            connected: 10,
            duration_s: 2.0,
            own_cpu_percent: 10.0,
            connect_errors: [("refused".to_owned(), 1)].into(),
            latency_us_pairs: vec![(latency_us, received)],
            timeline: (1..=2)
                .map(|t| Sample {
                    t_s: t,
                    published: published * u64::from(t) / 2,
                    ..Sample::default()
                })
                .collect(),
            ..Report::default()
        }
    }

    #[test]
    fn merged_reports_add_up_and_survive_the_wire() {
        // Worker 0 ran the subscriber, which saw both workers' messages.
        let a = part(100, 190, 1_000);
        let b = Report {
            received: 0,
            latency_us_pairs: vec![],
            ..part(100, 0, 0)
        };
        let b: Report = serde_json::from_str(&encode(&b).expect("json")).expect("report");
        let m = merge(&[a, b]).expect("merged");
        assert_eq!((m.published, m.expected, m.received), (200, 200, 190));
        assert_eq!(m.lost, 10);
        assert_eq!(m.connected, 20);
        assert_eq!(m.connect_errors["refused"], 2);
        assert_eq!(m.own_cpu_percent, 20.0);
        assert_eq!(m.published_per_s, 100.0);
        assert!((m.latency_ms.p50 - 1.0).abs() < 0.01, "{:?}", m.latency_ms);
        // Timelines add up second by second.
        let published: Vec<u64> = m.timeline.iter().map(|s| s.published).collect();
        assert_eq!(published, [100, 200]);
        assert!(merge(&[]).is_none());
    }
}
