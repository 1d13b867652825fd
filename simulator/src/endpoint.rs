//! Broker URLs: `mqtt://HOST:PORT` (TCP), `ws://HOST:PORT/PATH` (WebSocket), and their
//! TLS forms `mqtts://HOST:PORT` and `wss://HOST:PORT/PATH`, with [`ClientTls`]: the CA to
//! trust (`--ca`, else the system's roots) and an optional client certificate.

use rumqttc::{MqttOptions, TlsConfiguration, Transport};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

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

/// A URL that is not a usable broker address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// Not a URL.
    #[error("not a URL: {0}")]
    Url(String),
    /// No `scheme://` at all, e.g. `127.0.0.1:1883`.
    #[error("{0} is not a broker URL: did you mean mqtt://{0}? (or mqtts://, ws://.../mqtt, wss://.../mqtt)")]
    NoScheme(String),
    /// A scheme other than mqtt:// or ws://.
    #[error("unsupported scheme {0}:// (use mqtt://HOST:PORT or ws://HOST:PORT/mqtt)")]
    Scheme(String),
    /// A TLS file could not be used.
    #[error("{path}: {why}")]
    TlsFile {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
    /// No host in the URL.
    #[error("no host in {0}")]
    NoHost(String),
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Endpoint, EndpointError> {
        // `host:port` parses as a URL with the host as its scheme: catch it first.
        if !s.contains("://") {
            return Err(EndpointError::NoScheme(s.to_owned()));
        }
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
            "mqtts" | "ssl" => Ok(Endpoint::Mqtts {
                host,
                port: url.port().unwrap_or(8883),
            }),
            "wss" => Ok(Endpoint::Wss {
                port: url.port().unwrap_or(443),
                url: url.to_string(),
            }),
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
            Endpoint::Mqtts { host, port } if host.contains(':') => {
                write!(f, "mqtts://[{host}]:{port}")
            }
            Endpoint::Mqtts { host, port } => write!(f, "mqtts://{host}:{port}"),
            Endpoint::Ws { url, .. } | Endpoint::Wss { url, .. } => f.write_str(url),
        }
    }
}

impl Endpoint {
    /// Whether this endpoint is reached over TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, Endpoint::Mqtts { .. } | Endpoint::Wss { .. })
    }

    /// rumqttc options for a client with this id. TLS endpoints use `tls`, or without it
    /// the system's root certificates.
    pub fn options(&self, client_id: &str, tls: Option<&ClientTls>) -> MqttOptions {
        let tls = || {
            TlsConfiguration::Rustls(match tls {
                Some(t) => Arc::clone(&t.config),
                None => ClientTls::system().config,
            })
        };
        match self {
            Endpoint::Tcp { host, port } => MqttOptions::new(client_id, host.clone(), *port),
            Endpoint::Ws { url, port } => {
                let mut o = MqttOptions::new(client_id, url.clone(), *port);
                o.set_transport(Transport::Ws);
                o
            }
            Endpoint::Mqtts { host, port } => {
                let mut o = MqttOptions::new(client_id, host.clone(), *port);
                o.set_transport(Transport::tls_with_config(tls()));
                o
            }
            Endpoint::Wss { url, port } => {
                let mut o = MqttOptions::new(client_id, url.clone(), *port);
                o.set_transport(Transport::wss_with_config(tls()));
                o
            }
        }
    }
}

/// A TLS client configuration: which CA to trust, and an optional client certificate.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientTls")
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_error(path: &Path, why: impl fmt::Display) -> EndpointError {
    EndpointError::TlsFile {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

fn read_certs(
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, EndpointError> {
    let file = std::fs::File::open(path).map_err(|e| file_error(path, e))?;
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no certificate in this PEM file"));
    }
    Ok(certs)
}

impl ClientTls {
    /// Trusts the certificates in `ca` (PEM), or the system's roots without it; presents
    /// the client certificate `cert` with key `key` when both are given.
    ///
    /// # Errors
    /// A file is unreadable or holds nothing rustls can use.
    pub fn new(
        ca: Option<&Path>,
        client: Option<(&Path, &Path)>,
    ) -> Result<ClientTls, EndpointError> {
        let roots = match ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in read_certs(ca)? {
                    roots.add(cert).map_err(|e| file_error(ca, e))?;
                }
                roots
            }
            None => system_roots(),
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports rustls's default protocol versions")
            .with_root_certificates(roots);
        let config = match client {
            Some((cert, key)) => {
                let chain = read_certs(cert)?;
                let file = std::fs::File::open(key).map_err(|e| file_error(key, e))?;
                let key_der = rustls_pemfile::private_key(&mut std::io::BufReader::new(file))
                    .map_err(|e| file_error(key, e))?
                    .ok_or_else(|| file_error(key, "no private key in this PEM file"))?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| file_error(cert, e))?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(ClientTls {
            config: Arc::new(config),
        })
    }

    /// The system's root certificates, no client certificate.
    pub fn system() -> ClientTls {
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports rustls's default protocol versions")
            .with_root_certificates(system_roots())
            .with_no_client_auth();
        ClientTls {
            config: Arc::new(config),
        }
    }
}

fn system_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    roots
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
        assert_eq!(
            "mqtts://x".parse(),
            Ok(Endpoint::Mqtts {
                host: "x".into(),
                port: 8883
            })
        );
        let wss: Endpoint = "wss://h:8083/mqtt".parse().expect("wss");
        assert!(wss.is_tls());
        assert_eq!(wss.to_string(), "wss://h:8083/mqtt");
        assert!(matches!(
            "http://x".parse::<Endpoint>(),
            Err(EndpointError::Scheme(_))
        ));
        assert!("nonsense".parse::<Endpoint>().is_err());
    }
}
