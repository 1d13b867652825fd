//! The run over time: one [`Sample`] a second (counts so far, the latency of the messages
//! that arrived within that second, the broker's CPU and memory), for the HTML report's
//! charts and the JSON report's `timeline`.
//!
//! Bounded: at most [`MAX_SAMPLES`]; a run that would record more keeps every other
//! sample and doubles its step (a sample then covers two seconds, then four, ...).
//! With `--procs`, each worker records its own and the parent [`merge`]s them by elapsed
//! second (each counted from its own process's start: they start milliseconds apart).

use crate::accounting::new_histogram;
use crate::shared::{Phase, Shared};
use fleetcast_proto::process::{self, Usage};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::time::Instant;

/// Most samples one run keeps.
pub const MAX_SAMPLES: usize = 1_800;

/// Bytes in a MiB.
const MIB: f64 = 1_048_576.0;

/// The run at one moment. Counts are totals so far; rates are the differences between two
/// samples over their `t_s` difference.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the run started.
    pub t_s: u32,
    /// `connecting`, `load`, `drain`, or `end` for the last sample (when the run is over,
    /// at the next whole step).
    pub phase: String,
    /// Connections open now.
    pub open: u64,
    /// Connects that got their CONNACK so far (a storm's reconnects included).
    pub connected: u64,
    /// Messages published so far.
    pub published: u64,
    /// Messages received so far (duplicates included).
    pub received: u64,
    /// Messages received more than once, so far.
    pub duplicates: u64,
    /// Failed connects and lost connections so far.
    pub failures: u64,
    /// Median latency of the messages received since the previous sample, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<f64>,
    /// 99th percentile latency of the messages received since the previous sample, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
    /// The broker's CPU since the previous sample, percent of one core (with its pid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_cpu_percent: Option<f64>,
    /// The broker's resident memory, MiB (with its pid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_rss_mib: Option<f64>,
}

/// Takes a sample whenever a step boundary has passed; the progress reporter calls it.
#[derive(Debug)]
pub(crate) struct Recorder {
    samples: Vec<Sample>,
    /// Seconds between two samples (doubles when the samples would overflow).
    step: u32,
    /// The next sample's second.
    next_t: u32,
    /// Every latency recorded until the previous sample, microseconds.
    latency_before: Histogram<u64>,
    broker_pid: Option<u32>,
    broker_before: Option<(Usage, Instant)>,
}

impl Recorder {
    /// Nothing recorded yet; the broker's use read from now on with `broker_pid`.
    pub fn new(broker_pid: Option<u32>) -> Recorder {
        Recorder {
            samples: Vec::new(),
            step: 1,
            next_t: 1,
            latency_before: new_histogram(),
            broker_pid,
            broker_before: broker_pid
                .and_then(process::usage)
                .map(|u| (u, Instant::now())),
        }
    }

    /// Records a sample when the run's clock has passed the next step.
    pub fn tick(&mut self, shared: &Shared, phase: Phase) {
        let elapsed = shared.started.elapsed().as_secs_f64();
        if elapsed < f64::from(self.next_t) {
            return;
        }
        let t = (elapsed as u32 / self.step) * self.step;
        self.next_t = t + self.step;
        self.sample(shared, t, phase.label());
    }

    /// The samples taken, and a last one with the final counts.
    pub fn finish(mut self, shared: &Shared) -> Vec<Sample> {
        let t = self.next_t;
        self.sample(shared, t, "end");
        self.samples
    }

    /// Records the counts now as second `t`.
    fn sample(&mut self, shared: &Shared, t: u32, phase: &str) {
        let p = shared.progress();
        let (latency, duplicates) = shared.latency_and_duplicates();
        let window = self.latency_window(latency);
        let (broker_cpu_percent, broker_rss_mib) = self.broker_use();
        let quantile = |q: f64| {
            window
                .as_ref()
                .map(|h| h.value_at_quantile(q) as f64 / 1000.0)
        };
        self.samples.push(Sample {
            t_s: t,
            phase: phase.to_owned(),
            open: shared.open_now(),
            connected: p.connected,
            published: p.published,
            received: p.received,
            duplicates,
            failures: shared.failures(),
            p50_ms: quantile(0.5),
            p99_ms: quantile(0.99),
            broker_cpu_percent,
            broker_rss_mib,
        });
        if self.samples.len() >= MAX_SAMPLES {
            self.thin();
        }
    }

    /// The latencies recorded since the previous sample (None if no message arrived).
    fn latency_window(&mut self, now: Histogram<u64>) -> Option<Histogram<u64>> {
        let mut window = now.clone();
        let ok = window.subtract(&self.latency_before).is_ok();
        self.latency_before = now;
        (ok && !window.is_empty()).then_some(window)
    }

