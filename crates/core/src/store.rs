//! Object storage: a URL (`file://`, `s3://`, `memory://` or a plain local path) opened as an
//! `object_store` rooted at that URL's prefix.
//!
//! `s3://bucket/prefix` takes its endpoint, region and credentials from the usual `AWS_*`
//! environment variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`); an `http://` endpoint (MinIO, a loopback test server) is allowed.
//! Without credentials requests go unsigned: see [`s3_credentials_configured`].

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::error::{Error, Result};

/// An object store opened at a URL; keys are relative to the URL's prefix.
#[derive(Debug, Clone)]
pub struct Store {
    url: String,
    inner: Arc<dyn ObjectStore>,
    /// The directory behind a local store, whose emptied folders `delete_all` removes.
    local_root: Option<std::path::PathBuf>,
}

/// Whether a URL names something Tessera can open as a store.
fn scheme_of(url: &str) -> Option<&str> {
    let (scheme, rest) = url.split_once("://")?;
    (!scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+')
        && !rest.is_empty())
    .then_some(scheme)
}

/// A plain local path, made absolute against the working directory.
fn absolute_local(path: &str) -> Result<std::path::PathBuf> {
    let p = std::path::Path::new(path);
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    let cwd = std::env::current_dir().map_err(|e| {
        Error::storage_permanent(path, format!("cannot resolve a relative path: {e}"))
    })?;
    Ok(cwd.join(p))
}

/// The object-store path of a local absolute path, without following links.
fn local_prefix(url: &str, path: &std::path::Path) -> Result<Path> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            std::path::Component::Normal(s) => parts.push(
                s.to_str()
                    .ok_or_else(|| Error::storage_permanent(url, "the path is not valid UTF-8"))?
                    .to_string(),
            ),
            std::path::Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    Ok(Path::from_iter(parts))
}

