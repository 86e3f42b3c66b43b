//! Outputs that are replaced only by a job that succeeded.
//!
//! A job that overwrites (`output.overwrite: true`, `tessera ingest --overwrite`) never writes
//! into its output. It writes into a staging prefix beside it, `<parent>/.<name>.staging-<tag>`
//! (the tag is the job's id, so a resumed job finds its own), and only its commit — after
//! every task succeeded and the stored chunks were checked — promotes the staging prefix into
//! the output:
//!
//! 1. the staged keys are listed into `<staging>/.tessera-promote` (the promote's own journal);
//! 2. the output's `.zmetadata` is deleted: from here on a reader sees the old output as
//!    incomplete, never as a mix called complete;
//! 3. every staged object but the group's `.zattrs` and `.zmetadata` is moved into the output
//!    (a rename on a local disk, a server-side copy and a delete on S3), 16 at a time;
//! 4. the objects of the old output that the new one has not are deleted;
//! 5. the group's `.zattrs`, then its `.zmetadata`, are moved last: the output is complete
//!    again, and new;
//! 6. the staging prefix is removed.
//!
//! A promote cut short (a crash, a failing store) is rolled forward, never back: running it
//! again continues from its manifest, and a job that fails after its promote began finishes
//! the promote instead of deleting what it staged. A job that fails before its commit deletes
//! its staging prefix and leaves the old output exactly as it was. A job that does not
//! overwrite writes into its output directly (there was nothing there) and deletes it when it
//! fails.

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::{Store, block_on};

/// The promote's journal, inside the staging prefix.
const MANIFEST: &str = ".tessera-promote";

/// The objects that make a Zarr group complete, moved last in this order.
const MARKS: [&str; 2] = [".zattrs", ".zmetadata"];

/// Moves at a time (S3 copies are round trips; a local rename is cheap either way).
const CONCURRENCY: usize = 16;

/// Where a job writes an output, and where that output ends up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    /// The output the user named.
    pub target: String,
    /// Where the job writes instead, when it replaces an existing output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staging: Option<String>,
}

impl Output {
    /// An output written in place: there is nothing to replace.
    pub fn direct(target: &str) -> Output {
        Output {
            target: target.to_string(),
            staging: None,
        }
    }

    /// An output written beside its target and promoted into it at commit.
    pub fn staged(target: &str, tag: &str) -> Output {
        Output {
            target: target.to_string(),
            staging: Some(staging_url(target, tag)),
        }
    }

    /// An output that one process writes: staged under a fresh tag when it may replace an
    /// existing one (`overwrite`), in place otherwise.
    pub fn for_process(target: &str, overwrite: bool) -> Output {
        if overwrite {
            Output::staged(target, &uuid::Uuid::new_v4().simple().to_string())
        } else {
            Output::direct(target)
        }
    }

    /// Where the job's writers write.
    pub fn write_url(&self) -> &str {
        self.staging.as_deref().unwrap_or(&self.target)
    }

    /// Makes what was written the output: promotes a staged output (see the module's text);
    /// nothing to do for one written in place.
    pub fn commit(&self) -> Result<()> {
        match &self.staging {
            Some(staging) => promote(staging, &self.target),
            None => Ok(()),
        }
    }

    /// Removes what a failed job wrote: its staging prefix (the old output is untouched), or
    /// the output it was creating. A staged output whose promote began is promoted instead:
    /// the old output is already partly replaced, and the new one is whole in the staging.
    pub fn discard(&self) -> Result<()> {
        match &self.staging {
            Some(staging) => {
                let store = Store::open(staging)?;
                if block_on(store.exists(MANIFEST))? {
                    promote(staging, &self.target)
                } else {
                    block_on(store.delete_all())
                }
            }
            None => block_on(Store::open(&self.target)?.delete_all()),
        }
    }
}

/// The staging prefix of `target` for the writer tagged `tag`: a hidden sibling, so a rename
/// stays on the same disk (or bucket), and it lies inside whatever store holds the target.
pub fn staging_url(target: &str, tag: &str) -> String {
    let target = target.trim_end_matches('/');
    let start = target.find("://").map_or(0, |i| i + 3);
    match target[start..].rfind('/') {
        Some(i) => {
            let (parent, name) = target.split_at(start + i);
            format!("{parent}/.{}.staging-{tag}", &name[1..])
        }
        // `memory://name`, `s3://bucket`: no parent to put a sibling in.
        None => format!("{}.{}.staging-{tag}", &target[..start], &target[start..]),
    }
}

