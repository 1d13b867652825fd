//! Debian's Prometheus (`/usr/bin/prometheus`) on a free loopback port with its own
//! storage in a temporary folder, and its HTTP API: readiness, targets, instant queries,
//! label values, rules.

use super::{find_program, free_port, require_program, TempDir, PATIENCE};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

/// How long Prometheus may take to start, scrape and evaluate (debug builds, a busy box).
pub const PROMETHEUS_PATIENCE: Duration = Duration::from_secs(90);

/// A running Prometheus; killed when dropped.
pub struct Prometheus {
    _child: tokio::process::Child,
    pub addr: SocketAddr,
    pub dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus with `config` (YAML) and waits until `/-/ready` says so. None when
    /// prometheus is missing on a laptop; panics under CI=true.
    pub async fn start(config: &str) -> Option<Prometheus> {
        if !require_program("prometheus") {
            return None;
        }
        let dir = TempDir::new("prometheus");
        let file = dir.path.join("prometheus.yml");
        std::fs::write(&file, config).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path.join("prometheus.log")).unwrap();
        let child = tokio::process::Command::new(find_program("prometheus").unwrap())
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let p = Prometheus {
            _child: child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        };
        let deadline = Instant::now() + PROMETHEUS_PATIENCE;
        loop {
            if let Ok((200, _)) = get(p.addr, "/-/ready").await {
                return Some(p);
            }
            assert!(Instant::now() < deadline, "not ready:\n{}", p.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What Prometheus logged so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path.join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/...` as JSON: `data` on success, the error text otherwise.
    pub async fn api(&self, path: &str) -> Result<Value, String> {
        let (status, body) = get(self.addr, path).await.map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{status}: {body}: {e}"))?;
        if v["status"] == "success" {
            Ok(v["data"].clone())
        } else {
            Err(format!("{status} {}: {}", v["errorType"], v["error"]))
        }
    }

    /// An instant query: the result vector (or scalar), or Prometheus's error.
    pub async fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let data = self
            .api(&format!("/api/v1/query?query={}", encode(promql)))
            .await?;
        match data["resultType"].as_str() {
            Some("vector") => Ok(data["result"].as_array().cloned().unwrap_or_default()),
            Some("scalar") => Ok(vec![
                serde_json::json!({"metric": {}, "value": data["result"]}),
            ]),
            other => Err(format!("unexpected result type {other:?} for {promql}")),
        }
    }

    /// Polls `promql` until its result is non-empty and `accept` takes it; panics after
    /// [`PROMETHEUS_PATIENCE`] with the last answer.
    pub async fn until(&self, promql: &str, accept: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + PROMETHEUS_PATIENCE;
        loop {
            let got = self.query(promql).await;
            if let Ok(v) = &got {
                if !v.is_empty() && accept(v) {
                    return v.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "{promql}: last answer {got:?}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// The value of one sample of a query's result.
pub fn sample_value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN)
}

/// A label of one sample of a query's result.
pub fn sample_label<'a>(sample: &'a Value, name: &str) -> &'a str {
    sample["metric"][name].as_str().unwrap_or("")
}

/// Percent-encodes a query parameter.
pub fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `GET path` over HTTP/1.0 (no chunked body to undo): the status and the body.
async fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut raw = String::new();
    timeout(PATIENCE, s.read_to_string(&mut raw))
        .await
        .map_err(|_| std::io::Error::other("no answer in time"))??;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}