    /// The broker's CPU since the previous reading and its memory now.
    fn broker_use(&mut self) -> (Option<f64>, Option<f64>) {
        let Some(now) = self.broker_pid.and_then(process::usage) else {
            return (None, None);
        };
        let at = Instant::now();
        let cpu = self
            .broker_before
            .map(|(before, then)| process::cpu_percent(before, now, at - then));
        self.broker_before = Some((now, at));
        (cpu, Some(now.rss_bytes as f64 / MIB))
    }

    /// Keeps the samples on the doubled step's seconds and doubles the step.
    fn thin(&mut self) {
        self.step *= 2;
        let step = self.step;
        self.samples.retain(|s| s.t_s % step == 0);
        self.next_t = self.next_t.div_ceil(step) * step;
    }
}

/// Adds up the timelines of worker processes, second by second: counts are summed,
/// latencies and the broker's use taken from the workers that have them (the subscribers
/// run in the first one). A worker that stopped earlier (one without subscribers does not
/// drain) counts on with its last counts and no open connections.
pub fn merge<'a>(parts: impl IntoIterator<Item = &'a [Sample]>) -> Vec<Sample> {
    let parts: Vec<&[Sample]> = parts.into_iter().collect();
    let seconds: BTreeSet<u32> = parts.iter().flat_map(|p| p.iter().map(|s| s.t_s)).collect();
    seconds
        .into_iter()
        .map(|t| {
            let mut sum = Sample {
                t_s: t,
                ..Sample::default()
            };
            for part in &parts {
                // Samples are in time order: the part's latest at or before `t`.
                let n = part.partition_point(|s| s.t_s <= t);
                let Some(s) = n.checked_sub(1).and_then(|i| part.get(i)) else {
                    continue;
                };
                let exact = s.t_s == t;
                if exact && sum.phase.is_empty() {
                    sum.phase.clone_from(&s.phase);
                }
                if exact || n < part.len() {
                    sum.open += s.open;
                }
                sum.connected += s.connected;
                sum.published += s.published;
                sum.received += s.received;
                sum.duplicates += s.duplicates;
                sum.failures += s.failures;
                if exact {
                    sum.p50_ms = max_of(sum.p50_ms, s.p50_ms);
                    sum.p99_ms = max_of(sum.p99_ms, s.p99_ms);
                    sum.broker_cpu_percent = max_of(sum.broker_cpu_percent, s.broker_cpu_percent);
                    sum.broker_rss_mib = max_of(sum.broker_rss_mib, s.broker_rss_mib);
                }
            }
            sum
        })
        .collect()
}

/// The larger of two optional figures.
fn max_of(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t_s: u32, published: u64, p99_ms: Option<f64>) -> Sample {
        Sample {
            t_s,
            phase: "load".into(),
            open: 10,
            connected: 10,
            published,
            p99_ms,
            ..Sample::default()
        }
    }

    #[test]
    fn workers_merge_by_second() {
        let a = [at(1, 10, Some(2.0)), at(2, 20, Some(3.0)), at(3, 30, None)];
        let b = [at(1, 5, None), at(2, 15, None)];
        let m = merge([&a[..], &b[..]]);
        assert_eq!(m.len(), 3, "{m:?}");
        assert_eq!((m[0].published, m[0].open), (15, 20));
        assert_eq!((m[1].published, m[1].p99_ms), (35, Some(3.0)));
        // b has finished: its last counts stay, its connections are gone.
        assert_eq!((m[2].published, m[2].connected, m[2].open), (45, 20, 10));
        assert_eq!(m[2].phase, "load");
        assert!(merge(std::iter::empty()).is_empty());
    }

    #[test]
    fn thinning_keeps_it_bounded() {
        let mut r = Recorder::new(None);
        r.samples = (1..=MAX_SAMPLES as u32).map(|t| at(t, 0, None)).collect();
        r.next_t = MAX_SAMPLES as u32 + 1;
        r.thin();
        assert_eq!(r.samples.len(), MAX_SAMPLES / 2);
        assert!(r.samples.iter().all(|s| s.t_s % 2 == 0));
        assert_eq!(r.next_t, MAX_SAMPLES as u32 + 2);
    }

    #[test]
    fn latency_window_is_what_arrived_since_the_last_sample() {
        let mut r = Recorder::new(None);
        let mut h = new_histogram();
        h.record(1_000).expect("in range");
        assert_eq!(r.latency_window(h.clone()).map(|w| w.len()), Some(1));
        assert!(r.latency_window(h.clone()).is_none(), "nothing new");
        h.record_n(50_000, 9).expect("in range");
        let w = r.latency_window(h).expect("nine new");
        assert_eq!(w.len(), 9);
        assert!(w.value_at_quantile(0.5) >= 49_000);
    }

    #[test]
    fn empty_optionals_stay_out_of_the_json() {
        let json = serde_json::to_string(&at(1, 2, None)).expect("json");
        assert!(
            !json.contains("p99_ms") && !json.contains("broker"),
            "{json}"
        );
        let back: Sample = serde_json::from_str(&json).expect("back");
        assert_eq!(back, at(1, 2, None));
    }
}
