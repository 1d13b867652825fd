//! The JSON protocol between the map page and the bridge, over the WebSocket at `/ws`.
//!
//! Browser to server (`op`):
//! - `{"op":"subscribe","filters":["drivers/+/location","owntracks/+/+"]}`: which source
//!   topics to show (MQTT filter syntax; default: both of these).
//! - `{"op":"viewport","bbox":[west,south,east,north]}`: only drivers inside (plus a margin)
//!   are sent; `null` for everywhere.
//! - `{"op":"follow","id":"drv-000042"}`: always send this driver; `null` to stop.
//!
//! Server to browser (`type`):
//! - `{"type":"hello",...}` once, with the batch interval and the stale time.
//! - `{"type":"batch","t":MS,"positions":[Location...],"gone":[{"id":..,"reason":"offline"|"stale"}],"stats":{...}}`
//!   every batch interval when something changed; `stats` at most once a second.
//! - `{"type":"cells","t":MS,"size":[DLON,DLAT],"drivers":N,"cells":[[lat,lon,available,to_pickup,on_trip],...],"follow":Location|null,"stats":{...}}`
//!   instead of `batch` while the view holds more than `aggregate_above` drivers
//!   (`--aggregate-above`, default 2,000): counts by status per grid cell (`size` degrees,
//!   finer as the view gets smaller, see [`crate::cells`]), each at its drivers' mean
//!   position, every batch interval when they changed. The page then drops the drivers it
//!   drew one by one; `follow` is the followed driver's latest position, always sent. When
//!   the view holds fewer again (zoomed in), `batch` resumes with every driver in view.
//! - `{"type":"fences","fences":[{"name":..,"geometry":GeoJSON,"count":N}],"events":[..]}`
//!   when the geofences (`serve --geofences`) or their counts changed.
//! - `{"type":"error","message":".."}` for a message it could not take.

use crate::board::{Gone, PanelStats};
use fleetcast_proto::Location;
use serde::{Deserialize, Serialize};

/// A message from the browser.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// Topic filters to show.
    Subscribe {
        /// MQTT filters.
        filters: Vec<String>,
    },
    /// The visible area; None for everywhere.
    Viewport {
        /// `[west, south, east, north]`.
        bbox: Option<[f64; 4]>,
    },
    /// The driver to always send; None to stop following.
    Follow {
        /// Driver id.
        id: Option<String>,
    },
}

/// A message to the browser.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    /// Sent once on connect.
    Hello {
        /// "fleetcast".
        server: &'static str,
        /// Milliseconds between batches.
        batch_ms: u64,
        /// Seconds of silence after which a driver is sent as stale.
        stale_after_s: u64,
    },
    /// What changed.
    Batch {
        /// Server time, ms since the epoch.
        t: u64,
        /// Latest positions.
        positions: &'a [Location],
        /// Drivers gone.
        gone: &'a [Gone],
        /// Status panel numbers, at most once a second.
        #[serde(skip_serializing_if = "Option::is_none")]
        stats: Option<PanelStats>,
    },
    /// Per-cell counts for a view holding too many drivers to send one by one.
    Cells {
        /// Server time, ms since the epoch.
        t: u64,
        /// A cell's `[degrees of longitude, degrees of latitude]`.
        size: [f64; 2],
        /// Drivers in the cells the view touches.
        drivers: usize,
        /// The cells with drivers.
        cells: &'a [crate::cells::Cell],
        /// The followed driver, when live.
        follow: Option<&'a Location>,
        /// Status panel numbers, at most once a second.
        #[serde(skip_serializing_if = "Option::is_none")]
        stats: Option<PanelStats>,
    },
    /// The geofences the viewer may see and their latest events, when they changed.
    Fences {
        /// Every fence, with its shape and count.
        fences: &'a [crate::fences::FenceView],
        /// The latest entries and exits, oldest first.
        events: &'a [serde_json::Value],
    },
    /// A message that could not be taken.
    Error {
        /// What was wrong.
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_parse() {
        let m: ClientMessage =
            serde_json::from_str(r#"{"op":"viewport","bbox":[24.9,60.1,25.0,60.2]}"#)
                .expect("json");
        assert_eq!(
            m,
            ClientMessage::Viewport {
                bbox: Some([24.9, 60.1, 25.0, 60.2])
            }
        );
        let m: ClientMessage = serde_json::from_str(r#"{"op":"follow","id":null}"#).expect("json");
        assert_eq!(m, ClientMessage::Follow { id: None });
        assert!(serde_json::from_str::<ClientMessage>(r#"{"op":"dance"}"#).is_err());
    }
}
