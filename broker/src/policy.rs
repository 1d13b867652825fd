//! Topic policy: which topics a client may publish to and which filters it may subscribe
//! to, in the style of AWS IoT Core and mosquitto ACLs. Grants are MQTT filters in which
//! `${clientid}` and `${username}` fill a whole topic level. Everything not granted is
//! denied.

use fleetcast_proto::filter::covers;
use fleetcast_proto::filter::{levels, levels_match};
use serde::Deserialize;

/// Publish and subscribe grants.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Filters a client may publish to (its will included).
    #[serde(default)]
    pub publish: Vec<String>,
    /// Filters a client may subscribe within.
    #[serde(default)]
    pub subscribe: Vec<String>,
}

impl Grants {
    /// A driver: its own location and status, nothing else.
    pub fn driver() -> Grants {
        Grants {
            publish: vec![
                "drivers/${clientid}/location".into(),
                "drivers/${clientid}/status".into(),
            ],
            subscribe: vec![],
        }
    }

    /// A rider: every driver's location and status, read only.
    pub fn rider() -> Grants {
        Grants {
            publish: vec![],
            subscribe: vec!["drivers/+/location".into(), "drivers/+/status".into()],
        }
    }

    /// A service (the dashboard bridge): everything under `drivers/` and OwnTracks, read only.
    pub fn service() -> Grants {
        Grants {
            publish: vec![],
            subscribe: vec!["drivers/#".into(), "owntracks/#".into()],
        }
    }

    /// An administrator: everything, both ways.
    pub fn admin() -> Grants {
        Grants {
            publish: vec!["#".into()],
            subscribe: vec!["#".into()],
        }
    }

    /// These grants plus `more`.
    pub fn with(mut self, more: &Grants) -> Grants {
        self.publish.extend(more.publish.iter().cloned());
        self.subscribe.extend(more.subscribe.iter().cloned());
        self
    }

    /// Whether `topic` may be published by this client.
    pub fn may_publish(&self, topic: &str, client_id: &str, username: &str) -> bool {
        self.publish
            .iter()
            .any(|g| grants_topic(g, topic, client_id, username))
    }

    /// Whether `filter` may be subscribed to by this client: every topic it matches must
    /// be granted. `$share/GROUP/` is looked through.
    pub fn may_subscribe(&self, filter: &str, client_id: &str, username: &str) -> bool {
        let inner = match filter.strip_prefix("$share/") {
            Some(rest) => match rest.split_once('/') {
                Some((_, f)) => f,
                None => return false,
            },
            None => filter,
        };
        self.subscribe
            .iter()
            .filter_map(|g| fill(g, client_id, username))
            .any(|g| covers(&g, inner))
    }
}

impl Grants {
    /// The subscribe grants with their variables filled for this client: the filters every
    /// topic it may read matches (a grant whose variable cannot be a level is left out).
    pub fn subscribe_filters(&self, client_id: &str, username: &str) -> Vec<String> {
        self.subscribe
            .iter()
            .filter_map(|g| fill(g, client_id, username))
            .collect()
    }
}

/// Whether `grant`, its `${clientid}` and `${username}` levels filled, matches `topic`:
/// `matches(fill(grant), topic)` without building the filled filter (a publish is judged
/// against every grant, and the filled copies were two allocations a grant).
fn grants_topic(grant: &str, topic: &str, client_id: &str, username: &str) -> bool {
    let (client_ok, user_ok) = (level_ok(client_id), level_ok(username));
    // As `fill`: a placeholder that cannot be filled voids the grant, wherever it is.
    if levels(grant.as_bytes())
        .any(|l| (l == CLIENT_ID && !client_ok) || (l == USERNAME && !user_ok))
    {
        return false;
    }
    let filled = levels(grant.as_bytes()).map(|l| match l {
        CLIENT_ID => client_id.as_bytes(),
        USERNAME => username.as_bytes(),
        l => l,
    });
    levels_match(filled, levels(topic.as_bytes()))
}

