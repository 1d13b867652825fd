//! The serving stack: the broker with the dashboard mounted on its HTTP listener, fed
//! in-process through a local router link (no socket, no MQTT encoding on the way), and
//! `/metrics` rendering every part's meters in Prometheus format.

use crate::access::{AccountLogins, BrowserTokens};
use crate::feed::FEED_FILTERS;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use fleetcast_broker::auth::Auth;
use fleetcast_broker::gateway::Gateway;
use fleetcast_broker::{Addrs, Broker, BrokerError, Config, Extras, Listeners};
use fleetcast_dashboard::board::Board;
use fleetcast_dashboard::bridge::Bridge;
use fleetcast_dashboard::latency_histogram::LATENCY_BUCKETS;
use fleetcast_dashboard::meters::DashboardMeters;
use fleetcast_dashboard::service::{Dashboard, DashboardOptions, FEED_RUN};
use fleetcast_proto::meter::{counter, describe_gauge, gauge};
use fleetcast_proto::process;
use fleetcast_simulator::basemap::{self, BasemapError};
use fleetcast_simulator::road_graph::HELSINKI_PBF;
use metrics::{Gauge, Recorder, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use std::sync::Arc;

/// Why the stack did not start.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// The broker failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The bridge's in-process subscription was refused.
    #[error("cannot subscribe the bridge")]
    Bridge(#[source] fleetcast_broker::router::RouterError),
    /// A listener's address could not be read.
    #[error("cannot read the listener's address")]
    Listener(#[source] std::io::Error),
    /// The node did not join its cluster in time.
    #[error(transparent)]
    Cluster(#[from] fleetcast_broker::cluster::ClusterError),
    /// The history writer thread could not be started.
    #[error("cannot start the history writer")]
    HistoryWriter(#[source] std::io::Error),
    /// The metrics exporter rejected its settings.
    #[error("cannot set up metrics")]
    Metrics(#[from] metrics_exporter_prometheus::BuildError),
}

/// How long the map's in-process feed waits after a batch smaller than a full run before
/// it reads its link again. A fleet at 1 Hz otherwise wakes the map's task for every few
/// fixes the router hands over (once per window of its lanes, 2 ms by default): each
/// wake-up cost more than the fixes it brought. Browsers get a batch every 200 ms, so
/// 10 ms more is not seen there; it shows in the map's own latency meter. While it is behind (a batch as large as a full
/// link, or the router parked its link since the last batch: it had more) it reads again at
/// once. The router keeps
/// what comes meanwhile in the link (parking it past 200) and then in its log, which by
/// default holds far more than a pause brings (3 MiB, about 20,000 fixes).
const FEED_PACE: std::time::Duration = std::time::Duration::from_millis(10);

/// Forwards in the link at which the router parks it (rumqttd's `MAX_CHANNEL_CAPACITY`
/// less one): a batch of this many is behind whatever else it says.
const PARKS_AT: usize = 199;

/// Whether meters are kept (the cost benchmark turns them off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metering {
    /// Meters on, `/metrics` served.
    On,
    /// Every meter a no-op, no `/metrics`.
    Off,
}

/// A running broker + dashboard.
#[derive(Debug)]
pub struct Stack {
    /// The broker.
    pub broker: Broker,
    /// The dashboard (board, bridge).
    pub dashboard: Dashboard,
}

/// Positions per batch.
const BATCH_BUCKETS: [f64; 8] = [
    1.0, 10.0, 100.0, 1_000.0, 5_000.0, 10_000.0, 20_000.0, 50_000.0,
];

/// A Prometheus recorder with fleetcast's histogram buckets.
///
/// # Errors
/// Only for invalid bucket settings (a test covers them).
pub fn prometheus() -> Result<PrometheusRecorder, metrics_exporter_prometheus::BuildError> {
    Ok(PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full("fleetcast_bridge_batch_positions".into()),
            &BATCH_BUCKETS,
        )?
        .build_recorder())
}

/// Process gauges, read from `/proc` at scrape time.
#[derive(Debug, Clone)]
pub struct ProcessMeters {
    rss: Gauge,
    cpu: Gauge,
    fds: Gauge,
    max_fds: Gauge,
}

impl ProcessMeters {
    /// Registers `fleetcast_process_*` on `r`.
    pub fn new(r: &dyn Recorder) -> ProcessMeters {
        describe_gauge(
            r,
            "fleetcast_process_resident_memory_bytes",
            Some(Unit::Bytes),
            "Resident memory of this process.",
        );
        describe_gauge(
            r,
            "fleetcast_process_cpu_seconds",
            Some(Unit::Seconds),
            "CPU time (user + system) used by this process so far.",
        );
        describe_gauge(
            r,
            "fleetcast_process_open_fds",
            None,
            "Open file descriptors of this process.",
        );
        describe_gauge(
            r,
            "fleetcast_process_max_fds",
            None,
            "Open-files limit (soft RLIMIT_NOFILE) of this process.",
        );
        ProcessMeters {
            rss: gauge(r, "fleetcast_process_resident_memory_bytes", &[]),
            cpu: gauge(r, "fleetcast_process_cpu_seconds", &[]),
            fds: gauge(r, "fleetcast_process_open_fds", &[]),
            max_fds: gauge(r, "fleetcast_process_max_fds", &[]),
        }
    }

    /// Reads `/proc` now.
    pub fn update(&self) {
        if let Some(u) = process::own_usage() {
            self.rss.set(u.rss_bytes as f64);
            self.cpu.set(u.cpu.as_secs_f64());
        }
        if let Some(n) = process::open_fds() {
            self.fds.set(n as f64);
        }
        if let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) {
            self.max_fds.set(soft as f64);
        }
    }
}

/// What `/metrics` reads.
#[derive(Clone)]
struct Scrape {
    handle: PrometheusHandle,
    process: ProcessMeters,
    dashboard: DashboardMeters,
    bridge: Arc<Bridge>,
    board: Arc<Board>,
    gateway: Option<Arc<Gateway>>,
    backlog: Gauge,
}

async fn metrics(State(s): State<Scrape>) -> impl IntoResponse {
    s.process.update();
    s.dashboard.export(&s.bridge, &s.board);
    if let Some(gw) = &s.gateway {
        s.backlog.set(gw.router.backlog() as f64);
    }
    let mut body = s.handle.render();
    body.push_str(&s.dashboard.latency.prometheus_text());
    if let Some(fences) = s.gateway.as_ref().and_then(|gw| gw.geofences.get()) {
        body.push_str(&fences.prometheus_text());
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// How often the recorder's histograms are drained when nothing scrapes `/metrics`.
///
/// A recorder made by `build_recorder` keeps every histogram sample (the bridge records
/// one per batch; the map's one per fix, before it kept its own histogram, made this
/// matter) until a scrape or an upkeep drains it, so a broker nothing scrapes grew for as
/// long as it ran. A second keeps each drain small even in a flood (it runs on a tokio
/// worker).
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// `GET /metrics` for a dashboard (and the broker's gateway when there is one). Also
/// drains `recorder`'s histograms every [`UPKEEP_EVERY`] while the dashboard runs.
pub fn metrics_route(
    recorder: &PrometheusRecorder,
    dashboard: &Dashboard,
    gateway: Option<Arc<Gateway>>,
) -> axum::Router {
    describe_gauge(
        recorder,
        "fleetcast_router_backlog",
        None,
        "Events queued for the rumqttd router.",
    );
    let handle = recorder.handle();
    dashboard.every(UPKEEP_EVERY, move || handle.run_upkeep());
    let scrape = Scrape {
        handle: recorder.handle(),
        process: ProcessMeters::new(recorder),
        dashboard: dashboard.meters.clone(),
        bridge: Arc::clone(&dashboard.bridge),
        board: Arc::clone(&dashboard.board),
        gateway,
        backlog: gauge(recorder, "fleetcast_router_backlog", &[]),
    };
    axum::Router::new().route("/metrics", axum::routing::get(metrics).with_state(scrape))
}

/// `GET /metrics` for a simulated fleet: `fleetcast_sim_*` counters and process gauges.
///
/// # Errors
/// Only for invalid exporter settings.
pub fn fleet_metrics_route(
    stats: Arc<fleetcast_simulator::fleet::FleetStats>,
) -> Result<axum::Router, StackError> {
    let recorder = prometheus()?;
    let r: &dyn Recorder = &recorder;
    describe_gauge(
        r,
        "fleetcast_sim_drivers_connected",
        None,
        "Simulated drivers connected now.",
    );
    let connected = gauge(r, "fleetcast_sim_drivers_connected", &[]);
    let published = counter(r, "fleetcast_sim_published_total", &[]);
    let reconnects = counter(r, "fleetcast_sim_reconnects_total", &[]);
    let skipped = counter(r, "fleetcast_sim_skipped_offline_total", &[]);
    let dropped = counter(r, "fleetcast_sim_dropped_total", &[]);
    let process = ProcessMeters::new(r);
    let handle = recorder.handle();
    Ok(axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let snap = stats.snapshot();
            connected.set(snap.connected as f64);
            published.absolute(snap.published);
            reconnects.absolute(snap.reconnects);
            skipped.absolute(snap.skipped_offline);
            dropped.absolute(snap.dropped);
            process.update();
            let body = handle.render();
            async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body) }
        }),
    ))
}

