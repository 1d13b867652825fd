//! Helpers shared by the end-to-end tests: an in-process broker on port 0, MQTT clients
//! that report what they receive, raw MQTT frames, and the rule for outside programs
//! (skip on a laptop without them, fail under `CI=true`).

#![allow(dead_code, missing_docs, clippy::unwrap_used)]

pub mod chrome;
pub mod nats;
pub mod persist;
pub mod prometheus;
pub mod raw;

use fleetcast_broker::{Addrs, Broker, Config, Listeners};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS, Transport};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Upper bound for anything a test waits for; tests poll, they never sleep to wait.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A broker running in this process; stopped when dropped.
pub struct TestBroker {
    pub broker: Broker,
    pub addrs: Addrs,
}

impl TestBroker {
    pub async fn start() -> TestBroker {
        Self::with_config(Config::ephemeral()).await
    }

    pub async fn with_config(config: Config) -> TestBroker {
        let listeners = Listeners::bind(&config).await.expect("bind port 0");
        let addrs = listeners.addrs();
        let broker = Broker::start(listeners, config)
            .await
            .expect("broker starts");
        TestBroker { broker, addrs }
    }

    /// A broker with the accounts and policy of `examples/credentials.toml`.
    pub async fn with_example_credentials() -> TestBroker {
        Self::with_config_and_example_credentials(Config::ephemeral()).await
    }

    /// [`TestBroker::with_example_credentials`] with this configuration.
    pub async fn with_config_and_example_credentials(config: Config) -> TestBroker {
        let listeners = Listeners::bind(&config).await.expect("bind port 0");
        let addrs = listeners.addrs();
        let extras = fleetcast_broker::Extras {
            routes: Box::new(|_| Default::default()),
            recorder: &metrics::NoopRecorder,
            auth: Some(example_auth()),
        };
        let broker = Broker::start_with(listeners, config, extras)
            .await
            .expect("broker starts");
        TestBroker { broker, addrs }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/mqtt", self.addrs.ws)
    }
}

/// An MQTT client whose event loop runs in a task and reports incoming packets.
pub struct TestClient {
    pub client: AsyncClient,
    incoming: mpsc::UnboundedReceiver<Result<Packet, String>>,
    task: tokio::task::JoinHandle<()>,
}

pub fn tcp_options(id: &str, addrs: &Addrs) -> MqttOptions {
    let mut o = MqttOptions::new(id, addrs.mqtt.ip().to_string(), addrs.mqtt.port());
    o.set_keep_alive(Duration::from_secs(30));
    o
}

pub fn ws_options(id: &str, addrs: &Addrs) -> MqttOptions {
    let url = format!("ws://{}/mqtt", addrs.ws);
    let mut o = MqttOptions::new(id, url, addrs.ws.port());
    o.set_transport(Transport::Ws);
    o.set_keep_alive(Duration::from_secs(30));
    o
}

