//! The `fleetcast` package's library side: the pieces the binary composes, shared with the
//! end-to-end tests so they run exactly what `serve` runs.

pub mod certs;
pub mod stack;
