//! Accept loops for the MQTT and WebSocket listeners.
//!
//! A connection takes a slot of the `max_connections` semaphore before its task starts.
//! When none is free, a few extra connections (`reject_slots`) are still accepted, only to
//! answer CONNACK 0x03 (server unavailable) so the client learns why; past those, accepting
//! pauses and the kernel backlog holds the rest. With `max_connections_per_source` set, a
//! source address over its share is closed at once, before it costs a slot or a task.
//! Accept errors (such as running out of
//! descriptors) back off instead of spinning. TLS handshakes and the WebSocket upgrade run
//! inside the connection's own task under a time-out, so an idle socket blocks nobody.

use crate::gateway::codec::{Refuse, Version};
use crate::gateway::frame;
use crate::gateway::session;
use crate::gateway::transport::{accept_ws, Transport};
use crate::gateway::{Gateway, TransportKind};
use crate::io_threads::IoThreads;
use crate::sources::PerSource;
use bytes::BytesMut;
use futures_util::FutureExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{timeout_at, Instant};
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// Shared by both accept loops.
#[derive(Debug, Clone)]
pub struct Slots {
    /// One permit per open client connection.
    pub connections: Arc<Semaphore>,
    /// Permits for connections accepted only to be refused.
    pub refusals: Arc<Semaphore>,
    /// Connections per source address, over every MQTT listener.
    pub per_source: Arc<PerSource>,
    /// Where connections run (`io_threads.rs`).
    pub threads: Arc<IoThreads>,
}