impl TestClient {
    /// Connects and waits for the CONNACK; panics if it does not come.
    pub async fn connect(options: MqttOptions) -> TestClient {
        let (client, eventloop) = AsyncClient::new(options, 1_000);
        let (tx, incoming) = mpsc::unbounded_channel();
        let task = tokio::spawn(drive(eventloop, tx));
        let mut c = TestClient {
            client,
            incoming,
            task,
        };
        match c.next_packet().await {
            Some(Packet::ConnAck(ack)) => {
                assert_eq!(ack.code, rumqttc::ConnectReturnCode::Success)
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
        c
    }

    /// The next packet from the broker, or None after [`PATIENCE`] or a closed connection.
    pub async fn next_packet(&mut self) -> Option<Packet> {
        match timeout(PATIENCE, self.incoming.recv()).await {
            Ok(Some(Ok(p))) => Some(p),
            _ => None,
        }
    }

    /// Waits for the connection to fail; returns the error text.
    pub async fn closed(&mut self) -> Option<String> {
        loop {
            match timeout(PATIENCE, self.incoming.recv()).await {
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(e))) => return Some(e),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// Subscribes and waits for the SUBACK; returns its return codes.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> Vec<rumqttc::SubscribeReasonCode> {
        self.client.subscribe(filter, qos).await.unwrap();
        loop {
            match self.next_packet().await {
                Some(Packet::SubAck(ack)) => return ack.return_codes,
                Some(_) => continue,
                None => panic!("no SUBACK for {filter}"),
            }
        }
    }

    /// Unsubscribes and waits for the UNSUBACK.
    pub async fn unsubscribe(&mut self, filter: &str) {
        self.client.unsubscribe(filter).await.unwrap();
        loop {
            match self.next_packet().await {
                Some(Packet::UnsubAck(_)) => return,
                Some(_) => continue,
                None => panic!("no UNSUBACK for {filter}"),
            }
        }
    }

    /// Publishes at QoS 1 and waits for the PUBACK: by then the broker's router has put
    /// it in the logs of the filters that match.
    pub async fn publish_acked(&mut self, topic: &str, payload: &'static str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
        loop {
            match self.next_packet().await {
                Some(Packet::PubAck(_)) => return,
                Some(_) => continue,
                None => panic!("no PUBACK for {topic}"),
            }
        }
    }

    /// The next PUBLISH, or None after [`PATIENCE`].
    pub async fn next_publish(&mut self) -> Option<Publish> {
        loop {
            match self.next_packet().await {
                Some(Packet::Publish(p)) => return Some(p),
                Some(_) => continue,
                None => return None,
            }
        }
    }

    /// The next PUBLISH if one arrives within `wait`.
    pub async fn publish_within(&mut self, wait: Duration) -> Option<Publish> {
        timeout(wait, self.next_publish()).await.ok().flatten()
    }

    /// Sends DISCONNECT and waits for the event loop to finish.
    pub async fn disconnect(self) {
        let _ = self.client.disconnect().await;
        let _ = timeout(PATIENCE, self.task).await;
    }

    /// Drops the connection without DISCONNECT (an abrupt loss).
    pub fn kill(self) {
        self.task.abort();
    }
}

async fn drive(mut eventloop: EventLoop, tx: mpsc::UnboundedSender<Result<Packet, String>>) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(p)) => {
                if tx.send(Ok(p)).is_err() {
                    return;
                }
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                // Let the DISCONNECT reach the socket before the loop is dropped.
                let _ = eventloop.poll().await;
                return;
            }
            Ok(Event::Outgoing(_)) => {}
            Err(e) => {
                let _ = tx.send(Err(e.to_string()));
                return;
            }
        }
    }
}

/// An MQTT 3.1.1 CONNECT frame, built by hand for the tests that need raw control.
pub fn connect_frame(
    client_id: &str,
    keep_alive: u16,
    clean: bool,
    will: Option<(&str, &[u8], bool)>,
) -> Vec<u8> {
    connect_frame_version(b"MQTT", 4, client_id, keep_alive, clean, will)
}

pub fn connect_frame_version(
    name: &[u8],
    level: u8,
    client_id: &str,
    keep_alive: u16,
    clean: bool,
    will: Option<(&str, &[u8], bool)>,
) -> Vec<u8> {
    let mut body = Vec::new();
    put_bytes(&mut body, name);
    body.push(level);
    let mut flags = if clean { 0x02 } else { 0 };
    if let Some((_, _, retain)) = will {
        flags |= 0x04 | if retain { 0x20 } else { 0 };
    }
    body.push(flags);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    if level == 5 {
        body.push(0); // no properties
    }
    put_bytes(&mut body, client_id.as_bytes());
    if let Some((topic, msg, _)) = will {
        if level == 5 {
            body.push(0);
        }
        put_bytes(&mut body, topic.as_bytes());
        put_bytes(&mut body, msg);
    }
    frame(0x10, &body)
}

pub use fleetcast_loadtest::wire::frame;

