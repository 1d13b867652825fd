//! The MQTT version a session speaks, and the reason codes it answers with.
//!
//! rumqttd ships a decoder per version. Both assume they read only what a client may
//! send; rumqttd's v5 decoder reaches `unreachable!()` on a CONNACK, SUBACK, UNSUBACK or
//! PINGRESP from a client, so [`Version::read`] turns away every packet type a client may
//! not send before either decoder sees it. It also hands rumqttd only complete frames:
//! rumqttd consumes a frame before parsing it, so an "insufficient bytes" from inside a
//! complete frame (its v5 DISCONNECT without a property length, which MQTT 5 allows) would
//! otherwise drop the packet silently while the session waits for bytes that never come.

use bytes::BytesMut;
use rumqttd::protocol::v4::V4;
use rumqttd::protocol::v5::V5;
use rumqttd::protocol::{
    Disconnect, DisconnectReasonCode, Error as ProtocolError, Packet, Protocol,
};

/// The protocol level of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (level 4).
    V311,
    /// MQTT 5 (level 5).
    V5,
}

impl Version {
    /// The label used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V311 => "3.1.1",
            Version::V5 => "5",
        }
    }

    /// Decodes the next packet off `buf`; `InsufficientBytes` when it is not all there.
    ///
    /// # Errors
    /// A malformed packet, a packet larger than `max`, or one a client may not send.
    pub fn read(self, buf: &mut BytesMut, max: usize) -> Result<Packet, ProtocolError> {
        let Some(&first) = buf.first() else {
            return Err(ProtocolError::InsufficientBytes(2));
        };
        let kind = first >> 4;
        if !client_may_send(kind) {
            return Err(ProtocolError::InvalidPacketType(kind));
        }
        let (header, len) = match super::frame::remaining_length(buf) {
            Ok(Some(h)) => h,
            Ok(None) => return Err(ProtocolError::InsufficientBytes(1)),
            Err(_) => return Err(ProtocolError::MalformedRemainingLength),
        };
        if len > max {
            return Err(ProtocolError::PayloadSizeLimitExceeded(len));
        }
        if buf.len() < header + len {
            return Err(ProtocolError::InsufficientBytes(header + len - buf.len()));
        }
        if self == Version::V5 && first == 0xE0 && len == 1 {
            // DISCONNECT with a reason code and no property length (MQTT 5, 3.14.2.2).
            let reason = buf[2];
            let _ = buf.split_to(3);
            let reason_code = match reason {
                0x00 => DisconnectReasonCode::NormalDisconnection,
                0x04 => DisconnectReasonCode::DisconnectWithWillMessage,
                // The session only tells 0x00 from the rest.
                _ => DisconnectReasonCode::UnspecifiedError,
            };
            return Ok(Packet::Disconnect(Disconnect { reason_code }, None));
        }
        let parsed = match self {
            Version::V311 => V4.read_mut(buf, max),
            Version::V5 => V5.read_mut(buf, max),
        };
        match parsed {
            // The whole frame was there, and is now consumed: it is malformed.
            Err(ProtocolError::InsufficientBytes(_)) => Err(ProtocolError::MalformedPacket),
            other => other,
        }
    }

    /// Encodes `packet` onto `buf`.
    ///
    /// # Errors
    /// rumqttd could not encode it (a field too long for its length prefix).
    pub fn write(self, packet: Packet, buf: &mut BytesMut) -> Result<usize, ProtocolError> {
        match self {
            Version::V311 => V4.write(packet, buf),
            Version::V5 => V5.write(packet, buf),
        }
    }
}

/// CONNECT, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBSCRIBE, UNSUBSCRIBE, PINGREQ,
/// DISCONNECT. (AUTH, 15, is MQTT 5's, and rumqttd cannot decode it.)
fn client_may_send(kind: u8) -> bool {
    matches!(kind, 1 | 3..=8 | 10 | 12 | 14)
}

/// The MQTT 5 DISCONNECT reason a session sends before closing on a client that broke the
/// protocol (4.13: a server SHOULD say why). 3.1.1 has no server DISCONNECT: it closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// 0x81: a packet that does not parse, or a string that is not UTF-8 (1.5.4).
    Malformed,
    /// 0x82: a packet that parses but is not allowed here (a second CONNECT, acks out of
    /// order, packet id 0, a wildcard topic name).
    Protocol,
    /// 0x83: something the gateway itself could not do (an answer it could not encode).
    Implementation,
    /// 0x90: a topic name the server keeps for itself (`$`).
    TopicName,
    /// 0x94: a Topic Alias above the maximum the CONNACK granted (none: 0).
    TopicAlias,
    /// 0x95: a packet over the maximum packet size.
    PacketTooLarge,
    /// 0x93: more unacknowledged QoS 1/2 publishes than our Receive Maximum.
    ReceiveMaximum,
}

