//! Client connections on a few single-threaded runtimes of their own (`[runtime]
//! io_threads`), each connection on one thread for its whole life.
//!
//! Why: a fleet of devices sending one message a second each gives a thread little to do
//! per wake-up. On tokio's shared runtime the connection work is spread over every worker
//! (one per core), each waking for a few ready sockets, and the workers also wake each
//! other to find work; here a connection wakes only its own thread, whose epoll holds its
//! socket, its timers and the tasks it spawns, the way mosquitto's one loop does. What is
//! not a connection (HTTP, the map, ingest, the cluster) stays on the shared runtime, which
//! gets the cores these threads leave (`[runtime] workers`). Measured on 2 cores, 5,000
//! drivers at 1 Hz: one connection thread and one worker switched threads a third less often
//! than two shared workers (2,700-3,200 against 4,200-5,100 switches a second) and cost 0-12%
//! less CPU; one flooding publisher got 0-16% fewer messages through, 1,000 publishers as
//! many (`bench/SUMMARY.md`, 2026-12-06). With two workers beside the connection thread the
//! switches fell as much but the CPU did not.
//!
//! A thread that runs out of work, and was busy under a quarter of the time lately, first
//! sleeps `[runtime] io_coalesce_us` (tokio's `on_thread_park`), then asks epoll for
//! more (`pause.rs`). On a VM every wake-up of a thread costs several microseconds of
//! switching before any work (the I/O thread's top entry, `finish_task_switch`, 15% of its
//! samples with 10,000 drivers at 1 Hz), and at 10,000 publishes a second it woke about
//! 2,000 times a second for five of them each; after the sleep, one wake-up takes in
//! whatever arrived during it. The price is up to that long added to a message's way
//! through, and to a reply, while the thread is mostly idle.
//!
//! A connection goes to the thread holding the fewest connections when it is accepted;
//! work never moves between threads afterwards (no stealing), which is the price: a
//! thread holding a flooding device serves its other devices after it. The threads end
//! once the last handle is dropped (the broker and its accept loops), after
//! `Broker::shutdown` has waited for the sessions; tasks still running then are dropped
//! with their runtime.

use futures_util::FutureExt;
pub use pause::session_woke;
use pause::Duty;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;
use tracing::debug;

mod pause;

/// Only its own thread takes it: never contended, never held across a pause.
fn lock(duty: &Mutex<Duty>) -> MutexGuard<'_, Duty> {
    duty.lock().unwrap_or_else(|p| p.into_inner())
}

/// The most threads accepted for `[runtime] io_threads` and `workers`.
pub const MAX_THREADS: usize = 256;

/// The connection threads; empty when connections run on the shared runtime.
#[derive(Debug, Default)]
pub struct IoThreads {
    threads: Vec<IoThread>,
}

/// Work handed to a thread: it runs there, in its runtime's context.
type Job = Box<dyn FnOnce() + Send>;

/// Jobs waiting for a thread; a full queue pauses the accept loop handing them over.
const QUEUE: usize = 1024;

struct IoThread {
    /// Dropped with the `IoThreads`: the thread's runtime then stops.
    jobs: mpsc::Sender<Job>,
    /// Connections running on this thread.
    load: Arc<AtomicUsize>,
}

impl std::fmt::Debug for IoThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoThread")
            .field("load", &self.load)
            .finish()
    }
}

/// One connection's share of its thread's load, given back when its task ends.
struct Load(Arc<AtomicUsize>);

