//! Durability: what the gateway sees that must survive a restart, kept in memory and
//! written to the [`Store`] in coalesced batches by one flusher thread.
//!
//! Sessions call the hooks ([`tap::Tap`]) on the hot path: a retained publish only replaces
//! the topic's pending value in a map under a short lock, so a fleet at 1 Hz costs one map
//! insert per fix, never a disk write. Every `flush_interval_ms` the flusher takes what
//! changed (the last value per topic, each changed session whole) and commits it in one
//! transaction, away from tokio's workers. A change is on disk at most
//! `flush_interval_ms` plus one commit after it was made (two commits when a commit takes
//! longer than the interval): that is what a `kill -9` can lose. Shutdown flushes last.

mod owed;
pub mod tap;

use crate::store::{Batch, Props, Retained, SavedSession, Store, StoreError};
use crate::throttle::Throttle;
use bytes::Bytes;
use fleetcast_proto::meter::{counter, describe_counter, describe_gauge, gauge};
use metrics::{Counter, Gauge, Histogram, Recorder, Unit};
use owed::Owed;
pub use owed::{Replay, MAX_QUEUED_LIMIT, REPLAY_PKID_BASE};
use rumqttd::protocol::PublishProperties;
use std::collections::{HashMap, HashSet};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// How the durable state is kept.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Time between two flushes.
    pub flush_interval: Duration,
    /// Messages one persistent session may be owed; past it the oldest go.
    pub max_queued_per_session: usize,
    /// Persistent sessions kept; a session past it lives in the router only.
    pub max_sessions: usize,
}

/// The store's meters.
#[derive(Debug, Clone)]
pub struct StoreMeters {
    size: Gauge,
    flush: Histogram,
    flushed: Counter,
    flush_errors: Counter,
    queue_dropped: Counter,
    loaded_retained: Gauge,
    loaded_sessions: Gauge,
    loaded_queued: Gauge,
}

impl StoreMeters {
    /// Registers `fleetcast_store_*` on `r`.
    pub fn new(r: &dyn Recorder) -> StoreMeters {
        describe_gauge(
            r,
            "fleetcast_store_size_bytes",
            Some(Unit::Bytes),
            "Size of the store file.",
        );
        r.describe_histogram(
            "fleetcast_store_flush_duration_seconds".into(),
            Some(Unit::Seconds),
            "Time one flush (a transaction and its commit) took.".into(),
        );
        describe_counter(
            r,
            "fleetcast_store_records_written_total",
            None,
            "Records written or deleted by flushes.",
        );
        describe_counter(
            r,
            "fleetcast_store_flush_errors_total",
            None,
            "Flushes that failed (kept for the next one).",
        );
        describe_counter(
            r,
            "fleetcast_store_queue_dropped_total",
            None,
            "Messages a persistent session was owed, dropped past max_queued_per_session.",
        );
        describe_gauge(
            r,
            "fleetcast_store_loaded_items",
            None,
            "Items loaded from the store at start, by kind.",
        );
        let meta = metrics::Metadata::new(module_path!(), metrics::Level::INFO, None);
        let loaded = |kind| gauge(r, "fleetcast_store_loaded_items", &[("kind", kind)]);
        StoreMeters {
            size: gauge(r, "fleetcast_store_size_bytes", &[]),
            flush: r.register_histogram(
                &metrics::Key::from_static_name("fleetcast_store_flush_duration_seconds"),
                &meta,
            ),
            flushed: counter(r, "fleetcast_store_records_written_total", &[]),
            flush_errors: counter(r, "fleetcast_store_flush_errors_total", &[]),
            queue_dropped: counter(r, "fleetcast_store_queue_dropped_total", &[]),
            loaded_retained: loaded("retained"),
            loaded_sessions: loaded("sessions"),
            loaded_queued: loaded("queued"),
        }
    }
}

