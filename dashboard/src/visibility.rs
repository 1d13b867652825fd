//! Who may see which driver: a browser token's account, as the topic filters it could
//! subscribe to over MQTT. Made by whoever checks the viewer's token (the board knows no
//! accounts); also what the history API checks a driver against.

use fleetcast_proto::filter::matches;

/// The drivers one viewer may see: those whose location topic its account could
/// subscribe to over MQTT. Made by whoever checks the viewer's token (a
/// [`TokenVerifier`](crate::web::TokenVerifier)), so the board knows no accounts.
#[derive(Debug, Clone)]
pub struct Visibility {
    /// The topic filters the viewer's account may subscribe within, its variables filled.
    pub filters: std::sync::Arc<[String]>,
    /// The account name.
    pub account: String,
    /// When the viewer's token expires (unix seconds): the bridge closes it then.
    pub expires_at: Option<u64>,
}

impl Visibility {
    /// Whether the token behind it has expired at `now` (unix seconds).
    pub fn expired(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|e| now >= e)
    }

    /// Whether it shows one driver only (a share link's `drivers/{id}/+`).
    pub fn is_share_link(&self) -> bool {
        match &self.filters[..] {
            [one] => one
                .strip_prefix("drivers/")
                .and_then(|rest| rest.strip_suffix("/+"))
                .is_some_and(|id| !id.is_empty() && !id.contains(['/', '+', '#'])),
            _ => false,
        }
    }

    /// Whether a driver on `topic` is shown.
    pub fn may_see(&self, topic: &str) -> bool {
        self.filters.iter().any(|f| matches(f, topic))
    }
}
