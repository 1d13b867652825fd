//! The broker a run loads: `mqtt://HOST:PORT` (TCP) or `ws://HOST:PORT/PATH` (WebSocket).
//!
//! The load tester's own type rather than the simulator's `Endpoint`: it writes MQTT frames
//! on plain sockets, so the TLS forms (`mqtts://`, `wss://`) are not representable here
//! instead of failing at connect time, and it needs no MQTT client library or rustls to
//! name a broker. Parsing and printing follow `Endpoint`'s (same schemes, default ports and
//! spelling), so a report names the broker as the command line did.

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
    /// Not a URL.
    #[error("not a URL: {0}")]
    Url(String),
    /// No `scheme://` at all, e.g. `127.0.0.1:1883`.
    #[error("{0} is not a broker URL: did you mean mqtt://{0}? (or ws://.../mqtt)")]
    NoScheme(String),
    /// No host in the URL.
    #[error("no host in {0}")]
    NoHost(String),
    /// `mqtts://` or `wss://`.
    #[error("the load tester speaks mqtt:// and ws:// only (it writes MQTT frames itself)")]
    Tls,
    /// Any other scheme.
    #[error("unsupported scheme {0}:// (use mqtt://HOST:PORT or ws://HOST:PORT/mqtt)")]
    Scheme(String),
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Target, TargetError> {
        // `host:port` parses as a URL with the host as its scheme: catch it first.
        if !s.contains("://") {
            return Err(TargetError::NoScheme(s.to_owned()));
        }
        let url = url::Url::parse(s).map_err(|e| TargetError::Url(format!("{s} ({e})")))?;
        let host = url
            .host_str()
            .ok_or_else(|| TargetError::NoHost(s.to_owned()))?
            .trim_matches(['[', ']'])
            .to_owned();
        match url.scheme() {
            "mqtt" | "tcp" => Ok(Target::Tcp {
                host,
                port: url.port().unwrap_or(1883),
            }),
            "ws" => Ok(Target::Ws {
                port: url.port().unwrap_or(80),
                url: url.to_string(),
            }),
            "mqtts" | "ssl" | "wss" => Err(TargetError::Tls),
            other => Err(TargetError::Scheme(other.to_owned())),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tcp { host, port } if host.contains(':') => {
                write!(f, "mqtt://[{host}]:{port}")
            }
            Target::Tcp { host, port } => write!(f, "mqtt://{host}:{port}"),
            Target::Ws { url, .. } => f.write_str(url),
        }
    }
}

impl Target {
    /// The host to resolve and the port to connect to.
    pub(crate) fn host_port(&self) -> Result<(String, u16), TargetError> {
        match self {
            Target::Tcp { host, port } => Ok((host.clone(), *port)),
            Target::Ws { url, port } => {
                let u =
                    url::Url::parse(url).map_err(|e| TargetError::Url(format!("{url} ({e})")))?;
                let host = u.host_str().unwrap_or("127.0.0.1").trim_matches(['[', ']']);
                Ok((host.to_owned(), *port))
            }
        }
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
            Err(TargetError::Scheme(_))
        ));
        assert!("nonsense".parse::<Target>().is_err());
    }
}
