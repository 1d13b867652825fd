//! Feeding the board from an MQTT broker (the standalone `fleetcast dashboard`): the
//! wiring's side of the dashboard, which itself knows no MQTT client.
//!
//! One rumqttc connection subscribes to driver locations, driver statuses and OwnTracks
//! devices, and hands every message to the [`Board`]. It reconnects with exponential
//! backoff and full jitter, and subscribes again after each connect (clean session).

use fleetcast_dashboard::board::Board;
use fleetcast_proto::backoff::full_jitter;
use fleetcast_proto::time::now_ms;
use fleetcast_proto::topic;
use fleetcast_simulator::endpoint::{ClientOptions, ClientTls, Endpoint};
use rand::{Rng, SeedableRng};
use rumqttc::{AsyncClient, Event, Packet, QoS, SubscribeFilter};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The topics the bridge reads.
pub const FEED_FILTERS: [&str; 3] = [
    topic::LOCATION_FILTER,
    topic::STATUS_FILTER,
    topic::OWNTRACKS_FILTER,
];

/// How to reach the broker.
#[derive(Debug, Clone)]
pub struct FeedConfig {
    /// The broker.
    pub broker: Endpoint,
    /// MQTT client id.
    pub client_id: String,
    /// Optional credentials.
    pub credentials: Option<(String, String)>,
    /// TLS settings for `mqtts://` and `wss://` (None: the system's roots).
    pub tls: Option<ClientTls>,
    /// More brokers (a cluster's nodes): a lost connection moves on to the next.
    pub more_brokers: Vec<Endpoint>,
}

impl FeedConfig {
    /// The broker number `n` (modulo how many there are).
    fn broker_at(&self, n: usize) -> &Endpoint {
        match n % (1 + self.more_brokers.len()) {
            0 => &self.broker,
            k => &self.more_brokers[k - 1],
        }
    }

    /// The client's options for broker number `n`.
    fn options(&self, n: usize) -> rumqttc::MqttOptions {
        let mut options = self
            .broker_at(n)
            .options(&self.client_id, self.tls.as_ref());
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_session(true)
            .set_max_packet_size(256 * 1024, 16 * 1024);
        if let Some((user, pass)) = &self.credentials {
            options.set_credentials(user.clone(), pass.clone());
        }
        options
    }
}

/// Runs until `shutdown`; `connected` tells whether the feed is connected now.
pub async fn run(
    config: FeedConfig,
    board: Arc<Board>,
    connected: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let mut at = 0;
    // Bounded: the feed sends only SUBSCRIBEs.
    let (client, mut eventloop) = AsyncClient::new(config.options(at), 16);
    let mut rng = rand::rngs::StdRng::seed_from_u64(now_ms());
    let mut attempt = 0u32;
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => break,
            e = eventloop.poll() => e,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                attempt = 0;
                connected.store(true, Ordering::Relaxed);
                info!(broker = %config.broker_at(at), "bridge feed connected");
                let filters = FEED_FILTERS
                    .iter()
                    .map(|f| SubscribeFilter::new((*f).to_owned(), QoS::AtMostOnce));
                if client.try_subscribe_many(filters).is_err() {
                    warn!("bridge feed: subscribe not queued");
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                board.ingest(&p.topic, &p.payload, now_ms());
            }
            Ok(_) => {}
            Err(e) => {
                connected.store(false, Ordering::Relaxed);
                let wait = full_jitter(attempt, rng.random());
                attempt = attempt.saturating_add(1);
                warn!(broker = %config.broker_at(at), error = %e, retry_in_ms = wait.as_millis() as u64, "bridge feed disconnected");
                if !config.more_brokers.is_empty() {
                    at += 1;
                    eventloop.mqtt_options = config.options(at);
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
    connected.store(false, Ordering::Relaxed);
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
}
