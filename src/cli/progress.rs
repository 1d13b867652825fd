//! The load tester's live progress: a spinner line on a terminal, a plain line every few
//! seconds otherwise (as k6 prints in CI logs), a line when the phase changes, and a
//! receive rate smoothed over the last two seconds (a 0.2 s window flips between 0/s and
//! the peak as batches arrive).

use fleetcast_loadtest::{Phase, Progress};
use std::collections::VecDeque;
use std::io::IsTerminal;

/// The window the rates are averaged over, seconds.
const RATE_WINDOW_S: f64 = 2.0;
/// Seconds between two plain lines when standard error is not a terminal.
const PLAIN_EVERY_S: f64 = 5.0;

/// Shows a run's progress on standard error.
pub(super) struct Display {
    bar: Option<indicatif::ProgressBar>,
    samples: VecDeque<(f64, u64, u64)>,
    phase: Option<Phase>,
    last_plain: f64,
}

impl Display {
    /// A spinner when standard error is a terminal, plain lines otherwise.
    pub(super) fn new() -> Display {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            bar
        });
        Display {
            bar,
            samples: VecDeque::new(),
            phase: None,
            last_plain: 0.0,
        }
    }

    /// Takes one progress report (about every 200 ms).
    pub(super) fn update(&mut self, p: Progress) {
        if self.phase != Some(p.phase) {
            self.phase = Some(p.phase);
            self.say(&format!(
                "loadtest: {} phase from {:.1}s",
                p.phase.label(),
                p.elapsed_s
            ));
        }
        self.samples
            .push_back((p.elapsed_s, p.published, p.received));
        while self
            .samples
            .front()
            .is_some_and(|s| p.elapsed_s - s.0 > RATE_WINDOW_S)
        {
            self.samples.pop_front();
        }
        let line = self.line(&p);
        match &self.bar {
            // set_message redraws: a tick() as well drew every frame twice.
            Some(bar) => bar.set_message(line),
            None if p.elapsed_s - self.last_plain >= PLAIN_EVERY_S => {
                self.last_plain = p.elapsed_s;
                eprintln!("loadtest: {line}");
            }
            None => {}
        }
    }

    /// Clears the spinner.
    pub(super) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    fn say(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn line(&self, p: &Progress) -> String {
        let (pub_rate, recv_rate) = rates(&self.samples);
        format!(
            "{:>5.1}s {} connected {} published {} ({pub_rate:.0}/s) received {} ({recv_rate:.0}/s) p99 {:.2} ms",
            p.elapsed_s,
            p.phase.label(),
            p.connected,
            p.published,
            p.received,
            p.p99_ms
        )
    }
}

/// (published/s, received/s) between the oldest and the newest sample.
fn rates(samples: &VecDeque<(f64, u64, u64)>) -> (f64, f64) {
    match (samples.front(), samples.back()) {
        (Some(a), Some(b)) if b.0 > a.0 => {
            let dt = b.0 - a.0;
            (
                b.1.saturating_sub(a.1) as f64 / dt,
                b.2.saturating_sub(a.2) as f64 / dt,
            )
        }
        _ => (0.0, 0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_smoothed_over_the_window() {
        let mut d = Display {
            bar: None,
            samples: VecDeque::new(),
            phase: Some(Phase::Load),
            last_plain: f64::MAX,
        };
        // Batches of 980 every other 0.2 s tick: the rate is steady, not 0 then 4,900.
        for i in 0..20u64 {
            let received = (i / 2) * 980;
            d.update(Progress {
                phase: Phase::Load,
                elapsed_s: i as f64 * 0.2,
                received,
                ..Progress::default()
            });
        }
        let (_, recv) = rates(&d.samples);
        assert!((2_000.0..=2_900.0).contains(&recv), "{recv}");
    }
}