/// `n` QoS 0 PUBLISH frames to `topic` back to back, payload = the index (u32, big endian),
/// to write in one go.
pub fn publish_burst(topic: &str, n: u32) -> Vec<u8> {
    let mut burst = Vec::new();
    for i in 0..n {
        let mut body = Vec::new();
        put_bytes(&mut body, topic.as_bytes());
        body.extend_from_slice(&i.to_be_bytes());
        burst.extend(frame(0x30, &body));
    }
    burst
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

/// Sends `hello` on a fresh TCP connection and reads the first `n` bytes of the answer.
pub async fn raw_exchange(
    addr: std::net::SocketAddr,
    hello: &[u8],
    n: usize,
) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(hello).await.unwrap();
    let mut answer = vec![0u8; n];
    timeout(PATIENCE, s.read_exact(&mut answer))
        .await
        .expect("answer in time")
        .expect("answer bytes");
    (s, answer)
}

/// `fleetcast SUBCOMMAND` with every listener on port 0; killed when dropped.
pub struct Served {
    pub child: std::process::Child,
    /// Addresses from the ready line.
    pub mqtt: std::net::SocketAddr,
    pub ws: std::net::SocketAddr,
    pub http: std::net::SocketAddr,
    /// The whole ready line.
    pub ready: String,
    /// The rest of its standard output.
    pub lines: Option<std::io::Lines<std::io::BufReader<std::process::ChildStdout>>>,
    /// Its `XDG_DATA_HOME` (where `demo` keeps its state by default), removed when dropped.
    pub xdg_data: TempDir,
}

impl Served {
    /// The next line of its standard output.
    pub fn next_line(&mut self) -> Option<String> {
        self.lines.as_mut()?.next()?.ok()
    }

    /// The lines of its log (standard error) so far that contain `needle`, for a failure
    /// to show what the server saw.
    pub fn log_lines(&self, needle: &str) -> String {
        let log =
            std::fs::read_to_string(self.xdg_data.path.join("stderr.log")).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains(needle))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Keeps reading its output in a thread: a closed pipe would end it at its next line.
    pub fn drain_output(&mut self) {
        if let Some(lines) = self.lines.take() {
            std::thread::spawn(move || lines.for_each(drop));
        }
    }
}

/// `serve`'s listener flags, every one on a free port of 127.0.0.1.
pub const EPHEMERAL_LISTENERS: [&str; 6] = [
    "--mqtt",
    "127.0.0.1:0",
    "--ws",
    "127.0.0.1:0",
    "--http",
    "127.0.0.1:0",
];

/// Starts `fleetcast SUBCOMMAND --mqtt 127.0.0.1:0 --ws 127.0.0.1:0 --http 127.0.0.1:0 EXTRA...`
/// and reads its ready line (real ports, never 0).
pub fn spawn_ready(subcommand: &str, extra: &[&str]) -> Served {
    let mut args = EPHEMERAL_LISTENERS.to_vec();
    args.extend_from_slice(extra);
    spawn_ready_args(subcommand, &args)
}