/// Whether a key's last segment names a staging prefix (for listings that show outputs).
pub fn is_staging(name: &str) -> bool {
    let last = name.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    last.starts_with('.') && last.contains(".staging-")
}

/// Moves objects from one prefix to another: by rename inside one store when both lie under a
/// parent that opens as a store, else by copy through both.
enum Mover {
    Rename {
        parent: std::sync::Arc<dyn ObjectStore>,
        from: String,
        to: String,
    },
    Copy {
        from: Store,
        to: Store,
    },
}

impl Mover {
    fn new(staging: &str, target: &str) -> Result<Mover> {
        let parent_of = |url: &str| {
            url.rsplit_once('/')
                .map(|(p, n)| (p.to_string(), n.to_string()))
        };
        if let (Some((sp, sn)), Some((tp, tn))) = (parent_of(staging), parent_of(target))
            && sp == tp
            && !sp.ends_with(":/")
            && !sp.ends_with("//")
            && let Ok(parent) = Store::open(&sp)
        {
            return Ok(Mover::Rename {
                parent: parent.object_store(),
                from: sn,
                to: tn,
            });
        }
        Ok(Mover::Copy {
            from: Store::open(staging)?,
            to: Store::open(target)?,
        })
    }

    /// Moves `key`; `false` when the staging no longer has it (moved by an earlier try).
    async fn move_key(
        &self,
        key: &str,
        err: &dyn Fn(object_store::Error) -> Error,
    ) -> Result<bool> {
        match self {
            Mover::Rename { parent, from, to } => {
                let (src, dst) = (
                    Path::from(format!("{from}/{key}")),
                    Path::from(format!("{to}/{key}")),
                );
                match parent.rename(&src, &dst).await {
                    Ok(()) => Ok(true),
                    Err(object_store::Error::NotFound { .. }) => Ok(false),
                    Err(e) => Err(err(e)),
                }
            }
            Mover::Copy { from, to } => match from.get(key).await? {
                Some(bytes) => {
                    to.put(key, bytes).await?;
                    from.delete(key).await?;
                    Ok(true)
                }
                None => Ok(false),
            },
        }
    }
}

/// Promotes `staging` into `target` (the steps are in the module's text). Safe to run again
/// after any failure: it continues where the last run stopped.
pub fn promote(staging: &str, target: &str) -> Result<()> {
    block_on(promote_async(staging, target))
}