impl Store {
    /// Opens the store a URL names. Supported: `file:///abs/path`, `s3://bucket/prefix`,
    /// `memory://name` (in-process, for tests) and plain local paths.
    pub fn open(url: &str) -> Result<Store> {
        let url = url.trim_end_matches('/');
        let mut local_root = None;
        let (inner, prefix): (Arc<dyn ObjectStore>, Path) = match scheme_of(url) {
            // `file:relative/x` or `s3:` (what is left of `s3:///x` above its last `/`): a
            // scheme without `//` is a mistyped URL, not a directory named `file:`.
            None if url
                .split('/')
                .next()
                .is_some_and(|first| first.contains(':')) =>
            {
                return Err(Error::storage_permanent(
                    url,
                    "not a URL Tessera reads (file:///abs/path, s3://bucket/prefix) nor a plain path",
                ));
            }
            None => {
                let abs = absolute_local(url)?;
                let prefix = local_prefix(url, &abs)?;
                local_root = Some(std::path::PathBuf::from(format!("/{prefix}")));
                (
                    Arc::new(object_store::local::LocalFileSystem::new()),
                    prefix,
                )
            }
            Some("file") => {
                let path = &url["file://".len()..];
                if !path.starts_with('/') {
                    return Err(Error::storage_permanent(
                        url,
                        "a file:// URL needs an absolute path (file:///dir/layer)",
                    ));
                }
                let prefix = local_prefix(url, std::path::Path::new(path))?;
                local_root = Some(std::path::PathBuf::from(format!("/{prefix}")));
                (
                    Arc::new(object_store::local::LocalFileSystem::new()),
                    prefix,
                )
            }
            Some("s3") => {
                let rest = &url["s3://".len()..];
                let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(Error::storage_permanent(
                        url,
                        "an s3:// URL needs a bucket (s3://bucket/prefix)",
                    ));
                }
                // Conditional puts (If-None-Match / If-Match), which the catalog's writers agree
                // through: S3, MinIO and moto answer them.
                let mut builder = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch);
                if !s3_credentials_configured() {
                    // Without credentials object_store would ask the cloud's instance metadata
                    // service (169.254.169.254) for some: requests go unsigned instead.
                    builder = builder.with_skip_signature(true);
                }
                let endpoint = std::env::var("AWS_ENDPOINT_URL_S3")
                    .or_else(|_| std::env::var("AWS_ENDPOINT_URL"));
                if let Ok(endpoint) = endpoint {
                    if endpoint.starts_with("http://") {
                        builder = builder.with_allow_http(true);
                    }
                    builder = builder.with_endpoint(endpoint);
                }
                let s3 = builder
                    .build()
                    .map_err(|e| Error::storage_caused(url, e.to_string(), e))?;
                (
                    Arc::new(s3),
                    Path::parse(key).map_err(|e| Error::storage_permanent(url, e))?,
                )
            }
            Some("memory") => {
                let name = &url["memory://".len()..];
                (memory_store(name), Path::default())
            }
            Some(other) => {
                return Err(Error::storage_permanent(
                    url,
                    format!(
                        "unsupported URL scheme `{other}` (expected file://, s3:// or a local path)"
                    ),
                ));
            }
        };
        let inner: Arc<dyn ObjectStore> = if prefix.as_ref().is_empty() {
            inner
        } else {
            Arc::new(PrefixStore::new(inner, prefix))
        };
        Ok(Store {
            url: url.to_string(),
            inner,
            local_root,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The `object_store` rooted at this URL.
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.inner.clone()
    }

    /// A failed call on `key`, its message made readable and the `object_store` error kept as
    /// its cause (which says whether trying again can help).
    fn err(&self, key: &str, e: object_store::Error) -> Error {
        let message = e.to_string();
        // S3 answers with an XML document; its error code says it all.
        let message = match message
            .split("<Code>")
            .nth(1)
            .and_then(|rest| rest.split("</Code>").next())
        {
            Some("NoSuchBucket") => "the bucket does not exist".to_string(),
            Some("AccessDenied") => {
                "access denied (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)".to_string()
            }
            Some("InvalidAccessKeyId") | Some("SignatureDoesNotMatch") => format!(
                "the credentials were refused ({})",
                message
                    .split("<Code>")
                    .nth(1)
                    .and_then(|r| r.split("</Code>").next())
                    .unwrap_or("")
            ),
            _ => message,
        };
        let url = if key.is_empty() {
            self.url.clone()
        } else {
            format!("{}/{key}", self.url)
        };
        Error::storage_caused(url, message, e)
    }

    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<()> {
        if let Some(path) = self.direct_path(key, bytes.len()) {
            let url = format!("{}/{key}", self.url);
            let written = tokio::task::spawn_blocking(move || put_direct(&path, &bytes))
                .await
                .map_err(|e| Error::storage(&url, format!("the writing thread failed: {e}")))?;
            return written
                .map_err(|e| Error::storage_caused(url, format!("cannot write: {e}"), e));
        }
        self.inner
            .put(&Path::from(key), PutPayload::from(bytes))
            .await
            .map_err(|e| self.err(key, e))?;
        Ok(())
    }

    /// Writes `key` only if no object is there (a conditional put): `false` when one is.
    /// What several writers agree through, such as the catalog's log.
    pub async fn create(&self, key: &str, bytes: Bytes) -> Result<bool> {
        let opts = object_store::PutOptions::from(object_store::PutMode::Create);
        match self
            .inner
            .put_opts(&Path::from(key), PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.err(key, e)),
        }
    }

    /// The names of the "folders" right under `prefix` (keys up to the next `/`).
    pub async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>> {
        let p = (!prefix.is_empty()).then(|| Path::from(prefix));
        let listing = self
            .inner
            .list_with_delimiter(p.as_ref())
            .await
            .map_err(|e| self.err(prefix, e))?;
        Ok(listing
            .common_prefixes
            .into_iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect())
    }

    /// The object at `key`, or `None` when there is none.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        if let Some(path) = self.direct_path(key, DIRECT_PUT_BYTES)
            && let Ok(Some(bytes)) = tokio::task::spawn_blocking(move || get_direct(&path)).await
        {
            return Ok(Some(bytes));
        }
        match self.inner.get(&Path::from(key)).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(|e| self.err(key, e))?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(key, e)),
        }
    }

    pub async fn exists(&self, key: &str) -> Result<bool> {
        match self.inner.head(&Path::from(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.err(key, e)),
        }
    }

    /// Removes the object at `key`; a key with no object is no error.
    pub async fn delete(&self, key: &str) -> Result<()> {
        match self.inner.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(key, e)),
        }
    }

    /// Every key under `prefix` with when it was last written (milliseconds since the epoch).
    pub async fn list_modified(&self, prefix: &str) -> Result<Vec<(String, i64)>> {
        let p = (!prefix.is_empty()).then(|| Path::from(prefix));
        let metas: Vec<_> = self
            .inner
            .list(p.as_ref())
            .try_collect()
            .await
            .map_err(|e| self.err(prefix, e))?;
        Ok(metas
            .into_iter()
            .map(|m| (m.location.to_string(), m.last_modified.timestamp_millis()))
            .collect())
    }

    /// Every key under `prefix` (all keys when empty).
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self
            .list_modified(prefix)
            .await?
            .into_iter()
            .map(|(key, _)| key)
            .collect())
    }

    /// The keys of the objects directly in folder `dir` (not in its subfolders), without their
    /// sizes or times: on a local disk one read of the directory, with no file looked at (a
    /// listing that follows a job's writes runs many times over tens of thousands of chunks).
    pub async fn list_folder(&self, dir: &str) -> Result<Vec<String>> {
        let dir = dir.trim_end_matches('/');
        if let Some(path) = self.direct_path(dir, DIRECT_PUT_BYTES) {
            let read = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<String>> {
                let entries = match std::fs::read_dir(&path) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(e) => return Err(e),
                };
                let mut names = Vec::new();
                for entry in entries {
                    let entry = entry?;
                    if entry.file_type()?.is_file()
                        && let Some(name) = entry.file_name().to_str()
                    {
                        names.push(name.to_string());
                    }
                }
                Ok(names)
            })
            .await
            .map_err(|e| Error::Internal(format!("listing {dir}: {e}")))?;
            let names = read.map_err(|e| Error::storage(format!("{}/{dir}", self.url), e))?;
            return Ok(names.into_iter().map(|n| format!("{dir}/{n}")).collect());
        }
        let p = Path::from(dir);
        let listing = self
            .inner
            .list_with_delimiter(Some(&p))
            .await
            .map_err(|e| self.err(dir, e))?;
        Ok(listing
            .objects
            .into_iter()
            .map(|m| m.location.to_string())
            .collect())
    }

    /// Deletes every object under this store's prefix.
    pub async fn delete_all(&self) -> Result<()> {
        let locations = self.inner.list(None).map_ok(|m| m.location).boxed();
        let mut deleted = self.inner.delete_stream(locations);
        while let Some(r) = deleted.next().await {
            match r {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.err("", e)),
            }
        }
        if let Some(root) = &self.local_root {
            remove_empty_dirs(root);
        }
        Ok(())
    }
}

