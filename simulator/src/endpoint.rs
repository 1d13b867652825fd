//! Broker URLs: `mqtt://HOST:PORT` (TCP) and `ws://HOST:PORT/PATH` (WebSocket).
//!
//! `mqtts://` and `wss://` are recognised and refused with a clear message until fleetcast
//! has TLS.

use rumqttc::{MqttOptions, Transport};
use std::fmt;
use std::str::FromStr;

/// Where a client connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
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

/// A URL that is not a usable broker address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// Not a URL.
    #[error("not a URL: {0}")]
    Url(String),
    /// A scheme other than mqtt:// or ws://.
    #[error("unsupported scheme {0}:// (use mqtt://HOST:PORT or ws://HOST:PORT/mqtt)")]
    Scheme(String),
    /// TLS was asked for.
    #[error("{0}:// needs TLS, which fleetcast does not have yet; use mqtt:// or ws://")]
    Tls(String),
    /// No host in the URL.
    #[error("no host in {0}")]
    NoHost(String),
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Endpoint, EndpointError> {
        let url = url::Url::parse(s).map_err(|e| EndpointError::Url(format!("{s} ({e})")))?;
        let host = url
            .host_str()
            .ok_or_else(|| EndpointError::NoHost(s.to_owned()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        match url.scheme() {
            "mqtt" | "tcp" => Ok(Endpoint::Tcp {
                host,
                port: url.port().unwrap_or(1883),
            }),
            "ws" => Ok(Endpoint::Ws {
                port: url.port().unwrap_or(80),
                url: url.to_string(),
            }),
            scheme @ ("mqtts" | "ssl" | "wss") => Err(EndpointError::Tls(scheme.to_owned())),
            other => Err(EndpointError::Scheme(other.to_owned())),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp { host, port } if host.contains(':') => {
                write!(f, "mqtt://[{host}]:{port}")
            }
            Endpoint::Tcp { host, port } => write!(f, "mqtt://{host}:{port}"),
            Endpoint::Ws { url, .. } => f.write_str(url),
        }
    }
}

impl Endpoint {
    /// rumqttc options for a client with this id.
    pub fn options(&self, client_id: &str) -> MqttOptions {
        match self {
            Endpoint::Tcp { host, port } => MqttOptions::new(client_id, host.clone(), *port),
            Endpoint::Ws { url, port } => {
                let mut o = MqttOptions::new(client_id, url.clone(), *port);
                o.set_transport(Transport::Ws);
                o
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(
            "mqtt://127.0.0.1:1883".parse(),
            Ok(Endpoint::Tcp {
                host: "127.0.0.1".into(),
                port: 1883
            })
        );
        assert_eq!(
            "mqtt://localhost".parse(),
            Ok(Endpoint::Tcp {
                host: "localhost".into(),
                port: 1883
            })
        );
        let ws: Endpoint = "ws://127.0.0.1:8083/mqtt".parse().expect("ws");
        assert_eq!(ws.to_string(), "ws://127.0.0.1:8083/mqtt");
        assert!(matches!(
            "mqtts://x:8883".parse::<Endpoint>(),
            Err(EndpointError::Tls(_))
        ));
        assert!(matches!(
            "http://x".parse::<Endpoint>(),
            Err(EndpointError::Scheme(_))
        ));
        assert!("nonsense".parse::<Endpoint>().is_err());
    }
}
