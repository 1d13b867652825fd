//! fleetcast's driver fleet.
//!
//! Drivers move on a real road network ([`road_graph`], [`route`], [`driver`]) and each
//! publishes its position once an interval over its own MQTT connection ([`fleet`]). The
//! messages they publish are `fleetcast_proto`'s.

pub mod basemap;
pub mod driver;
pub mod endpoint;
pub mod failure;
pub mod fleet;
pub mod road_graph;
pub mod route;
