//! Broker URLs: `mqtt://HOST:PORT` (TCP), `ws://HOST:PORT/PATH` (WebSocket), and their
//! TLS forms `mqtts://HOST:PORT` and `wss://HOST:PORT/PATH`, with [`ClientTls`]: the CA to
//! trust (`--ca`, else the system's roots) and an optional client certificate.

pub use fleetcast_proto::broker_url::{BrokerUrl, UrlError};
use rumqttc::{MqttOptions, TlsConfiguration, Transport};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// Where a client connects: the shared broker URL (`fleetcast_proto::broker_url`).
pub type Endpoint = BrokerUrl;

/// A URL that is not a usable broker address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// Not a broker URL.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// A TLS file could not be used.
    #[error("{path}: {why}")]
    TlsFile {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
}

/// rumqttc client options for a broker URL.
pub trait ClientOptions {
    /// rumqttc options for a client with this id. TLS endpoints use `tls`, or without it
    /// the system's root certificates.
    fn options(&self, client_id: &str, tls: Option<&ClientTls>) -> MqttOptions;
}

impl ClientOptions for Endpoint {
    fn options(&self, client_id: &str, tls: Option<&ClientTls>) -> MqttOptions {
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
    fn options_follow_the_scheme() {
        let tcp: Endpoint = "mqtt://127.0.0.1:1884".parse().expect("tcp");
        let o = tcp.options("drv-1", None);
        assert_eq!(o.broker_address(), ("127.0.0.1".to_owned(), 1884));
        assert_eq!(o.client_id(), "drv-1");
        let ws: Endpoint = "ws://127.0.0.1:8083/mqtt".parse().expect("ws");
        assert!(matches!(ws.options("x", None).transport(), Transport::Ws));
        let bad = "nonsense".parse::<Endpoint>().map_err(EndpointError::from);
        assert!(matches!(
            bad,
            Err(EndpointError::Url(UrlError::NoScheme(_)))
        ));
    }
}
