//! The MQTT 5 items again with a second, independent client: Debian's `mosquitto_pub` and
//! `mosquitto_sub -V mqttv5` (package mosquitto-clients 2.0.11), whose `-D` flag sets
//! properties and whose `-F` format prints them. PUBLISH properties (and a 3.1.1
//! subscriber of the same topic), subscription identifiers, retain-as-published,
//! message expiry and topic aliases. No-local is not here: mosquitto_sub 2.0.11 has no
//! option for it (`man mosquitto_sub`); `subscriptions.rs` covers it.

use crate::common::{require_program, PATIENCE};
use crate::{both, Broker};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::{timeout, Instant};

/// Everything `-F` can print of a message, `|`-separated after a MSG marker that tells
/// message lines from `-d` debug lines.
const FORMAT: &str = "MSG|%t|%r|%P|%C|%F|%R|%D|%S|%E|%p";

fn have_clients() -> bool {
    require_program("mosquitto_sub")
        && require_program("mosquitto_pub")
        && require_program("stdbuf")
}

/// A running mosquitto_sub. `-d` prints "Subscribed (mid: ...)" on the SUBACK, which is
/// when a publish may start; stdbuf makes each line reach us when printed (stdout is a
/// pipe, which stdio would buffer).
struct Sub {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    who: &'static str,
}

impl Sub {
    async fn start(b: Broker, version: &str, args: &[&str]) -> Sub {
        let port = b.addr.port().to_string();
        let mut child = Command::new("stdbuf")
            .args(["-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", &port])
            .args(["-V", version, "-d"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = Vec::new();
        let subscribed = timeout(PATIENCE, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with("Subscribed (mid:") {
                    return true;
                }
                seen.push(line);
            }
            false
        })
        .await;
        assert!(
            subscribed == Ok(true),
            "[{}] mosquitto_sub {args:?} did not subscribe: {seen:#?}",
            b.name
        );
        Sub {
            _child: child,
            lines,
            who: b.name,
        }
    }

    /// The next message line (without its MSG| marker) within `wait`.
    async fn message_within(&mut self, wait: Duration) -> Option<String> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.lines.next_line()).await {
                Ok(Ok(Some(line))) => {
                    if let Some(m) = line.strip_prefix("MSG|") {
                        return Some(m.to_string());
                    }
                }
                _ => return None,
            }
        }
    }

    async fn message(&mut self, what: &str) -> String {
        self.message_within(PATIENCE)
            .await
            .unwrap_or_else(|| panic!("[{}] mosquitto_sub got no message ({what})", self.who))
    }
}

