//! What a CONNECT may ask for, and who the client it admits is.
//!
//! rumqttd would accept ids, wills and sessions it cannot serve: it silently refuses some
//! client ids, keeps no session for a made-up one, and knows nothing of accounts. So the
//! CONNECT is checked here against the gateway's limits, and the will against the
//! account's policy (a will is published on the client's behalf, so it gets no more room
//! than a PUBLISH). Nothing here touches a socket: [`super::handshake`] calls it between
//! reads, and the fuzz target (`decode.rs`) calls it on every CONNECT it is fed.

use super::codec::{Refuse, Version};
use super::connect_rules;
pub(super) use super::delivery::Takes;
use super::frame;
use crate::auth::Denial;
use crate::config::Limits;
use crate::policy::Grants;
use rumqttd::protocol::{
    ConnAck, ConnAckProperties, ConnectReturnCode, LastWill, LastWillProperties, Login, Packet,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

static AUTO_ID: AtomicU64 = AtomicU64::new(1);

/// A checked CONNECT.
#[derive(Debug)]
pub(super) struct Hello {
    pub(super) version: Version,
    pub(super) client_id: String,
    /// Whether the broker made the id up (MQTT 5 then says so in the CONNACK).
    pub(super) assigned_id: bool,
    /// Start afresh, discarding a session the router keeps for this id (3.1.1's clean
    /// session, MQTT 5's Clean Start).
    pub(super) clean_start: bool,
    /// Seconds the session outlives the connection, as granted: 0 ends it with the
    /// connection. A persistent 3.1.1 session gets `max_session_expiry_secs`.
    pub(super) session_expiry: u32,
    /// Whether the CONNACK must tell the client its session expiry (it asked for more).
    pub(super) expiry_capped: bool,
    /// The keep alive in force (s; 0: none).
    pub(super) keep_alive: u16,
    /// Whether the keep alive is ours, not the client's (MQTT 5 says so in the CONNACK).
    pub(super) keep_alive_ours: bool,
    pub(super) will: Option<LastWill>,
    /// MQTT 5 will properties: the will delay, and what the will's PUBLISH carries.
    pub(super) will_properties: Option<LastWillProperties>,
    /// What the client can take, from its MQTT 5 CONNECT properties.
    pub(super) takes: Takes,
    pub(super) login: Option<Login>,
}

/// Who a session is, for the topic policy.
#[derive(Debug)]
pub(super) struct Identity {
    client_id: String,
    username: String,
    /// None when no credentials file is in force: every topic is allowed.
    grants: Option<Arc<Grants>>,
}

impl Identity {
    /// The client id.
    pub(super) fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Whether this client may publish to `topic` (a topic that is not UTF-8 matches no
    /// grant).
    pub(super) fn may_publish(&self, topic: &[u8]) -> bool {
        match (&self.grants, std::str::from_utf8(topic)) {
            (None, _) => true,
            (Some(g), Ok(t)) => g.may_publish(t, &self.client_id, &self.username),
            (Some(_), Err(_)) => false,
        }
    }

    /// Whether this client may subscribe to `filter`.
    pub(super) fn may_subscribe(&self, filter: &str) -> bool {
        self.grants
            .as_ref()
            .is_none_or(|g| g.may_subscribe(filter, &self.client_id, &self.username))
    }
}

/// Why the handshake did not produce a session.
#[derive(Debug)]
pub(super) enum Refusal {
    /// Answer with this CONNACK code in this version, then close; the meter reason and a
    /// note for the log.
    Answer(Refuse, Version, &'static str, &'static str),
    /// Close without an answer (not MQTT, malformed, closed); the meter reason and why.
    Close(&'static str, String),
}

impl Refusal {
    /// The `reason` label of the refusal meter.
    pub(super) fn reason(&self) -> &'static str {
        match self {
            Refusal::Answer(_, _, reason, _) | Refusal::Close(reason, _) => reason,
        }
    }
}

/// Checks what the first packet asks for against what the gateway and the router can give,
/// its will against the location rules as at `now_ms` (ms since the epoch).
pub(super) fn check_hello(
    packet: Packet,
    version: Version,
    limits: &Limits,
    now_ms: u64,
) -> Result<Hello, Refusal> {
    let Packet::Connect(connect, properties, will, will_properties, login) = packet else {
        return Err(Refusal::Close(
            "malformed_connect",
            "first packet is not CONNECT".into(),
        ));
    };
    if properties
        .as_ref()
        .is_some_and(|p| p.authentication_method.is_some())
    {
        return Err(Refusal::Answer(
            Refuse::BadAuthenticationMethod,
            version,
            "not_authorized",
            "MQTT 5 enhanced authentication is not supported",
        ));
    }
    if let Some(p) = &properties {
        connect_rules::check_properties(p, version)?;
    }
    let asked = match version {
        Version::V311 if connect.clean_session => 0,
        Version::V311 => u32::MAX,
        // Absent: the session ends with the connection.
        Version::V5 => properties
            .as_ref()
            .and_then(|p| p.session_expiry_interval)
            .unwrap_or(0),
    };
    let session_expiry = asked.min(limits.max_session_expiry_secs);
    // A made-up id cannot be resumed, so a session meant to be (the old rule kept for
    // MQTT 5: Clean Start 0 and an expiry) needs the client's own.
    let resumable = !connect.clean_session && (version == Version::V311 || session_expiry > 0);
    let (client_id, assigned_id) = session_id(connect.client_id, resumable, version, limits)?;
    if let Some(w) = &will {
        connect_rules::check_will(w, version, limits, now_ms)?;
    }
    let (keep_alive, keep_alive_ours) = keep_alive(connect.keep_alive, version, limits);
    Ok(Hello {
        version,
        client_id,
        assigned_id,
        clean_start: connect.clean_session,
        session_expiry,
        expiry_capped: version == Version::V5 && session_expiry != asked,
        keep_alive,
        keep_alive_ours,
        will,
        will_properties,
        takes: Takes::of(properties.as_ref()),
        login,
    })
}

/// The keep alive in force, and whether it is ours: a client asking none or more than
/// `max_keep_alive_secs` gets that. A 3.1.1 client cannot be told, so it keeps its own.
fn keep_alive(asked: u16, version: Version, limits: &Limits) -> (u16, bool) {
    let max = limits.max_keep_alive_secs;
    if version == Version::V5 && max > 0 && (asked == 0 || asked > max) {
        (max, true)
    } else {
        (asked, false)
    }
}

/// The id a session goes by, and whether the broker made it up (for an empty one).
fn session_id(
    id: String,
    persistent: bool,
    version: Version,
    limits: &Limits,
) -> Result<(String, bool), Refusal> {
    let assigned = id.is_empty();
    // A made-up id cannot be resumed: only a session that ends with the connection.
    if assigned && persistent {
        return Err(Refusal::Answer(
            Refuse::ClientId,
            version,
            "bad_client_id",
            "empty client id needs clean session",
        ));
    }
    let id = match assigned {
        true => format!("fc-auto-{}", AUTO_ID.fetch_add(1, Ordering::Relaxed)),
        false => id,
    };
    if !frame::valid_client_id(&id, limits.max_client_id_len) {
        return Err(Refusal::Answer(
            Refuse::ClientId,
            version,
            "bad_client_id",
            "client id too long, reserved, or has + # / $",
        ));
    }
    Ok((id, assigned))
}

/// The account name the policy's `${username}` stands for: a certificate login is the
/// account its common name names.
pub(super) fn username(hello: &Hello, certificate: Option<&str>) -> String {
    match certificate {
        Some(cn) => cn.to_owned(),
        None => hello
            .login
            .as_ref()
            .map(|l| l.username.clone())
            .unwrap_or_default(),
    }
}

/// The refusal for credentials the account file turned down.
pub(super) fn denied(denial: Denial, version: Version) -> Refusal {
    let (code, why) = match denial {
        Denial::NoCredentials => (Refuse::NotAuthorized, "no username/password"),
        Denial::BadCredentials => (Refuse::BadCredentials, "wrong username or password"),
        Denial::ClientIdNotAllowed => (
            Refuse::NotAuthorized,
            "client id not allowed for this account",
        ),
    };
    Refusal::Answer(code, version, "not_authorized", why)
}

/// The identity of an authenticated client, once its will is known to be one it may
/// publish: a will is published on its behalf, so it gets no more room than a PUBLISH.
pub(super) fn admit(
    hello: &Hello,
    username: String,
    grants: Option<Arc<Grants>>,
) -> Result<Identity, Refusal> {
    let identity = Identity {
        client_id: hello.client_id.clone(),
        username,
        grants,
    };
    if hello
        .will
        .as_ref()
        .is_some_and(|w| !identity.may_publish(&w.topic))
    {
        return Err(Refusal::Answer(
            Refuse::NotAuthorized,
            hello.version,
            "not_authorized",
            "will topic not allowed by the policy",
        ));
    }
    Ok(identity)
}

/// The CONNACK of an accepted connection. MQTT 5 clients learn the gateway's limits up
/// front, and what it granted where it is not what they asked. Retained messages,
/// wildcard, shared subscriptions and subscription identifiers are available, QoS up to
/// 2: all absent, which says so.
pub(super) fn connack(hello: &Hello, session_present: bool, limits: &Limits) -> Packet {
    let properties = (hello.version == Version::V5).then(|| ConnAckProperties {
        session_expiry_interval: hello.expiry_capped.then_some(hello.session_expiry),
        receive_max: Some(limits.receive_maximum),
        max_packet_size: u32::try_from(limits.max_packet_size).ok(),
        assigned_client_identifier: hello.assigned_id.then(|| hello.client_id.clone()),
        topic_alias_max: Some(limits.topic_alias_maximum).filter(|&m| m > 0),
        server_keep_alive: hello.keep_alive_ours.then_some(hello.keep_alive),
        ..ConnAckProperties::default()
    });
    Packet::ConnAck(
        ConnAck {
            session_present,
            code: ConnectReturnCode::Success,
        },
        properties,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    use crate::gateway::wire::connect_packet as connect;

    fn limits() -> Limits {
        Config::default().limits
    }

    /// When the tests' locations are checked.
    const NOW: u64 = 1_800_000_000_000;

    fn check(packet: Packet, version: Version, limits: &Limits) -> Result<Hello, Refusal> {
        check_hello(packet, version, limits, NOW)
    }

    fn refused(r: Result<Hello, Refusal>) -> Refusal {
        r.expect_err("refused")
    }

    #[test]
    fn a_plain_connect_is_a_clean_session_with_its_own_id() {
        for version in [Version::V311, Version::V5] {
            let h = check(
                connect(version, true, "drv-1", None, &[]),
                version,
                &limits(),
            )
            .expect("accepted");
            assert_eq!((h.client_id.as_str(), h.assigned_id), ("drv-1", false));
            assert!(h.clean_start);
            assert_eq!(h.session_expiry, 0);
            assert_eq!((h.keep_alive, h.keep_alive_ours), (60, false));
            assert_eq!(h.version, version);
            assert_eq!(h.takes, Takes::ANYTHING);
        }
    }

    #[test]
    fn a_persistent_session_is_what_each_version_calls_one() {
        let max = limits().max_session_expiry_secs;
        let v311 = check(
            connect(Version::V311, false, "a", None, &[]),
            Version::V311,
            &limits(),
        )
        .expect("accepted");
        assert_eq!((v311.clean_start, v311.session_expiry), (false, max));
        assert!(!v311.expiry_capped, "3.1.1 cannot be told");
        // MQTT 5 without a session expiry ends the session with the connection.
        let v5 = check(
            connect(Version::V5, false, "a", None, &[]),
            Version::V5,
            &limits(),
        )
        .expect("accepted");
        assert_eq!((v5.clean_start, v5.session_expiry), (false, 0));
        let expiry = [0x11, 0, 0, 0, 60];
        let v5 = check(
            connect(Version::V5, true, "a", None, &expiry),
            Version::V5,
            &limits(),
        )
        .expect("accepted");
        assert_eq!((v5.clean_start, v5.session_expiry), (true, 60));
        // "Never" is more than we keep: the CONNACK says what is granted.
        let never = [0x11, 0xFF, 0xFF, 0xFF, 0xFF];
        let v5 = check(
            connect(Version::V5, false, "a", None, &never),
            Version::V5,
            &limits(),
        )
        .expect("accepted");
        assert_eq!((v5.session_expiry, v5.expiry_capped), (max, true));
    }

    #[test]
    fn keep_alive_and_what_the_client_takes_come_from_its_connect() {
        let limits = Limits {
            max_keep_alive_secs: 30,
            ..limits()
        };
        // Receive Maximum 5, Maximum Packet Size 300, Topic Alias Maximum 4, no problems.
        let props = [0x21, 0, 5, 0x27, 0, 0, 1, 44, 0x22, 0, 4, 0x17, 0];
        let h = check(
            connect(Version::V5, true, "a", None, &props),
            Version::V5,
            &limits,
        )
        .expect("accepted");
        assert_eq!((h.keep_alive, h.keep_alive_ours), (30, true), "asked 60");
        let want = Takes {
            receive_max: 5,
            max_packet_size: Some(300),
            topic_alias_max: 4,
            problem_info: false,
        };
        assert_eq!(h.takes, want);
        let Packet::ConnAck(_, Some(p)) = connack(&h, false, &limits) else {
            panic!("an MQTT 5 CONNACK has properties");
        };
        assert_eq!(p.server_keep_alive, Some(30));
        let h = check(
            connect(Version::V311, true, "a", None, &[]),
            Version::V311,
            &limits,
        )
        .expect("accepted");
        assert_eq!(
            (h.keep_alive, h.keep_alive_ours),
            (60, false),
            "3.1.1 keeps its own"
        );
    }

    #[test]
    fn an_empty_id_is_made_up_only_for_a_clean_session() {
        let h = check(
            connect(Version::V5, true, "", None, &[]),
            Version::V5,
            &limits(),
        )
        .expect("accepted");
        assert!(h.assigned_id);
        assert!(h.client_id.starts_with("fc-auto-"), "{}", h.client_id);
        let r = refused(check(
            connect(Version::V311, false, "", None, &[]),
            Version::V311,
            &limits(),
        ));
        assert!(
            matches!(
                r,
                Refusal::Answer(Refuse::ClientId, Version::V311, "bad_client_id", _)
            ),
            "{r:?}"
        );
    }

    #[test]
    fn ids_the_router_cannot_take_are_refused() {
        let long = "x".repeat(limits().max_client_id_len + 1);
        for id in [long.as_str(), "a/b", "a+", "$sys", "fleetcast:dashboard"] {
            let r = refused(check(
                connect(Version::V5, true, id, None, &[]),
                Version::V5,
                &limits(),
            ));
            assert_eq!(r.reason(), "bad_client_id", "{id}");
        }
        let longest = "x".repeat(limits().max_client_id_len);
        assert!(check(
            connect(Version::V5, true, &longest, None, &[]),
            Version::V5,
            &limits()
        )
        .is_ok());
    }

    #[test]
    fn enhanced_authentication_is_refused_and_bad_will_topics_closed() {
        let method = [0x15, 0, 5, b'S', b'C', b'R', b'A', b'M'];
        let r = refused(check(
            connect(Version::V5, true, "a", None, &method),
            Version::V5,
            &limits(),
        ));
        assert!(
            matches!(
                r,
                Refusal::Answer(
                    Refuse::BadAuthenticationMethod,
                    Version::V5,
                    "not_authorized",
                    _
                )
            ),
            "{r:?}"
        );
        for topic in ["a/#", "$SYS/x"] {
            let r = refused(check(
                connect(Version::V311, true, "a", Some(topic), &[]),
                Version::V311,
                &limits(),
            ));
            assert!(matches!(r, Refusal::Close("malformed_connect", _)), "{r:?}");
        }
        let ping = Packet::PingReq(rumqttd::protocol::PingReq);
        assert_eq!(
            refused(check(ping, Version::V5, &limits())).reason(),
            "malformed_connect"
        );
    }

    fn hello(will: Option<&str>) -> Hello {
        let packet = connect(Version::V5, true, "drv-1", will, &[]);
        check(packet, Version::V5, &limits()).expect("accepted")
    }

    #[test]
    fn a_will_must_be_a_topic_the_account_may_publish() {
        let driver = Some(Arc::new(Grants::driver()));
        assert!(admit(
            &hello(Some("drivers/drv-1/status")),
            "u".into(),
            driver.clone()
        )
        .is_ok());
        let r = admit(
            &hello(Some("drivers/drv-2/status")),
            "u".into(),
            driver.clone(),
        );
        let r = r.expect_err("someone else's topic");
        assert!(
            matches!(
                r,
                Refusal::Answer(Refuse::NotAuthorized, Version::V5, "not_authorized", _)
            ),
            "{r:?}"
        );
        assert!(admit(&hello(None), "u".into(), driver).is_ok());
        // No credentials file: every topic is allowed.
        assert!(admit(&hello(Some("any/topic")), String::new(), None).is_ok());
    }

    #[test]
    fn the_policy_sees_the_client_and_account_it_names() {
        let grants = Grants {
            publish: vec!["u/${username}/c/${clientid}".into()],
            subscribe: vec!["in/${clientid}/#".into()],
        };
        let identity = admit(&hello(None), "bob".into(), Some(Arc::new(grants))).expect("admitted");
        assert!(identity.may_publish(b"u/bob/c/drv-1"));
        assert!(!identity.may_publish(b"u/alice/c/drv-1"));
        assert!(!identity.may_publish(b"u/bob/c/\xff"));
        assert!(identity.may_subscribe("in/drv-1/+"));
        assert!(!identity.may_subscribe("in/drv-2/+"));
        let open = admit(&hello(None), String::new(), None).expect("admitted");
        assert!(open.may_publish(&[0xff, 0xfe]));
        assert!(open.may_subscribe("#"));
    }

    #[test]
    fn a_certificate_names_the_account_a_login_otherwise() {
        let mut h = hello(None);
        assert_eq!(username(&h, None), "");
        h.login = Some(Login {
            username: "bob".into(),
            password: "pw".into(),
        });
        assert_eq!(username(&h, None), "bob");
        assert_eq!(username(&h, Some("drv-1")), "drv-1");
    }

    #[test]
    fn denials_answer_in_the_codes_clients_expect() {
        let code = |d| match denied(d, Version::V311) {
            Refusal::Answer(code, Version::V311, "not_authorized", _) => code,
            r => panic!("{r:?}"),
        };
        assert_eq!(code(Denial::BadCredentials), Refuse::BadCredentials);
        assert_eq!(code(Denial::NoCredentials), Refuse::NotAuthorized);
        assert_eq!(code(Denial::ClientIdNotAllowed), Refuse::NotAuthorized);
    }

    #[test]
    fn only_mqtt5_connacks_carry_the_limits_and_an_assigned_id() {
        let h = check(
            connect(Version::V5, true, "", None, &[]),
            Version::V5,
            &limits(),
        )
        .expect("accepted");
        let Packet::ConnAck(ack, Some(p)) = connack(&h, false, &limits()) else {
            panic!("an MQTT 5 CONNACK has properties");
        };
        assert!(!ack.session_present);
        assert_eq!(ack.code, ConnectReturnCode::Success);
        assert_eq!(p.max_packet_size, Some(131_072));
        assert_eq!(
            p.assigned_client_identifier.as_deref(),
            Some(h.client_id.as_str())
        );
        assert_eq!(p.subscription_identifiers_available, None, "available");
        assert_eq!(p.topic_alias_max, Some(10));
        assert_eq!(p.receive_max, Some(100));
        assert_eq!(
            (p.server_keep_alive, p.session_expiry_interval),
            (None, None)
        );
        let h = check(
            connect(Version::V311, false, "a", None, &[]),
            Version::V311,
            &limits(),
        )
        .expect("accepted");
        let Packet::ConnAck(ack, None) = connack(&h, true, &limits()) else {
            panic!("a 3.1.1 CONNACK has no properties");
        };
        assert!(ack.session_present);
    }
}