/// Accepts until shutdown; each connection runs in its own task on `tracker`.
pub async fn run(
    listener: TcpListener,
    kind: TransportKind,
    gw: Arc<Gateway>,
    slots: Slots,
    tracker: TaskTracker,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let accepted = tokio::select! {
            _ = gw.shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => {
                backoff = Duration::from_millis(100);
                x
            }
            Err(e) => {
                warn!(error = %e, transport = kind.as_str(), backoff_ms = backoff.as_millis() as u64, "accept failed");
                tokio::select! {
                    _ = gw.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if let Err(e) = prepare_socket(&stream) {
            debug!(error = %e, "set_nodelay failed");
            continue;
        }
        let Some(hold) = slots.per_source.try_hold(peer.ip()) else {
            gw.meters.refusal("source_limit").increment(1);
            debug!(%peer, transport = kind.as_str(), "connections per source reached; closed");
            continue;
        };
        let deadline = Instant::now() + gw.config.connect_timeout();
        match Arc::clone(&slots.connections).try_acquire_owned() {
            Ok(permit) => {
                let gw = Arc::clone(&gw);
                // Two calls, not one future for both kinds: a plain TCP task would keep
                // room for a TLS handshake. A plain TCP session is the task itself: one
                // allocation per connection, and no wrapper future copying its arguments
                // (`gateway/footprint.rs`).
                let spawned = if kind == TransportKind::Tcp {
                    slots
                        .threads
                        .spawn(stream, &tracker, move |stream| {
                            let session = session::run(stream, gw, peer, kind, deadline);
                            session.map(move |()| drop((permit, hold)))
                        })
                        .await
                } else {
                    slots
                        .threads
                        .spawn(stream, &tracker, move |stream| async move {
                            serve(stream, gw, peer, kind, deadline).await;
                            drop((permit, hold));
                        })
                        .await
                };
                if let Err(e) = spawned {
                    debug!(error = %e, %peer, "connection not moved to its thread; closed");
                }
            }
            Err(_) => {
                // Full: wait for a refusal slot (this pauses accepting), then answer.
                let permit = tokio::select! {
                    _ = gw.shutdown.cancelled() => return,
                    p = Arc::clone(&slots.refusals).acquire_owned() => p,
                };
                let Ok(permit) = permit else { return };
                let gw = Arc::clone(&gw);
                tracker.spawn(async move {
                    refuse_full(stream, gw, kind, deadline).await;
                    drop((permit, hold));
                });
            }
        }
    }
}

/// Socket options every client connection gets.
///
/// # Errors
/// The option could not be set (the socket is already dead).
pub fn prepare_socket(stream: &TcpStream) -> std::io::Result<()> {
    // Nagle's algorithm alone costs 40 ms stalls on small 1 Hz publishes.
    stream.set_nodelay(true)
}

/// Serves a TLS or WebSocket connection: its handshake, then its session.
async fn serve(
    stream: TcpStream,
    gw: Arc<Gateway>,
    peer: std::net::SocketAddr,
    kind: TransportKind,
    deadline: Instant,
) {
    let tls = gw.tls.clone();
    // Each transport's session is boxed: one future for all of them would be as large as
    // the largest (TLS and WebSocket state).
    match (kind, tls) {
        // The accept loop spawns a plain TCP session as the task itself.
        (TransportKind::Tcp, _) => unreachable!("plain TCP is not served through here"),
        (TransportKind::Tls, Some(tls)) => {
            // The TLS handshake counts against the CONNECT time-out.
            let handshake = timeout_at(deadline, tls.mqtt.accept(stream));
            let Some(stream) = Box::pin(handshake_done(&gw, peer, handshake)).await else {
                return;
            };
            Box::pin(session::run(stream, gw, peer, kind, deadline)).await
        }
        // Not bound without TLS.
        (TransportKind::Tls, None) => {}
        (TransportKind::Ws, None) => {
            let limit = Instant::now() + gw.config.ws_handshake_timeout();
            Box::pin(upgrade(stream, gw, peer, kind, deadline, limit)).await
        }
        (TransportKind::Ws, Some(tls)) => {
            // TLS and the upgrade together get the WebSocket handshake time.
            let limit = Instant::now() + gw.config.ws_handshake_timeout();
            let handshake = timeout_at(limit, tls.web.accept(stream));
            let Some(stream) = Box::pin(handshake_done(&gw, peer, handshake)).await else {
                return;
            };
            Box::pin(upgrade(stream, gw, peer, kind, deadline, limit)).await
        }
    }
}

/// Waits for a TLS handshake (or shutdown); counts and logs a failure.
async fn handshake_done<S>(
    gw: &Gateway,
    peer: std::net::SocketAddr,
    handshake: impl std::future::Future<
        Output = Result<std::io::Result<S>, tokio::time::error::Elapsed>,
    >,
) -> Option<S> {
    let done = tokio::select! {
        _ = gw.shutdown.cancelled() => return None,
        r = handshake => r,
    };
    match done {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            gw.meters.refusal("handshake_failed").increment(1);
            // At INFO, once a second at most: a certificate problem is what an operator
            // looks for first, and a client cannot flood the log with bad handshakes.
            static LINES: crate::throttle::Throttle = crate::throttle::Throttle::new();
            if let Some(suppressed) = LINES.admit(fleetcast_proto::time::unix_now()) {
                tracing::info!(%peer, error = %e, suppressed, "TLS handshake failed");
            }
            None
        }
        Err(_) => {
            gw.meters.refusal("handshake_failed").increment(1);
            debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

/// Runs the WebSocket upgrade until `limit`, then the session.
async fn upgrade<S>(
    stream: S,
    gw: Arc<Gateway>,
    peer: std::net::SocketAddr,
    kind: TransportKind,
    deadline: Instant,
    limit: Instant,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
    tokio_tungstenite::WebSocketStream<S>: Transport,
{
    let max = gw.config.limits.max_packet_size;
    let upgrade = timeout_at(limit, accept_ws(stream, max));
    let ws = tokio::select! {
        _ = gw.shutdown.cancelled() => return,
        r = upgrade => r,
    };
    match ws {
        Ok(Ok(ws)) => session::run(ws, gw, peer, kind, deadline).await,
        Ok(Err(e)) => {
            gw.meters.refusal("handshake_failed").increment(1);
            debug!(%peer, error = %e, "websocket handshake failed")
        }
        Err(_) => {
            gw.meters.refusal("handshake_failed").increment(1);
            debug!(%peer, "websocket handshake timed out")
        }
    }
}

/// Reads the client's CONNECT (briefly) and answers "server unavailable".
async fn refuse_full(stream: TcpStream, gw: Arc<Gateway>, kind: TransportKind, deadline: Instant) {
    gw.meters.refusal("server_full").increment(1);
    // Refusals must not hold their slot long: a second at most.
    let deadline = deadline.min(Instant::now() + Duration::from_secs(1));
    let max = gw.config.limits.max_packet_size;
    let tls = gw.tls.clone();
    let _ = timeout_at(deadline, async move {
        match (kind, tls) {
            (TransportKind::Tcp, _) => answer_full(stream).await,
            (TransportKind::Tls, Some(tls)) => {
                if let Ok(s) = tls.mqtt.accept(stream).await {
                    answer_full(s).await;
                }
            }
            (TransportKind::Tls, None) => {}
            (TransportKind::Ws, None) => {
                if let Ok(ws) = accept_ws(stream, max).await {
                    answer_full(ws).await;
                }
            }
            (TransportKind::Ws, Some(tls)) => {
                if let Ok(s) = tls.web.accept(stream).await {
                    if let Ok(ws) = accept_ws(s, max).await {
                        answer_full(ws).await;
                    }
                }
            }
        }
    })
    .await;
}

async fn answer_full<T: Transport>(mut io: T) {
    let mut buf = BytesMut::with_capacity(256);
    // The answer is the same whatever the CONNECT says; wait for one so the client reads
    // the CONNACK rather than a reset.
    let version = loop {
        match frame::inspect_connect(&buf, 1024) {
            Ok(frame::ConnectKind::Incomplete) if buf.len() <= 1024 => {}
            Ok(frame::ConnectKind::V5) => break Version::V5,
            _ => break Version::V311,
        }
        match io.read_into(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    };
    let mut answer = BytesMut::from(
        &Refuse::Unavailable.connack(version, "server full: connection limit reached")[..],
    );
    let _ = io.write_from(&mut answer).await;
    io.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn client_sockets_get_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _client = TcpStream::connect(addr).await.expect("connect");
        let (server_side, _) = listener.accept().await.expect("accept");
        assert!(!server_side.nodelay().expect("read option"));
        prepare_socket(&server_side).expect("set");
        assert!(server_side.nodelay().expect("read option"));
    }
}
