//! fleetcast's dashboard: the rider-side WebSocket bridge and the live map page.
//!
//! Positions reach the [`board::Board`] from MQTT (in-process inside `fleetcast serve`, or
//! through [`feed`] from any broker); each browser's [`bridge`] task sends it batches of
//! what changed in its viewport ([`viewport`], [`protocol`]). [`web`] serves the page, its
//! vendored Leaflet and the offline [`basemap`].

pub mod basemap;
pub mod board;
pub mod bridge;
pub mod feed;
pub mod meters;
pub mod owntracks;
pub mod protocol;
pub mod service;
pub mod viewport;
pub mod web;
