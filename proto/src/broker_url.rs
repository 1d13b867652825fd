//! Broker URLs as every command spells them: `mqtt://HOST:PORT` (TCP), `ws://HOST:PORT/PATH`
//! (WebSocket) and their TLS forms `mqtts://HOST:PORT` and `wss://HOST:PORT/PATH`, with
//! default ports, IPv6 brackets, and a suggestion for the common slip of a bare
//! `HOST:PORT`. The simulator's `Endpoint` and the load tester's `Target` are built on it.

use std::fmt;
use std::str::FromStr;

/// A broker address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerUrl {
    /// MQTT over TCP.
    Tcp {
        /// Host name or address (without IPv6 brackets).
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
    /// MQTT over TLS.
    Mqtts {
        /// Host name or address (checked against the server certificate).
        host: String,
        /// Port (default 8883).
        port: u16,
    },
    /// MQTT over WebSocket over TLS.
    Wss {
        /// The full `wss://` URL, path included.
        url: String,
        /// Port (default 443).
        port: u16,
    },
}

/// A string that is not a broker URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// No `scheme://` at all, e.g. `127.0.0.1:1883`.
    #[error("{0} is not a broker URL: did you mean mqtt://{0}? (or mqtts://, ws://HOST:PORT/mqtt, wss://HOST:PORT/mqtt)")]
    NoScheme(String),
    /// Not a URL.
    #[error("not a URL: {0}")]
    Url(String),
    /// No host in the URL.
    #[error("no host in {0}")]
    NoHost(String),
    /// A scheme other than mqtt, mqtts, ws and wss.
    #[error("unsupported scheme {0}:// (use mqtt://HOST:PORT, mqtts://HOST:PORT, ws://HOST:PORT/mqtt or wss://HOST:PORT/mqtt)")]
    Scheme(String),
}

impl FromStr for BrokerUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<BrokerUrl, UrlError> {
        // `host:port` parses as a URL with the host as its scheme: catch it first.
        if !s.contains("://") {
            return Err(UrlError::NoScheme(s.to_owned()));
        }
        let url = url::Url::parse(s).map_err(|e| UrlError::Url(format!("{s} ({e})")))?;
        let host = url
            .host_str()
            .ok_or_else(|| UrlError::NoHost(s.to_owned()))?
            .trim_matches(['[', ']'])
            .to_owned();
        match url.scheme() {
            "mqtt" | "tcp" => Ok(BrokerUrl::Tcp {
                host,
                port: url.port().unwrap_or(1883),
            }),
            "ws" => Ok(BrokerUrl::Ws {
                port: url.port().unwrap_or(80),
                url: url.to_string(),
            }),
            "mqtts" | "ssl" => Ok(BrokerUrl::Mqtts {
                host,
                port: url.port().unwrap_or(8883),
            }),
            "wss" => Ok(BrokerUrl::Wss {
                port: url.port().unwrap_or(443),
                url: url.to_string(),
            }),
            other => Err(UrlError::Scheme(other.to_owned())),
        }
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bracketed = |host: &str| {
            if host.contains(':') {
                format!("[{host}]")
            } else {
                host.to_owned()
            }
        };
        match self {
            BrokerUrl::Tcp { host, port } => write!(f, "mqtt://{}:{port}", bracketed(host)),
            BrokerUrl::Mqtts { host, port } => write!(f, "mqtts://{}:{port}", bracketed(host)),
            BrokerUrl::Ws { url, .. } | BrokerUrl::Wss { url, .. } => f.write_str(url),
        }
    }
}

impl BrokerUrl {
    /// Whether the broker is reached over TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, BrokerUrl::Mqtts { .. } | BrokerUrl::Wss { .. })
    }

    /// The host to resolve and the port to connect to.
    pub fn host_port(&self) -> (String, u16) {
        match self {
            BrokerUrl::Tcp { host, port } | BrokerUrl::Mqtts { host, port } => {
                (host.clone(), *port)
            }
            BrokerUrl::Ws { url, port } | BrokerUrl::Wss { url, port } => {
                // Parsed from a URL when made, so this parse cannot fail; loopback if it did.
                let host = url::Url::parse(url)
                    .ok()
                    .and_then(|u| u.host_str().map(|h| h.trim_matches(['[', ']']).to_owned()))
                    .unwrap_or_else(|| "127.0.0.1".to_owned());
                (host, *port)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_scheme() {
        for (text, printed, host, port) in [
            (
                "mqtt://127.0.0.1:1883",
                "mqtt://127.0.0.1:1883",
                "127.0.0.1",
                1883,
            ),
            ("mqtt://[::1]", "mqtt://[::1]:1883", "::1", 1883),
            ("tcp://h", "mqtt://h:1883", "h", 1883),
            (
                "mqtts://broker.example",
                "mqtts://broker.example:8883",
                "broker.example",
                8883,
            ),
            (
                "ws://localhost:8083/mqtt",
                "ws://localhost:8083/mqtt",
                "localhost",
                8083,
            ),
            ("wss://h/mqtt", "wss://h/mqtt", "h", 443),
        ] {
            let u: BrokerUrl = text.parse().expect(text);
            assert_eq!(u.to_string(), printed, "{text}");
            assert_eq!(u.host_port(), (host.to_owned(), port), "{text}");
            assert_eq!(
                u.is_tls(),
                text.starts_with("mqtts") || text.starts_with("wss")
            );
        }
    }

    #[test]
    fn mistakes_are_named() {
        let bare = "127.0.0.1:1883"
            .parse::<BrokerUrl>()
            .expect_err("no scheme");
        assert!(bare
            .to_string()
            .contains("did you mean mqtt://127.0.0.1:1883?"));
        assert_eq!(
            "http://h".parse::<BrokerUrl>(),
            Err(UrlError::Scheme("http".into()))
        );
        assert!(matches!(
            "mqtt://".parse::<BrokerUrl>(),
            Err(UrlError::Url(_) | UrlError::NoHost(_))
        ));
    }
}
