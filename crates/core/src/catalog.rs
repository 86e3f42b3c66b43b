//! The catalog: a record per dataset Tessera writes, kept in the object store beside the data.
//!
//! There is no database server. The catalog is a log of changes plus a compacted snapshot,
//! under `_tessera/catalog/` in a store (Delta Lake's design, on conditional puts):
//!
//! ```text
//! _tessera/catalog/log/<seq / 1000>/<seq>.json   one commit: the changes it makes, in order
//! _tessera/catalog/snapshot/<seq>.parquet        every record as of commit <seq>
//! ```
//!
//! - **Writers** read the catalog as of commit N, decide their changes against it (a name
//!   already taken, a record that is gone) and write commit N + 1 with a conditional put
//!   (`PutMode::Create`). Only one writer can create N + 1; the others read what it wrote and
//!   decide again. Changes name only the fields they change (an attribute set, a status), so no
//!   writer's update is lost to another's.
//! - **Readers** take the newest snapshot and the commits after it, which must follow it without
//!   a gap. Snapshots and commits are written whole and never changed, so a reader sees the
//!   catalog as of one commit: while a writer compacts, the reader sees the older snapshot and
//!   more commits, which is the same catalog.
//! - **Compaction**: the writer of every [`COMPACT_COMMITS`]th commit (or of a commit that
//!   leaves more than [`COMPACT_CHANGES`] changes after the snapshot) writes a new snapshot.
//!   Commits and snapshots it replaces are deleted once they are [`RETAIN_MS`] old; a writer
//!   whose view of the catalog is older than half that reads it again before writing, so it
//!   cannot recreate a deleted commit.

mod batch;
mod describe;
mod record;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow::array::{Array, BooleanArray, RecordBatch};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use batch::{Rows, SCHEMA, column_names, from_parquet, to_batch, to_parquet};
pub use describe::{describe, reproject_bbox, split_file_url};
pub use record::{
    Change, Dataset, DatasetKind, Description, Dim, Patch, Status, Variable, check_attribute,
    check_name,
};

use crate::error::{Error, Result};
use crate::store::Store;

/// Where the catalog lives in a store.
pub const PREFIX: &str = "_tessera/catalog";
/// A snapshot is written at least every this many commits.
pub const COMPACT_COMMITS: u64 = 64;
/// ... or when the commits after the snapshot hold this many changes.
pub const COMPACT_CHANGES: usize = 4096;
/// How long replaced commits and snapshots are kept for readers and writers still using them.
pub const RETAIN_MS: i64 = 3_600_000;
/// How many times a reader or writer starts again after meeting another writer.
const MAX_TRIES: usize = 200;
/// Commits read at once.
const READ_AHEAD: usize = 16;

/// Milliseconds since 1970-01-01 UTC.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn log_dir(seq: u64) -> String {
    format!("{PREFIX}/log/{:08}", seq / 1000)
}

fn log_key(seq: u64) -> String {
    format!("{}/{seq:012}.json", log_dir(seq))
}

fn snapshot_key(seq: u64) -> String {
    format!("{PREFIX}/snapshot/{seq:012}.parquet")
}

/// The number in a key's last part (`.../000000000042.json` → 42).
fn seq_of(key: &str) -> Option<u64> {
    key.rsplit('/').next()?.split('.').next()?.parse().ok()
}

/// One commit: the changes it makes, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Commit {
    pub seq: u64,
    /// When it was written, ms since 1970-01-01 UTC.
    pub time: i64,
    pub changes: Vec<Change>,
}

/// The catalog as of one commit.
#[derive(Debug, Clone)]
pub struct State {
    seq: u64,
    snapshot_seq: u64,
    /// The snapshot's records.
    base: RecordBatch,
    base_rows: Arc<HashMap<Uuid, usize>>,
    /// Records changed since the snapshot, `None` when removed.
    newer: BTreeMap<Uuid, Option<Dataset>>,
    /// Changes since the snapshot.
    tail_changes: usize,
    read_at: Instant,
}

impl State {
    fn empty() -> Result<State> {
        State::from_snapshot(0, to_batch([])?)
    }

