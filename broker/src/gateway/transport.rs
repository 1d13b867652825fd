//! TCP, TLS and WebSocket (over either) behind one byte-stream interface.
//!
//! MQTT over WebSocket carries the same bytes as over TCP, but an MQTT packet may span
//! WebSocket messages and one message may hold several packets. A session therefore only
//! asks a [`Transport`] for "more bytes" and hands it bytes to write.
//!
//! WebSocket also carries frames with no MQTT bytes in them (pings, pongs, empty
//! messages), which tungstenite answers on its own: it queues a pong per ping and, when
//! the peer does not read, keeps every queued pong in its write buffer (a client sending a
//! million pings grew the process by 107 MB). So the WebSocket transport waits for each
//! pong to be written before it reads on, as TCP would make a peer wait, caps tungstenite's
//! write buffer, and lets a caller give a connection a budget for such frames: the
//! handshake gives one that has not sent its CONNECT [`PRE_CONNECT_BUDGET`].
//!
//! A byte stream is read without a buffer of the connection's own while nothing comes:
//! into room the caller made for a frame under way, or else into a scratch array on the
//! stack of the poll that finds bytes, copied into a buffer of their size. An idle
//! connection (most devices, most of the time) then holds no read buffer at all. The
//! buffer bytes are copied into is the thread's spare when it has one ([`spare`]): a
//! session hands its buffer back once it has taken every frame from it, so a fleet whose
//! messages each come in a read of their own does not allocate a buffer per message (and
//! another when the codec splits the frame off it, which makes a fresh buffer shared).

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
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
/// Bytes of WebSocket frames that carry no MQTT bytes (pings, pongs, empty messages, by
/// their size on the wire) a connection may send before its CONNECT is whole: a client
/// that has not logged in gets no more of the server's time than a CONNECT's worth.
pub const PRE_CONNECT_BUDGET: usize = 16 * 1024;
/// Header (2) and mask (4) of a client's control frame, charged with its payload.
const CONTROL_FRAME_OVERHEAD: usize = 6;
/// tungstenite's default write buffer, which it writes out once full.
const WS_WRITE_BUFFER: usize = 128 * 1024;
/// The stack array a byte stream is read into when the caller's buffer has no room: as
/// much as a read into a growing buffer takes at once (`session::READ_CHUNK`).
const SCRATCH: usize = 16 * 1024;

/// A client byte stream.
pub trait Transport: Send {
    /// Reads more bytes into `buf`; `Ok(0)` means the peer closed. A byte stream reads
    /// into `buf`'s spare room if it has any, or else allocates what it read (an empty
    /// buffer without capacity costs nothing while the read waits).
    ///
    /// # Cancel safety
    /// Cancel safe: no bytes are lost if the future is dropped before it completes.
    fn read_into(&mut self, buf: &mut BytesMut) -> impl Future<Output = io::Result<usize>> + Send;

    /// [`Transport::read_into`], charging what the peer sends that holds no MQTT bytes
    /// (WebSocket control frames and empty messages) against `budget`; an error once it is
    /// spent. Byte streams have no such frames.
    ///
    /// # Cancel safety
    /// Cancel safe, as `read_into`.
    fn read_into_within(
        &mut self,
        buf: &mut BytesMut,
        budget: &mut usize,
    ) -> impl Future<Output = io::Result<usize>> + Send {
        let _ = budget;
        self.read_into(buf)
    }

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
                read_sparing(self, buf).await
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

thread_local! {
    /// An emptied read buffer kept for this thread's next read that finds its own buffer
    /// without room: one per thread, never one per connection.
    static SPARE: std::cell::Cell<Option<BytesMut>> = const { std::cell::Cell::new(None) };
}

/// Keeps `buf`, emptied, as this thread's spare read buffer (replacing the one kept, if
/// any), when its room can be used again without allocating. Not one that never had any
/// (a session woken for something else hands back the empty buffer it waited with, which
/// must not push out a spare) nor one a frame still shares.
pub(super) fn spare(mut buf: BytesMut) {
    buf.clear();
    if buf.try_reclaim(1) {
        SPARE.set(Some(buf));
    }
}

/// Reads into `buf`'s spare room, or, when it has none, into a stack array first: the
/// array lives only during a poll, so a read that waits holds no buffer. What it read goes
/// into the thread's spare buffer when `buf` is empty and one is kept.
async fn read_sparing<S>(stream: &mut S, buf: &mut BytesMut) -> io::Result<usize>
where
    S: AsyncRead + Unpin,
{
    if buf.capacity() > buf.len() {
        return stream.read_buf(buf).await;
    }
    std::future::poll_fn(|cx| {
        let mut scratch = [MaybeUninit::<u8>::uninit(); SCRATCH];
        let mut read = ReadBuf::uninit(&mut scratch);
        ready!(Pin::new(&mut *stream).poll_read(cx, &mut read))?;
        if buf.capacity() == 0 && !read.filled().is_empty() {
            if let Some(kept) = SPARE.take() {
                *buf = kept;
            }
        }
        buf.extend_from_slice(read.filled());
        Poll::Ready(Ok(read.filled().len()))
    })
    .await
}

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
        // After the CONNECT, pings cost a connection its own socket's pace, nothing more.
        let mut unlimited = usize::MAX;
        self.read_into_within(buf, &mut unlimited).await
    }

    async fn read_into_within(
        &mut self,
        buf: &mut BytesMut,
        budget: &mut usize,
    ) -> io::Result<usize> {
        loop {
            // StreamExt::next is cancel safe: a partly read frame stays in tungstenite.
            let empty = match self.next().await {
                None | Some(Ok(Message::Close(_))) => return Ok(0),
                Some(Ok(Message::Binary(data))) if !data.is_empty() => {
                    buf.extend_from_slice(&data);
                    return Ok(data.len());
                }
                Some(Ok(Message::Binary(_))) => CONTROL_FRAME_OVERHEAD,
                Some(Ok(Message::Text(_))) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "MQTT over WebSocket must use binary messages",
                    ))
                }
                Some(Ok(Message::Ping(data))) => {
                    charge(budget, data.len() + CONTROL_FRAME_OVERHEAD)?;
                    // tungstenite queued the pong: write it before reading on, so that a
                    // peer that never reads its pongs is stopped by TCP, not buffered.
                    // Cancel safe: the pong stays queued for the next write.
                    SinkExt::flush(self).await.map_err(io::Error::other)?;
                    continue;
                }
                Some(Ok(Message::Pong(data))) => data.len() + CONTROL_FRAME_OVERHEAD,
                // tungstenite never reads one of these (it is for writing raw frames).
                Some(Ok(Message::Frame(_))) => CONTROL_FRAME_OVERHEAD,
                Some(Err(e)) => return Err(io::Error::other(e)),
            };
            charge(budget, empty)?;
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

