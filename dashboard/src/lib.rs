//! fleetcast's dashboard: the rider-side WebSocket bridge and the live map page.
//!
//! Positions reach the [`board::Board`] as a stream of (topic, payload) that the caller
//! wires in ([`service::Dashboard::feed`]: in-process inside `fleetcast serve`, from an MQTT
//! client in `fleetcast dashboard`); each browser's [`bridge`] task sends it batches of what
//! changed in its viewport ([`viewport`], [`protocol`]), or per-cell counts when the view
//! holds too many ([`cells`]). Every fix is also kept in [`history`] for a while, served
//! by [`tracks`] (a driver's track, the page's replay), and with a store in [`archive`].
//! [`web`] serves the page, its vendored Leaflet and the offline basemap it is given. The
//! crate knows no router, no accounts, no store and no road graph: browser tokens are
//! checked through [`web::TokenVerifier`], stored tracks through [`archive::TrackArchive`].

pub mod archive;
pub mod board;
pub mod bridge;
pub mod cells;
pub mod fences;
pub mod history;
pub mod latency;
pub mod latency_histogram;
pub mod meters;
pub mod protocol;
pub mod service;
pub mod timestamp;
pub mod tracks;
pub mod trips;
pub mod viewport;
pub mod visibility;
pub mod web;
