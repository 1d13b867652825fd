//! When each thing of a run happens: each publisher's connect slot (the connect rate,
//! shared out between worker processes), the start of the load, and each publisher's
//! phase within the interval.

use crate::config::LoadConfig;
use crate::publisher::Slot;
use std::time::Duration;
use tokio::time::Instant;

/// Extra time before publishing starts with several worker processes: their subscriber
/// (in worker 0) may still be subscribing when the others are done connecting.
const WORKERS_LAG: Duration = Duration::from_secs(2);
/// Margin between the last connect slot and the first publish.
const SETTLE: Duration = Duration::from_millis(200);
/// Publishers' phases are spread over the interval in this many steps.
const PHASES: usize = 1000;

/// One worker process's timetable.
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    /// The first connect slot.
    connect_start: Instant,
    /// Time between two of this process's connect slots.
    spacing: Duration,
    /// When publishing starts.
    pub load_start: Instant,
    interval: Duration,
    /// This process's index, of `workers`.
    worker: usize,
    workers: usize,
    connections: usize,
}

impl Schedule {
    /// The timetable of a run that started at `started`, its connects starting now.
    pub fn new(cfg: &LoadConfig, started: Instant) -> Schedule {
        let (worker, workers) = (cfg.worker.0, cfg.worker.1.max(1));
        // The rate is for the whole run: each of several processes takes its share, and
        // its publishers connect one spacing apart, in order.
        let rate = (cfg.connect_rate / workers as u32).max(1);
        // Publishing starts once the last connect is due (so connecting does not compete
        // with the measured load), or 2 s later with several processes.
        let connect_time = Duration::from_secs_f64(
            cfg.connections as f64 / f64::from(cfg.connect_rate.max(1)) / workers as f64,
        );
        let lag = if workers > 1 {
            WORKERS_LAG
        } else {
            Duration::ZERO
        };
        Schedule {
            connect_start: Instant::now(),
            spacing: Duration::from_secs_f64(1.0 / f64::from(rate)),
            load_start: started + connect_time + lag + SETTLE,
            interval: cfg.interval,
            worker,
            workers,
            connections: cfg.connections,
        }
    }

    /// This process's publishers: every `workers`-th connection from `worker` on.
    pub fn slots(&self) -> impl Iterator<Item = Slot> + '_ {
        (self.worker..self.connections)
            .step_by(self.workers)
            .enumerate()
            .map(|(ordinal, index)| Slot {
                index,
                connect_at: self.connect_start + self.spacing.mul_f64(ordinal as f64),
                // Spread over the interval, so publishes do not all land on one instant.
                first_tick: self.load_start
                    + self
                        .interval
                        .mul_f64((index % PHASES) as f64 / PHASES as f64),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Scenario;

    fn cfg(connections: usize, worker: (usize, usize)) -> LoadConfig {
        LoadConfig {
            scenario: Scenario::Fleet,
            broker: "mqtt://127.0.0.1:1883".parse().expect("url"),
            more_brokers: Vec::new(),
            connections,
            connect_rate: 100,
            interval: Duration::from_secs(1),
            payload_size: None,
            qos: 0,
            subscribers: 1,
            shared: false,
            duration: Duration::from_secs(1),
            keep_alive: Duration::from_secs(60),
            source_ips: vec![],
            broker_pid: None,
            jitter: false,
            retain: false,
            id_prefix: "lt-".into(),
            worker,
            credentials: None,
        }
    }

    /// `d` is `ms` milliseconds, give or take float rounding.
    fn about(d: Duration, ms: f64) -> bool {
        (d.as_secs_f64() * 1000.0 - ms).abs() < 0.001
    }

    #[test]
    fn workers_split_connections_and_the_connect_rate() {
        let started = Instant::now();
        let s = Schedule::new(&cfg(10, (1, 2)), started);
        let slots: Vec<Slot> = s.slots().collect();
        assert_eq!(
            slots.iter().map(|s| s.index).collect::<Vec<_>>(),
            [1, 3, 5, 7, 9]
        );
        // 50 connects per second each: 20 ms apart.
        assert!(about(slots[1].connect_at - slots[0].connect_at, 20.0));
        // 10 connects at 100/s over 2 processes, the workers' lag, the margin.
        assert!(about(s.load_start - started, 50.0 + 2_000.0 + 200.0));
        assert!(about(slots[2].first_tick - s.load_start, 5.0));
        let one = Schedule::new(&cfg(10, (0, 1)), started);
        assert_eq!(one.slots().count(), 10);
        assert!(about(one.load_start - started, 100.0 + 200.0));
    }
}
