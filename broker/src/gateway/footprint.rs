//! What one connection costs in memory, measured, and kept within budget by its tests.
//!
//! An idle plain TCP connection holds one allocation for its task (the session's future:
//! its state and the room its wait needs, `session::run`), tokio's registration of its
//! socket, its entries in the registries (client id, connect quota) and no buffer: the
//! read buffer is let go whenever it is empty (`intake::make_room`; a read lands in a
//! stack array, `transport.rs`) and so is an empty write buffer of a session without a
//! router link; an idle device has no router link (`uplink.rs`). The steps before and after
//! serving are boxed and freed once run, the CONNECT is kept only for what the end needs
//! (client id, will, flags), and the link's wait and send and a publish held back by a
//! Receive Maximum are boxed too. Measured in this (debug) build: the session's state is
//! 992 bytes and the whole task's future 1,960 (4,088 before; of it, the serve loop's
//! stop future and its one timer, made once per session rather than at every wake-up).
//! In release, before the serve loop kept its timer (at 7c970f2 plus these changes), the
//! task was one allocation of 1,920 bytes with tokio's header (heaptrack, 10,000 idle
//! clients; before: 4,048 for the future, 512 for the task, 1,024 for the read buffer,
//! ~400 for the log's span). `bench/run.sh`'s `idle` scenario, this build: 3.07 KiB of
//! RSS per idle connection, 19,900 at 91.3 MiB (6.91 KiB and 166.2 MiB before; mosquitto
//! 0.72 KiB and 22.5 MiB in the same run). With mimalloc as the binary's allocator
//! (`src/main.rs`), `bench/run.sh` at f0fd1ba: 2.6 KiB per idle connection, 19,900 at
//! 84.6 MiB. The bounds are the debug figures with a margin, so that a change making every
//! connection heavier shows up here first.

#[cfg(test)]
mod tests {
    use crate::gateway::intake::make_room;
    use crate::gateway::session::{run, Session};
    use crate::gateway::transport::Transport;
    use crate::gateway::{Gateway, TransportKind};
    use crate::router::{RouterHandle, RouterSettings};
    use bytes::BytesMut;
    use std::sync::Arc;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    #[test]
    fn an_empty_read_buffer_is_let_go() {
        let mut buf = BytesMut::with_capacity(1024);
        make_room(&mut buf);
        assert_eq!(buf.capacity(), 0, "an idle connection holds no read buffer");
    }

    #[test]
    fn a_buffer_holding_part_of_a_frame_grows_to_a_kib_first() {
        let mut buf = BytesMut::from(&[0x30u8, 0x7f][..]);
        make_room(&mut buf);
        assert!((1024..4096).contains(&buf.capacity()), "{}", buf.capacity());
        assert_eq!(&buf[..], &[0x30, 0x7f]);
        let mut big = BytesMut::from(&vec![0u8; 2000][..]);
        make_room(&mut big);
        assert!(big.capacity() >= 2000 + 16 * 1024, "{}", big.capacity());
    }

    #[tokio::test]
    async fn a_read_into_no_buffer_allocates_what_came() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (mut server, _) = listener.accept().await.expect("accept");
        client.write_all(&[0xC0, 0x00]).await.expect("write");
        let mut buf = BytesMut::new();
        let n = server.read_into(&mut buf).await.expect("read");
        assert_eq!((n, &buf[..]), (2, &[0xC0, 0x00][..]));
        assert!(buf.capacity() < 64, "{}", buf.capacity());
    }

    #[test]
    fn a_session_state_stays_small() {
        let size = std::mem::size_of::<Session<TcpStream>>();
        eprintln!("size_of::<Session<TcpStream>>() = {size}");
        assert!(size <= 1_100, "{size} bytes");
    }

    #[tokio::test]
    async fn a_connection_task_stays_small() {
        let router = RouterHandle::spawn(&RouterSettings {
            max_connections: 10,
            max_outgoing_packet_count: 10,
            max_segment_size: 1024,
            max_segment_count: 1,
            coalesce_window: Some(crate::router::DEFAULT_WINDOW),
        })
        .expect("router");
        let gw = Arc::new(Gateway::new(
            crate::config::Config::default(),
            router,
            tokio_util::sync::CancellationToken::new(),
            &metrics::NoopRecorder,
            None,
            None,
            None,
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stream = TcpStream::connect(addr).await.expect("connect");
        let deadline = tokio::time::Instant::now();
        let task = run(stream, gw, addr, TransportKind::Tcp, deadline);
        let size = std::mem::size_of_val(&task);
        eprintln!("session::run::<TcpStream> future = {size} bytes");
        assert!(size <= 2_300, "{size} bytes");
    }
}