/// What changed since the last flush, and the sessions' state.
#[derive(Debug, Default)]
struct State {
    /// Topic -> its latest retained message, or None for deleted.
    retained: HashMap<Bytes, Option<Retained>>,
    /// Every persistent session kept.
    sessions: HashMap<String, Owed>,
    /// Sessions changed since the last flush (those no longer in `sessions` are deleted).
    dirty: HashSet<String>,
    /// Fences changed over the API since the last flush: name -> GeoJSON, empty if deleted.
    geofences: HashMap<String, Bytes>,
    /// Share links revoked (id -> expiry) or forgotten (None) since the last flush.
    revoked: HashMap<String, Option<u64>>,
}

/// The durable state of one broker, and its flusher.
pub struct Durable {
    state: Mutex<State>,
    settings: Settings,
    meters: StoreMeters,
    stop: Mutex<Option<mpsc::Sender<()>>>,
    flusher: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Durable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durable")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Durable {
    /// Takes over an opened store whose persistent sessions were loaded, and starts the
    /// flusher thread.
    ///
    /// # Errors
    /// The thread could not be started.
    pub fn start(
        store: Store,
        sessions: Vec<SavedSession>,
        expired: Vec<String>,
        settings: Settings,
        meters: StoreMeters,
    ) -> Result<Arc<Durable>, std::io::Error> {
        let sessions = sessions
            .into_iter()
            .map(|s| (s.client_id.clone(), Owed::from_saved(s)))
            .collect();
        meters.size.set(store.size_bytes() as f64);
        let (stop, stopped) = mpsc::channel();
        let durable = Arc::new(Durable {
            state: Mutex::new(State {
                sessions,
                // Deleted at the first flush.
                dirty: expired.into_iter().collect(),
                ..State::default()
            }),
            settings,
            meters,
            stop: Mutex::new(Some(stop)),
            flusher: Mutex::new(None),
        });
        let d = Arc::clone(&durable);
        let handle = std::thread::Builder::new()
            .name("fleetcast-store".into())
            .spawn(move || d.run(store, &stopped))?;
        *lock(&durable.flusher) = Some(handle);
        Ok(durable)
    }