/// [`spawn_ready`] with exactly these arguments (no address flags of its own).
pub fn spawn_ready_args(subcommand: &str, args: &[&str]) -> Served {
    use std::io::BufRead;
    // Each run its own: `demo` keeps its state there unless given --data or --no-data, and
    // two demos on one directory would refuse each other.
    let xdg_data = TempDir::new("xdg-data");
    // Its log goes to a file, so that a failure to start says why.
    let log_path = xdg_data.path.join("stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fleetcast"))
        .arg(subcommand)
        .args(args)
        .env("XDG_DATA_HOME", &xdg_data.path)
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let Some(Ok(line)) = lines.next() else {
        let status = child.wait();
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "fleetcast {subcommand} {args:?} ended ({status:?}) without a ready line; \
             the end of its log:\n{}",
            tail.join("\n")
        );
    };
    assert!(line.starts_with("fleetcast ready mqtt="), "{line}");
    let field = |name: &str| -> std::net::SocketAddr {
        let prefix = format!("{name}=");
        let addr: std::net::SocketAddr = line
            .split(' ')
            .find_map(|w| w.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("{name} missing in {line}"))
            .parse()
            .unwrap();
        assert_ne!(addr.port(), 0, "real ports in the ready line: {line}");
        addr
    };
    Served {
        mqtt: field("mqtt"),
        ws: field("ws"),
        http: field("http"),
        ready: line.clone(),
        child,
        lines: Some(lines),
        xdg_data,
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `serve`'s stack (broker + dashboard + /metrics) in this process, every listener on
/// port 0, no credentials.
pub async fn start_stack(
    options: fleetcast_dashboard::service::DashboardOptions,
) -> fleetcast::stack::Stack {
    start_stack_with_auth(options, None).await
}

/// `examples/credentials.toml`, for `--auth` on the command line.
pub const EXAMPLE_CREDENTIALS: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/examples/credentials.toml");

/// The accounts of `examples/credentials.toml`.
pub fn example_auth() -> std::sync::Arc<fleetcast_broker::auth::Auth> {
    let path = std::path::Path::new(EXAMPLE_CREDENTIALS);
    std::sync::Arc::new(fleetcast_broker::auth::Auth::from_file(path).unwrap())
}

/// [`start_stack`] with accounts (`serve --auth`).
pub async fn start_stack_with_auth(
    options: fleetcast_dashboard::service::DashboardOptions,
    auth: Option<std::sync::Arc<fleetcast_broker::auth::Auth>>,
) -> fleetcast::stack::Stack {
    start_stack_with_config(Config::ephemeral(), options, auth).await
}

/// [`start_stack_with_auth`] with this configuration.
pub async fn start_stack_with_config(
    config: Config,
    options: fleetcast_dashboard::service::DashboardOptions,
    auth: Option<std::sync::Arc<fleetcast_broker::auth::Auth>>,
) -> fleetcast::stack::Stack {
    let listeners = Listeners::bind(&config).await.expect("bind port 0");
    fleetcast::stack::Stack::start(
        listeners,
        config,
        options,
        fleetcast::stack::Metering::On,
        auth,
    )
    .await
    .expect("stack starts")
}

/// What an HTTP request came back with.
pub struct HttpAnswer {
    pub status: u16,
    /// The status line and the headers.
    pub head: String,
    pub body: String,
}

/// `METHOD path` with `headers` and `body` on a fresh connection, read to its end.
pub async fn http_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpAnswer {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    timeout(PATIENCE, s.read_to_end(&mut out))
        .await
        .expect("an answer in time")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    HttpAnswer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// The `Authorization` header value of HTTP Basic credentials.
pub fn basic_auth(user: &str, password: &str) -> String {
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

/// `GET path` over HTTP/1.1; the whole response, headers included.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    try_http_get(addr, path, PATIENCE).await.unwrap()
}

/// [`http_get`] that says what went wrong instead of panicking, each step within `limit`
/// (for polling a server that may not answer yet).
pub async fn try_http_get(
    addr: std::net::SocketAddr,
    path: &str,
    limit: Duration,
) -> Result<String, String> {
    let ask = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut s = match timeout(limit, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("connect: {e}")),
        Err(_) => return Err(format!("connect: nothing within {limit:?}")),
    };
    s.write_all(ask.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    match timeout(limit, s.read_to_string(&mut out)).await {
        Ok(Ok(_)) => Ok(out),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {limit:?}")),
    }
}

/// Where an outside program is: on PATH, or in the sbin folders Debian puts daemons in.
pub fn find_program(name: &str) -> Option<std::path::PathBuf> {
    let mut dirs: Vec<std::path::PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(Into::into));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// Whether an outside program may be used. Missing on a laptop: the test is skipped
/// (returns false). Missing under `CI=true`: the test fails.
pub fn require_program(name: &str) -> bool {
    let found = find_program(name).is_some();
    if !found {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{name} is required under CI=true (install it in .ci/run)");
        }
        eprintln!("skipping: {name} not installed");
    }
    found
}

/// A free port on 127.0.0.1, for programs that cannot be told to bind port 0.
///
/// Taken below the kernel's ephemeral range: a port the kernel hands out for port 0 can
/// go, between this check and the program's bind, to the local end of one of the many
/// outgoing connections the tests running beside make, and the program then fails to
/// listen. Below the range only an explicit bind takes a port; a cursor shared by the
/// process's tests, starting at an offset of its pid, keeps two picks apart.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static CURSOR: AtomicU32 = AtomicU32::new(0);
    const FIRST: u32 = 10_000;
    let below = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .filter(|low| *low > FIRST + 1_000)
        .unwrap_or(32_768);
    let span = below - FIRST;
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let step = CURSOR.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(FIRST + (start + step) % span).unwrap();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {FIRST} and {below}")
}

