//! fleetcast's shared schema: the one definition of what the broker, the simulator, the
//! load tester and the dashboard exchange.
//!
//! Kept small on purpose (serde, serde_json, and what tokens and meters need), so that a
//! part can depend on it without dragging in the router, the road graph or a web server.
//!
//! - [`location`]: the [`Location`] and [`Presence`] payloads and the rules a fix must pass,
//!   applied alike by the gateway (which refuses) and the board (which ignores).
//! - [`topic`]: topic names and their parsing; [`filter`]: the MQTT filter matcher.
//! - [`owntracks`]: OwnTracks phone payloads as [`Location`]s.
//! - [`broker_url`]: broker URLs as the commands take them.
//! - [`token`]: browser tokens; [`backoff`]; [`time`]; [`meter`]: registering meters on a
//!   recorder the caller owns.
//! - [`process`]: a process's CPU time and memory from `/proc`, which the broker's
//!   `/metrics`, the fleet's summary lines and the load tester's report all show.

pub mod backoff;
pub mod broker_url;
pub mod filter;
pub mod location;
pub mod meter;
pub mod owntracks;
pub mod process;
pub mod time;
pub mod token;
pub mod topic;

pub use location::{Invalid, Location, Presence, Status};
