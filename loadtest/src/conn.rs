//! One load-test connection: TCP or WebSocket, from a chosen source address, speaking the
//! raw frames of [`crate::wire`].

use crate::target::Target;
use futures_util::{SinkExt, StreamExt};
use std::io;
use std::net::{IpAddr, SocketAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A connected socket.
pub enum Conn {
    /// MQTT over TCP.
    Tcp(TcpStream),
    /// MQTT over WebSocket.
    Ws(Box<WebSocketStream<TcpStream>>),
}

/// Resolves the broker's socket address (host names through the system resolver).
///
/// # Errors
/// The name does not resolve.
pub async fn resolve(target: &Target) -> io::Result<SocketAddr> {
    let (host, port) = target
        .host_port()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let first = tokio::net::lookup_host((host.as_str(), port)).await?.next();
    first.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "broker address did not resolve"))
}

impl Conn {
    /// Connects from `source` (port chosen by the kernel) to `addr`, upgrading to WebSocket
    /// for `ws://` endpoints.
    ///
    /// # Errors
    /// The connect or the upgrade failed.
    pub async fn open(
        target: &Target,
        addr: SocketAddr,
        source: Option<IpAddr>,
    ) -> io::Result<Conn> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = source {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        match target {
            Target::Tcp { .. } => Ok(Conn::Tcp(stream)),
            Target::Ws { url, .. } => {
                let mut req = url
                    .as_str()
                    .into_client_request()
                    .map_err(io::Error::other)?;
                req.headers_mut().insert(
                    "sec-websocket-protocol",
                    tokio_tungstenite::tungstenite::http::HeaderValue::from_static("mqtt"),
                );
                let (ws, _) = tokio_tungstenite::client_async(req, stream)
                    .await
                    .map_err(io::Error::other)?;
                Ok(Conn::Ws(Box::new(ws)))
            }
        }
    }

    /// Writes all of `data`.
    ///
    /// # Errors
    /// The socket failed.
    pub async fn send(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.write_all(data).await,
            Conn::Ws(ws) => ws
                .send(Message::Binary(data.to_vec().into()))
                .await
                .map_err(io::Error::other),
        }
    }

    /// Writes all of `data`, keeping in `written` how much of it the socket took, so a
    /// caller that cancels it knows where it stopped. Over WebSocket `data` is one
    /// message: `written` is all of it once sent, nothing before.
    ///
    /// # Cancel safety
    /// Not cancel safe (a part of `data` may be written), but `written` says how much.
    ///
    /// # Errors
    /// The socket failed.
    pub async fn send_counting(&mut self, data: &[u8], written: &mut usize) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => {
                while *written < data.len() {
                    match s.write(&data[*written..]).await? {
                        0 => return Err(io::ErrorKind::WriteZero.into()),
                        n => *written += n,
                    }
                }
                Ok(())
            }
            Conn::Ws(_) => {
                self.send(data).await?;
                *written = data.len();
                Ok(())
            }
        }
    }

    /// Reads more bytes into `buf`; Ok(0) when the broker closed.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn recv(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => {
                let mut chunk = [0u8; 4096];
                let n = s.read(&mut chunk).await?;
                buf.extend_from_slice(&chunk[..n]);
                Ok(n)
            }
            Conn::Ws(ws) => loop {
                match ws.next().await {
                    None | Some(Ok(Message::Close(_))) => return Ok(0),
                    Some(Ok(Message::Binary(b))) => {
                        buf.extend_from_slice(&b);
                        return Ok(b.len());
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(io::Error::other(e)),
                }
            },
        }
    }
}
