//! fleetcast's driver fleet.
//!
//! Drivers move on a real road network ([`road_graph`], [`route`], [`driver`]) and each
//! publishes its position once an interval over its own MQTT connection ([`fleet`]). The
//! messages they publish ([`payload`]) are the one definition the dashboard and the load
//! tester read too.

pub mod driver;
pub mod endpoint;
pub mod fleet;
pub mod loadtest;
pub mod payload;
pub mod process;
pub mod road_graph;
pub mod route;