async fn promote_async(staging_url: &str, target_url: &str) -> Result<()> {
    let staging = Store::open(staging_url)?;
    let target = Store::open(target_url)?;
    let keys: Vec<String> = match staging.get(MANIFEST).await? {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            Error::layer(staging_url, format!("bad promote manifest {MANIFEST}: {e}"))
        })?,
        None => {
            let mut keys: Vec<String> = staging
                .list("")
                .await?
                .into_iter()
                .filter(|k| k != MANIFEST)
                .collect();
            if !keys.iter().any(|k| k == ".zmetadata") {
                return Err(Error::layer(
                    staging_url,
                    "cannot replace the output with a staged write that did not finish (no .zmetadata)",
                ));
            }
            keys.sort();
            let manifest = serde_json::to_vec(&keys).map_err(|e| Error::Internal(e.to_string()))?;
            staging.put(MANIFEST, manifest.into()).await?;
            keys
        }
    };
    target.delete(".zmetadata").await?;

    let mover = Mover::new(staging_url, target_url)?;
    let err = |e: object_store::Error| {
        Error::storage_caused(
            format!("{staging_url} → {target_url}"),
            format!("cannot move a staged object: {e}"),
            e,
        )
    };
    let body = keys.iter().filter(|k| !MARKS.contains(&k.as_str()));
    futures::stream::iter(body)
        .map(|key| mover.move_key(key, &err))
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<bool>>()
        .await?;

    let new: std::collections::HashSet<&str> = keys.iter().map(String::as_str).collect();
    let stale: Vec<String> = target
        .list("")
        .await?
        .into_iter()
        .filter(|k| !new.contains(k.as_str()))
        .collect();
    futures::stream::iter(stale.iter())
        .map(|key| target.delete(key))
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;

    for mark in MARKS {
        if new.contains(mark) {
            mover.move_key(mark, &err).await?;
        }
    }
    staging.delete_all().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn put(url: &str, key: &str, value: &str) {
        let store = Store::open(url).unwrap();
        block_on(store.put(key, Bytes::from(value.to_string()))).unwrap();
    }

    fn contents(url: &str) -> Vec<(String, String)> {
        let store = Store::open(url).unwrap();
        let mut keys = block_on(store.list("")).unwrap();
        keys.sort();
        keys.into_iter()
            .map(|k| {
                let v = block_on(store.get(&k)).unwrap().unwrap();
                (k, String::from_utf8(v.to_vec()).unwrap())
            })
            .collect()
    }

    #[test]
    fn staging_prefixes_are_hidden_siblings() {
        assert_eq!(
            staging_url("s3://b/layers/dem", "j1"),
            "s3://b/layers/.dem.staging-j1"
        );
        assert_eq!(staging_url("/tmp/x/out/", "j1"), "/tmp/x/.out.staging-j1");
        assert_eq!(staging_url("memory://m", "j1"), "memory://.m.staging-j1");
        assert!(is_staging("layers/.dem.staging-j1"));
        assert!(!is_staging("layers/dem"));
    }

    fn old_and_new(root: &std::path::Path) -> (String, Output) {
        let target = root.join("out").to_str().unwrap().to_string();
        for (k, v) in [
            (".zgroup", "g"),
            (".zattrs", "old"),
            (".zmetadata", "old"),
            ("b/0.0", "old00"),
            ("b/0.1", "old01"),
        ] {
            put(&target, k, v);
        }
        let out = Output::staged(&target, "t");
        for (k, v) in [
            (".zgroup", "g"),
            (".zattrs", "new"),
            ("b/0.0", "new00"),
            ("b/1.0", "new10"),
        ] {
            put(out.write_url(), k, v);
        }
        (target, out)
    }

    #[test]
    fn a_promote_replaces_the_output_whole_and_removes_the_staging() {
        let dir = tempfile::tempdir().unwrap();
        let (target, out) = old_and_new(dir.path());
        // Not finished (no .zmetadata): refused, nothing touched.
        assert!(
            out.commit()
                .unwrap_err()
                .to_string()
                .contains("did not finish")
        );
        assert_eq!(contents(&target)[0].1, "old");
        put(out.write_url(), ".zmetadata", "new");
        out.commit().unwrap();
        let want: Vec<(String, String)> = [
            (".zattrs", "new"),
            (".zgroup", "g"),
            (".zmetadata", "new"),
            ("b/0.0", "new00"),
            ("b/1.0", "new10"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(contents(&target), want);
        assert!(!std::path::Path::new(out.write_url()).exists());
    }

    #[test]
    fn a_failed_job_leaves_the_old_output_and_a_cut_promote_is_rolled_forward() {
        let dir = tempfile::tempdir().unwrap();
        let (target, out) = old_and_new(dir.path());
        let before = contents(&target);
        out.discard().unwrap();
        assert_eq!(contents(&target), before);
        assert!(!std::path::Path::new(out.write_url()).exists());

        // A promote cut short after its manifest and a first move: discard finishes it.
        let (target, out) = old_and_new(dir.path());
        put(out.write_url(), ".zmetadata", "new");
        let staging = Store::open(out.write_url()).unwrap();
        let keys =
            serde_json::to_vec(&[".zattrs", ".zgroup", ".zmetadata", "b/0.0", "b/1.0"]).unwrap();
        block_on(staging.put(MANIFEST, keys.into())).unwrap();
        std::fs::rename(
            dir.path().join(".out.staging-t/b/0.0"),
            dir.path().join("out/b/0.0"),
        )
        .unwrap();
        out.discard().unwrap();
        let got = contents(&target);
        assert_eq!(got.len(), 5, "{got:?}");
        assert!(got.iter().all(|(_, v)| !v.starts_with("old")), "{got:?}");
    }

    #[test]
    fn a_direct_output_is_deleted_when_its_job_fails() {
        let out = Output::direct("memory://staging-direct");
        put(out.write_url(), "a/0.0", "x");
        out.discard().unwrap();
        assert!(contents("memory://staging-direct").is_empty());
        // In memory there is no parent: staged outputs are copied.
        put("memory://staging-copied", ".zmetadata", "old");
        let out = Output::staged("memory://staging-copied", "t");
        put(out.write_url(), ".zmetadata", "new");
        put(out.write_url(), "a/0.0", "x");
        out.commit().unwrap();
        assert_eq!(contents("memory://staging-copied").len(), 2);
        assert!(contents(out.write_url()).is_empty());
    }
}
