//! What a CONNECT may not ask for beyond what rumqttd's codecs parse: MQTT 5 property
//! values the spec forbids, and a last will that a PUBLISH could not carry.
//!
//! rumqttd decodes these and passes them on: a Receive Maximum of 0 or a will whose
//! payload the gateway would refuse as a PUBLISH (a driver's location that is not a valid
//! fix) would otherwise reach the router, the will long after the client could be told.
//! [`super::hello`] calls these while checking the CONNECT, so the fuzz target runs them.

use super::codec::{Refuse, Version};
use super::frame;
use super::hello::Refusal;
use crate::config::Limits;
use rumqttd::protocol::{ConnectProperties, LastWill};

/// MQTT 5 CONNECT properties whose value the spec makes a protocol error (3.1.2.11): the
/// router would take them as they are. A duplicated property is one too, but rumqttd keeps
/// the last one without telling.
pub(super) fn check_properties(p: &ConnectProperties, version: Version) -> Result<(), Refusal> {
    let why = if p.receive_maximum == Some(0) {
        "Receive Maximum 0"
    } else if p.max_packet_size == Some(0) {
        "Maximum Packet Size 0"
    } else if p.request_response_info.is_some_and(|v| v > 1)
        || p.request_problem_info.is_some_and(|v| v > 1)
    {
        "a request flag other than 0 or 1"
    } else {
        return Ok(());
    };
    Err(match version {
        Version::V5 => Refusal::Answer(Refuse::ProtocolError, version, "malformed_connect", why),
        // 3.1.1 has no properties nor a code for this (3.1.4-1: close, no CONNACK).
        Version::V311 => Refusal::Close("malformed_connect", why.into()),
    })
}

/// A will is published on the client's behalf when its connection is lost, so it must pass
/// what a PUBLISH would: a valid topic name, and on a driver's location topic a valid fix of
/// that driver (or empty). Checked at CONNECT, the only time the client can be told.
pub(super) fn check_will(
    will: &LastWill,
    version: Version,
    limits: &Limits,
    now_ms: u64,
) -> Result<(), Refusal> {
    if !frame::valid_topic_name(&will.topic) {
        return Err(Refusal::Close(
            "malformed_connect",
            "invalid will topic".into(),
        ));
    }
    if limits.validate_locations
        && fleetcast_proto::location::check(&will.topic, &will.message, now_ms).is_err()
    {
        return Err(Refusal::Answer(
            Refuse::InvalidWill,
            version,
            "invalid_will",
            "will payload is not a valid location of its topic's driver",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::hello::{check_hello, Hello};
    use super::*;
    use crate::config::Config;
    use rumqttd::protocol::Packet;

    use crate::gateway::wire::connect_packet as connect;

    fn limits() -> Limits {
        Config::default().limits
    }

    fn check(packet: Packet, version: Version, limits: &Limits) -> Result<Hello, Refusal> {
        check_hello(packet, version, limits, 1_800_000_000_000)
    }

    fn refused(r: Result<Hello, Refusal>) -> Refusal {
        r.expect_err("refused")
    }

    #[test]
    fn forbidden_mqtt5_property_values_get_0x82() {
        // Receive Maximum 0, Maximum Packet Size 0, Request Problem Information 2.
        for props in [&[0x21, 0, 0][..], &[0x27, 0, 0, 0, 0], &[0x17, 2]] {
            let r = refused(check(
                connect(Version::V5, true, "a", None, props),
                Version::V5,
                &limits(),
            ));
            assert!(
                matches!(r, Refusal::Answer(Refuse::ProtocolError, Version::V5, _, _)),
                "{r:?}"
            );
        }
        // Topic Alias Maximum 0 is the default, Receive Maximum 1 the least allowed.
        for props in [&[0x22, 0, 0][..], &[0x21, 0, 1]] {
            assert!(check(
                connect(Version::V5, true, "a", None, props),
                Version::V5,
                &limits()
            )
            .is_ok());
        }
    }

    #[test]
    fn a_will_on_a_location_topic_must_be_a_valid_fix() {
        // The test CONNECT's will says "bye": not a location.
        for version in [Version::V311, Version::V5] {
            let bad = connect(version, true, "drv-1", Some("drivers/drv-1/location"), &[]);
            let r = refused(check(bad, version, &limits()));
            assert!(
                matches!(r, Refusal::Answer(Refuse::InvalidWill, v, "invalid_will", _) if v == version),
                "{r:?}"
            );
            let status = connect(version, true, "drv-1", Some("drivers/drv-1/status"), &[]);
            assert!(
                check(status, version, &limits()).is_ok(),
                "other topics are not inspected"
            );
        }
        let unchecked = Limits {
            validate_locations: false,
            ..limits()
        };
        let bad = connect(
            Version::V5,
            true,
            "drv-1",
            Some("drivers/drv-1/location"),
            &[],
        );
        assert!(check(bad, Version::V5, &unchecked).is_ok());
    }
}
