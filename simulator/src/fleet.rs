//! The fleet: one MQTT connection per driver, one position per interval per driver.
//!
//! Each driver is one task that owns its movement model and its rumqttc event loop.
//! Publish phases are spread evenly over the interval, so 10,000 drivers do not publish in
//! the same millisecond. Connects, first ones and reconnects alike, pass one fleet-wide
//! [`ConnectGate`] (`--connect-rate`, default 500/s), and a driver that lost its
//! connection waits an exponential backoff with full jitter first: when a broker restarts,
//! the fleet comes back at the gate's rate instead of storming it. While offline a driver
//! keeps driving but publishes nothing (its `seq` counts only what it publishes, so a
//! subscriber's gaps are the broker's or the network's losses).

use crate::driver::Driver;
use crate::endpoint::{ClientOptions, Endpoint};
use crate::failure::Failures;
use crate::road_graph::RoadGraph;
use fleetcast_proto::backoff::full_jitter;
use fleetcast_proto::time::{now_ms, unix_now};
use fleetcast_proto::topic::{location_topic, status_topic};
use fleetcast_proto::{Location, Presence};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, LastWill, Packet, QoS};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::{interval_at, sleep, sleep_until, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

/// Requests a driver's client may queue; a driver publishes once an interval, so a full
/// queue means its connection is stuck and the fix is dropped (counted), not queued.
const CLIENT_QUEUE: usize = 8;

/// How a fleet runs.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// The broker.
    pub broker: Endpoint,
    /// Number of drivers.
    pub drivers: usize,
    /// Time between two fixes of one driver.
    pub interval: Duration,
    /// Seed for every random choice.
    pub seed: u64,
    /// GPS noise scale, metres (reported as `accuracy`).
    pub noise_m: f64,
    /// Connects per second over the whole fleet.
    pub connect_rate: u32,
    /// Driver id prefix; ids are `{prefix}{n:06}` from 1.
    pub id_prefix: String,
    /// MQTT username; `{id}` is replaced by the driver id.
    pub username: Option<String>,
    /// MQTT password; `{id}` is replaced by the driver id.
    pub password: Option<String>,
    /// MQTT keepalive.
    pub keep_alive: Duration,
    /// TLS settings for `mqtts://` and `wss://` (None: the system's roots).
    pub tls: Option<crate::endpoint::ClientTls>,
    /// More brokers (nodes of one cluster): drivers are spread over `broker` and these,
    /// and a driver whose connection is lost tries the next one.
    pub more_brokers: Vec<Endpoint>,
}

impl FleetConfig {
    /// A fleet of `drivers` against `broker` with the documented defaults.
    pub fn new(broker: Endpoint, drivers: usize) -> FleetConfig {
        FleetConfig {
            broker,
            drivers,
            interval: Duration::from_secs(1),
            seed: 1,
            noise_m: 3.0,
            connect_rate: 500,
            id_prefix: "drv-".to_owned(),
            username: None,
            password: None,
            keep_alive: Duration::from_secs(30),
            tls: None,
            more_brokers: Vec::new(),
        }
    }

    /// The broker number `n` (modulo how many there are).
    pub fn broker_at(&self, n: usize) -> &Endpoint {
        match n % (1 + self.more_brokers.len()) {
            0 => &self.broker,
            k => &self.more_brokers[k - 1],
        }
    }

    /// The id of driver `index` (0-based): `drv-000001` for 0.
    pub fn driver_id(&self, index: usize) -> String {
        format!("{}{:06}", self.id_prefix, index + 1)
    }
}

/// Fleet-wide counters, updated by the driver tasks.
#[derive(Debug, Default)]
pub struct FleetStats {
    /// Drivers connected now.
    pub connected: AtomicUsize,
    /// Fixes handed to the MQTT client.
    pub published: AtomicU64,
    /// Connections lost or refused (each followed by a backoff and a new attempt).
    pub reconnects: AtomicU64,
    /// CONNACKs received (first connections and reconnections).
    pub connects: AtomicU64,
    /// Why connections failed, by kind.
    pub failures: Failures,
    /// Fixes not published because a driver that had connected was offline (before its
    /// first CONNACK a driver has nothing to lose).
    pub skipped_offline: AtomicU64,
    /// Fixes dropped because the client's queue was full.
    pub dropped: AtomicU64,
}

/// A moment's copy of [`FleetStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FleetSnapshot {
    /// Drivers connected.
    pub connected: usize,
    /// Fixes published so far.
    pub published: u64,
    /// Reconnects so far.
    pub reconnects: u64,
    /// CONNACKs so far.
    pub connects: u64,
    /// Fixes skipped while offline so far.
    pub skipped_offline: u64,
    /// Fixes dropped on a full client queue so far.
    pub dropped: u64,
}

