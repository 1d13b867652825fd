//! The serving stack: the broker with the dashboard mounted on its HTTP listener and fed
//! in-process through a local router link (no socket, no MQTT encoding on the way).

use fleetcast_broker::{Addrs, Broker, BrokerError, Config, Listeners};
use fleetcast_dashboard::basemap::BasemapError;
use fleetcast_dashboard::feed::FEED_FILTERS;
use fleetcast_dashboard::service::{Dashboard, DashboardOptions};
use fleetcast_simulator::payload;
use std::sync::Arc;

/// Why the stack did not start.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// The broker failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The basemap could not be built.
    #[error("cannot build the basemap")]
    Basemap(#[from] BasemapError),
    /// The bridge's in-process subscription was refused.
    #[error("cannot subscribe the bridge")]
    Bridge(#[source] fleetcast_broker::router::RouterError),
}

/// A running broker + dashboard.
#[derive(Debug)]
pub struct Stack {
    /// The broker.
    pub broker: Broker,
    /// The dashboard (board, bridge).
    pub dashboard: Dashboard,
}

impl Stack {
    /// Starts the broker on `listeners` with the dashboard on its HTTP port.
    ///
    /// # Errors
    /// The basemap, the router or the bridge's subscription failed.
    pub async fn start(
        listeners: Listeners,
        config: Config,
        dashboard: DashboardOptions<'_>,
    ) -> Result<Stack, StackError> {
        let dashboard = Dashboard::new(dashboard)?;
        let broker = Broker::start_with_routes(listeners, config, dashboard.router())?;
        let mut positions = broker
            .local_subscriber("bridge", &FEED_FILTERS)
            .await
            .map_err(StackError::Bridge)?;
        let board = Arc::clone(&dashboard.board);
        tokio::spawn(async move {
            while let Some((topic, body)) = positions.next().await {
                if let Ok(topic) = std::str::from_utf8(&topic) {
                    board.ingest(topic, &body, payload::now_ms());
                }
            }
        });
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
        self.dashboard.stop();
        self.broker.shutdown().await
    }
}
