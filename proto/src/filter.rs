//! The one MQTT topic-filter matcher (`+` one level, `#` the rest), used by the broker's
//! sessions and by the dashboard's board alike; the topic policy walks the same
//! [`levels`] with its grants' placeholders filled (`broker/src/policy.rs`).

/// Whether `topic` matches the MQTT filter `filter`.
///
/// Level by level over bytes: every publish a subscriber's mark or the map's gap count
/// judges comes through here, and `str::split` cost more than the comparison itself.
pub fn matches(filter: &str, topic: &str) -> bool {
    matches_bytes(filter.as_bytes(), topic.as_bytes())
}

/// [`matches`] for a topic as it came off the wire, not checked as UTF-8 here (a filter
/// and a topic the gateway let through are UTF-8 already).
pub fn matches_bytes(filter: &[u8], topic: &[u8]) -> bool {
    levels_match(levels(filter), levels(topic))
}

/// Whether a topic's levels `t` match a filter's levels `f`: the rule of [`matches`] for
/// levels from anywhere (the policy's come with their placeholders filled).
pub fn levels_match<'a>(
    mut f: impl Iterator<Item = &'a [u8]>,
    mut t: impl Iterator<Item = &'a [u8]>,
) -> bool {
    loop {
        match (f.next(), t.next()) {
            (Some(b"#"), _) => return true,
            (Some(b"+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The levels of a topic or filter, as `str::split('/')` gives them (an empty name is one
/// empty level), as bytes.
pub fn levels(name: &[u8]) -> impl Iterator<Item = &[u8]> + Clone {
    name.split(|&c| c == b'/')
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

    /// What `matches` was, with `str::split`: the reference the byte-level one must agree
    /// with everywhere.
    fn split_matches(filter: &str, topic: &str) -> bool {
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

    #[test]
    fn matches_as_split_does_on_every_short_name() {
        // Every string of up to five characters over the ones that matter, as filter and
        // as topic (empty levels, leading and trailing slashes, wildcards mid-level).
        let alphabet = ['a', 'b', '/', '+', '#'];
        let mut names = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..5 {
            let next: Vec<String> = last
                .iter()
                .flat_map(|n| alphabet.iter().map(move |c| format!("{n}{c}")))
                .collect();
            names.extend(next.iter().cloned());
            last = next;
        }
        let mut agreed = 0;
        for f in &names {
            for t in &names {
                assert_eq!(matches(f, t), split_matches(f, t), "{f:?} against {t:?}");
                agreed += 1;
            }
        }
        assert_eq!(agreed, names.len() * names.len());
        assert!(levels(b"").eq([&b""[..]]));
        assert!(levels(b"/a/").eq([&b""[..], b"a", b""]));
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