/// Objects of at least this many bytes in a local store are written past the page cache (a
/// layer's chunks): a job writing gigabytes of them spent more CPU copying them into the page
/// cache than computing some of them (a city's SVF layer: 18 s of 246).
const DIRECT_PUT_BYTES: usize = 64 << 10;

impl Store {
    /// Where `key` is on disk, if it is `len` bytes for a local store, to be written directly:
    /// keys of plain characters only (others go through `object_store`, which escapes them).
    fn direct_path(&self, key: &str, len: usize) -> Option<std::path::PathBuf> {
        let plain = |c: char| c.is_ascii_alphanumeric() || "._-/".contains(c);
        let root = self.local_root.as_ref()?;
        (len >= DIRECT_PUT_BYTES
            && key.chars().all(plain)
            && root.to_str().is_some_and(|r| r.chars().all(plain))
            && key
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != ".."))
        .then(|| root.join(key))
    }
}

/// Writes `bytes` at `path` as `object_store`'s local store does — into `{path}#{n}`, the
/// folders made as needed, then renamed over `path`, so that a reader sees the old object or
/// the new one — but past the page cache (O_DIRECT: whole 4 KB blocks from an aligned buffer,
/// then the file cut to its length), or through it where the file system refuses that.
fn put_direct(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let (staged, file) = {
        let mut n = 1u32;
        loop {
            let mut staged = path.as_os_str().to_owned();
            staged.push(format!("#{n}"));
            let staged = std::path::PathBuf::from(staged);
            let open = |direct: bool| {
                let mut o = std::fs::OpenOptions::new();
                o.write(true).create_new(true);
                if direct {
                    o.custom_flags(libc::O_DIRECT);
                }
                o.open(&staged)
            };
            match open(true).or_else(|e| match e.raw_os_error() {
                Some(libc::EINVAL) => open(false),
                _ => Err(e),
            }) {
                Ok(f) => break (staged, f),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && n < 1000 => {
                    if let Some(parent) = path.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    n += 1;
                }
                Err(e) => return Err(e),
            }
        }
    };
    let written = (|| {
        // The bytes in an aligned buffer, padded to whole blocks; each thread keeps its buffer.
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let padded = bytes.len().div_ceil(ALIGN) * ALIGN;
        let direct = BUF.with_borrow_mut(|buf| {
            let at = tessera_tiff::aligned(buf, padded);
            let block = &mut buf[at..at + padded];
            block[..bytes.len()].copy_from_slice(bytes);
            block[bytes.len()..].fill(0);
            match file.write_all_at(block, 0) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(false),
                r => r.map(|()| true),
            }
        })?;
        match direct {
            true => file.set_len(bytes.len() as u64),
            false => {
                drop(file);
                std::fs::write(&staged, bytes)
            }
        }
    })();
    match written.and_then(|()| std::fs::rename(&staged, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&staged);
            Err(e)
        }
    }
}

