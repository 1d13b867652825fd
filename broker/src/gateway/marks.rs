//! Notes the gateway attaches to a publish on its way through the router, for the
//! sessions it reaches.
//!
//! Two MQTT 5 subscription options need to know something rumqttd forgets: No Local (who
//! published it: the router does not say) and Retain As Published (whether it was sent
//! retained: the router clears the flag on everything it forwards live). The publishing
//! session writes that into a User Property with a key no client can send (it starts with
//! U+0000, which MQTT strings may not hold, and any such property from a client is
//! removed), and the receiving session takes it out again before the client sees the
//! publish. Publishes carry a mark only when some session asked for these options, so the
//! fleet's publishes pay nothing for them.

use rumqttd::protocol::PublishProperties;

/// The User Property key of the gateway's marks.
const KEY: &str = "\u{0}fleetcast";
/// The value that says the publish was sent retained.
const RETAINED: &str = "r";
/// The prefix of the value that names the publishing client.
const ORIGIN: &str = "o:";

/// What the marks on a forwarded publish said.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Marks {
    /// The client id that published it, when it marked it.
    pub(super) origin: Option<String>,
    /// It was published with the retain flag.
    pub(super) retained: bool,
}

/// Removes anything a client wrote that looks like a mark.
pub(super) fn scrub(props: &mut PublishProperties) {
    if !props.user_properties.is_empty() {
        props.user_properties.retain(|(k, _)| k != KEY);
    }
}

/// Marks a publish as sent by `client_id`, retained or not.
pub(super) fn mark(props: &mut Option<PublishProperties>, origin: Option<&str>, retained: bool) {
    if origin.is_none() && !retained {
        return;
    }
    let p = props.get_or_insert_with(PublishProperties::default);
    if let Some(id) = origin {
        p.user_properties
            .push((KEY.to_owned(), format!("{ORIGIN}{id}")));
    }
    if retained {
        p.user_properties
            .push((KEY.to_owned(), RETAINED.to_owned()));
    }
}

/// Takes the marks off a forwarded publish.
pub(super) fn take(props: &mut Option<PublishProperties>) -> Marks {
    let mut marks = Marks::default();
    let Some(p) = props.as_mut() else {
        return marks;
    };
    if p.user_properties.iter().all(|(k, _)| k != KEY) {
        return marks;
    }
    p.user_properties.retain(|(k, v)| {
        if k != KEY {
            return true;
        }
        if v == RETAINED {
            marks.retained = true;
        } else if let Some(id) = v.strip_prefix(ORIGIN) {
            marks.origin = Some(id.to_owned());
        }
        false
    });
    marks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_go_on_and_come_off_leaving_the_clients_properties() {
        let mut props = Some(PublishProperties {
            user_properties: vec![("k".into(), "v".into())],
            ..PublishProperties::default()
        });
        mark(&mut props, Some("drv-1"), true);
        assert_eq!(props.as_ref().map(|p| p.user_properties.len()), Some(3));
        let marks = take(&mut props);
        assert_eq!(marks.origin.as_deref(), Some("drv-1"));
        assert!(marks.retained);
        assert_eq!(
            props.map(|p| p.user_properties),
            Some(vec![("k".to_owned(), "v".to_owned())])
        );
        let mut none = None;
        mark(&mut none, None, false);
        assert_eq!(none, None, "nothing asked, nothing allocated");
        assert_eq!(take(&mut none), Marks::default());
    }

    #[test]
    fn a_client_cannot_forge_a_mark() {
        let mut p = PublishProperties {
            user_properties: vec![(KEY.into(), "o:someone".into()), ("a".into(), "b".into())],
            ..PublishProperties::default()
        };
        scrub(&mut p);
        assert_eq!(p.user_properties, [("a".to_owned(), "b".to_owned())]);
    }
}
