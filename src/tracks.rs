//! The map's stored history (`serve --data`): the dashboard's [`TrackArchive`] over the
//! broker's store file (its `tracks` table), and the stack's part in it: start the writer,
//! refill the memory window from the store before the feed starts, close it at shutdown.

use fleetcast_broker::store::{TrackAppend, TrackStore};
use fleetcast_broker::Broker;
use fleetcast_dashboard::archive::{Append, ArchiveConfig, ArchiveError, Archiver, TrackArchive};
use fleetcast_dashboard::service::Dashboard;
use fleetcast_proto::time::now_ms;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// The broker's tracks table as the dashboard's archive.
#[derive(Debug)]
pub struct StoreArchive(pub TrackStore);

fn err(e: impl std::fmt::Display) -> ArchiveError {
    ArchiveError(e.to_string())
}

impl TrackArchive for StoreArchive {
    fn append(&self, appends: &[Append]) -> Result<(), ArchiveError> {
        let appends: Vec<TrackAppend> = appends
            .iter()
            .map(|a| TrackAppend {
                id: a.id.clone(),
                start: a.start,
                head: a.head.clone(),
                tail: a.tail.clone(),
            })
            .collect();
        self.0.append(&appends).map_err(err)
    }

    fn read(&self, id: &str, from: u64, until: u64) -> Result<Vec<Vec<u8>>, ArchiveError> {
        self.0.read(id, from, until).map_err(err)
    }

    fn drivers_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, ArchiveError> {
        self.0.drivers_after(after, limit).map_err(err)
    }

    fn prune(&self, ids: &[String], before: u64) -> Result<usize, ArchiveError> {
        self.0.prune(ids, before).map_err(err)
    }
}

/// With a data directory and a retention, starts the history writer on the broker's store
/// and refills `dashboard`'s memory window from it (before any fix is fed).
///
/// # Errors
/// The writer thread could not be started.
pub async fn attach(
    broker: &Broker,
    dashboard: &Dashboard,
    retention_s: u64,
    r: &dyn metrics::Recorder,
) -> std::io::Result<()> {
    let Some(store) = broker.track_store() else {
        return Ok(());
    };
    if retention_s == 0 {
        return Ok(());
    }
    let config = ArchiveConfig {
        retention: Duration::from_secs(retention_s),
        ..ArchiveConfig::default()
    };
    let archiver = Archiver::start(Arc::new(StoreArchive(store)), config, r)?;
    let history = Arc::clone(&dashboard.history);
    let filler = Arc::clone(&archiver);
    // Reading the store blocks on the disk.
    let refilled = tokio::task::spawn_blocking(move || {
        filler.refill(&history, now_ms()).map(|n| (n, history))
    })
    .await;
    match refilled {
        Ok(Ok((n, history))) => {
            info!(drivers = n, "history refilled from the store");
            history.archive_to(archiver);
        }
        Ok(Err(e)) => {
            warn!(error = %e, "history not refilled from the store");
            dashboard.history.archive_to(archiver);
        }
        Err(e) => {
            warn!(error = %e, "history refill failed");
            dashboard.history.archive_to(archiver);
        }
    }
    Ok(())
}

/// Writes what the history writer holds and stops it (so the store file can close).
pub async fn close(dashboard: &Dashboard) {
    if let Some(a) = dashboard.history.archive().cloned() {
        let _ = tokio::task::spawn_blocking(move || a.close()).await;
    }
}