impl Drop for Load {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl IoThreads {
    /// Exactly `n` threads (`[runtime] io_threads`, `Runtime::io_thread_count`); 0: none,
    /// connections run where they are accepted. `coalesce`: how long a thread mostly idle
    /// sleeps before it parks (`[runtime] io_coalesce_us`, `pause.rs`); None: it never does.
    ///
    /// # Errors
    /// A runtime or its thread could not be made.
    pub fn exactly(n: usize, coalesce: Option<Duration>) -> std::io::Result<IoThreads> {
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let mut builder = tokio::runtime::Builder::new_current_thread();
            if let Some(pause) = coalesce {
                let duty = Arc::new(Mutex::new(Duty::new(pause, Instant::now())));
                let woke = Arc::clone(&duty);
                builder
                    .on_thread_park(move || {
                        let wakes = pause::take_session_wakes();
                        let pause = lock(&duty).parking(Instant::now(), wakes);
                        if let Some(pause) = pause {
                            std::thread::sleep(pause);
                        }
                    })
                    .on_thread_unpark(move || lock(&woke).unparked(Instant::now()));
            }
            let runtime = builder.enable_all().build()?;
            let (jobs, mut queued) = mpsc::channel::<Job>(QUEUE);
            std::thread::Builder::new()
                .name(format!("fleetcast-io-{i}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        while let Some(job) = queued.recv().await {
                            job();
                        }
                    });
                    // Not a plain drop: that would wait for blocking tasks still running.
                    runtime.shutdown_background();
                })?;
            threads.push(IoThread {
                jobs,
                load: Arc::new(AtomicUsize::new(0)),
            });
        }
        Ok(IoThreads { threads })
    }

    /// Connections running on each thread, in thread order.
    #[cfg(test)]
    fn loads(&self) -> Vec<usize> {
        self.threads
            .iter()
            .map(|t| t.load.load(Ordering::Relaxed))
            .collect()
    }

    /// Runs `serve(stream)` as a task tracked by `tracker`: on the thread holding the
    /// fewest connections, or, with no threads, on the caller's runtime. The thread
    /// registers the socket with its epoll, calls `serve` and spawns the task itself, so
    /// that what a connection keeps for its life is allocated there: a task spawned from
    /// the accepting thread left each idle connection about 300 bytes larger (glibc's
    /// per-thread arenas; 97.4 against 91.4 MiB for 19,900 idle connections). Waits while
    /// the thread's queue is full.
    ///
    /// # Errors
    /// The socket could not be moved to the thread (it is closed then).
    pub async fn spawn<F, Fut>(
        &self,
        stream: TcpStream,
        tracker: &TaskTracker,
        serve: F,
    ) -> std::io::Result<()>
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(thread) = self
            .threads
            .iter()
            .min_by_key(|t| t.load.load(Ordering::Relaxed))
        else {
            tracker.spawn(serve(stream));
            return Ok(());
        };
        // The socket leaves the accepting runtime's epoll for the thread's.
        let stream = stream.into_std()?;
        thread.load.fetch_add(1, Ordering::Relaxed);
        let load = Load(Arc::clone(&thread.load));
        let tracker = tracker.clone();
        let job: Job = Box::new(move || match TcpStream::from_std(stream) {
            Ok(stream) => {
                let task = serve(stream).map(move |()| drop(load));
                tokio::spawn(tracker.track_future(task));
            }
            Err(e) => debug!(error = %e, "socket not registered on its thread; closed"),
        });
        thread
            .jobs
            .send(job)
            .await
            .map_err(|_| std::io::Error::other("the connection thread has stopped"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Accepts `n` connections, each served by an echo of one byte followed by the name
    /// of the thread serving it.
    async fn echo_names(threads: &IoThreads, n: usize) -> Vec<String> {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let tracker = TaskTracker::new();
        let mut clients = Vec::new();
        for _ in 0..n {
            let client = TcpStream::connect(addr).await.expect("connect");
            let (stream, _) = listener.accept().await.expect("accept");
            threads
                .spawn(stream, &tracker, |mut s| async move {
                    let mut b = [0u8; 1];
                    if s.read_exact(&mut b).await.is_ok() {
                        let name = std::thread::current().name().unwrap_or("").to_owned();
                        let _ = s.write_all(name.as_bytes()).await;
                    }
                })
                .await
                .expect("spawn");
            clients.push(client);
        }
        let mut names = Vec::new();
        for mut c in clients {
            c.write_all(b"?").await.expect("write");
            let mut name = String::new();
            c.read_to_string(&mut name).await.expect("read");
            names.push(name);
        }
        tracker.close();
        tracker.wait().await;
        names
    }

    #[tokio::test]
    async fn connections_spread_over_the_threads_and_their_load_is_given_back() {
        let threads = IoThreads::exactly(3, None).expect("threads");
        let mut names = echo_names(&threads, 6).await;
        names.sort();
        assert_eq!(
            names,
            [
                "fleetcast-io-0",
                "fleetcast-io-0",
                "fleetcast-io-1",
                "fleetcast-io-1",
                "fleetcast-io-2",
                "fleetcast-io-2"
            ]
        );
        assert_eq!(threads.loads(), [0, 0, 0], "every task ended");
    }

    #[tokio::test]
    async fn with_no_threads_connections_run_on_the_callers_runtime() {
        let threads = IoThreads::exactly(0, None).expect("threads");
        assert!(threads.loads().is_empty());
        let here = std::thread::current().name().unwrap_or("").to_owned();
        assert_eq!(echo_names(&threads, 2).await, [here.clone(), here]);
    }

    #[tokio::test]
    async fn threads_end_when_dropped_and_their_tasks_with_them() {
        let threads = IoThreads::exactly(2, None).expect("threads");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let _client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (stream, _) = listener.accept().await.expect("accept");
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (running, started) = tokio::sync::oneshot::channel::<()>();
        let tracker = TaskTracker::new();
        threads
            .spawn(stream, &tracker, move |_s| async move {
                // Never finishes by itself: dropping the runtime drops it, and with it `tx`.
                let _tx = tx;
                let _ = running.send(());
                std::future::pending::<()>().await;
            })
            .await
            .expect("spawn");
        started.await.expect("the task ran");
        assert_eq!(threads.loads().iter().sum::<usize>(), 1);
        drop(threads);
        let gone = tokio::task::spawn_blocking(move || {
            rx.recv_timeout(std::time::Duration::from_secs(10))
        });
        assert_eq!(
            gone.await.expect("join"),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
        );
    }
}
