//! TCP, TLS and WebSocket (over either) behind one byte-stream interface.
//!
//! MQTT over WebSocket carries the same bytes as over TCP, but an MQTT packet may span
//! WebSocket messages and one message may hold several packets. A session therefore only
//! asks a [`Transport`] for "more bytes" and hands it bytes to write.

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use std::future::Future;
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The WebSocket path MQTT clients connect to.
pub const WS_PATH: &str = "/mqtt";
/// WebSocket subprotocols accepted, in order of preference.
pub const WS_SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// A client byte stream.
pub trait Transport: Send {
    /// Reads more bytes into `buf`; `Ok(0)` means the peer closed.
    ///
    /// # Cancel safety
    /// Cancel safe: no bytes are lost if the future is dropped before it completes.
    fn read_into(&mut self, buf: &mut BytesMut) -> impl Future<Output = io::Result<usize>> + Send;

    /// Writes all of `buf` and empties it.
    fn write_from(&mut self, buf: &mut BytesMut) -> impl Future<Output = io::Result<()>> + Send;

    /// Closes the stream, best effort.
    fn close(&mut self) -> impl Future<Output = ()> + Send;

    /// The common name of the client certificate the TLS layer verified, if any.
    fn peer_common_name(&self) -> Option<String> {
        None
    }
}

/// A plain byte stream: TCP, or TLS over TCP.
macro_rules! byte_stream_transport {
    ($t:ty) => {
        impl Transport for $t {
            async fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
                self.read_buf(buf).await
            }

            async fn write_from(&mut self, buf: &mut BytesMut) -> io::Result<()> {
                self.write_all(buf).await?;
                buf.clear();
                Ok(())
            }

            async fn close(&mut self) {
                let _ = self.shutdown().await;
            }

            fn peer_common_name(&self) -> Option<String> {
                peer_common_name(self)
            }
        }
    };
}

byte_stream_transport!(TcpStream);
byte_stream_transport!(TlsStream<TcpStream>);

/// What a stream can say about its peer's certificate.
trait PeerCertificate {
    fn leaf(&self) -> Option<&rustls::pki_types::CertificateDer<'static>>;
}

impl PeerCertificate for TcpStream {
    fn leaf(&self) -> Option<&rustls::pki_types::CertificateDer<'static>> {
        None
    }
}

impl PeerCertificate for TlsStream<TcpStream> {
    fn leaf(&self) -> Option<&rustls::pki_types::CertificateDer<'static>> {
        // rustls has verified the chain against the client CA when it is present at all.
        self.get_ref().1.peer_certificates()?.first()
    }
}

fn peer_common_name(stream: &impl PeerCertificate) -> Option<String> {
    stream.leaf().and_then(crate::tls::common_name)
}

impl<S> Transport for WebSocketStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    async fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            // StreamExt::next is cancel safe: a partly read frame stays in tungstenite.
            match self.next().await {
                None | Some(Ok(Message::Close(_))) => return Ok(0),
                Some(Ok(Message::Binary(data))) => {
                    buf.extend_from_slice(&data);
                    if !data.is_empty() {
                        return Ok(data.len());
                    }
                }
                Some(Ok(Message::Text(_))) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "MQTT over WebSocket must use binary messages",
                    ))
                }
                // Pings are answered by tungstenite itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Err(e)) => return Err(io::Error::other(e)),
            }
        }
    }

    async fn write_from(&mut self, buf: &mut BytesMut) -> io::Result<()> {
        let data = buf.split().freeze();
        self.send(Message::Binary(data))
            .await
            .map_err(io::Error::other)
    }

    async fn close(&mut self) {
        let _ = SinkExt::close(self).await;
    }
}

/// WebSocket limits for MQTT: one message holds at most one maximal packet plus slack.
pub fn ws_config(max_packet_size: usize) -> WebSocketConfig {
    let max = max_packet_size + 1024;
    WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

/// Runs the WebSocket upgrade on `/mqtt`, choosing the `mqtt` or `mqttv3.1` subprotocol
/// when the client offers one. Other paths get 404.
///
/// # Errors
/// The handshake failed or was refused.
pub async fn accept_ws<S>(
    stream: S,
    max_packet_size: usize,
) -> Result<WebSocketStream<S>, tokio_tungstenite::tungstenite::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // The callback's signature is tungstenite's.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        if req.uri().path() != WS_PATH {
            let mut refusal = ErrorResponse::new(Some(format!("MQTT is served at {WS_PATH}\n")));
            *refusal.status_mut() = StatusCode::NOT_FOUND;
            return Err(refusal);
        }
        let offered: Vec<&str> = req
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        if let Some(chosen) = WS_SUBPROTOCOLS.iter().find(|p| offered.contains(p)) {
            resp.headers_mut()
                .insert("sec-websocket-protocol", HeaderValue::from_static(chosen));
        }
        Ok(resp)
    };
    tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        callback,
        Some(ws_config(max_packet_size)),
    )
    .await
}
