//! fleetcast's device gateway.
//!
//! Clients connect to fleetcast's own listeners (MQTT over TCP, MQTT over WebSocket);
//! the [`gateway`] reads their frames, enforces the bounds in [`config`], keeps wills and
//! client-id ownership, and hands each connection's packets to an embedded rumqttd router
//! through one in-process link per client ([`router`]). rumqttd stays the router: it keeps
//! sessions, QoS 1/2 state and retained messages in memory; with a data directory,
//! [`durable`] keeps them in the [`store`] too and [`restore`] puts them back at start. See
//! ARCHITECTURE.md for why.
//!
//! [`Broker::start`] takes already-bound [`Listeners`], so tests bind port 0 and ask
//! [`Broker::addrs`] where the server is.

pub mod auth;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod durable;
pub mod gateway;
pub mod geofence;
pub mod guard;
pub mod hashing;
pub mod http;
pub mod ingest;
pub mod io_threads;
pub mod kick;
pub mod listener;
pub mod local;
pub mod lockout;
pub mod meters;
pub mod pacing;
pub mod policy;
pub mod quota;
pub mod registry;
pub mod restore;
pub mod router;
pub mod share;
pub mod sources;
pub mod store;
pub mod throttle;
pub mod tls;

pub use broker::{raise_open_files_limit, Addrs, Broker, BrokerError, Extras, Listeners, RoutesFn};
pub use config::{Config, ConfigError, DEFAULT_CONFIG};
