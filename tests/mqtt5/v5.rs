//! rumqttc's MQTT 5 client, its event loop driven in a task that reports what comes in:
//! the library a Rust user of fleetcast would pick, as the first of the two independent
//! clients issue 12 asks for.

use crate::Broker;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, Filter, Packet, Publish, PublishProperties, SubscribeProperties, SubscribeReasonCode,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::timeout;

pub use crate::common::PATIENCE;

pub struct V5 {
    pub client: AsyncClient,
    pub connack: ConnAck,
    /// PUBLISHes that came while waiting for a SUBACK (retained ones may come first).
    kept: std::collections::VecDeque<Publish>,
    incoming: mpsc::UnboundedReceiver<Result<Packet, String>>,
    task: tokio::task::JoinHandle<()>,
    who: &'static str,
}

impl V5 {
    /// Connects (clean start) and waits for a successful CONNACK.
    pub async fn connect(b: Broker, id: &str) -> V5 {
        Self::connect_with(b, id, |_| {}).await
    }

    /// [`V5::connect`] with options set by `tweak`.
    pub async fn connect_with(b: Broker, id: &str, tweak: impl FnOnce(&mut MqttOptions)) -> V5 {
        let mut o = MqttOptions::new(id, b.addr.ip().to_string(), b.addr.port());
        o.set_keep_alive(Duration::from_secs(30));
        tweak(&mut o);
        let (client, eventloop) = AsyncClient::new(o, 64);
        let (tx, incoming) = mpsc::unbounded_channel();
        let task = tokio::spawn(drive(eventloop, tx));
        let mut incoming = incoming;
        let connack = match timeout(PATIENCE, incoming.recv()).await {
            Ok(Some(Ok(Packet::ConnAck(ack)))) => ack,
            other => panic!("[{}] {id}: expected a CONNACK, got {other:?}", b.name),
        };
        V5 {
            client,
            connack,
            kept: Default::default(),
            incoming,
            task,
            who: b.name,
        }
    }

    /// The next packet within `wait`; None when nothing came or the connection failed.
    pub async fn next(&mut self, wait: Duration) -> Option<Packet> {
        match timeout(wait, self.incoming.recv()).await {
            Ok(Some(Ok(p))) => Some(p),
            Ok(Some(Err(e))) => panic!("[{}] MQTT 5 connection failed: {e}", self.who),
            _ => None,
        }
    }

    /// The next PUBLISH within `wait`.
    pub async fn publish_within(&mut self, wait: Duration) -> Option<Publish> {
        if let Some(p) = self.kept.pop_front() {
            return Some(p);
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await? {
                Packet::Publish(p) => return Some(p),
                Packet::Disconnect(d) => {
                    panic!(
                        "[{}] DISCONNECT while waiting for a PUBLISH: {d:?}",
                        self.who
                    )
                }
                _ => {}
            }
        }
    }

    /// The next PUBLISH; panics with `what` if none comes within [`PATIENCE`].
    pub async fn expect_publish(&mut self, what: &str) -> Publish {
        self.publish_within(PATIENCE)
            .await
            .unwrap_or_else(|| panic!("[{}] no PUBLISH ({what}) within {PATIENCE:?}", self.who))
    }

    /// Subscribes and waits for the SUBACK; panics unless every filter is granted.
    pub async fn subscribe(&mut self, filters: Vec<Filter>, id: Option<usize>) {
        let n = filters.len();
        let what = format!("{filters:?}");
        let props = SubscribeProperties {
            id,
            user_properties: Vec::new(),
        };
        self.client
            .subscribe_many_with_properties(filters, props)
            .await
            .unwrap();
        loop {
            match self.next(PATIENCE).await {
                Some(Packet::SubAck(ack)) => {
                    let granted = ack
                        .return_codes
                        .iter()
                        .filter(|c| matches!(c, SubscribeReasonCode::Success(_)))
                        .count();
                    assert_eq!(granted, n, "[{}] SUBACK for {what}: {ack:?}", self.who);
                    return;
                }
                Some(Packet::Publish(p)) => self.kept.push_back(p),
                Some(_) => {}
                None => panic!("[{}] no SUBACK for {what}", self.who),
            }
        }
    }

    pub async fn publish(&self, topic: &str, qos: QoS, retain: bool, payload: &str) {
        self.client
            .publish(topic, qos, retain, payload.to_string())
            .await
            .unwrap();
    }

    pub async fn publish_with(
        &self,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: &str,
        props: PublishProperties,
    ) {
        self.client
            .publish_with_properties(topic, qos, retain, payload.to_string(), props)
            .await
            .unwrap();
    }

    /// Sends DISCONNECT and waits for the event loop to finish.
    pub async fn disconnect(self) {
        let _ = self.client.disconnect().await;
        let _ = timeout(PATIENCE, self.task).await;
    }
}

/// A payload as text, for comparisons whose failure a person reads.
pub fn text(payload: &[u8]) -> String {
    String::from_utf8_lossy(payload).into_owned()
}

/// A subscription filter with MQTT 5 options.
pub fn filter(path: &str, qos: QoS, tweak: impl FnOnce(&mut Filter)) -> Filter {
    let mut f = Filter::new(path, qos);
    tweak(&mut f);
    f
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