/// The alignment of a direct read or write: its buffer, offset and length.
const ALIGN: usize = tessera_tiff::DIRECT_ALIGN;

/// The object at `path` if it is a file of at least [`DIRECT_PUT_BYTES`], read past the page
/// cache (what [`put_direct`] wrote is not in it); `None` for anything else — no such file, a
/// small one, a file system that refuses direct reads, an error — which `object_store` then
/// reads, or names.
fn get_direct(path: &std::path::Path) -> Option<Bytes> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    let len = meta.len() as usize;
    if !meta.is_file() || len < DIRECT_PUT_BYTES {
        return None;
    }
    let padded = len.div_ceil(ALIGN) * ALIGN;
    let mut buf = Vec::new();
    let at = tessera_tiff::aligned(&mut buf, padded);
    let done = tessera_tiff::read_some(&file, 0, &mut buf[at..at + padded]).ok()?;
    // The file is replaced by a rename, never rewritten: what was opened is read whole.
    (done >= len).then(|| Bytes::from(buf).slice(at..at + len))
}

/// Whether S3 credentials are configured: keys, a web identity (Kubernetes IRSA), a container
/// credentials endpoint, or `TESSERA_S3_INSTANCE_METADATA=1` to let the client ask the cloud's
/// instance metadata service. Otherwise S3 requests go unsigned (public buckets, and servers
/// that take anonymous requests), and nothing calls 169.254.169.254.
pub fn s3_credentials_configured() -> bool {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.is_empty());
    set("AWS_ACCESS_KEY_ID")
        || set("AWS_WEB_IDENTITY_TOKEN_FILE")
        || set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        || set("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        || std::env::var("TESSERA_S3_INSTANCE_METADATA").is_ok_and(|v| v == "1" || v == "true")
}

/// Whether `text` matches a glob `pattern`: `?` is one character and `*` any run of
/// characters within a path segment, `**` any run across segments.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some(b'*') if p.get(1) == Some(&b'*') => (0..=t.len()).any(|i| go(&p[2..], &t[i..])),
            Some(b'*') => (0..=t.len())
                .take_while(|&i| i == 0 || t[i - 1] != b'/')
                .any(|i| go(&p[1..], &t[i..])),
            Some(b'?') => t.first().is_some_and(|&c| c != b'/') && go(&p[1..], &t[1..]),
            Some(&c) => t.first() == Some(&c) && go(&p[1..], &t[1..]),
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

