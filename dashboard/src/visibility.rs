//! What one viewer may see, and until when: made by whoever checks the viewer's token (a
//! [`TokenVerifier`](crate::web::TokenVerifier)), so the board and the bridge know no
//! accounts and no token format.

use fleetcast_proto::filter::matches;
use std::sync::Arc;

/// The drivers one viewer may see: those whose location topic its account could
/// subscribe to over MQTT.
#[derive(Debug, Clone)]
pub struct Visibility {
    /// The topic filters the viewer's account may subscribe within, its variables filled.
    pub filters: Arc<[String]>,
    /// The account name.
    pub account: String,
    /// When the viewer's token expires (unix seconds): the bridge closes it then.
    pub expires_at: Option<u64>,
    /// What else can end it before then (a share link revoked, or its trip over).
    pub ends: Option<LinkEnd>,
}

/// A check, asked at every batch, of whether a token has ended before its expiry: the
/// bridge closes the viewer's socket once it says so.
#[derive(Clone)]
pub struct LinkEnd(pub Arc<dyn Fn(u64) -> bool + Send + Sync>);

impl std::fmt::Debug for LinkEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkEnd")
    }
}

impl Visibility {
    /// Whether the token behind it has expired or ended at `now` (unix seconds).
    pub fn expired(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|e| now >= e) || self.ends.as_ref().is_some_and(|f| (f.0)(now))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn a_link_ends_at_its_expiry_or_when_its_check_says() {
        let over = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&over);
        let v = Visibility {
            filters: vec!["drivers/drv-1/+".to_owned()].into(),
            account: "rider".into(),
            expires_at: Some(100),
            ends: Some(LinkEnd(Arc::new(move |_| flag.load(Ordering::Relaxed)))),
        };
        assert!(v.is_share_link());
        assert!(!v.expired(99));
        assert!(v.expired(100));
        over.store(true, Ordering::Relaxed);
        assert!(v.expired(50));
    }
}
