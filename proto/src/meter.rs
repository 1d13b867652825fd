//! Registering meters on a `metrics` recorder the caller owns (not the global one), so each
//! broker or dashboard in one process has its own, and `metrics::NoopRecorder` turns them
//! all off. Handles are registered once; the hot path only bumps atomics.

use metrics::{Counter, Gauge, Key, Label, Metadata, Recorder, SharedString, Unit};

fn meta() -> Metadata<'static> {
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()))
}

/// A counter `name{label=value}` on `r`.
pub fn counter(
    r: &dyn Recorder,
    name: &'static str,
    labels: &[(&'static str, &'static str)],
) -> Counter {
    r.register_counter(&key(name, labels), &meta())
}

/// A gauge `name{label=value}` on `r`.
pub fn gauge(
    r: &dyn Recorder,
    name: &'static str,
    labels: &[(&'static str, &'static str)],
) -> Gauge {
    r.register_gauge(&key(name, labels), &meta())
}

fn key(name: &'static str, labels: &[(&'static str, &'static str)]) -> Key {
    let labels: Vec<Label> = labels.iter().map(|(k, v)| Label::new(*k, *v)).collect();
    Key::from_parts(name, labels)
}

/// HELP text for a counter.
pub fn describe_counter(
    r: &dyn Recorder,
    name: &'static str,
    unit: Option<Unit>,
    help: &'static str,
) {
    r.describe_counter(name.into(), unit, SharedString::const_str(help));
}

/// HELP text for a gauge.
pub fn describe_gauge(
    r: &dyn Recorder,
    name: &'static str,
    unit: Option<Unit>,
    help: &'static str,
) {
    r.describe_gauge(name.into(), unit, SharedString::const_str(help));
}