/// Polls until something accepts TCP connections on `addr`.
pub async fn wait_listening(addr: std::net::SocketAddr) {
    assert!(until_listening(addr).await, "nothing listens on {addr}");
}

/// Polls until something accepts TCP connections on `addr`, for at most [`PATIENCE`];
/// whether something did.
pub async fn until_listening(addr: std::net::SocketAddr) -> bool {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while TcpStream::connect(addr).await.is_err() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// Debian's mosquitto broker on a free loopback port; killed when dropped.
pub struct Mosquitto {
    child: tokio::process::Child,
    pub addr: std::net::SocketAddr,
    _dir: TempDir,
}

impl Mosquitto {
    /// None when mosquitto is missing on a laptop; panics under CI=true.
    pub async fn start() -> Option<Mosquitto> {
        Self::start_with("").await
    }

    /// [`Mosquitto::start`] with these lines added to its configuration (e.g.
    /// `max_keepalive 10`).
    pub async fn start_with(extra_conf: &str) -> Option<Mosquitto> {
        if !require_program("mosquitto") {
            return None;
        }
        let port = free_port();
        let dir = TempDir::new("mosquitto");
        let conf = dir.path.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_connections -1\npersistence false\n{extra_conf}\n"),
        )
        .unwrap();
        let child = tokio::process::Command::new(find_program("mosquitto").unwrap())
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        wait_listening(addr).await;
        Some(Mosquitto {
            child,
            addr,
            _dir: dir,
        })
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A temporary folder, removed when dropped.
pub struct TempDir {
    pub path: std::path::PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("fleetcast-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// An MQTT 5 client (rumqttc's v5) whose event loop the test drives with [`v5_until`].
pub fn v5_client(
    mut options: rumqttc::v5::MqttOptions,
) -> (rumqttc::v5::AsyncClient, rumqttc::v5::EventLoop) {
    options.set_keep_alive(Duration::from_secs(30));
    rumqttc::v5::AsyncClient::new(options, 16)
}

/// Polls an MQTT 5 event loop until `pick` takes an incoming packet; panics on a
/// connection error or after [`PATIENCE`].
pub async fn v5_until<R>(
    events: &mut rumqttc::v5::EventLoop,
    mut pick: impl FnMut(&rumqttc::v5::mqttbytes::v5::Packet) -> Option<R>,
) -> R {
    timeout(PATIENCE, async {
        loop {
            match events.poll().await {
                Ok(rumqttc::v5::Event::Incoming(p)) => {
                    if let Some(r) = pick(&p) {
                        return r;
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("MQTT 5 connection failed: {e}"),
            }
        }
    })
    .await
    .expect("MQTT 5 packet in time")
}

/// The first connection error an MQTT 5 event loop reports (CONNACK refusals among them).
pub async fn v5_error(events: &mut rumqttc::v5::EventLoop) -> rumqttc::v5::ConnectionError {
    timeout(PATIENCE, async {
        loop {
            if let Err(e) = events.poll().await {
                return e;
            }
        }
    })
    .await
    .expect("an MQTT 5 error in time")
}

/// CPU time of this process's threads whose name starts with `prefix`.
pub fn threads_cpu(prefix: &str) -> Duration {
    let mut ticks = 0u64;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the ")" closing the name: state is the 1st, utime the 12th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        ticks += f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    Duration::from_millis(ticks * 10)
}