/// The directory a glob pattern lists (everything before the `/` ahead of its first wildcard),
/// or the pattern itself when it has no wildcard; `None` for a wildcard with no directory
/// before it.
pub fn glob_base(pattern: &str) -> Option<&str> {
    match pattern.find(['*', '?']) {
        Some(first_glob) => pattern[..first_glob].rfind('/').map(|end| &pattern[..end]),
        None => Some(pattern),
    }
}

/// Expands the globs among `sources` (local paths, `file://` or `s3://`), sorted; a source
/// without glob characters is kept as it is. A glob that matches nothing is an error that
/// names it.
pub fn expand_sources(sources: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (i, pattern) in sources.iter().enumerate() {
        if !pattern.contains(['*', '?']) {
            out.push(pattern.clone());
            continue;
        }
        let base = glob_base(pattern).ok_or_else(|| {
            Error::invalid(format!(
                "sources[{i}]: `{pattern}` needs a directory before its first wildcard"
            ))
        })?;
        let rest = &pattern[base.len() + 1..];
        let store = Store::open(if base.is_empty() { "/" } else { base })?;
        let mut matches: Vec<String> = block_on(store.list(""))?
            .into_iter()
            .filter(|key| glob_match(rest, key))
            .map(|key| format!("{base}/{key}"))
            .collect();
        if matches.is_empty() {
            return Err(Error::invalid(format!(
                "sources[{i}]: `{pattern}` matches nothing"
            )));
        }
        matches.sort();
        out.extend(matches);
    }
    Ok(out)
}

/// Removes `dir` and the folders below it that hold no files, bottom-up; keeps any that do.
fn remove_empty_dirs(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_empty_dirs(&entry.path());
        }
    }
    // Fails, as it should, when something is left inside.
    let _ = std::fs::remove_dir(dir);
}

pub use tessera_tiff::replace_file;

/// Runs a future to completion on Tessera's I/O runtime, from synchronous code (a rayon worker,
/// a `spawn_blocking` thread or `main`), never from inside an async task.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::sync::OnceLock;
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let rt = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tessera-io")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start the I/O runtime: {e}"))
    });
    rt.block_on(future)
}

