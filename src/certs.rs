//! `fleetcast certs`: a development certificate authority, a server certificate and
//! client certificates, so TLS and client-certificate login can be tried without
//! outside tools. Not for production: use certificates from your own CA there.
//!
//! Files written in the output directory (PEM): `ca.pem` and `ca.key` (the CA; kept so
//! later runs sign more certificates with it), `server.pem` and `server.key` (names and
//! addresses from `--host`), and `NAME.pem` / `NAME.key` per `--client NAME` (the
//! certificate's common name is the MQTT client id it may use).

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// A certificate set that could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// rcgen refused the parameters or the stored CA.
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A `--host` is neither an IP address nor a DNS name.
    #[error("not a host name or IP address: {0}")]
    Host(String),
    /// A `--client` name that is not a usable client id, or would overwrite a CA or server
    /// file.
    #[error("--client {0}: not a usable MQTT client id (or the name of a CA/server file)")]
    Client(String),
    /// `ca.pem` is there without `ca.key` (or the other way round).
    #[error("{0} holds one of ca.pem and ca.key but not both: keep both or remove both")]
    HalfCa(PathBuf),
}

/// What `fleetcast certs` makes.
#[derive(Debug, Clone)]
pub struct CertsRequest {
    /// Output directory (created if missing).
    pub out: PathBuf,
    /// Names and IP addresses the server certificate is valid for.
    pub hosts: Vec<String>,
    /// Client ids to make client certificates for.
    pub clients: Vec<String>,
    /// Validity in days.
    pub days: i64,
}

/// The files written, in the order written.
pub fn make(req: &CertsRequest) -> Result<Vec<PathBuf>, CertsError> {
    for client in &req.clients {
        // The name becomes a file name: a client id (no `/`) that is not a CA/server file.
        if !fleetcast_broker::gateway::frame::valid_client_id(client, 128)
            || matches!(client.as_str(), "ca" | "server" | "." | "..")
        {
            return Err(CertsError::Client(client.clone()));
        }
    }
    std::fs::create_dir_all(&req.out).map_err(|source| CertsError::Io {
        path: req.out.clone(),
        source,
    })?;
    let mut written = Vec::new();
    let (ca_cert, ca_key) = ca(req, &mut written)?;
    let mut server = leaf(
        "fleetcast server",
        ExtendedKeyUsagePurpose::ServerAuth,
        req.days,
    )?;
    for host in &req.hosts {
        server
            .subject_alt_names
            .push(match host.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    host.clone()
                        .try_into()
                        .map_err(|_| CertsError::Host(host.clone()))?,
                ),
            });
    }
    let key = KeyPair::generate()?;
    let cert = server.signed_by(&key, &ca_cert, &ca_key)?;
    write(&req.out.join("server.pem"), &cert.pem(), &mut written)?;
    write_key(&req.out.join("server.key"), &key, &mut written)?;

    for client in &req.clients {
        let params = leaf(client, ExtendedKeyUsagePurpose::ClientAuth, req.days)?;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &ca_cert, &ca_key)?;
        write(
            &req.out.join(format!("{client}.pem")),
            &cert.pem(),
            &mut written,
        )?;
        write_key(&req.out.join(format!("{client}.key")), &key, &mut written)?;
    }
    Ok(written)
}

/// The CA in `out`, made first if `ca.pem`/`ca.key` are not there.
fn ca(
    req: &CertsRequest,
    written: &mut Vec<PathBuf>,
) -> Result<(rcgen::Certificate, KeyPair), CertsError> {
    let (cert_path, key_path) = (req.out.join("ca.pem"), req.out.join("ca.key"));
    if cert_path.exists() != key_path.exists() {
        return Err(CertsError::HalfCa(req.out.clone()));
    }
    if cert_path.exists() {
        let key = KeyPair::from_pem(&read(&key_path)?)?;
        let params = CertificateParams::from_ca_cert_pem(&read(&cert_path)?)?;
        // Re-signing the same parameters with the same key gives a certificate with the
        // same name and key, which is all that issuing needs.
        let cert = params.self_signed(&key)?;
        return Ok((cert, key));
    }
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = name("fleetcast development CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(req.days.max(1) * 2);
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    write(&cert_path, &cert.pem(), written)?;
    write_key(&key_path, &key, written)?;
    Ok((cert, key))
}

/// A server or client certificate's parameters: its name, its use, valid from an hour ago
/// (clocks differ) for `days`.
fn leaf(
    common: &str,
    usage: ExtendedKeyUsagePurpose,
    days: i64,
) -> Result<CertificateParams, CertsError> {
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = name(common);
    params.extended_key_usages = vec![usage];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
    Ok(params)
}

fn name(common: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common);
    dn
}

fn read(path: &Path) -> Result<String, CertsError> {
    std::fs::read_to_string(path).map_err(|source| CertsError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write(path: &Path, text: &str, written: &mut Vec<PathBuf>) -> Result<(), CertsError> {
    std::fs::write(path, text).map_err(|source| CertsError::Io {
        path: path.to_owned(),
        source,
    })?;
    written.push(path.to_owned());
    Ok(())
}

/// Private keys are created readable by their owner only (never world-readable, not even
/// for a moment).
fn write_key(path: &Path, key: &KeyPair, written: &mut Vec<PathBuf>) -> Result<(), CertsError> {
    use std::io::Write;
    let io = |source| CertsError::Io {
        path: path.to_owned(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        // An existing file keeps its mode on open: tighten it before writing.
        if path.exists() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
    }
    let mut file = options.open(path).map_err(io)?;
    file.write_all(key.serialize_pem().as_bytes()).map_err(io)?;
    written.push(path.to_owned());
    Ok(())
}
