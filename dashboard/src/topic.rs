//! MQTT topic filter matching, for the filters browsers subscribe with.

/// Whether `topic` matches the MQTT filter `filter` (`+` one level, `#` the rest).
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

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn mqtt_rules() {
        assert!(matches("drivers/+/location", "drivers/drv-1/location"));
        assert!(!matches("drivers/+/location", "drivers/drv-1/status"));
        assert!(matches("drivers/#", "drivers/drv-1/status"));
        assert!(matches("#", "owntracks/a/b"));
        assert!(matches("owntracks/+/+", "owntracks/alice/phone"));
        assert!(!matches("owntracks/+/+", "owntracks/alice"));
        assert!(!matches("drivers/drv-1/location", "drivers/drv-2/location"));
        assert!(!matches("a/b", "a/b/c"));
    }
}
