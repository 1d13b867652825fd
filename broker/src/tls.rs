//! TLS for the listeners (rustls, ring provider): `mqtts` for MQTT, and wss/https on the
//! WebSocket and HTTP ports when a certificate is configured.
//!
//! With a client CA (`tls.client_ca`), MQTT-over-TLS clients may present a certificate
//! signed by it (must, with `tls.require_client_cert`); such a client is authenticated by the certificate: its client id must be
//! the certificate's common name (CN), and with a credentials file it takes the account
//! whose username is that CN, without a password. Clients without a certificate log in as
//! before.

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// A TLS setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No certificate or key in a PEM file.
    #[error("{0}: no {1} found in this PEM file")]
    Empty(PathBuf, &'static str),
    /// rustls refused the certificate, key or CA.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client CA could not be used to verify clients.
    #[error("client CA: {0}")]
    ClientCa(String),
}

/// Where the server's certificate, key and (optionally) the client CA are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// CA whose client certificates are accepted on `mqtts` (PEM).
    pub client_ca: Option<PathBuf>,
    /// Whether `mqtts` refuses clients without such a certificate.
    pub require_client_cert: bool,
}

/// Acceptors for the listeners.
#[derive(Clone)]
pub struct Acceptors {
    /// MQTT over TLS (asks for a client certificate when a client CA is set).
    pub mqtt: TlsAcceptor,
    /// wss and https (ALPN http/1.1, no client certificates).
    pub web: TlsAcceptor,
}

impl std::fmt::Debug for Acceptors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Acceptors")
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn open(path: &Path) -> Result<BufReader<std::fs::File>, TlsError> {
    std::fs::File::open(path)
        .map(BufReader::new)
        .map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
}

/// Every certificate in a PEM file.
///
/// # Errors
/// Unreadable, or no certificate in it.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = rustls_pemfile::certs(&mut open(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty(path.to_owned(), "certificate"));
    }
    Ok(certs)
}

/// The first private key in a PEM file.
///
/// # Errors
/// Unreadable, or no key in it.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    rustls_pemfile::private_key(&mut open(path)?)
        .map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })?
        .ok_or_else(|| TlsError::Empty(path.to_owned(), "private key"))
}

/// A root store holding every certificate of a PEM file.
///
/// # Errors
/// Unreadable, empty, or a certificate rustls cannot use as a root.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert)?;
    }
    Ok(roots)
}

impl Acceptors {
    /// Builds both acceptors from the files.
    ///
    /// # Errors
    /// A file is unreadable or rustls refuses its contents.
    pub fn load(files: &TlsFiles) -> Result<Acceptors, TlsError> {
        let certs = load_certs(&files.cert)?;
        let key = load_key(&files.key)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let mqtt = match &files.client_ca {
            Some(ca) => {
                let mut verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(load_roots(ca)?),
                    provider(),
                );
                if !files.require_client_cert {
                    verifier = verifier.allow_unauthenticated();
                }
                let verifier = verifier
                    .build()
                    .map_err(|e| TlsError::ClientCa(e.to_string()))?;
                builder
                    .clone()
                    .with_client_cert_verifier(verifier)
                    .with_single_cert(certs.clone(), key.clone_key())?
            }
            None => builder
                .clone()
                .with_no_client_auth()
                .with_single_cert(certs.clone(), key.clone_key())?,
        };
        // HTTPS and WSS ask for a client certificate but never require one (browsers have
        // none): a device's certificate names its account for HTTP publishing.
        let web = match &files.client_ca {
            Some(ca) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(load_roots(ca)?),
                    provider(),
                )
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::ClientCa(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut web = web.with_single_cert(certs, key)?;
        web.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Acceptors {
            mqtt: TlsAcceptor::from(Arc::new(mqtt)),
            web: TlsAcceptor::from(Arc::new(web)),
        })
    }
}

/// The common name of a verified client certificate (the first of the chain).
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}