    fn from_snapshot(seq: u64, base: RecordBatch) -> Result<State> {
        let rows = Rows::new(&base)?;
        let mut index = HashMap::with_capacity(rows.len());
        for (i, id) in rows.ids().enumerate() {
            let id = Uuid::parse_str(id)
                .map_err(|_| Error::Internal(format!("catalog snapshot {seq}: a bad id `{id}`")))?;
            index.insert(id, i);
        }
        Ok(State {
            seq,
            snapshot_seq: seq,
            base,
            base_rows: Arc::new(index),
            newer: BTreeMap::new(),
            tail_changes: 0,
            read_at: Instant::now(),
        })
    }

    /// The commit this state is as of (0 for an empty catalog).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn get(&self, id: Uuid) -> Result<Option<Dataset>> {
        if let Some(d) = self.newer.get(&id) {
            return Ok(d.clone());
        }
        match self.base_rows.get(&id) {
            Some(&i) => Rows::new(&self.base)?.get(i).map(Some),
            None => Ok(None),
        }
    }

    /// How many records there are.
    pub fn len(&self) -> usize {
        let replaced = self
            .newer
            .keys()
            .filter(|id| self.base_rows.contains_key(id))
            .count();
        self.base_rows.len() - replaced + self.newer.values().flatten().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first record whose `column` (a text column) is `value`.
    fn find_by(&self, column: &str, value: &str) -> Result<Option<Dataset>> {
        let pick = |d: &Dataset| match column {
            "name" => d.name == value,
            _ => d.url == value,
        };
        if let Some(d) = self.newer.values().flatten().find(|d| pick(d)) {
            return Ok(Some(d.clone()));
        }
        let rows = Rows::new(&self.base)?;
        let col = self
            .base
            .column_by_name(column)
            .and_then(|c| c.as_any().downcast_ref::<arrow::array::StringArray>())
            .ok_or_else(|| Error::Internal(format!("catalog: no text column {column}")))?;
        for i in 0..col.len() {
            if col.value(i) == value {
                let d = rows.get(i)?;
                if !self.newer.contains_key(&d.id) {
                    return Ok(Some(d));
                }
            }
        }
        Ok(None)
    }

    pub fn by_name(&self, name: &str) -> Result<Option<Dataset>> {
        self.find_by("name", name)
    }

    pub fn by_url(&self, url: &str) -> Result<Option<Dataset>> {
        self.find_by("url", url.trim_end_matches('/'))
    }

    /// The record an id or a name names.
    pub fn find(&self, id_or_name: &str) -> Result<Option<Dataset>> {
        match Uuid::parse_str(id_or_name) {
            Ok(id) => self.get(id),
            Err(_) => self.by_name(id_or_name),
        }
    }

    /// Like [`State::find`], or an error naming what was asked for.
    pub fn require(&self, id_or_name: &str) -> Result<Dataset> {
        self.find(id_or_name)?.ok_or_else(|| {
            Error::invalid(format!(
                "no dataset `{id_or_name}` in the catalog (`tessera catalog ls` lists them)"
            ))
        })
    }

    /// Every record.
    pub fn datasets(&self) -> Result<Vec<Dataset>> {
        let rows = Rows::new(&self.base)?;
        let mut out = Vec::with_capacity(self.len());
        for (i, id) in rows.ids().enumerate() {
            let replaced = Uuid::parse_str(id).is_ok_and(|id| self.newer.contains_key(&id));
            if !replaced {
                out.push(rows.get(i)?);
            }
        }
        out.extend(self.newer.values().flatten().cloned());
        Ok(out)
    }

    /// Every record as one batch of the catalog table (what queries read).
    pub fn batch(&self) -> Result<RecordBatch> {
        if self.newer.is_empty() {
            return Ok(self.base.clone());
        }
        let rows = Rows::new(&self.base)?;
        let keep: BooleanArray = rows
            .ids()
            .map(|id| Some(!Uuid::parse_str(id).is_ok_and(|id| self.newer.contains_key(&id))))
            .collect();
        let err = |e: arrow::error::ArrowError| Error::Internal(format!("catalog table: {e}"));
        let kept = arrow::compute::filter_record_batch(&self.base, &keep).map_err(err)?;
        let recent = to_batch(self.newer.values().flatten())?;
        arrow::compute::concat_batches(&SCHEMA, [&kept, &recent]).map_err(err)
    }

    /// Applies a commit that follows this state.
    fn apply(&mut self, commit: &Commit) -> Result<()> {
        for change in &commit.changes {
            match change {
                Change::Create(d) => {
                    self.newer.insert(d.id, Some((**d).clone()));
                }
                Change::Update { id, patch } => {
                    if let Some(mut d) = self.get(*id)? {
                        d.apply(patch, commit.time);
                        self.newer.insert(*id, Some(d));
                    }
                }
                Change::Remove { id } => {
                    self.newer.insert(*id, None);
                }
            }
        }
        self.seq = commit.seq;
        self.tail_changes += commit.changes.len();
        Ok(())
    }
}