/// Takes `cost` bytes from `budget`, or fails once it is spent.
fn charge(budget: &mut usize, cost: usize) -> io::Result<()> {
    *budget = budget.checked_sub(cost).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "too many WebSocket control frames before CONNECT",
        )
    })?;
    Ok(())
}

/// WebSocket limits for MQTT: one message holds at most one maximal packet plus slack.
/// tungstenite's write buffer only grows past its size while the socket will not take
/// more; it is capped at what a session writes at once (a write batch topped by packets,
/// or the answers to one read, each under `max_packet_size` + 64 KiB) with room to spare,
/// so that queued pongs can never pile up past it (they are dropped, one kept).
pub fn ws_config(max_packet_size: usize) -> WebSocketConfig {
    let max = max_packet_size + 1024;
    WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
        .write_buffer_size(WS_WRITE_BUFFER)
        .max_write_buffer_size(WS_WRITE_BUFFER + 4 * (max_packet_size + 64 * 1024))
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::DuplexStream;
    use tokio::time::{timeout, Duration};

    type Ws = WebSocketStream<DuplexStream>;

    #[tokio::test]
    async fn a_read_without_room_goes_into_the_threads_spare_buffer() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let mut buf = BytesMut::new();
        client.write_all(b"first").await.expect("write");
        read_sparing(&mut server, &mut buf).await.expect("read");
        assert_eq!(&buf[..], b"first");
        let first = buf.as_ptr();
        // As the codec does: the frame is split off, used and dropped.
        drop(buf.split_to(5));
        spare(std::mem::take(&mut buf));
        // A session that read nothing hands back a buffer without room: the spare stays.
        spare(BytesMut::new());
        let kept = SPARE.take().expect("a spare is kept");
        assert!(kept.capacity() > 0, "the spare kept its room");
        SPARE.set(Some(kept));
        assert_eq!(
            buf.capacity(),
            0,
            "the connection keeps nothing while it waits"
        );
        client.write_all(b"next").await.expect("write");
        read_sparing(&mut server, &mut buf).await.expect("read");
        assert_eq!(&buf[..], b"next");
        assert!(SPARE.take().is_none(), "the spare was taken");
        assert_eq!(
            buf.as_ptr(),
            first,
            "the first read's allocation, used again"
        );
    }

    /// A server-side WebSocket and its client over an in-memory pipe holding `capacity`
    /// bytes each way.
    async fn pair(capacity: usize) -> (Ws, Ws) {
        let (c, s) = tokio::io::duplex(capacity);
        let server = tokio::spawn(tokio_tungstenite::accept_async(s));
        let (client, _) = tokio_tungstenite::client_async("ws://localhost/mqtt", c)
            .await
            .expect("client handshake");
        let server = server.await.expect("join").expect("server handshake");
        (server, client)
    }

    fn ping() -> Message {
        Message::Ping(vec![b'p'; 100].into())
    }

    #[tokio::test]
    async fn frames_without_mqtt_bytes_are_charged_until_the_budget_is_spent() {
        let (mut server, mut client) = pair(1 << 20).await;
        for _ in 0..10 {
            client.send(ping()).await.expect("ping");
        }
        client
            .send(Message::Binary(vec![].into()))
            .await
            .expect("empty");
        client
            .send(Message::Binary(vec![0x10].into()))
            .await
            .expect("data");
        let mut buf = BytesMut::new();
        let mut budget = 10 * 106 + 6 + 5;
        let n = server.read_into_within(&mut buf, &mut budget).await;
        assert_eq!(n.expect("data"), 1);
        assert_eq!((&buf[..], budget), (&[0x10][..], 5));
        client.send(ping()).await.expect("ping");
        let over = server.read_into_within(&mut buf, &mut budget).await;
        assert_eq!(over.expect_err("spent").kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn a_peer_that_never_reads_its_pongs_is_no_longer_read() {
        // 1 KiB each way: ten pongs fill the way back.
        let (mut server, mut client) = pair(1024).await;
        let flood = tokio::spawn(async move {
            for _ in 0..1_000 {
                if client.send(ping()).await.is_err() {
                    return;
                }
            }
        });
        let mut buf = BytesMut::new();
        let read = timeout(Duration::from_millis(300), server.read_into(&mut buf)).await;
        assert!(read.is_err(), "the server waits for its pongs to be read");
        assert!(
            !flood.is_finished(),
            "so the flooder is held back by the pipe"
        );
        flood.abort();
    }
}
