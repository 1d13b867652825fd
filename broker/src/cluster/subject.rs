//! MQTT topics and filters as NATS subjects, and topics as JetStream KV keys.
//!
//! MQTT levels may hold what NATS gives meaning to (`.` separates tokens, `*` and `>` are
//! wildcards, whitespace ends a subject, an empty token is invalid), so each level is
//! escaped: those bytes, every byte up to space, DEL and `%` itself become `%XX`, and an
//! empty level becomes a lone `%` (which no escaped level can be, since `%` is otherwise
//! always followed by two hex digits). Two different topics therefore never share a subject.
//! Filters map `+` to `*` and `#` to `>`; since MQTT's `a/#` also matches `a`, a filter
//! ending in `#` needs the parent subject as well ([`filter_subjects`]).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Escapes one MQTT level into one NATS token.
fn push_level(out: &mut String, level: &str) {
    if level.is_empty() {
        out.push('%');
        return;
    }
    for ch in level.chars() {
        let special = matches!(ch, '.' | '*' | '>' | '%' | '\u{7f}') || ch <= ' ';
        if special {
            out.push_str(&format!("%{:02X}", ch as u32));
        } else {
            out.push(ch);
        }
    }
}

/// The subject of `topic` under `prefix` (e.g. `fc.m`).
pub fn topic_subject(prefix: &str, topic: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + topic.len() + 8);
    out.push_str(prefix);
    for level in topic.split('/') {
        out.push('.');
        push_level(&mut out, level);
    }
    out
}

/// The topic a subject under `prefix` stands for; None for a subject this module did not
/// make (a peer must not be able to inject a topic MQTT forbids).
pub fn subject_topic(prefix: &str, subject: &str) -> Option<String> {
    let rest = subject.strip_prefix(prefix)?.strip_prefix('.')?;
    let mut topic = String::with_capacity(rest.len());
    for (i, token) in rest.split('.').enumerate() {
        if i > 0 {
            topic.push('/');
        }
        if token == "%" {
            continue;
        }
        let mut bytes = token.split('%');
        topic.push_str(bytes.next()?);
        for escaped in bytes {
            let code = u8::from_str_radix(escaped.get(..2)?, 16).ok()?;
            topic.push(char::from(code));
            topic.push_str(escaped.get(2..)?);
        }
    }
    let forbidden = topic.is_empty() || topic.contains(['+', '#', '\0']);
    (!forbidden).then_some(topic)
}

/// The subjects a node subscribes to for an MQTT `filter`: one, or two for a filter ending
/// in `#` (the parent level matches too). Empty for `#` alone under a prefix: it is `>`.
pub fn filter_subjects(prefix: &str, filter: &str) -> Vec<String> {
    let mut out = String::with_capacity(prefix.len() + filter.len() + 8);
    out.push_str(prefix);
    let levels: Vec<&str> = filter.split('/').collect();
    let mut parent = None;
    for (i, level) in levels.iter().enumerate() {
        match *level {
            "#" => {
                // `a/#` also matches `a`; a bare `#` has no parent level to add.
                if i > 0 {
                    parent = Some(out.clone());
                }
                out.push_str(".>");
            }
            "+" => out.push_str(".*"),
            _ => {
                out.push('.');
                push_level(&mut out, level);
            }
        }
    }
    let mut subjects = vec![out];
    subjects.extend(parent);
    subjects
}

/// A topic (or any text) as a JetStream KV key: URL-safe base64, whose alphabet KV keys
/// allow, so any topic is a valid and distinct key.
pub fn key_of(text: &str) -> String {
    URL_SAFE_NO_PAD.encode(text.as_bytes())
}

/// The text a [`key_of`] key stands for.
pub fn text_of_key(key: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(key).ok()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_that_look_alike_get_different_subjects() {
        let topics = [
            "a/b", "a.b", "a/b/", "a//b", "/a/b", "a/*", "a/>", "a b", "a/%", "a/%2E", "a/.", "a",
            "a/", "/",
        ];
        let subjects: std::collections::HashSet<String> =
            topics.iter().map(|t| topic_subject("fc.m", t)).collect();
        assert_eq!(subjects.len(), topics.len(), "{subjects:?}");
        for t in topics {
            let s = topic_subject("fc.m", t);
            assert!(
                !s.contains(' ') && !s.contains("..") && !s.ends_with('.'),
                "{s}"
            );
            for token in s.split('.') {
                assert!(token != "*" && token != ">" && !token.is_empty(), "{s}");
            }
            assert_eq!(subject_topic("fc.m", &s).as_deref(), Some(t), "{s}");
        }
    }

    #[test]
    fn filters_map_to_wildcards_and_hash_includes_the_parent() {
        assert_eq!(filter_subjects("fc.m", "a/b"), ["fc.m.a.b"]);
        assert_eq!(
            filter_subjects("fc.m", "drivers/+/location"),
            ["fc.m.drivers.*.location"]
        );
        assert_eq!(
            filter_subjects("fc.m", "drivers/#"),
            ["fc.m.drivers.>", "fc.m.drivers"]
        );
        assert_eq!(filter_subjects("fc.m", "#"), ["fc.m.>"]);
        assert_eq!(filter_subjects("fc.m", "a.b/+"), ["fc.m.a%2Eb.*"]);
        assert_eq!(filter_subjects("fc.m", "+/"), ["fc.m.*.%"]);
    }

    #[test]
    fn subjects_nobody_made_are_refused() {
        assert_eq!(subject_topic("fc.m", "other.a"), None);
        assert_eq!(subject_topic("fc.m", "fc.m.a%Z1"), None);
        assert_eq!(subject_topic("fc.m", "fc.m.a%2"), None);
        assert_eq!(subject_topic("fc.m", "fc.m.%23"), None, "# in a topic name");
        assert_eq!(subject_topic("fc.m", "fc.m.%00"), None);
    }

    #[test]
    fn keys_round_trip_and_use_the_kv_alphabet() {
        for t in ["drivers/drv-1/location", "a b/ä/.", "+"] {
            let k = key_of(t);
            assert!(k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
            assert_eq!(text_of_key(&k).as_deref(), Some(t));
        }
    }
}
