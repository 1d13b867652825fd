//! The broker a run loads: `mqtt://HOST:PORT` (TCP) or `ws://HOST:PORT/PATH` (WebSocket).
//!
//! The load tester's own type rather than the simulator's `Endpoint`: it writes MQTT frames
//! on plain sockets, so the TLS forms (`mqtts://`, `wss://`) are not representable here
//! instead of failing at connect time, and it needs no MQTT client library or rustls to
//! name a broker. Parsing and printing are `fleetcast_proto::broker_url`'s, so a report
//! names the broker as the command line did.

use fleetcast_proto::broker_url::{BrokerUrl, UrlError};
use std::fmt;
use std::str::FromStr;

/// Where the load goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// MQTT over TCP.
    Tcp {
        /// Host name or address.
        host: String,
        /// Port (default 1883).
        port: u16,
    },
    /// MQTT over WebSocket.
    Ws {
        /// The full `ws://` URL, path included.
        url: String,
        /// Port (default 80).
        port: u16,
    },
}

/// A URL the load tester cannot load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Not a broker URL.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// `mqtts://` or `wss://`.
    #[error("the load tester speaks mqtt:// and ws:// only (it writes MQTT frames itself)")]
    Tls,
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Target, TargetError> {
        match s.parse::<BrokerUrl>()? {
            BrokerUrl::Tcp { host, port } => Ok(Target::Tcp { host, port }),
            BrokerUrl::Ws { url, port } => Ok(Target::Ws { url, port }),
            BrokerUrl::Mqtts { .. } | BrokerUrl::Wss { .. } => Err(TargetError::Tls),
        }
    }
}

impl From<&Target> for BrokerUrl {
    fn from(t: &Target) -> BrokerUrl {
        match t.clone() {
            Target::Tcp { host, port } => BrokerUrl::Tcp { host, port },
            Target::Ws { url, port } => BrokerUrl::Ws { url, port },
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        BrokerUrl::from(self).fmt(f)
    }
}

impl Target {
    /// The host to resolve and the port to connect to.
    pub(crate) fn host_port(&self) -> Result<(String, u16), TargetError> {
        Ok(BrokerUrl::from(self).host_port())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_like_the_command_line() {
        let tcp: Target = "mqtt://127.0.0.1:1883".parse().expect("tcp");
        assert_eq!(
            tcp,
            Target::Tcp {
                host: "127.0.0.1".into(),
                port: 1883
            }
        );
        assert_eq!(tcp.to_string(), "mqtt://127.0.0.1:1883");
        let v6: Target = "mqtt://[::1]".parse().expect("v6");
        assert_eq!(v6.to_string(), "mqtt://[::1]:1883");
        assert_eq!(v6.host_port(), Ok(("::1".to_owned(), 1883)));
        let ws: Target = "ws://localhost:8083/mqtt".parse().expect("ws");
        assert_eq!(ws.to_string(), "ws://localhost:8083/mqtt");
        assert_eq!(ws.host_port(), Ok(("localhost".to_owned(), 8083)));
        for tls in ["mqtts://x", "wss://x/mqtt"] {
            assert_eq!(tls.parse::<Target>(), Err(TargetError::Tls), "{tls}");
        }
        assert!(matches!(
            "http://x".parse::<Target>(),
            Err(TargetError::Url(UrlError::Scheme(_)))
        ));
        assert!("nonsense".parse::<Target>().is_err());
    }
}