    /// Counts what was loaded at start (for `fleetcast_store_loaded_items`).
    pub fn loaded(&self, retained: usize) {
        let state = self.lock();
        let queued: usize = state.sessions.values().map(Owed::len).sum();
        self.meters.loaded_retained.set(retained as f64);
        self.meters.loaded_sessions.set(state.sessions.len() as f64);
        self.meters.loaded_queued.set(queued as f64);
        info!(
            retained,
            sessions = state.sessions.len(),
            queued,
            "store loaded"
        );
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Tells the flusher to flush one last time and stop, without waiting for it.
    pub fn stop(&self) {
        drop(lock(&self.stop).take());
    }

    /// Flushes one last time and stops the flusher; waits for it.
    pub fn close(&self) {
        self.stop();
        if let Some(handle) = lock(&self.flusher).take() {
            if handle.join().is_err() {
                error!("the store's flusher thread panicked");
            }
        }
    }

    /// The flusher: a batch every interval, and one more when told to stop.
    fn run(&self, store: Store, stopped: &mpsc::Receiver<()>) {
        let mut next = Instant::now() + self.settings.flush_interval;
        loop {
            let wait = next.saturating_duration_since(Instant::now());
            let last = !matches!(
                stopped.recv_timeout(wait),
                Err(mpsc::RecvTimeoutError::Timeout)
            );
            // Ticks, not sleeps after each flush: a slow commit does not stretch the bound.
            next = (next + self.settings.flush_interval).max(Instant::now());
            self.flush(&store);
            if last {
                info!(path = %store.path().display(), "store flushed and closed");
                return;
            }
        }
    }

    /// Writes what changed; on failure puts it back for the next flush.
    fn flush(&self, store: &Store) {
        let batch = self.take_batch();
        if batch.is_empty() {
            return;
        }
        let started = Instant::now();
        match store.write(&batch) {
            Ok(()) => {
                self.meters.flush.record(started.elapsed().as_secs_f64());
                self.meters.flushed.increment(batch.len() as u64);
                self.meters.size.set(store.size_bytes() as f64);
            }
            Err(e) => {
                self.meters.flush_errors.increment(1);
                log_flush_error(&e);
                self.put_back(batch);
            }
        }
    }

    /// What changed since the last flush, taken out.
    fn take_batch(&self) -> Batch {
        let mut state = self.lock();
        let retained = std::mem::take(&mut state.retained).into_iter().collect();
        let dirty = std::mem::take(&mut state.dirty);
        let sessions = dirty
            .into_iter()
            .map(|id| {
                let saved = state.sessions.get(&id).map(|o| o.to_saved(&id));
                (id, saved)
            })
            .collect();
        Batch {
            retained,
            sessions,
            geofences: std::mem::take(&mut state.geofences).into_iter().collect(),
            revoked: std::mem::take(&mut state.revoked).into_iter().collect(),
        }
    }

    /// A batch that could not be written: its changes wait for the next flush, unless newer
    /// ones came meanwhile.
    fn put_back(&self, batch: Batch) {
        let mut state = self.lock();
        for (topic, value) in batch.retained {
            state.retained.entry(topic).or_insert(value);
        }
        for (id, _) in batch.sessions {
            state.dirty.insert(id);
        }
        for (name, fence) in batch.geofences {
            state.geofences.entry(name).or_insert(fence);
        }
        for (id, exp) in batch.revoked {
            state.revoked.entry(id).or_insert(exp);
        }
    }

    /// A fence set over the API (its GeoJSON Feature), or deleted (`None`): kept, deletions
    /// too, so that a fence of the `--geofences` file deleted over the API stays deleted.
    pub fn geofence(&self, name: &str, feature: Option<&str>) {
        let value = feature.map_or_else(Bytes::new, |f| Bytes::copy_from_slice(f.as_bytes()));
        self.lock().geofences.insert(name.to_owned(), value);
    }

    /// A share link revoked until `exp` (unix seconds), or forgotten (`None`) once expired.
    pub fn revoked(&self, id: &str, exp: impl Into<Option<u64>>) {
        self.lock().revoked.insert(id.to_owned(), exp.into());
    }

    /// A publish the gateway passed to the router (with its MQTT 5 properties): a retained
    /// one (or an empty one, which rumqttd treats as a delete either way) replaces its
    /// topic's value; a QoS 1 or 2 one is owed to the persistent sessions it matches.
    pub fn published(
        &self,
        topic: &Bytes,
        payload: &Bytes,
        retain: bool,
        qos: u8,
        props: Option<&PublishProperties>,
    ) {
        if !retain && !payload.is_empty() && qos == 0 {
            return;
        }
        // Outside the lock: the properties are copied only for a retained message.
        let value = (retain && !payload.is_empty()).then(|| Retained {
            topic: topic.clone(),
            payload: payload.clone(),
            qos,
            props: props.and_then(|p| Props::of(p, fleetcast_proto::time::unix_now())),
        });
        let mut state = self.lock();
        if retain || payload.is_empty() {
            state.retained.insert(topic.clone(), value);
        }
        if qos == 0 || state.sessions.is_empty() {
            return;
        }
        let Ok(name) = std::str::from_utf8(topic) else {
            return;
        };
        let State {
            sessions, dirty, ..
        } = &mut *state;
        for (id, owed) in sessions.iter_mut() {
            let due = owed.due(name, qos);
            if due > 0 {
                let dropped = owed.queue(topic, payload, due, self.settings.max_queued_per_session);
                self.meters.queue_dropped.increment(dropped as u64);
                if !dirty.contains(id) {
                    dirty.insert(id.clone());
                }
            }
        }
    }

    /// A client connected. Clean Start ends whatever was kept for its id; a session that
    /// will outlive the connection (`expiry` seconds above 0) is kept from now on. Returns
    /// whether the session is kept (its hooks then count), and what the gateway must
    /// replay to it.
    pub fn connected(
        &self,
        client_id: &str,
        clean_start: bool,
        expiry: u32,
    ) -> (bool, Vec<Replay>) {
        let keeps = expiry > 0;
        let mut state = self.lock();
        if clean_start && state.sessions.remove(client_id).is_some() {
            state.dirty.insert(client_id.to_owned());
        }
        if !state.sessions.contains_key(client_id) {
            if !keeps {
                return (false, Vec::new());
            }
            if state.sessions.len() >= self.settings.max_sessions {
                log_sessions_full(self.settings.max_sessions);
                return (false, Vec::new());
            }
            state.sessions.insert(client_id.to_owned(), Owed::default());
            state.dirty.insert(client_id.to_owned());
        }
        let replays = match state.sessions.get_mut(client_id) {
            Some(owed) => {
                owed.expires_at = 0;
                owed.expiry = expiry;
                owed.replay()
            }
            None => Vec::new(),
        };
        (true, replays)
    }

    /// A session ended (it expired, or ended with its connection).
    pub fn forget(&self, client_id: &str) {
        let mut state = self.lock();
        if state.sessions.remove(client_id).is_some() {
            state.dirty.insert(client_id.to_owned());
        }
    }

    /// A publish packet the broker itself hands the router (a will, a delayed will).
    pub fn published_packet(&self, packet: &rumqttd::protocol::Packet) {
        if let rumqttd::protocol::Packet::Publish(p, props) = packet {
            // Wills and the broker's own messages enter the router at QoS 0.
            self.published(&p.topic, &p.payload, p.retain, 0, props.as_ref());
        }
    }

    /// Applies `change` to the session of `client_id` if it is kept, marking it changed
    /// when `change` says so.
    fn session(&self, client_id: &str, change: impl FnOnce(&mut Owed) -> bool) {
        let mut state = self.lock();
        let changed = state.sessions.get_mut(client_id).is_some_and(change);
        if changed && !state.dirty.contains(client_id) {
            state.dirty.insert(client_id.to_owned());
        }
    }

    /// A persistent session took filters (filter, QoS).
    pub fn subscribed(&self, client_id: &str, filters: &[(String, u8)]) {
        self.session(client_id, |o| {
            for (f, q) in filters {
                o.subscribe(f, *q);
            }
            true
        });
    }

    /// A persistent session let filters go.
    pub fn unsubscribed(&self, client_id: &str, filters: &[String]) {
        self.session(client_id, |o| {
            filters.iter().fold(false, |any, f| o.unsubscribe(f) | any)
        });
    }

    /// The router forwarded a message that the gateway did not send (and acked itself).
    pub fn dropped(&self, client_id: &str, topic: &[u8], payload: &[u8]) {
        self.session(client_id, |o| o.dropped(topic, payload));
    }

    /// The router forwarded a message to a persistent session under `pkid`.
    pub fn forwarded(&self, client_id: &str, topic: &[u8], payload: &[u8], pkid: u16) {
        self.session(client_id, |o| o.forwarded(topic, payload, pkid));
    }

    /// A persistent session's client acknowledged `pkid`.
    pub fn acked(&self, client_id: &str, pkid: u16) {
        self.session(client_id, |o| o.acked(pkid));
    }

    /// A persistent session's connection ended; the session ends `expiry` seconds from
    /// now unless its client comes back (`u32::MAX`: never).
    pub fn disconnected(&self, client_id: &str, expiry: u32) {
        let expires_at = match expiry {
            u32::MAX => 0,
            s => fleetcast_proto::time::unix_now() + u64::from(s),
        };
        self.session(client_id, |o| {
            o.offline();
            o.expires_at = expires_at;
            o.expiry = expiry;
            true
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn log_flush_error(e: &StoreError) {
    static LINES: Throttle = Throttle::new();
    if let Some(suppressed) = LINES.admit(fleetcast_proto::time::unix_now()) {
        error!(error = %e, suppressed, "store flush failed; the changes wait for the next flush (logged at most once a second)");
    }
}

fn log_sessions_full(max: usize) {
    static LINES: Throttle = Throttle::new();
    if let Some(suppressed) = LINES.admit(fleetcast_proto::time::unix_now()) {
        warn!(max, suppressed, "storage.max_sessions persistent sessions kept: a new one lives in the router only, lost on restart (logged at most once a second)");
    }
}
