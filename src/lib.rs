//! The `fleetcast` package's library side: the pieces the binary composes, shared with the
//! end-to-end tests so they run exactly what `serve` runs.

pub mod access;
pub mod certs;
pub mod feed;
pub mod stack;
pub mod standalone;
pub mod tracks;