/// Runs mosquitto_pub with `args` (stdin: `input`); panics unless it succeeds. Returns
/// its standard output (its `-d` lines).
async fn publish(b: Broker, args: &[&str], input: &str) -> String {
    use tokio::io::AsyncWriteExt;
    let port = b.addr.port().to_string();
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv5"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let out = timeout(PATIENCE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("[{}] mosquitto_pub {args:?} hung", b.name))
        .unwrap();
    assert!(
        out.status.success(),
        "[{}] mosquitto_pub {args:?}: {} {}",
        b.name,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn properties(b: Broker) {
    let who = b.name;
    let topic = "mqtt5/cli/props";
    let mut v5 = Sub::start(b, "mqttv5", &["-q", "1", "-t", topic, "-F", FORMAT]).await;
    let mut v311 = Sub::start(b, "mqttv311", &["-q", "1", "-t", topic, "-F", "MSG|%t|%p"]).await;
    #[rustfmt::skip]
    let props = [
        "-D", "publish", "user-property", "fleet", "north",
        "-D", "publish", "user-property", "trip", "7",
        "-D", "publish", "user-property", "fleet", "south",
        "-D", "publish", "content-type", "application/json",
        "-D", "publish", "payload-format-indicator", "1",
        "-D", "publish", "response-topic", "mqtt5/cli/replies",
        "-D", "publish", "correlation-data", "req-1",
    ];
    let mut args = vec!["-q", "1", "-t", topic, "-m", "hello"];
    args.extend(props);
    publish(b, &args, "").await;
    assert_eq!(
        v5.message("with properties").await,
        format!(
            "{topic}|0|fleet:north trip:7 fleet:south|application/json|1|mqtt5/cli/replies|req-1|||hello"
        ),
        "[{who}] topic|retain|user properties|content type|payload format|response topic|\
         correlation data|subscription id|expiry|payload"
    );
    assert_eq!(
        v311.message("the same message, over 3.1.1").await,
        format!("{topic}|hello"),
        "[{who}] 3.1.1 subscriber"
    );
}

#[tokio::test]
async fn mosquitto_clients_publish_properties_reach_v5_and_v311_subscribers() {
    if have_clients() {
        both("", "", properties).await;
    }
}

async fn subscription_identifier(b: Broker) {
    let topic = "mqtt5/cli/sid";
    let args = [
        "-t",
        topic,
        "-D",
        "subscribe",
        "subscription-identifier",
        "7",
    ];
    let mut sub = Sub::start(b, "mqttv5", &[&args[..], &["-F", "MSG|%S|%p"]].concat()).await;
    publish(b, &["-t", topic, "-m", "x"], "").await;
    assert_eq!(
        sub.message("with subscription id").await,
        "7|x",
        "[{}] %S|%p",
        b.name
    );
}

#[tokio::test]
async fn mosquitto_sub_subscription_identifier() {
    if have_clients() {
        both("", "", subscription_identifier).await;
    }
}

async fn retain_as_published(b: Broker) {
    let who = b.name;
    let topic = "mqtt5/cli/rap";
    let mut kept = Sub::start(
        b,
        "mqttv5",
        &["-t", topic, "--retain-as-published", "-F", "MSG|%r|%p"],
    )
    .await;
    let mut cleared = Sub::start(b, "mqttv5", &["-t", topic, "-F", "MSG|%r|%p"]).await;
    publish(b, &["-t", topic, "-r", "-m", "live-retained"], "").await;
    assert_eq!(
        kept.message("retain-as-published").await,
        "1|live-retained",
        "[{who}] --retain-as-published keeps the retain flag"
    );
    assert_eq!(
        cleared.message("plain").await,
        "0|live-retained",
        "[{who}] a live delivery without retain-as-published has retain 0"
    );
}

#[tokio::test]
async fn mosquitto_sub_retain_as_published() {
    if have_clients() {
        both("", "", retain_as_published).await;
    }
}

async fn message_expiry(b: Broker) {
    let who = b.name;
    for (name, secs) in [("short", "2"), ("long", "60")] {
        let topic = format!("mqtt5/cli/expiry/{name}");
        let args = ["-q", "1", "-r", "-t", &topic, "-m", name];
        let expiry = ["-D", "publish", "message-expiry-interval", secs];
        publish(b, &[&args[..], &expiry[..]].concat(), "").await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut sub = Sub::start(
        b,
        "mqttv5",
        &["-t", "mqtt5/cli/expiry/#", "-F", "MSG|%t|%E|%p"],
    )
    .await;
    let got = sub.message("the retained message with expiry 60").await;
    let fields: Vec<&str> = got.split('|').collect();
    assert_eq!(
        (fields[0], fields[2]),
        ("mqtt5/cli/expiry/long", "long"),
        "[{who}] the only retained message left after 4 s: {got}"
    );
    let left: u32 = fields[1]
        .parse()
        .unwrap_or_else(|_| panic!("[{who}] no remaining expiry (%E) on {got}"));
    assert!(
        (1..=58).contains(&left),
        "[{who}] remaining expiry {left} after 4 s of 60"
    );
    if let Some(more) = sub.message_within(Duration::from_secs(1)).await {
        panic!("[{who}] the retained message with expiry 2 s came after 4 s: {more}");
    }
}

#[tokio::test]
async fn mosquitto_pub_message_expiry_interval() {
    if have_clients() {
        both("", "", message_expiry).await;
    }
}

async fn topic_alias(b: Broker) {
    let who = b.name;
    let topic = "mqtt5/cli/alias";
    let mut sub = Sub::start(b, "mqttv5", &["-t", topic, "-F", "MSG|%t|%p"]).await;
    let args = [
        "-d",
        "-q",
        "1",
        "-t",
        topic,
        "-l",
        "-D",
        "publish",
        "topic-alias",
        "1",
    ];
    let said = publish(b, &args, "a\nb\nc\n").await;
    // mosquitto_pub sends the topic with the alias once, then the alias alone, which it
    // logs as topic '(null)': the broker did resolve an alias.
    assert!(
        said.contains("'(null)'"),
        "[{who}] mosquitto_pub did not use the alias alone: {said}"
    );
    for line in ["a", "b", "c"] {
        let got = sub.message_within(PATIENCE).await.unwrap_or_else(|| {
            panic!("[{who}] message {line} sent with topic alias 1 never came; mosquitto_pub said:\n{said}")
        });
        assert_eq!(
            got,
            format!("{topic}|{line}"),
            "[{who}] a message sent with topic alias 1, under its full topic"
        );
    }
}

#[tokio::test]
async fn mosquitto_pub_topic_alias() {
    if have_clients() {
        both("", "", topic_alias).await;
    }
}
