//! Opening one connection: the socket, CONNECT, and the wait for CONNACK 0, counted as a
//! connect time or as a failure of a named kind (`refused`, `fd_limit`, `connack_5`...),
//! since the kinds tell an overloaded broker from an exhausted client machine.

use crate::conn::Conn;
use crate::shared::Shared;
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

/// Opens connection number `index` as client `id` and waits for CONNACK 0; counts the time
/// or the error kind. Returns the connection and what was read past the CONNACK.
pub(crate) async fn dial(shared: &Shared, index: usize, id: &str) -> Option<(Conn, Vec<u8>)> {
    let t0 = Instant::now();
    match timeout(CONNECT_TIMEOUT, handshake(shared, index, id)).await {
        Ok(Ok(ok)) => {
            shared.connected_in(u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX));
            Some(ok)
        }
        Ok(Err(kind)) => {
            shared.error(kind);
            None
        }
        Err(_) => {
            shared.error("timeout".to_owned());
            None
        }
    }
}

/// The connect itself; Err is the failure's kind.
async fn handshake(shared: &Shared, index: usize, id: &str) -> Result<(Conn, Vec<u8>), String> {
    let cfg = &shared.cfg;
    // Source addresses round robin by the connection's index over the whole run, so every
    // worker process spreads its connections over all of them.
    let source = (!cfg.source_ips.is_empty()).then(|| cfg.source_ips[index % cfg.source_ips.len()]);
    let mut c = Conn::open(&cfg.broker, shared.addr, source)
        .await
        .map_err(|e| kind_of(&e))?;
    let creds = cfg
        .credentials
        .as_ref()
        .map(|(u, p)| (u.as_str(), p.as_str()));
    c.send(&wire::connect(id, 60, creds))
        .await
        .map_err(|e| kind_of(&e))?;
    let mut buf = Vec::with_capacity(64);
    loop {
        match wire::next_frame(&buf) {
            Ok(Some((wire::Frame::ConnAck(0), n))) => {
                buf.drain(..n);
                return Ok((c, buf));
            }
            Ok(Some((wire::Frame::ConnAck(code), _))) => return Err(format!("connack_{code}")),
            Ok(Some(_)) | Err(_) => return Err("protocol".to_owned()),
            Ok(None) => {}
        }
        match c.recv(&mut buf).await {
            Ok(0) => return Err("closed".to_owned()),
            Ok(_) => {}
            Err(e) => return Err(kind_of(&e)),
        }
    }
}
