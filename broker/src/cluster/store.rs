//! Raft storage on one RocksDB instance shared by every raft group of the broker: the log,
//! the vote and the state machine of each group live under keys prefixed with its group id
//! (8 bytes, big-endian), so one database, one WAL and one fsync serve them all.

// openraft's StorageError is large, and it is what its storage traits return.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, RwLock};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader,
    RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use rocksdb::{ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::image::MetadataImage;
use super::types::{CommandResult, GroupId, NodeId, TypeConfig};

const CF_LOG: &str = "raft_log";
const CF_META: &str = "raft_meta";
const CF_SM: &str = "raft_sm";

type StorageResult<T> = Result<T, StorageError<NodeId>>;

fn io_err(subject: ErrorSubject<NodeId>, verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::new(subject, verb, AnyError::new(&e)).into()
}

/// Open (or create) the broker's raft database at `path`.
pub fn open_db(path: &Path) -> Result<Arc<DB>, rocksdb::Error> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let cfs = [CF_LOG, CF_META, CF_SM].map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
    Ok(Arc::new(DB::open_cf_descriptors(&opts, path, cfs)?))
}

fn key(group: GroupId, suffix: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + suffix.len());
    k.extend_from_slice(&group.to_be_bytes());
    k.extend_from_slice(suffix);
    k
}

fn log_key(group: GroupId, index: u64) -> Vec<u8> {
    key(group, &index.to_be_bytes())
}

fn synced() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.set_sync(true);
    w
}

/// The raft log and vote of one group.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    group: GroupId,
}

impl LogStore {
    pub fn new(db: Arc<DB>, group: GroupId) -> Self {
        Self { db, group }
    }

    fn get_meta<T: for<'de> Deserialize<'de>>(&self, name: &str) -> StorageResult<Option<T>> {
        let cf = self.db.cf_handle(CF_META).expect("column family exists");
        let v = self
            .db
            .get_cf(cf, key(self.group, name.as_bytes()))
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Read, e))?;
        v.map(|b| serde_json::from_slice(&b).map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Read, e))).transpose()
    }

    fn put_meta<T: Serialize>(&self, name: &str, value: &T) -> StorageResult<()> {
        let cf = self.db.cf_handle(CF_META).expect("column family exists");
        let bytes = serde_json::to_vec(value).map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
        self.db
            .put_cf_opt(cf, key(self.group, name.as_bytes()), bytes, &synced())
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))
    }

    fn delete_range(&self, from: u64, to_exclusive: u64) -> StorageResult<()> {
        let cf = self.db.cf_handle(CF_LOG).expect("column family exists");
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, log_key(self.group, from), log_key(self.group, to_exclusive));
        self.db.write_opt(batch, &synced()).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => *x + 1,
            Bound::Unbounded => 0,
        };
        let cf = self.db.cf_handle(CF_LOG).expect("column family exists");
        let from = log_key(self.group, start);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::From(&from, Direction::Forward)) {
            let (k, v) = item.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            if k.len() != 16 || k[..8] != self.group.to_be_bytes() {
                break;
            }
            let index = u64::from_be_bytes(k[8..16].try_into().expect("8 bytes"));
            if !range.contains(&index) {
                break;
            }
            out.push(serde_json::from_slice(&v).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let cf = self.db.cf_handle(CF_LOG).expect("column family exists");
        let last_key = log_key(self.group, u64::MAX);
        let mut last = None;
        if let Some(item) = self.db.iterator_cf(cf, IteratorMode::From(&last_key, Direction::Reverse)).next() {
            let (k, v) = item.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            if k.len() == 16 && k[..8] == self.group.to_be_bytes() {
                let entry: Entry<TypeConfig> =
                    serde_json::from_slice(&v).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                last = Some(entry.log_id);
            }
        }
        let last_purged: Option<LogId<NodeId>> = self.get_meta("last_purged")?;
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last.or(last_purged) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        self.put_meta("vote", vote)
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        self.get_meta("vote")
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        self.put_meta("committed", &committed)
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(self.get_meta::<Option<LogId<NodeId>>>("committed")?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let cf = self.db.cf_handle(CF_LOG).expect("column family exists");
        let mut batch = WriteBatch::default();
        for entry in entries {
            let bytes = serde_json::to_vec(&entry).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
            batch.put_cf(cf, log_key(self.group, entry.log_id.index), bytes);
        }
        // Synced: raft may only count this entry once it is on disk.
        let res = self.db.write_opt(batch, &synced());
        let io = res.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(e.to_string()));
        callback.log_io_completed(io);
        res.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.delete_range(log_id.index, u64::MAX)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.put_meta("last_purged", &log_id)?;
        self.delete_range(0, log_id.index + 1)
    }
}

/// What the state machine persists, and what a snapshot carries.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct PersistedState {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    image: MetadataImage,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