/// The basemap GeoJSON of a city's `.osm.pbf`.
///
/// # Errors
/// The data is not valid PBF.
pub fn city_basemap(pbf: &[u8]) -> Result<Arc<str>, BasemapError> {
    Ok(basemap::geojson(pbf)?.into())
}

/// Dashboard options for the embedded city (Helsinki), offline, default bounds.
///
/// # Errors
/// Only if the embedded extract were corrupt (a test covers it).
pub fn offline_dashboard() -> Result<DashboardOptions, BasemapError> {
    Ok(DashboardOptions::new(city_basemap(HELSINKI_PBF)?))
}

impl Stack {
    /// Starts the broker on `listeners` with the dashboard on its HTTP port. With `auth`,
    /// the broker's accounts also guard the map's WebSocket (browser tokens).
    ///
    /// # Errors
    /// The router, the bridge's subscription or the metrics setup failed.
    pub async fn start(
        listeners: Listeners,
        config: Config,
        dashboard: DashboardOptions,
        metering: Metering,
        auth: Option<Arc<Auth>>,
    ) -> Result<Stack, StackError> {
        let recorder = prometheus()?;
        let noop = metrics::NoopRecorder;
        let r: &dyn Recorder = match metering {
            Metering::On => &recorder,
            Metering::Off => &noop,
        };
        let browser_tokens = auth.as_ref().map(|a| BrowserTokens::new(Arc::clone(a)));
        let tokens = browser_tokens.clone().map(|t| Arc::new(t) as _);
        let logins = auth.as_ref().map(|a| AccountLogins::new(Arc::clone(a)));
        let gateway_slot = logins.as_ref().map(AccountLogins::gateway);
        let dashboard = Dashboard::new(
            DashboardOptions {
                tokens,
                logins: logins.map(|l| Arc::new(l) as _),
                ..dashboard
            },
            r,
        );
        if let Some(t) = &browser_tokens {
            t.with_board(Arc::clone(&dashboard.board));
        }
        let dashboard_routes = dashboard.router();
        let routes = |gateway: &Arc<Gateway>| {
            // The history API's Basic logins count against the gateway's failure limits.
            if let Some(slot) = &gateway_slot {
                let _ = slot.set(Arc::clone(gateway));
            }
            match metering {
                Metering::On => dashboard_routes.merge(metrics_route(
                    &recorder,
                    &dashboard,
                    Some(Arc::clone(gateway)),
                )),
                Metering::Off => dashboard_routes,
            }
        };
        let retention_s = config.map.history_retention_s;
        let broker = Broker::start_with(
            listeners,
            config,
            Extras {
                routes: Box::new(routes),
                recorder: r,
                auth,
            },
        )
        .await?;
        // Before the feed: the refilled window must hold what came before the first fix.
        crate::tracks::attach(&broker, &dashboard, retention_s, r)
            .await
            .map_err(StackError::HistoryWriter)?;
        // In process the map also follows the geofences (their shapes, counts and events).
        let mut filters = FEED_FILTERS.to_vec();
        filters.push("geofences/#");
        let positions = broker
            .local_subscriber("bridge", &filters)
            .await
            .map_err(StackError::Bridge)?;
        // What the router overwrote before the map read it: no driver's latest position is
        // lost for long (the next fix brings it), but history and the latency meter miss it.
        let missed = counter(
            r,
            "fleetcast_messages_dropped_total",
            &[("reason", "map_behind")],
        );
        dashboard.feed_batches(futures_util::stream::unfold(
            (positions, false, missed),
            |(mut p, caught_up, missed)| async move {
                if caught_up {
                    tokio::time::sleep(FEED_PACE).await;
                }
                let mut batch = Vec::with_capacity(FEED_RUN);
                if !p.next_batch(&mut batch, FEED_RUN).await {
                    return None;
                }
                // A short batch is not enough: in a flood the router hands over what each
                // of its passes found, often less than a run, and a pause then lets its
                // log overwrite what the map had not read. Nor is the park alone: the
                // router pushes its `Unschedule` after the forwards, so a batch may take
                // the forwards of a full link (PARKS_AT) without it.
                let caught_up = batch.len() < PARKS_AT && !p.was_parked();
                missed.increment(p.take_skipped());
                Some((batch, (p, caught_up, missed)))
            },
        ));
        // A node that joins late is ready once it serves what the cluster retained.
        broker.cluster_ready().await?;
        Ok(Stack { broker, dashboard })
    }

    /// Where it listens.
    pub fn addrs(&self) -> Addrs {
        self.broker.addrs()
    }

    /// Closes browsers, then stops the broker within its grace time.
    ///
    /// # Errors
    /// Connections were still open at the end of the grace time.
    pub async fn shutdown(self) -> Result<(), BrokerError> {
        self.dashboard.shutdown().await;
        crate::tracks::close(&self.dashboard).await;
        self.broker.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bucket_settings_are_valid() {
        assert!(super::prometheus().is_ok());
    }

    #[test]
    fn the_embedded_city_makes_a_basemap() {
        assert!(super::offline_dashboard().is_ok());
    }
}