const CLIENT_ID: &[u8] = b"${clientid}";
const USERNAME: &[u8] = b"${username}";

/// Whether a client id or user name can fill a whole level.
fn level_ok(v: &str) -> bool {
    !v.is_empty() && !v.contains(['/', '+', '#'])
}

/// Replaces `${clientid}` and `${username}` levels; None when a value cannot be a level.
fn fill(grant: &str, client_id: &str, username: &str) -> Option<String> {
    let mut out = Vec::new();
    for level in grant.split('/') {
        out.push(match level {
            "${clientid}" if level_ok(client_id) => client_id,
            "${username}" if level_ok(username) => username,
            "${clientid}" | "${username}" => return None,
            l => l,
        });
    }
    Some(out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetcast_proto::filter::matches;

    #[test]
    fn a_grant_is_judged_as_its_filled_filter() {
        let grants = [
            "drivers/${clientid}/location",
            "${username}/#",
            "a/${clientid}/${username}",
            "+/${clientid}",
            "#",
            "a/+",
            "${clientid}",
            "x${clientid}/b",
            "a/#/${clientid}",
            "",
        ];
        let names = ["drv-1", "u", "", "a/b", "+", "#", "${clientid}", "b"];
        let topics = [
            "drivers/drv-1/location",
            "drivers/drv-2/location",
            "u/x",
            "u",
            "a/drv-1/u",
            "a/b/b",
            "a/u",
            "b/drv-1",
            "drv-1",
            "x${clientid}/b",
            "",
            "a",
        ];
        let mut judged = 0;
        for g in grants {
            for c in names {
                for u in names {
                    for t in topics {
                        let want = fill(g, c, u).is_some_and(|f| matches(&f, t));
                        assert_eq!(grants_topic(g, t, c, u), want, "{g:?} {c:?} {u:?} {t:?}");
                        judged += usize::from(want);
                    }
                }
            }
        }
        // Not a test that only ever says no.
        assert!(judged > 100, "{judged}");
    }

    #[test]
    fn drivers_publish_only_their_own_topics() {
        let g = Grants::driver();
        assert!(g.may_publish("drivers/drv-1/location", "drv-1", "u"));
        assert!(g.may_publish("drivers/drv-1/status", "drv-1", "u"));
        assert!(!g.may_publish("drivers/drv-2/location", "drv-1", "u"));
        assert!(!g.may_publish("drivers/drv-1/location/x", "drv-1", "u"));
        assert!(!g.may_subscribe("drivers/#", "drv-1", "u"));
    }

    #[test]
    fn subscriptions_must_be_covered() {
        let r = Grants::rider();
        assert!(r.may_subscribe("drivers/+/location", "rider-1", "rider-1"));
        assert!(r.may_subscribe("drivers/drv-7/location", "rider-1", "rider-1"));
        assert!(r.may_subscribe("$share/g/drivers/+/location", "rider-1", "rider-1"));
        assert!(!r.may_subscribe("#", "rider-1", "rider-1"));
        assert!(!r.may_subscribe("drivers/#", "rider-1", "rider-1"));
        assert!(!r.may_subscribe("drivers/+/+", "rider-1", "rider-1"));
        assert!(!r.may_publish("drivers/drv-7/location", "rider-1", "rider-1"));
        let s = Grants::service();
        assert!(s.may_subscribe("drivers/#", "bridge", "bridge"));
        assert!(s.may_subscribe("drivers/+/location", "bridge", "bridge"));
        assert!(!s.may_subscribe("#", "bridge", "bridge"));
    }

    #[test]
    fn variables_fill_whole_levels_only() {
        let g = Grants {
            publish: vec!["users/${username}/#".into()],
            subscribe: vec![],
        };
        assert!(g.may_publish("users/alice/x", "c", "alice"));
        assert!(!g.may_publish("users/bob/x", "c", "alice"));
        // A username that is not a single level grants nothing.
        assert!(!g.may_publish("users/a/b/x", "c", "a/b"));
        assert!(!g.may_publish("users/x/y", "c", "+"));
    }
}
