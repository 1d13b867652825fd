//! The data directory: one redb file (`fleetcast.redb`) holding what must outlive the
//! process, the retained messages and the persistent sessions.
//!
//! redb is a pure-Rust embedded key-value store whose commits are atomic and crash-safe
//! (copy-on-write pages, checksums, fsync at commit), so a `kill -9` at any moment leaves
//! the last committed state, and it locks its file, so a second fleetcast on the same
//! directory is refused. This module only opens, checks, reads and writes the file; what
//! goes into it and when is [`crate::durable`]'s.
//!
//! The directory is fleetcast's alone: anything else in it, a file that is not a redb
//! database, or a redb database without fleetcast's format mark is refused with an error
//! naming the file, never started over empty.

mod codec;
mod props;
mod tracks;

pub use codec::{Queued, Retained, SavedSession};
pub use props::Props;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::path::{Path, PathBuf};
pub use tracks::{TrackAppend, TrackStore};

/// The store's file name inside the data directory.
pub const FILE_NAME: &str = "fleetcast.redb";
/// Entries a data directory may hold beside the store (a file system's own).
const ALLOWED: [&str; 2] = [FILE_NAME, "lost+found"];
/// What the `meta` table's `format` key holds in a fleetcast store.
const FORMAT: &[u8] = b"fleetcast-store";
/// The layout of the tables and records this build writes and reads.
const VERSION: u8 = 1;
/// redb's page cache: the store holds one record per topic and per session, megabytes for
/// a large fleet, so the default (1 GiB) would only be a larger ceiling.
const CACHE_BYTES: usize = 64 << 20;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const RETAINED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("retained");
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
/// Fences set over the API: name -> GeoJSON Feature, or empty when deleted over the API.
const GEOFENCES: TableDefinition<&str, &[u8]> = TableDefinition::new("geofences");
/// Share links revoked: id -> the link's expiry (unix seconds).
const REVOKED: TableDefinition<&str, u64> = TableDefinition::new("revoked");

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory cannot be created or read.
    #[error("cannot use the data directory {path}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Something in the directory is not fleetcast's.
    #[error("{path} is not fleetcast's: the data directory must hold only {FILE_NAME} (give --data a directory of its own)")]
    Foreign {
        /// The entry.
        path: PathBuf,
    },
    /// Another process holds the store.
    #[error("{path} is in use by another running fleetcast (or another program): one process per data directory")]
    Locked {
        /// The store file.
        path: PathBuf,
    },
    /// The file is damaged, or not a fleetcast store.
    #[error("{path} is corrupt or not a fleetcast store: {detail} (move it away to start empty)")]
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A later fleetcast wrote the file.
    #[error("{path} has store format {found}; this fleetcast reads format {VERSION}")]
    NewerFormat {
        /// The store file.
        path: PathBuf,
        /// The file's format version.
        found: u8,
    },
    /// Reading or writing the file failed (disk full, I/O error).
    #[error("cannot write {path}: {detail}")]
    Write {
        /// The store file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
}

/// Everything the store held when it was opened.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Retained messages, one per topic.
    pub retained: Vec<Retained>,
    /// Persistent sessions.
    pub sessions: Vec<SavedSession>,
    /// Fences set over the API: name -> GeoJSON Feature text, empty when deleted.
    pub geofences: Vec<(String, Vec<u8>)>,
    /// Revoked share links: id -> expiry (unix seconds).
    pub revoked: Vec<(String, u64)>,
}

/// Changes to write in one transaction. `None` deletes.
#[derive(Debug, Default)]
pub struct Batch {
    /// Topic -> retained message, or none.
    pub retained: Vec<(bytes::Bytes, Option<Retained>)>,
    /// Client id -> session, or none.
    pub sessions: Vec<(String, Option<SavedSession>)>,
    /// Fence name -> GeoJSON Feature, or empty for one deleted over the API.
    pub geofences: Vec<(String, bytes::Bytes)>,
    /// Share link id -> its expiry, or none to forget it.
    pub revoked: Vec<(String, Option<u64>)>,
}