impl FleetStats {
    /// The counters now.
    pub fn snapshot(&self) -> FleetSnapshot {
        FleetSnapshot {
            connected: self.connected.load(Ordering::Relaxed),
            published: self.published.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            connects: self.connects.load(Ordering::Relaxed),
            skipped_offline: self.skipped_offline.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// Lets connects through at a fixed rate, fleet-wide, without bursts.
#[derive(Debug)]
pub struct ConnectGate {
    next: Mutex<Instant>,
    spacing: Duration,
}

impl ConnectGate {
    /// A gate for `rate` connects per second.
    pub fn new(rate: u32) -> ConnectGate {
        ConnectGate {
            next: Mutex::new(Instant::now()),
            spacing: Duration::from_secs_f64(1.0 / f64::from(rate.max(1))),
        }
    }

    /// Waits for this caller's turn.
    ///
    /// # Cancel safety
    /// A cancelled wait still uses up its turn.
    pub async fn pass(&self) {
        let at = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let at = (*next).max(Instant::now());
            *next = at + self.spacing;
            at
        };
        sleep_until(at).await;
    }
}

/// A running fleet.
#[derive(Debug)]
pub struct Fleet {
    stats: Arc<FleetStats>,
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl Fleet {
    /// Starts every driver; they connect through the gate and publish until [`stop`](Fleet::stop).
    pub fn start(config: FleetConfig, graph: Arc<RoadGraph>) -> Fleet {
        let stats = Arc::new(FleetStats::default());
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let gate = Arc::new(ConnectGate::new(config.connect_rate));
        let config = Arc::new(config);
        let start = Instant::now();
        for index in 0..config.drivers {
            // Even phases over the interval.
            let phase = config
                .interval
                .mul_f64(index as f64 / config.drivers.max(1) as f64);
            tracker.spawn(drive(
                index,
                Arc::clone(&config),
                Arc::clone(&graph),
                Arc::clone(&stats),
                Arc::clone(&gate),
                stop.clone(),
                start + phase,
            ));
        }
        tracker.close();
        Fleet {
            stats,
            stop,
            tracker,
        }
    }

    /// The live counters.
    pub fn stats(&self) -> &Arc<FleetStats> {
        &self.stats
    }

    /// Stops every driver: each publishes `offline`, disconnects cleanly, and ends.
    pub async fn stop(self) -> FleetSnapshot {
        self.stop.cancel();
        self.tracker.wait().await;
        self.stats.snapshot()
    }
}

/// One `EventLoop::poll` that owns the event loop and hands it back with the event.
///
/// rumqttc's `poll` is not cancel safe while it connects: dropped mid-handshake (as a
/// `select!` does when the publish timer fires first), it abandons the half-open socket
/// and starts over. Keeping one poll alive across `select!` rounds avoids that.
type NextEvent = Pin<Box<dyn Future<Output = (Result<Event, ConnectionError>, EventLoop)> + Send>>;

fn next_event(mut eventloop: EventLoop) -> NextEvent {
    Box::pin(async move {
        let event = eventloop.poll().await;
        (event, eventloop)
    })
}

fn driver_seed(seed: u64, index: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (index as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9)
}

fn fill(template: &Option<String>, id: &str) -> Option<String> {
    template.as_ref().map(|t| t.replace("{id}", id))
}

/// One driver's identity on the wire: its topics and presence messages.
struct Wire {
    id: String,
    location_topic: String,
    status_topic: String,
    online: Vec<u8>,
    offline: Vec<u8>,
}

impl Wire {
    fn new(id: String) -> Wire {
        Wire {
            location_topic: location_topic(&id),
            status_topic: status_topic(&id),
            online: serde_json::to_vec(&Presence::online(&id)).unwrap_or_default(),
            offline: serde_json::to_vec(&Presence::offline(&id)).unwrap_or_default(),
            id,
        }
    }

    /// The driver's MQTT client on broker number `at`.
    fn client(&self, config: &FleetConfig, at: usize) -> (AsyncClient, EventLoop) {
        AsyncClient::new(self.options(config, at), CLIENT_QUEUE)
    }

    /// Clean session, its `offline` presence as the will.
    fn options(&self, config: &FleetConfig, at: usize) -> rumqttc::MqttOptions {
        let mut options = config.broker_at(at).options(&self.id, config.tls.as_ref());
        options
            .set_keep_alive(config.keep_alive)
            .set_clean_session(true)
            .set_max_packet_size(16 * 1024, 16 * 1024)
            .set_last_will(LastWill::new(
                &self.status_topic,
                self.offline.clone(),
                QoS::AtLeastOnce,
                true,
            ));
        if let Some(user) = fill(&config.username, &self.id) {
            options.set_credentials(user, fill(&config.password, &self.id).unwrap_or_default());
        }
        options
    }

    /// Publishes the model's fix number `seq` (retained, QoS 0); a full client queue drops it.
    fn publish(&self, client: &AsyncClient, model: &mut Driver, seq: u64, stats: &FleetStats) {
        let fix = model.fix();
        let location = Location {
            id: self.id.clone(),
            lat: fix.lat,
            lon: fix.lon,
            heading: fix.heading,
            speed: fix.speed,
            accuracy: fix.accuracy,
            status: fix.status,
            seq,
            ts: now_ms(),
        };
        let body = serde_json::to_vec(&location).unwrap_or_default();
        match client.try_publish(&self.location_topic, QoS::AtMostOnce, true, body) {
            Ok(()) => stats.published.fetch_add(1, Ordering::Relaxed),
            Err(_) => stats.dropped.fetch_add(1, Ordering::Relaxed),
        };
    }
}

async fn drive(
    index: usize,
    config: Arc<FleetConfig>,
    graph: Arc<RoadGraph>,
    stats: Arc<FleetStats>,
    gate: Arc<ConnectGate>,
    stop: CancellationToken,
    first_tick: Instant,
) {
    let seed = driver_seed(config.seed, index);
    let mut model = Driver::new(graph, seed, config.noise_m);
    let mut rng = StdRng::seed_from_u64(seed.rotate_left(17));
    let wire = Wire::new(config.driver_id(index));
    // Spread over the brokers; a lost connection moves on to the next.
    let mut at = index;
    let (client, eventloop) = wire.client(&config, at);

    tokio::select! {
        _ = stop.cancelled() => return,
        _ = gate.pass() => {}
    }
    let mut ticker = interval_at(first_tick, config.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut last = Instant::now();
    let mut seq = 0u64;
    let mut connected = false;
    let mut ever_connected = false;
    let mut attempt = 0u32;
    let mut pending = next_event(eventloop);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {
                let now = Instant::now();
                model.advance((now - last).as_secs_f64());
                last = now;
                if connected {
                    seq += 1;
                    wire.publish(&client, &mut model, seq, &stats);
                } else if ever_connected {
                    stats.skipped_offline.fetch_add(1, Ordering::Relaxed);
                }
            }
            (event, mut eventloop) = &mut pending => {
                if event.is_err() && !config.more_brokers.is_empty() {
                    at += 1;
                    eventloop.mqtt_options = wire.options(&config, at);
                }
                pending = next_event(eventloop);
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        connected = true;
                        ever_connected = true;
                        attempt = 0;
                        stats.connected.fetch_add(1, Ordering::Relaxed);
                        stats.connects.fetch_add(1, Ordering::Relaxed);
                        let _ = client.try_publish(&wire.status_topic, QoS::AtLeastOnce, true, wire.online.clone());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        debug!(driver = %wire.id, error = %e, "connection lost");
                        stats.failures.record(&config.broker_at(at).to_string(), &wire.id, &e, unix_now());
                        if connected {
                            connected = false;
                            stats.connected.fetch_sub(1, Ordering::Relaxed);
                        }
                        stats.reconnects.fetch_add(1, Ordering::Relaxed);
                        let wait = full_jitter(attempt, rng.random());
                        attempt = attempt.saturating_add(1);
                        tokio::select! {
                            _ = stop.cancelled() => break,
                            _ = async { sleep(wait).await; gate.pass().await } => {}
                        }
                    }
                }
            }
        }
    }
    if connected {
        goodbye(&client, pending, &wire).await;
        stats.connected.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A clean goodbye: say offline (the will only fires on an abrupt loss), then DISCONNECT,
/// and let the event loop send both, within a bound.
async fn goodbye(client: &AsyncClient, pending: NextEvent, wire: &Wire) {
    let _ = client.try_publish(
        &wire.status_topic,
        QoS::AtLeastOnce,
        true,
        wire.offline.clone(),
    );
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(2), async move {
        let mut pending = pending;
        loop {
            let (event, eventloop) = pending.await;
            match event {
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => pending = next_event(eventloop),
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn gate_spaces_connects_at_the_rate() {
        let gate = Arc::new(ConnectGate::new(100));
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let g = Arc::clone(&gate);
            tasks.push(tokio::spawn(async move {
                g.pass().await;
                Instant::now()
            }));
        }
        let mut times = Vec::new();
        for t in tasks {
            times.push(t.await.expect("join"));
        }
        times.sort();
        // 50 connects at 100/s take 490 ms: no burst.
        assert_eq!(times[0], t0);
        assert_eq!(times[49] - t0, Duration::from_millis(490));
    }

    #[test]
    fn ids_and_credentials() {
        let mut c = FleetConfig::new("mqtt://127.0.0.1:1883".parse().expect("url"), 3);
        assert_eq!(c.driver_id(0), "drv-000001");
        assert_eq!(c.driver_id(41), "drv-000042");
        c.password = Some("secret-{id}".into());
        assert_eq!(
            fill(&c.password, "drv-000001").as_deref(),
            Some("secret-drv-000001")
        );
    }
}
