//! Opening one connection: the socket, CONNECT, and the wait for CONNACK 0, counted as a
//! connect time or as a failure of a named kind (`refused`, `fd_limit`, `connack_5`...),
//! since the kinds tell an overloaded broker from an exhausted client machine.

use crate::conn::Conn;
use crate::shared::{Open, Shared};
use crate::wire;
use std::io;
use std::time::Duration;
use tokio::time::{timeout, Instant};

/// How long a connect may take before it counts as `timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The error kind a failed connect is counted under.
fn kind_of(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(24) | Some(23) => "fd_limit".into(),
        Some(99) => "no_source_port".into(),
        Some(111) => "refused".into(),
        _ => match e.kind() {
            io::ErrorKind::TimedOut => "timeout".into(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof => "closed".into(),
            _ => "io".into(),
        },
    }
}

/// A connect that failed: the kind it is counted under, and what happened, with the broker's
/// address and the OS error, as k6 and emqtt-bench print it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failed {
    /// The counted kind (`refused`, `connack_5`, ...).
    pub kind: String,
    /// E.g. `connect to 127.0.0.1:1883: Connection refused (os error 111)`.
    pub detail: String,
}

impl Failed {
    fn io(shared: &Shared, what: &str, e: &io::Error) -> Failed {
        Failed {
            kind: kind_of(e),
            detail: format!("{what} {}: {e}", shared.addrs_text()),
        }
    }

    fn other(shared: &Shared, kind: &str, what: &str) -> Failed {
        Failed {
            kind: kind.to_owned(),
            detail: format!("{what} from {}", shared.addrs_text()),
        }
    }
}

/// The meaning of a 3.1.1 CONNACK return code.
fn connack_meaning(code: u8) -> &'static str {
    match code {
        1 => "unacceptable protocol version",
        2 => "identifier rejected",
        3 => "server unavailable",
        4 => "bad user name or password",
        5 => "not authorized",
        _ => "unknown return code",
    }
}

/// Opens connection number `index` as client `id` and waits for CONNACK 0; counts the time
/// or the error kind (the first of each kind is logged with its detail). Returns the
/// connection, what was read past the CONNACK, and the guard that counts it as open.
pub(crate) async fn dial<'s>(
    shared: &'s Shared,
    index: usize,
    id: &str,
) -> Result<(Conn, Vec<u8>, Open<'s>), Failed> {
    let t0 = Instant::now();
    let failed = match timeout(CONNECT_TIMEOUT, handshake(shared, index, id)).await {
        Ok(Ok((conn, buf))) => {
            shared.connected_in(u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX));
            return Ok((conn, buf, shared.open()));
        }
        Ok(Err(failed)) => failed,
        Err(_) => Failed::other(shared, "timeout", "no CONNACK within 10 s"),
    };
    if shared.error(failed.kind.clone()) {
        tracing::warn!(kind = %failed.kind, "connect failed: {} (the first of its kind; all are counted in the report)", failed.detail);
    }
    Err(failed)
}

/// The connect itself.
async fn handshake(shared: &Shared, index: usize, id: &str) -> Result<(Conn, Vec<u8>), Failed> {
    let cfg = &shared.cfg;
    // Source addresses round robin by the connection's index over the whole run, so every
    // worker process spreads its connections over all of them.
    let source = (!cfg.source_ips.is_empty()).then(|| cfg.source_ips[index % cfg.source_ips.len()]);
    let at = index % shared.addrs.len().max(1);
    let mut c = Conn::open(cfg.broker_at(at), shared.addrs[at], source)
        .await
        .map_err(|e| Failed::io(shared, "connect to", &e))?;
    let creds = cfg
        .credentials
        .as_ref()
        .map(|(u, p)| (u.as_str(), p.as_str()));
    c.send(&wire::connect(id, cfg.keep_alive_secs(), creds))
        .await
        .map_err(|e| Failed::io(shared, "sending CONNECT to", &e))?;
    let mut buf = Vec::with_capacity(64);
    loop {
        match wire::next_frame(&buf) {
            Ok(Some((wire::Frame::ConnAck(0), n))) => {
                buf.drain(..n);
                return Ok((c, buf));
            }
            Ok(Some((wire::Frame::ConnAck(code), _))) => {
                let what = format!("CONNACK {code} ({})", connack_meaning(code));
                return Err(Failed::other(shared, &format!("connack_{code}"), &what));
            }
            Ok(Some(_)) | Err(_) => {
                return Err(Failed::other(shared, "protocol", "not a CONNACK"));
            }
            Ok(None) => {}
        }
        match c.recv(&mut buf).await {
            Ok(0) => {
                return Err(Failed::other(shared, "closed", "closed before CONNACK"));
            }
            Ok(_) => {}
            Err(e) => return Err(Failed::io(shared, "reading CONNACK from", &e)),
        }
    }
}