/// Named in-memory stores live for the process, so that a writer and a reader share one.
fn memory_store(name: &str) -> Arc<dyn ObjectStore> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static STORES: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
    let mut map = STORES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    map.entry(name.to_string())
        .or_insert_with(|| Arc::new(object_store::memory::InMemory::new()))
        .clone()
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_finished_file_replaces_the_old_one_whole_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let (tmp, out) = (dir.path().join(".out.tmp"), dir.path().join("out.tif"));
        // Nothing at the destination: a rename.
        std::fs::write(&tmp, b"first").unwrap();
        replace_file(&tmp, &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"first");
        assert!(!tmp.exists());
        // A file there: swapped and the old one removed.
        std::fs::write(&tmp, b"second, longer").unwrap();
        replace_file(&tmp, &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"second, longer");
        assert!(!tmp.exists());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["out.tif"]);
        // A directory in the way is an error, and both stay as they were.
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("keep"), b"k").unwrap();
        std::fs::write(&tmp, b"third").unwrap();
        assert!(replace_file(&tmp, &sub).is_err());
        assert_eq!(std::fs::read(sub.join("keep")).unwrap(), b"k");
        assert_eq!(std::fs::read(&tmp).unwrap(), b"third");
    }
    use super::*;

    #[tokio::test]
    async fn large_local_objects_are_written_directly_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/layer", dir.path().display());
        let store = Store::open(&url).unwrap();
        let big = |seed: u8, len: usize| -> Bytes {
            (0..len)
                .map(|i| (i % 253) as u8 ^ seed)
                .collect::<Vec<u8>>()
                .into()
        };
        // Not a multiple of a disk block, in folders that do not exist yet; then replaced by a
        // smaller object, which leaves nothing of the larger one.
        let (first, second) = (big(1, 300_001), big(2, DIRECT_PUT_BYTES + 5));
        assert!(store.direct_path("b1/3.4", first.len()).is_some());
        store.put("b1/3.4", first.clone()).await.unwrap();
        assert_eq!(store.get("b1/3.4").await.unwrap(), Some(first));
        store.put("b1/3.4", second.clone()).await.unwrap();
        assert_eq!(store.get("b1/3.4").await.unwrap(), Some(second));
        // Small objects and keys of other characters go through object_store.
        assert!(store.direct_path("b1/3.5", 100).is_none());
        assert!(store.direct_path("b 1/3.5", 1 << 20).is_none());
        assert!(store.direct_path("b1/../x", 1 << 20).is_none());
        store.put("b 1/x", big(3, 1 << 17)).await.unwrap();
        assert_eq!(store.get("b 1/x").await.unwrap(), Some(big(3, 1 << 17)));
        // No staged file is left, and the listing holds the objects only.
        let mut names: Vec<String> = std::fs::read_dir(dir.path().join("layer/b1"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["3.4"]);
        let mut listed = store.list("").await.unwrap();
        listed.sort();
        assert_eq!(listed, ["b 1/x", "b1/3.4"]);
    }

    #[tokio::test]
    async fn local_store_round_trips_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/layer", dir.path().display());
        let store = Store::open(&url).unwrap();
        store.put("a/b", Bytes::from_static(b"xyz")).await.unwrap();
        assert!(dir.path().join("layer/a/b").exists());
        assert_eq!(
            store.get("a/b").await.unwrap().as_deref(),
            Some(&b"xyz"[..])
        );
        assert_eq!(store.get("nope").await.unwrap(), None);
        assert_eq!(store.list("").await.unwrap(), vec!["a/b".to_string()]);
        store.delete_all().await.unwrap();
        assert!(store.list("").await.unwrap().is_empty());
        assert!(
            !dir.path().join("layer").exists(),
            "emptied folders are removed too"
        );
    }

    #[test]
    fn globs_match_within_and_across_segments() {
        assert!(glob_match("*.tif", "a.tif"));
        assert!(!glob_match("*.tif", "x/a.tif"));
        assert!(glob_match("**/*.tif", "x/y/a.tif"));
        assert!(glob_match("dem_??.tif", "dem_01.tif"));
        assert!(!glob_match("dem_??.tif", "dem_1.tif"));
        assert!(glob_match("20*/t2m.nc", "2019/t2m.nc"));
    }

    #[test]
    fn sources_expand_sorted_and_an_empty_glob_is_named() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.tif", "a.tif", "c.txt", "sub/d.tif"] {
            let p = dir.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "x").unwrap();
        }
        let d = dir.path().display();
        let got = expand_sources(&[format!("{d}/*.tif"), "s3://keep/as/is.tif".into()]).unwrap();
        assert_eq!(
            got,
            vec![
                format!("{d}/a.tif"),
                format!("{d}/b.tif"),
                "s3://keep/as/is.tif".into()
            ]
        );
        let got = expand_sources(&[format!("file://{d}/**/*.tif")]).unwrap();
        assert_eq!(got.len(), 1, "{got:?}");
        let err = expand_sources(&["x".into(), format!("{d}/*.nc")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sources[1]: `") && err.contains("*.nc` matches nothing"),
            "{err}"
        );
    }

    #[test]
    fn unsupported_schemes_are_named() {
        let err = Store::open("gs://bucket/x").unwrap_err().to_string();
        assert!(err.contains("unsupported URL scheme `gs`"), "{err}");
        let err = Store::open("file://relative/x").unwrap_err().to_string();
        assert!(err.contains("absolute path"), "{err}");
        // Issue 20, finding 10: these made `./file:relative/...` and `./s3:` directories.
        for url in ["file:relative/x", "s3:", "s3:/bucket/x"] {
            let err = Store::open(url).unwrap_err().to_string();
            assert!(err.contains("not a URL Tessera reads"), "{url}: {err}");
        }
    }
}