/// The metadata state machine of one group: the image, shared read-only with the rest of
/// the broker, and a version counter that subscribers watch for changes.
#[derive(Clone)]
pub struct StateMachineStore {
    db: Arc<DB>,
    group: GroupId,
    state: Arc<RwLock<PersistedState>>,
    /// Replaced whole after every apply, so that a reader's copy is one `Arc` clone.
    image: Arc<RwLock<Arc<MetadataImage>>>,
    version: watch::Sender<u64>,
    /// Time to apply and persist one batch of committed entries.
    apply_seconds: Option<prometheus::Histogram>,
}

impl StateMachineStore {
    /// Load the persisted state of `group` (empty if there is none).
    pub fn open(db: Arc<DB>, group: GroupId) -> Result<Self, StorageError<NodeId>> {
        let cf = db.cf_handle(CF_SM).expect("column family exists");
        let state: PersistedState = match db
            .get_cf(cf, key(group, b"state"))
            .map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Read, e))?
        {
            Some(b) => {
                serde_json::from_slice(&b).map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Read, e))?
            }
            None => PersistedState::default(),
        };
        let image = Arc::new(RwLock::new(Arc::new(state.image.clone())));
        let (version, _) = watch::channel(0);
        Ok(Self { db, group, state: Arc::new(RwLock::new(state)), image, version, apply_seconds: None })
    }

    /// Observe apply latency into `histogram`.
    pub fn with_apply_histogram(mut self, histogram: prometheus::Histogram) -> Self {
        self.apply_seconds = Some(histogram);
        self
    }

    /// The broker-wide read-only view of the image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.read().expect("image lock").clone()
    }

    /// Bumped after every applied batch or installed snapshot.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn persist(&self, state: &PersistedState) -> StorageResult<()> {
        let cf = self.db.cf_handle(CF_SM).expect("column family exists");
        let bytes = serde_json::to_vec(state).map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Write, e))?;
        self.db
            .put_cf_opt(cf, key(self.group, b"state"), bytes, &synced())
            .map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Write, e))
    }

    /// Keep `snapshot` as the current one (synced): openraft sends it to lagging followers.
    fn store_snapshot(&self, snapshot: &StoredSnapshot) -> StorageResult<()> {
        let cf = self.db.cf_handle(CF_SM).expect("column family exists");
        let bytes =
            serde_json::to_vec(snapshot).map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
        self.db
            .put_cf_opt(cf, key(self.group, b"snapshot"), bytes, &synced())
            .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))
    }

    fn publish(&self, state: &PersistedState) {
        *self.image.write().expect("image lock") = Arc::new(state.image.clone());
        self.version.send_modify(|v| *v += 1);
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let state = self.state.read().expect("state lock").clone();
        let data = serde_json::to_vec(&state).map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Read, e))?;
        let snapshot_id = match state.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, crate::log::now_ms()),
            None => format!("--{}", crate::log::now_ms()),
        };
        let meta =
            SnapshotMeta { last_log_id: state.last_applied, last_membership: state.membership.clone(), snapshot_id };
        let stored = StoredSnapshot { meta: meta.clone(), data: data.clone() };
        self.store_snapshot(&stored)?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        let s = self.state.read().expect("state lock");
        Ok((s.last_applied, s.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<CommandResult>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = std::time::Instant::now();
        let mut state = self.state.read().expect("state lock").clone();
        let mut out = Vec::new();
        for entry in entries {
            state.last_applied = Some(entry.log_id);
            let result = match entry.payload {
                EntryPayload::Blank => Ok(()),
                EntryPayload::Normal(cmd) => state.image.apply(&cmd),
                EntryPayload::Membership(m) => {
                    state.membership = StoredMembership::new(Some(entry.log_id), m);
                    Ok(())
                }
            };
            out.push(CommandResult(result));
        }
        self.persist(&state)?;
        self.publish(&state);
        *self.state.write().expect("state lock") = state;
        if let Some(h) = &self.apply_seconds {
            h.observe(started.elapsed().as_secs_f64());
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let mut state: PersistedState = serde_json::from_slice(&data)
            .map_err(|e| io_err(ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Read, e))?;
        state.last_applied = meta.last_log_id;
        state.membership = meta.last_membership.clone();
        self.persist(&state)?;
        let stored = StoredSnapshot { meta: meta.clone(), data };
        self.store_snapshot(&stored)?;
        self.publish(&state);
        *self.state.write().expect("state lock") = state;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let cf = self.db.cf_handle(CF_SM).expect("column family exists");
        let Some(bytes) = self
            .db
            .get_cf(cf, key(self.group, b"snapshot"))
            .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?
        else {
            return Ok(None);
        };
        let stored: StoredSnapshot =
            serde_json::from_slice(&bytes).map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
        Ok(Some(Snapshot { meta: stored.meta, snapshot: Box::new(Cursor::new(stored.data)) }))
    }
}
