//! The one MQTT topic-filter matcher (`+` one level, `#` the rest), used by the broker's
//! topic policy and by the dashboard's board alike.

/// Whether `topic` matches the MQTT filter `filter`.
pub fn matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether some topic matches both filters.
pub fn overlap(a: &str, b: &str) -> bool {
    let mut x = a.split('/');
    let mut y = b.split('/');
    loop {
        match (x.next(), y.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (Some("+"), Some(_)) | (Some(_), Some("+")) => {}
            (Some(p), Some(q)) if p == q => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether every topic the filter `requested` matches also matches the filter `grant`.
pub fn covers(grant: &str, requested: &str) -> bool {
    let mut g = grant.split('/');
    let mut r = requested.split('/');
    loop {
        match (g.next(), r.next()) {
            (Some("#"), _) => return true,
            (Some(_), Some("#")) => return false,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_matching_rules() {
        assert!(matches("drivers/+/location", "drivers/drv-1/location"));
        assert!(!matches("drivers/+/location", "drivers/drv-1/status"));
        assert!(matches("drivers/#", "drivers/drv-1/status"));
        assert!(matches("#", "owntracks/a/b"));
        assert!(matches("owntracks/+/+", "owntracks/alice/phone"));
        assert!(!matches("owntracks/+/+", "owntracks/alice"));
        assert!(!matches("drivers/drv-1/location", "drivers/drv-2/location"));
        assert!(!matches("a/b", "a/b/c"));
    }

    #[test]
    fn covers_is_containment() {
        assert!(covers("drivers/+/location", "drivers/drv-7/location"));
        assert!(covers("drivers/#", "drivers/+/location"));
        assert!(!covers("drivers/+/location", "drivers/#"));
        assert!(!covers("drivers/+/location", "drivers/+/+"));
        assert!(covers("#", "#"));
    }

    #[test]
    fn overlap_is_a_topic_both_match() {
        assert!(!overlap("drivers/+/location", "drivers/+/status"));
        assert!(!overlap("drivers/+/location", "owntracks/#"));
        assert!(!overlap("a/b", "a/b/c"));
        assert!(overlap("drivers/+/location", "drivers/drv-1/+"));
        assert!(overlap("drivers/#", "drivers/+/status"));
        assert!(overlap("a", "a/#"));
        assert!(overlap("#", "x/y"));
        // Brute force over a few levels: overlap says yes exactly when a topic matches both.
        let filters = [
            "a", "a/b", "a/+", "+/b", "a/#", "+", "#", "+/+", "b/#", "a/b/c",
        ];
        let topics = ["a", "b", "a/b", "a/c", "b/b", "a/b/c", "b/a/c", "c"];
        for f in filters {
            for g in filters {
                let both = topics.iter().any(|t| matches(f, t) && matches(g, t));
                assert_eq!(overlap(f, g), both, "{f} and {g}");
            }
        }
    }
}