impl Violation {
    /// The reason code.
    pub fn code(self) -> u8 {
        match self {
            Violation::Malformed => 0x81,
            Violation::Protocol => 0x82,
            Violation::Implementation => 0x83,
            Violation::TopicName => 0x90,
            Violation::TopicAlias => 0x94,
            Violation::PacketTooLarge => 0x95,
            Violation::ReceiveMaximum => 0x93,
        }
    }

    /// The whole MQTT 5 DISCONNECT, saying `why` as its Reason String. Written by hand
    /// ([`with_reason_string`]): rumqttd 0.20's v5 encoder gives a DISCONNECT with a
    /// reason code and no properties a remaining length of 1 but writes two bytes after it.
    pub fn disconnect(self, why: &str) -> Vec<u8> {
        with_reason_string(&[0xE0], &[self.code()], why)
    }
}

/// The longest Reason String sent: enough to say why, short enough for any client's
/// Maximum Packet Size worth having.
const MAX_REASON: usize = 96;

/// A packet of `header` then `fixed` (the variable header before the properties) then one
/// property, the Reason String `why` (cut to [`MAX_REASON`] bytes at a char boundary).
pub(super) fn with_reason_string(header: &[u8], fixed: &[u8], why: &str) -> Vec<u8> {
    let mut end = why.len().min(MAX_REASON);
    while !why.is_char_boundary(end) {
        end -= 1;
    }
    let why = &why.as_bytes()[..end];
    // Property id, two length bytes, the string: under 128, so one length byte each.
    let props = 3 + why.len();
    let remaining = fixed.len() + 1 + props;
    let mut out = Vec::with_capacity(header.len() + 2 + remaining);
    out.extend_from_slice(header);
    out.push(remaining as u8);
    out.extend_from_slice(fixed);
    out.push(props as u8);
    out.push(0x1F);
    out.extend_from_slice(&(why.len() as u16).to_be_bytes());
    out.extend_from_slice(why);
    out
}

/// Why a CONNECT is refused, in terms both versions can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refuse {
    /// The protocol level is not one we speak.
    ProtocolVersion,
    /// The client id is empty without clean session, too long, or reserved.
    ClientId,
    /// Wrong username or password (3.1.1 answers 0x05 like mosquitto, 5 answers 0x86).
    BadCredentials,
    /// No credentials, or the account may not use this client id or will topic.
    NotAuthorized,
    /// The broker cannot take the connection now.
    Unavailable,
    /// This client id connected too often (or all clients together did).
    ConnectRate,
    /// MQTT 5 enhanced authentication (an Authentication Method), which we do not offer.
    BadAuthenticationMethod,
    /// A last will whose payload breaks the rules a PUBLISH to its topic must follow (a
    /// driver's location that is not a valid fix of that driver).
    InvalidWill,
    /// An MQTT 5 CONNECT property with a value the spec forbids (Receive Maximum 0,
    /// Maximum Packet Size 0, a request flag other than 0 or 1).
    ProtocolError,
}

impl Refuse {
    /// The CONNACK return code (3.1.1) or reason code (5).
    pub fn code(self, version: Version) -> u8 {
        match (self, version) {
            (Refuse::ProtocolVersion, Version::V311) => 0x01,
            (Refuse::ProtocolVersion, Version::V5) => 0x84,
            (Refuse::ClientId, Version::V311) => 0x02,
            (Refuse::ClientId, Version::V5) => 0x85,
            (Refuse::BadCredentials | Refuse::NotAuthorized, Version::V311) => 0x05,
            (Refuse::BadCredentials, Version::V5) => 0x86,
            (Refuse::NotAuthorized, Version::V5) => 0x87,
            (Refuse::Unavailable | Refuse::ConnectRate, Version::V311) => 0x03,
            (Refuse::Unavailable, Version::V5) => 0x88,
            (Refuse::ConnectRate, Version::V5) => 0x9F,
            // 3.1.1 has no enhanced authentication; its CONNECT cannot ask for it.
            (Refuse::BadAuthenticationMethod, Version::V311) => 0x05,
            (Refuse::BadAuthenticationMethod, Version::V5) => 0x8C,
            // MQTT 5 has the code: payload format invalid. 3.1.1 has none for a payload;
            // 3.1.4 says a CONNECT failing the server's own checks SHOULD get "an
            // appropriate" non-zero code: the will is not one this client may leave, so
            // not authorized, which is also what mosquitto answers a 3.1.1 will it refuses
            // for its payload (over its size limit). 0x02 and 0x04 would blame the id or
            // the password, 0x03 invites retrying the same will later.
            (Refuse::InvalidWill, Version::V311) => 0x05,
            (Refuse::InvalidWill, Version::V5) => 0x99,
            // A 3.1.1 CONNECT has no properties, so this refusal never happens in 3.1.1;
            // were it to, 3.1.4-1 closes without a CONNACK (`hello.rs` does).
            (Refuse::ProtocolError, Version::V311) => 0x01,
            (Refuse::ProtocolError, Version::V5) => 0x82,
        }
    }