impl Batch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records written or deleted.
    pub fn len(&self) -> usize {
        self.retained.len() + self.sessions.len() + self.geofences.len() + self.revoked.len()
    }
}

/// The open store; one per data directory and process.
pub struct Store {
    /// Shared with the map's [`TrackStore`], which writes its own table from its own thread.
    db: std::sync::Arc<Database>,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`, creating `dir` if needed.
    ///
    /// # Errors
    /// The directory holds something else, the file is locked by another process, corrupt,
    /// not a fleetcast store, or of a later format.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let dir_error = |source| StoreError::Dir {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(dir_error)?;
        for entry in std::fs::read_dir(dir).map_err(dir_error)? {
            let entry = entry.map_err(dir_error)?;
            let name = entry.file_name();
            if !ALLOWED.iter().any(|a| name == *a) {
                return Err(StoreError::Foreign { path: entry.path() });
            }
        }
        let path = dir.join(FILE_NAME);
        // A file of 0 bytes is a first start that died before redb wrote its header.
        let fresh = std::fs::metadata(&path).map_or(true, |m| m.len() == 0);
        let corrupt = |detail: String| StoreError::Corrupt {
            path: path.clone(),
            detail,
        };
        // redb checks its header and checksums, and repairs an unfinished commit by
        // falling back to the last finished one; it should return errors for damage, but
        // a panic on a damaged file must not take the process down unexplained either.
        let opened = std::panic::catch_unwind(|| {
            Database::builder()
                .set_cache_size(CACHE_BYTES)
                .create(&path)
        })
        .map_err(|_| corrupt("the database library failed reading it".into()))?;
        let db = match opened {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::Locked { path });
            }
            Err(redb::DatabaseError::Storage(redb::StorageError::Io(e)))
                if e.kind() == std::io::ErrorKind::WouldBlock =>
            {
                return Err(StoreError::Locked { path });
            }
            Err(e) => return Err(corrupt(e.to_string())),
        };
        let store = Store {
            db: std::sync::Arc::new(db),
            path,
        };
        if fresh {
            store.init()?;
        } else {
            store.check_format()?;
        }
        Ok(store)
    }

    /// A handle on the drivers' tracks table of this file, for the map's history writer.
    pub fn tracks(&self) -> TrackStore {
        TrackStore::new(std::sync::Arc::clone(&self.db), self.path.clone())
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The store file's size on disk (bytes).
    pub fn size_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    fn write_error(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Write {
            path: self.path.clone(),
            detail: e.to_string(),
        }
    }

    fn corrupt(&self, detail: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            detail: detail.to_string(),
        }
    }

    /// Marks a new file as fleetcast's and creates its tables.
    fn init(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.write_error(e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.write_error(e))?;
            meta.insert("format", FORMAT)
                .map_err(|e| self.write_error(e))?;
            meta.insert("version", [VERSION].as_slice())
                .map_err(|e| self.write_error(e))?;
            txn.open_table(RETAINED).map_err(|e| self.write_error(e))?;
            txn.open_table(SESSIONS).map_err(|e| self.write_error(e))?;
            txn.open_table(GEOFENCES).map_err(|e| self.write_error(e))?;
            txn.open_table(REVOKED).map_err(|e| self.write_error(e))?;
        }
        txn.commit().map_err(|e| self.write_error(e))
    }

    /// Refuses a redb file that is not a fleetcast store, or of a later format.
    fn check_format(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.corrupt(e))?;
        let meta = txn
            .open_table(META)
            .map_err(|e| self.corrupt(format!("no fleetcast format mark ({e})")))?;
        let format = meta.get("format").map_err(|e| self.corrupt(e))?;
        if format.as_ref().map(|v| v.value()) != Some(FORMAT) {
            return Err(self.corrupt("no fleetcast format mark"));
        }
        let version = meta.get("version").map_err(|e| self.corrupt(e))?;
        match version.as_ref().map(|v| v.value()) {
            Some([v]) if *v == VERSION => Ok(()),
            Some([v]) if *v > VERSION => Err(StoreError::NewerFormat {
                path: self.path.clone(),
                found: *v,
            }),
            _ => Err(self.corrupt("unknown store format version")),
        }
    }

    /// Reads everything the store holds.
    ///
    /// # Errors
    /// A record cannot be read or decoded: the file is damaged.
    pub fn load(&self) -> Result<Loaded, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.corrupt(e))?;
        let mut loaded = Loaded::default();
        let retained = txn.open_table(RETAINED).map_err(|e| self.corrupt(e))?;
        loaded
            .retained
            .reserve(retained.len().unwrap_or(0) as usize);
        for row in retained.iter().map_err(|e| self.corrupt(e))? {
            let (k, v) = row.map_err(|e| self.corrupt(e))?;
            let record = codec::decode_retained(k.value(), v.value()).map_err(|why| {
                self.corrupt(format!("retained message {:?}: {why}", lossy(k.value())))
            })?;
            loaded.retained.push(record);
        }
        let sessions = txn.open_table(SESSIONS).map_err(|e| self.corrupt(e))?;
        for row in sessions.iter().map_err(|e| self.corrupt(e))? {
            let (k, v) = row.map_err(|e| self.corrupt(e))?;
            let record = codec::decode_session(k.value(), v.value())
                .map_err(|why| self.corrupt(format!("session {:?}: {why}", k.value())))?;
            loaded.sessions.push(record);
        }
        // Stores written before these tables existed have none: nothing was kept.
        match txn.open_table(GEOFENCES) {
            Ok(table) => {
                for row in table.iter().map_err(|e| self.corrupt(e))? {
                    let (k, v) = row.map_err(|e| self.corrupt(e))?;
                    loaded
                        .geofences
                        .push((k.value().to_owned(), v.value().to_vec()));
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(self.corrupt(e)),
        }
        match txn.open_table(REVOKED) {
            Ok(table) => {
                for row in table.iter().map_err(|e| self.corrupt(e))? {
                    let (k, v) = row.map_err(|e| self.corrupt(e))?;
                    loaded.revoked.push((k.value().to_owned(), v.value()));
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(self.corrupt(e)),
        }
        Ok(loaded)
    }

    /// Writes `batch` in one transaction, durable when this returns.
    ///
    /// # Errors
    /// The write or the commit failed (disk full, I/O error); nothing of it was applied.
    pub fn write(&self, batch: &Batch) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.write_error(e))?;
        {
            let mut retained = txn.open_table(RETAINED).map_err(|e| self.write_error(e))?;
            for (topic, value) in &batch.retained {
                match value {
                    Some(kept) => {
                        let record = codec::encode_retained(kept);
                        retained.insert(&topic[..], &record[..])
                    }
                    None => retained.remove(&topic[..]).map(|_| None),
                }
                .map_err(|e| self.write_error(e))?;
            }
            let mut sessions = txn.open_table(SESSIONS).map_err(|e| self.write_error(e))?;
            for (client_id, value) in &batch.sessions {
                match value {
                    Some(session) => {
                        let record = codec::encode_session(session);
                        sessions.insert(client_id.as_str(), &record[..])
                    }
                    None => sessions.remove(client_id.as_str()).map(|_| None),
                }
                .map_err(|e| self.write_error(e))?;
            }
            let mut fences = txn.open_table(GEOFENCES).map_err(|e| self.write_error(e))?;
            for (name, feature) in &batch.geofences {
                fences
                    .insert(name.as_str(), &feature[..])
                    .map_err(|e| self.write_error(e))?;
            }
            let mut revoked = txn.open_table(REVOKED).map_err(|e| self.write_error(e))?;
            for (id, exp) in &batch.revoked {
                match exp {
                    Some(exp) => revoked.insert(id.as_str(), *exp).map(|_| ()),
                    None => revoked.remove(id.as_str()).map(|_| ()),
                }
                .map_err(|e| self.write_error(e))?;
            }
        }
        txn.commit().map_err(|e| self.write_error(e))
    }
}

/// A topic for an error message.
fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    pub(super) fn temp_dir(tag: &str) -> PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("fleetcast-store-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn batch() -> Batch {
        Batch {
            retained: ["drivers/a/location", "drivers/a/status"]
                .into_iter()
                .map(|t| {
                    let kept = Retained {
                        topic: Bytes::from(t),
                        payload: Bytes::from("{}"),
                        qos: 1,
                        props: None,
                    };
                    (Bytes::from(t), Some(kept))
                })
                .collect(),
            sessions: vec![(
                "rider".into(),
                Some(SavedSession {
                    client_id: "rider".into(),
                    expires_at: 0,
                    expiry: u32::MAX,
                    filters: vec![("alerts/#".into(), 1)],
                    queued: vec![Queued {
                        topic: Bytes::from("alerts/1"),
                        payload: Bytes::from("x"),
                        qos: 1,
                    }],
                }),
            )],
            geofences: vec![
                ("airport".into(), Bytes::from(r#"{"type":"Feature"}"#)),
                ("old".into(), Bytes::new()),
            ],
            revoked: vec![("link-1".into(), Some(2_000)), ("link-2".into(), Some(9))],
        }
    }

    #[test]
    fn what_is_written_is_read_back_after_reopening() {
        let dir = temp_dir("roundtrip");
        {
            let store = Store::open(&dir).expect("opens");
            store.write(&batch()).expect("writes");
            let delete = Batch {
                retained: vec![(Bytes::from("drivers/a/status"), None)],
                revoked: vec![("link-2".into(), None)],
                ..Batch::default()
            };
            store.write(&delete).expect("deletes");
        }
        let store = Store::open(&dir).expect("reopens");
        let loaded = store.load().expect("loads");
        assert_eq!(loaded.retained.len(), 1);
        assert_eq!(&loaded.retained[0].topic[..], b"drivers/a/location");
        assert_eq!(
            loaded.geofences,
            vec![
                ("airport".to_owned(), br#"{"type":"Feature"}"#.to_vec()),
                ("old".to_owned(), Vec::new()),
            ]
        );
        assert_eq!(loaded.revoked, vec![("link-1".to_owned(), 2_000)]);
        assert_eq!(
            loaded.sessions,
            batch()
                .sessions
                .into_iter()
                .filter_map(|s| s.1)
                .collect::<Vec<_>>()
        );
        assert!(store.size_bytes() > 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_second_opener_is_refused_while_the_first_holds_it() {
        let dir = temp_dir("lock");
        let first = Store::open(&dir).expect("opens");
        let second = Store::open(&dir);
        assert!(
            matches!(second, Err(StoreError::Locked { ref path }) if path.ends_with(FILE_NAME)),
            "{second:?}"
        );
        drop(first);
        assert!(Store::open(&dir).is_ok(), "free again once closed");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn garbage_foreign_files_and_foreign_databases_are_refused_by_name() {
        let dir = temp_dir("garbage");
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join(FILE_NAME);
        for garbage in [
            &b"not a database at all"[..],
            &[0u8; 8192][..],
            &[0xA5; 100_000][..],
        ] {
            std::fs::write(&file, garbage).expect("write");
            let e = Store::open(&dir).expect_err("refused");
            assert!(matches!(e, StoreError::Corrupt { .. }), "{e:?}");
            assert!(e.to_string().contains(&file.display().to_string()), "{e}");
        }
        // A real redb database, but someone else's.
        std::fs::remove_file(&file).expect("rm");
        {
            let db = Database::create(&file).expect("redb");
            let txn = db.begin_write().expect("txn");
            txn.open_table(SESSIONS).expect("table");
            txn.commit().expect("commit");
        }
        let e = Store::open(&dir).expect_err("refused");
        assert!(e.to_string().contains("not a fleetcast store"), "{e}");
        std::fs::remove_file(&file).expect("rm");
        std::fs::write(dir.join("notes.txt"), "x").expect("write");
        let e = Store::open(&dir).expect_err("refused");
        assert!(
            matches!(e, StoreError::Foreign { ref path } if path.ends_with("notes.txt")),
            "{e:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