/// A catalog in a store. Cheap to clone; clones share what they have read.
#[derive(Debug, Clone)]
pub struct Catalog {
    store: Store,
    read: Arc<Mutex<Option<State>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Catalog {
    /// The catalog of the store at `url`.
    pub fn open(url: &str) -> Result<Catalog> {
        Ok(Catalog::new(Store::open(url)?))
    }

    pub fn new(store: Store) -> Catalog {
        Catalog {
            store,
            read: Arc::default(),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The catalog as of its newest commit.
    pub async fn read(&self) -> Result<State> {
        for _ in 0..MAX_TRIES {
            let known = lock(&self.read)
                .clone()
                .filter(|s| (s.read_at.elapsed().as_millis() as i64) < RETAIN_MS / 2);
            let start = match known {
                Some(s) => Some(s),
                None => self.newest_snapshot().await?,
            };
            // A snapshot or commit that went between listing and reading: start again.
            let Some(start) = start else { continue };
            if let Some(state) = self.catch_up(start).await? {
                *lock(&self.read) = Some(state.clone());
                return Ok(state);
            }
            *lock(&self.read) = None;
        }
        Err(Error::storage_permanent(
            self.url(),
            "the catalog changed under every read; try again",
        ))
    }

    fn url(&self) -> String {
        format!("{}/{PREFIX}", self.store.url())
    }

    /// The newest snapshot, an empty catalog when there is none, `None` when it went.
    async fn newest_snapshot(&self) -> Result<Option<State>> {
        let newest = self
            .store
            .list(&format!("{PREFIX}/snapshot/"))
            .await?
            .iter()
            .filter_map(|k| seq_of(k))
            .max();
        let Some(seq) = newest else {
            return State::empty().map(Some);
        };
        let key = snapshot_key(seq);
        match self.store.get(&key).await? {
            Some(bytes) => {
                let url = format!("{}/{key}", self.store.url());
                let base = tokio::task::spawn_blocking(move || from_parquet(&url, bytes))
                    .await
                    .map_err(|e| Error::Internal(format!("catalog snapshot: {e}")))??;
                State::from_snapshot(seq, base).map(Some)
            }
            None => Ok(None),
        }
    }

    /// The sequence numbers of the commits after `seq`, in order.
    async fn commits_after(&self, seq: u64) -> Result<Vec<u64>> {
        let first_dir = seq / 1000;
        let mut dirs: Vec<u64> = self
            .store
            .list_dirs(&format!("{PREFIX}/log/"))
            .await?
            .iter()
            .filter_map(|d| d.parse().ok())
            .filter(|d| *d >= first_dir)
            .collect();
        dirs.sort_unstable();
        let mut seqs = Vec::new();
        for dir in dirs {
            let keys = self.store.list(&log_dir(dir * 1000)).await?;
            seqs.extend(keys.iter().filter_map(|k| seq_of(k)).filter(|s| *s > seq));
        }
        seqs.sort_unstable();
        Ok(seqs)
    }

    /// `state` brought up to the newest commit; `None` when the commits after it are no longer
    /// all there (a compaction removed them: read its snapshot instead).
    async fn catch_up(&self, mut state: State) -> Result<Option<State>> {
        let seqs = self.commits_after(state.seq).await?;
        if seqs
            .iter()
            .enumerate()
            .any(|(i, s)| *s != state.seq + 1 + i as u64)
        {
            return Ok(None);
        }
        let store = self.store.clone();
        let mut commits = futures::stream::iter(seqs)
            .map(|seq| {
                let store = store.clone();
                async move { (seq, store.get(&log_key(seq)).await) }
            })
            .buffered(READ_AHEAD);
        while let Some((seq, bytes)) = commits.next().await {
            let Some(bytes) = bytes? else {
                return Ok(None);
            };
            let commit: Commit = serde_json::from_slice(&bytes).map_err(|e| {
                Error::storage_permanent(
                    format!("{}/{}", self.store.url(), log_key(seq)),
                    format!("bad catalog commit: {e}"),
                )
            })?;
            if commit.seq != seq {
                return Err(Error::storage_permanent(
                    format!("{}/{}", self.store.url(), log_key(seq)),
                    format!("catalog commit {seq} says it is commit {}", commit.seq),
                ));
            }
            state.apply(&commit)?;
        }
        state.read_at = Instant::now();
        Ok(Some(state))
    }

    /// Makes the changes `decide` returns for the newest state, as one commit; when another
    /// writer committed first, reads its commit and decides again. An error from `decide`
    /// leaves the catalog unchanged. Returns the state after the commit.
    pub async fn commit<F>(&self, mut decide: F) -> Result<State>
    where
        F: FnMut(&State) -> Result<Vec<Change>>,
    {
        let mut state = self.read().await?;
        for attempt in 0..MAX_TRIES {
            let changes = decide(&state)?;
            if changes.is_empty() {
                return Ok(state);
            }
            let commit = Commit {
                seq: state.seq + 1,
                time: now_ms(),
                changes,
            };
            let bytes = Bytes::from(
                serde_json::to_vec(&commit)
                    .map_err(|e| Error::Internal(format!("catalog commit: {e}")))?,
            );
            if self.store.create(&log_key(commit.seq), bytes).await? {
                state.apply(&commit)?;
                *lock(&self.read) = Some(state.clone());
                if state.seq - state.snapshot_seq >= COMPACT_COMMITS
                    || state.tail_changes >= COMPACT_CHANGES
                {
                    state = self.compact(state).await?;
                }
                return Ok(state);
            }
            // Another writer took this commit: back off a little (more on each meeting, so
            // that writers spread out), read what it wrote, decide again.
            let pause = (attempt as u64).min(20) * (1 + rand_below(4));
            tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            state = self.read().await?;
        }
        Err(Error::storage_permanent(
            self.url(),
            "too many writers at once: the change was not made; try again",
        ))
    }

    /// Writes a snapshot of `state`, then deletes commits and snapshots it replaces that are
    /// older than [`RETAIN_MS`]. A failed snapshot is no error: the commits hold the catalog.
    async fn compact(&self, state: State) -> Result<State> {
        let batch = state.batch()?;
        let encoded = {
            let batch = batch.clone();
            tokio::task::spawn_blocking(move || to_parquet(&batch))
                .await
                .map_err(|e| Error::Internal(format!("catalog snapshot: {e}")))?
        };
        let written = match encoded {
            Ok(bytes) => self.store.create(&snapshot_key(state.seq), bytes).await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            warn(&format!("cannot write a catalog snapshot: {e}"));
            return Ok(state);
        }
        let compacted = State::from_snapshot(state.seq, batch)?;
        *lock(&self.read) = Some(compacted.clone());
        if let Err(e) = self.vacuum(state.seq).await {
            warn(&format!("cannot remove old catalog commits: {e}"));
        }
        Ok(compacted)
    }

    /// Deletes snapshots older than `snapshot` and the commits they and it hold, once they are
    /// [`RETAIN_MS`] old.
    async fn vacuum(&self, snapshot: u64) -> Result<()> {
        let old = now_ms() - RETAIN_MS;
        let mut doomed = Vec::new();
        for (key, modified) in self
            .store
            .list_modified(&format!("{PREFIX}/snapshot/"))
            .await?
        {
            if seq_of(&key).is_some_and(|s| s < snapshot) && modified < old {
                doomed.push(key);
            }
        }
        for dir in self.store.list_dirs(&format!("{PREFIX}/log/")).await? {
            let Ok(d) = dir.parse::<u64>() else { continue };
            if d * 1000 > snapshot {
                continue;
            }
            for (key, modified) in self.store.list_modified(&log_dir(d * 1000)).await? {
                if seq_of(&key).is_some_and(|s| s <= snapshot) && modified < old {
                    doomed.push(key);
                }
            }
        }
        futures::stream::iter(doomed)
            .map(|key| {
                let store = self.store.clone();
                async move { store.delete(&key).await }
            })
            .buffer_unordered(READ_AHEAD)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }
}

/// A small random number, for spreading writers that met.
fn rand_below(n: u64) -> u64 {
    (Uuid::new_v4().as_u128() % n as u128) as u64
}

fn warn(message: &str) {
    eprintln!("warning: {message}");
}

#[cfg(test)]
mod tests;