    /// The whole CONNACK: no session present, and in MQTT 5 `why` as its Reason String
    /// (none when empty).
    pub fn connack(self, version: Version, why: &str) -> Vec<u8> {
        let code = self.code(version);
        match version {
            Version::V311 => vec![0x20, 0x02, 0x00, code],
            Version::V5 if why.is_empty() => vec![0x20, 0x03, 0x00, code, 0x00],
            Version::V5 => with_reason_string(&[0x20], &[0x00, code], why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_packets_from_a_client_are_refused_before_rumqttd_sees_them() {
        for version in [Version::V311, Version::V5] {
            // CONNACK, SUBACK, UNSUBACK, PINGRESP, AUTH, reserved 0.
            for bytes in [
                &[0x20, 0x02, 0x00, 0x00][..],
                &[0x90, 0x03, 0x00, 0x01, 0x00],
                &[0xB0, 0x02, 0x00, 0x01],
                &[0xD0, 0x00],
                &[0xF0, 0x00],
                &[0x00, 0x00],
            ] {
                let mut buf = BytesMut::from(bytes);
                assert!(
                    matches!(
                        version.read(&mut buf, 1024),
                        Err(ProtocolError::InvalidPacketType(_))
                    ),
                    "{version:?} {bytes:02x?}"
                );
            }
        }
    }

    #[test]
    fn frames_are_handed_over_whole_and_a_short_v5_disconnect_is_read() {
        // Half a PUBLISH: wait, and nothing is consumed.
        let publish = [0x30, 0x04, 0, 1, b'a', b'x'];
        let mut buf = BytesMut::from(&publish[..4]);
        assert!(matches!(
            Version::V311.read(&mut buf, 1024),
            Err(ProtocolError::InsufficientBytes(_))
        ));
        assert_eq!(buf.len(), 4);
        // Over the limit before it is all there: refused at once.
        let mut buf = BytesMut::from(&[0x30, 0xFF, 0x7F][..]);
        assert!(matches!(
            Version::V311.read(&mut buf, 1024),
            Err(ProtocolError::PayloadSizeLimitExceeded(_))
        ));
        // DISCONNECT 0x04 without properties, then a PINGREQ.
        let mut buf = BytesMut::from(&[0xE0, 0x01, 0x04, 0xC0, 0x00][..]);
        match Version::V5.read(&mut buf, 1024) {
            Ok(Packet::Disconnect(d, _)) => {
                assert_eq!(
                    d.reason_code,
                    DisconnectReasonCode::DisconnectWithWillMessage
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Version::V5.read(&mut buf, 1024),
            Ok(Packet::PingReq(_))
        ));
    }

    #[test]
    fn a_v5_disconnect_reads_back_with_its_reason() {
        let mut buf = BytesMut::from(&Violation::Protocol.disconnect("a second CONNECT")[..]);
        match Version::V5.read(&mut buf, 1024) {
            Ok(Packet::Disconnect(d, _)) => {
                assert_eq!(d.reason_code, DisconnectReasonCode::ProtocolError)
            }
            other => panic!("{other:?}"),
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn refusals_answer_in_the_clients_version() {
        assert_eq!(
            Refuse::BadCredentials.connack(Version::V311, "no"),
            [0x20, 0x02, 0x00, 0x05]
        );
        assert_eq!(
            Refuse::BadCredentials.connack(Version::V5, ""),
            [0x20, 0x03, 0x00, 0x86, 0x00]
        );
        // A Reason String (0x1F) after the code, in the property length it declares.
        assert_eq!(
            Refuse::BadCredentials.connack(Version::V5, "no"),
            [0x20, 0x08, 0x00, 0x86, 0x05, 0x1F, 0x00, 0x02, b'n', b'o']
        );
        let long = "é".repeat(100);
        let d = Violation::Protocol.disconnect(&long);
        assert_eq!(usize::from(d[1]) + 2, d.len());
        assert!(d.len() <= 2 + 2 + 3 + MAX_REASON);
        assert!(
            std::str::from_utf8(&d[7..]).is_ok(),
            "cut at a char boundary"
        );
        assert_eq!(Refuse::NotAuthorized.code(Version::V5), 0x87);
        assert_eq!(Refuse::ConnectRate.code(Version::V5), 0x9F);
        assert_eq!(Refuse::InvalidWill.code(Version::V5), 0x99);
        assert_eq!(Refuse::InvalidWill.code(Version::V311), 0x05);
        assert_eq!(
            Refuse::ProtocolError.connack(Version::V5, ""),
            [0x20, 0x03, 0x00, 0x82, 0x00]
        );
    }
}
