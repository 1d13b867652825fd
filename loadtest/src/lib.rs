//! `fleetcast loadtest`: many simulated MQTT connections against any broker, and a report
//! of what it measured (throughput, latency, loss).
//!
//! The tool must cost less per connection than the broker it measures, so connections are
//! raw sockets speaking hand-written frames ([`wire`]), not one client library each.
//! Scenarios: `fleet` (N drivers at an interval + M subscribers), `throughput` (N publishers
//! as fast as the broker takes, QoS 0), `idle` (hold N connections; broker memory per
//! connection with `--broker-pid`), `storm` (connect N, drop them all at once, reconnect,
//! with or without jitter). Every run is bounded by `--duration` and stops by itself.
//!
//! Its own crate, apart from the simulator: it drives no road graph, and it shares with
//! the rest of fleetcast only the schema (`fleetcast_proto`: topics, the `Location` its
//! payloads are, `/proc` readings).
//!
//! - [`config`]: what to run; [`target`]: which broker; [`run()`]: running it, through
//!   `schedule` (when), `publisher`, `subscriber` (the connections' lives), `dial`,
//!   [`conn`], [`wire`] (one connection) and `probe` (their payload);
//! - [`accounting`] (what subscribers saw), `summary` and [`report`] (what the run found),
//!   [`series`] (the run second by second), [`html`] and [`svg`] (the report as a page);
//! - [`workers`]: one run over several processes.

pub mod accounting;
mod apart;
pub mod config;
pub mod conn;
mod dial;
pub mod html;
mod probe;
mod publisher;
pub mod report;
mod run;
mod schedule;
pub mod series;
mod shared;
mod subscriber;
mod summary;
pub mod svg;
pub mod target;
pub mod wire;
pub mod workers;

pub use config::{LoadConfig, Scenario};
pub use report::Report;
pub use run::{run, LoadError};
pub use shared::{Phase, Progress};
pub use target::Target;
pub use workers::merge;
