//! Topic names: `drivers/{id}/location` (a [`Location`](crate::Location), retained) and
//! `drivers/{id}/status` (a [`Presence`](crate::Presence), retained, `offline` as the will),
//! and the one parser of them.

/// Filter matching every driver's location topic.
pub const LOCATION_FILTER: &str = "drivers/+/location";
/// Filter matching every driver's status topic.
pub const STATUS_FILTER: &str = "drivers/+/status";
/// Filter matching every OwnTracks device's location topic.
pub const OWNTRACKS_FILTER: &str = "owntracks/+/+";

/// `drivers/{id}/location`.
pub fn location_topic(id: &str) -> String {
    format!("drivers/{id}/location")
}

/// `drivers/{id}/status`.
pub fn status_topic(id: &str) -> String {
    format!("drivers/{id}/status")
}

/// What a `drivers/{id}/...` topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `drivers/{id}/location`.
    Location,
    /// `drivers/{id}/status`.
    Status,
    /// Any other third level.
    Other,
}

/// A parsed `drivers/{id}/{kind}` topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriverTopic<'a> {
    /// The driver id (never empty, never with `/`).
    pub id: &'a str,
    /// What the topic carries.
    pub kind: Kind,
}

/// Parses `drivers/{id}/{kind}`; None for any other topic (more or fewer levels, empty id).
pub fn parse(topic: &str) -> Option<DriverTopic<'_>> {
    let mut parts = topic.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("drivers"), Some(id), Some(kind), None) if !id.is_empty() => Some(DriverTopic {
            id,
            kind: match kind {
                "location" => Kind::Location,
                "status" => Kind::Status,
                _ => Kind::Other,
            },
        }),
        _ => None,
    }
}

/// The driver id in a `drivers/{id}/...` topic.
pub fn driver_of(topic: &str) -> Option<&str> {
    parse(topic).map(|t| t.id)
}

/// The driver id of a `drivers/{id}/location` topic.
pub fn location_driver(topic: &str) -> Option<&str> {
    parse(topic)
        .filter(|t| t.kind == Kind::Location)
        .map(|t| t.id)
}

/// The `{user}/{device}` of an `owntracks/{user}/{device}` topic.
pub fn owntracks_device(topic: &str) -> Option<(&str, &str)> {
    let mut p = topic.split('/');
    match (p.next(), p.next(), p.next(), p.next()) {
        (Some("owntracks"), Some(user), Some(device), None)
            if !user.is_empty() && !device.is_empty() =>
        {
            Some((user, device))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip() {
        assert_eq!(location_topic("drv-1"), "drivers/drv-1/location");
        assert_eq!(status_topic("drv-1"), "drivers/drv-1/status");
        assert_eq!(driver_of("drivers/drv-1/location"), Some("drv-1"));
        assert_eq!(driver_of("drivers/drv-1/status"), Some("drv-1"));
        assert_eq!(location_driver("drivers/drv-1/location"), Some("drv-1"));
        assert_eq!(location_driver("drivers/drv-1/status"), None);
        assert_eq!(
            parse("drivers/x/other"),
            Some(DriverTopic {
                id: "x",
                kind: Kind::Other
            })
        );
        for not_ours in [
            "drivers//status",
            "drivers/a/b/location",
            "drivers/a",
            "owntracks/a/b",
            "",
        ] {
            assert_eq!(parse(not_ours), None, "{not_ours}");
        }
        assert_eq!(owntracks_device("owntracks/a/b"), Some(("a", "b")));
        assert_eq!(owntracks_device("owntracks/a/"), None);
        assert_eq!(owntracks_device("owntracks/a/b/c"), None);
    }
}
