//! The drivers' tracks table of the store (`tracks`), for the map's history (`[map]
//! history_retention_s`): records keyed by (driver id, chunk start in ms), so one driver's
//! time range is one range scan and its old records one range delete. What a record holds
//! is the map's business (opaque bytes here); this module only appends, reads and deletes.
//!
//! The map's writer thread commits its own transactions beside the durable flusher's
//! (redb runs one write transaction at a time; either waits for the other's commit), and
//! a store without the table (older, or no history yet) reads as empty.

use super::StoreError;
use redb::{Database, ReadableTable, TableDefinition};
use std::path::PathBuf;
use std::sync::Arc;

/// (driver id, chunk start ms) -> the chunk's bytes.
const TRACKS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("tracks");

/// One append: to the record at (`id`, `start`) add `tail`; a new record starts with `head`.
#[derive(Debug, Clone)]
pub struct TrackAppend {
    /// Driver id.
    pub id: String,
    /// Chunk start, ms since the epoch.
    pub start: u64,
    /// What a new record begins with.
    pub head: Vec<u8>,
    /// What is added.
    pub tail: Vec<u8>,
}

/// A handle on the tracks table; cheap to clone. The file stays open while one exists.
#[derive(Clone)]
pub struct TrackStore {
    db: Arc<Database>,
    path: PathBuf,
}

impl std::fmt::Debug for TrackStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackStore")
            .field("path", &self.path)
            .finish()
    }
}

impl TrackStore {
    pub(super) fn new(db: Arc<Database>, path: PathBuf) -> TrackStore {
        TrackStore { db, path }
    }

    fn write_error(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Write {
            path: self.path.clone(),
            detail: e.to_string(),
        }
    }

    fn corrupt(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            detail: e.to_string(),
        }
    }

    /// The store file's size on disk (bytes).
    pub fn size_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    /// Applies every append in one transaction (one commit, one fsync).
    ///
    /// # Errors
    /// The transaction failed; nothing of it was written.
    pub fn append(&self, appends: &[TrackAppend]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.write_error(e))?;
        {
            let mut table = txn.open_table(TRACKS).map_err(|e| self.write_error(e))?;
            for a in appends {
                let key = (a.id.as_str(), a.start);
                let old = table
                    .get(key)
                    .map_err(|e| self.write_error(e))?
                    .map(|v| v.value().to_vec());
                let mut value = old.unwrap_or_else(|| a.head.clone());
                value.extend_from_slice(&a.tail);
                table
                    .insert(key, value.as_slice())
                    .map_err(|e| self.write_error(e))?;
            }
        }
        txn.commit().map_err(|e| self.write_error(e))
    }

    /// The records of `id` whose start is in `from..=until`, oldest first.
    ///
    /// # Errors
    /// The file cannot be read.
    pub fn read(&self, id: &str, from: u64, until: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.corrupt(e))?;
        let table = match txn.open_table(TRACKS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.corrupt(e)),
        };
        if from > until {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for entry in table
            .range((id, from)..=(id, until))
            .map_err(|e| self.corrupt(e))?
        {
            let (_, v) = entry.map_err(|e| self.corrupt(e))?;
            out.push(v.value().to_vec());
        }
        Ok(out)
    }

    /// Up to `limit` driver ids with records, in order, after `after` (from the first when
    /// None). Each id costs one seek, whatever its records.
    ///
    /// # Errors
    /// The file cannot be read.
    pub fn drivers_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.corrupt(e))?;
        let table = match txn.open_table(TRACKS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.corrupt(e)),
        };
        let mut out: Vec<String> = Vec::new();
        let mut last = after.map(str::to_owned);
        while out.len() < limit {
            let next = match &last {
                None => table.first().map_err(|e| self.corrupt(e))?,
                Some(id) => {
                    // Past every record of `id`: chunk starts are far below u64::MAX.
                    let mut range = table
                        .range((id.as_str(), u64::MAX)..)
                        .map_err(|e| self.corrupt(e))?;
                    match range.find(|e| e.as_ref().map_or(true, |(k, _)| k.value().0 != id)) {
                        Some(e) => Some(e.map_err(|e| self.corrupt(e))?),
                        None => None,
                    }
                }
            };
            let Some((k, _)) = next else { break };
            let id = k.value().0.to_owned();
            out.push(id.clone());
            last = Some(id);
        }
        Ok(out)
    }

    /// Deletes the records of `ids` that start before `before`, in one transaction;
    /// returns how many.
    ///
    /// # Errors
    /// The transaction failed; nothing of it was deleted.
    pub fn prune(&self, ids: &[String], before: u64) -> Result<usize, StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.write_error(e))?;
        let mut removed = 0;
        {
            let mut table = txn.open_table(TRACKS).map_err(|e| self.write_error(e))?;
            for id in ids {
                table
                    .retain_in((id.as_str(), 0)..(id.as_str(), before), |_, _| {
                        removed += 1;
                        false
                    })
                    .map_err(|e| self.write_error(e))?;
            }
        }
        txn.commit().map_err(|e| self.write_error(e))?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(id: &str, start: u64, tail: &[u8]) -> TrackAppend {
        TrackAppend {
            id: id.into(),
            start,
            head: b"H".to_vec(),
            tail: tail.to_vec(),
        }
    }

    #[test]
    fn appends_read_list_and_prune_by_driver_and_time() {
        let dir = super::super::tests::temp_dir("tracks");
        let store = super::super::Store::open(&dir).expect("store");
        let t = store.tracks();
        assert!(t.read("a", 0, u64::MAX).expect("read").is_empty());
        assert!(t.drivers_after(None, 10).expect("ids").is_empty());
        t.append(&[append("a", 60_000, b"1"), append("b", 0, b"x")])
            .expect("append");
        t.append(&[append("a", 60_000, b"2"), append("a", 120_000, b"3")])
            .expect("append");
        t.append(&[append("ab", 0, b"y")]).expect("append");
        assert_eq!(
            t.read("a", 0, u64::MAX).expect("read"),
            vec![b"H12".to_vec(), b"H3".to_vec()]
        );
        assert_eq!(
            t.read("a", 61_000, 120_000).expect("read"),
            vec![b"H3".to_vec()]
        );
        assert_eq!(t.drivers_after(None, 10).expect("ids"), ["a", "ab", "b"]);
        assert_eq!(t.drivers_after(Some("a"), 1).expect("ids"), ["ab"]);
        assert_eq!(t.drivers_after(Some("b"), 10).expect("ids").len(), 0);
        let ids = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(t.prune(&ids, 120_000).expect("prune"), 2);
        assert_eq!(
            t.read("a", 0, u64::MAX).expect("read"),
            vec![b"H3".to_vec()]
        );
        assert_eq!(t.drivers_after(None, 10).expect("ids"), ["a", "ab"]);
        drop((t, store));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
