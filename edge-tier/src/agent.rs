//! The upload loop: scan the watched directories, cut new bytes into
//! content-defined chunks, send the chunks the node lacks (zstd, within the
//! bandwidth cap), commit objects, and keep the disk within its budget.

use std::collections::{HashSet, VecDeque};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use globset::GlobMatcher;
use tokio::sync::Notify;

use ferry_protocol::chunk::{cut, encode};
use ferry_protocol::client::Cluster;
use ferry_protocol::clock::{Clock, SystemClock};
use ferry_protocol::codec::ChunkHash;
use ferry_protocol::ids::NsPath;

use crate::bandwidth::Limiter;
use ferry_protocol::{ErrorCode, ProtocolError};

use crate::config::{EdgeConfig, Retention, WatchConfig};
pub use crate::error::EdgeError;
use crate::names;
use crate::spool::{ChunkRow, FileRow, Spool};

/// Chunks sent concurrently.
const SEND_WINDOW: usize = 8;
/// Chunks asked about in one `HasChunks`.
const ASK_BATCH: usize = 1024;
/// How often one upload error is logged again while it lasts.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(600);

fn mtime_ns(m: &std::fs::Metadata) -> i64 {
    m.mtime().saturating_mul(1_000_000_000).saturating_add(m.mtime_nsec())
}

/// Whether a file of `size` bytes, last committed at `committed` bytes
/// `since` ago, is committed now: once it has settled, or while it grows,
/// when `interval` has passed and it has grown by a quarter since (or was
/// cut short). Each commit rewrites the whole object in the store, so
/// committing a growing file every interval would cost the square of its
/// size; a quarter's growth between commits bounds the rewrites of a file
/// that ends at N bytes to about 5N.
pub fn commit_due(settled: bool, since: Duration, interval: Duration, committed: u64, size: u64) -> bool {
    settled || (since >= interval && (size < committed || size >= committed + committed / 4))
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    /// Files committed (whole or so far).
    pub commits: u64,
    /// Chunks sent.
    pub chunks_sent: u64,
    /// Bytes on the wire.
    pub wire_bytes: u64,
    /// Files deleted for space after upload.
    pub deleted: u64,
    /// Files deleted for space before upload.
    pub dropped: u64,
    /// Errors met (uploads resume next pass).
    pub errors: Vec<String>,
}

/// The edge agent.
#[derive(Debug)]
pub struct EdgeAgent {
    cfg: EdgeConfig,
    cluster: Cluster,
    spool: Mutex<Spool>,
    watches: Vec<(WatchConfig, GlobMatcher)>,
    limiter: Limiter,
    wake: Arc<Notify>,
    /// Recent (time, wire bytes) for the rate in `ferry edge status`.
    recent: Mutex<VecDeque<(Instant, u64)>>,
    status_at: Mutex<Instant>,
}

impl EdgeAgent {
    /// An agent uploading through `cluster` as configured.
    pub fn new(cfg: EdgeConfig, cluster: Cluster) -> Result<EdgeAgent, EdgeError> {
        cfg.validate().map_err(|e| EdgeError::Config(e.to_string()))?;
        let mut watches = Vec::new();
        for w in &cfg.watch {
            let g = globset::GlobBuilder::new(&w.pattern)
                .literal_separator(true)
                .build()
                .map_err(|e| EdgeError::Config(format!("pattern {:?}: {e}", w.pattern)))?;
            watches.push((w.clone(), g.compile_matcher()));
        }
        let spool = Spool::open(&cfg.spool)?;
        Ok(EdgeAgent {
            limiter: Limiter::new(cfg.bandwidth.clone()),
            cfg,
            cluster,
            spool: Mutex::new(spool),
            watches,
            wake: Arc::new(Notify::new()),
            recent: Mutex::new(VecDeque::new()),
            status_at: Mutex::new(Instant::now()),
        })
    }

    fn spool(&self) -> std::sync::MutexGuard<'_, Spool> {
        self.spool.lock().expect("spool lock poisoned")
    }

    /// Runs passes until `stop` completes: after file events, and every `scan_interval`.
    pub async fn run(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) -> Result<(), EdgeError> {
        use notify::Watcher;
        let wake = self.wake.clone();
        // Only changes matter: the agent's own reads must not wake it again.
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            use notify::EventKind;
            if res.is_ok_and(|e| matches!(e.kind, EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_))) {
                wake.notify_one();
            }
        })
        .map_err(|e| EdgeError::Config(format!("file watcher: {e}")))?;
        for (w, _) in &self.watches {
            std::fs::create_dir_all(&w.dir)?;
            watcher
                .watch(&w.dir, notify::RecursiveMode::Recursive)
                .map_err(|e| EdgeError::Config(format!("watch {}: {e}", w.dir.display())))?;
        }
        tracing::info!(id = %self.cfg.id, watches = self.watches.len(), "edge agent running");
        tokio::pin!(stop);
        // Each distinct error (a node down for hours, an unreadable file)
        // is logged once every ten minutes, not once a pass.
        let mut logged: std::collections::HashMap<String, Instant> = std::collections::HashMap::new();
        let mut failed_passes = 0u32;
        loop {
            let report = self.pass().await?;
            logged.retain(|_, at| at.elapsed() < ERROR_LOG_EVERY);
            for e in &report.errors {
                if !logged.contains_key(e) {
                    tracing::warn!(error = %e, "upload pass; retrying");
                    logged.insert(e.clone(), Instant::now());
                }
            }
            // What `ferry edge status` gives as the reason a queue is stuck.
            self.record_error(report.errors.first().map(String::as_str))?;
            // After failed passes, wait longer each time, with jitter, so
            // a fleet whose node was down does not return in lockstep.
            failed_passes = if report.errors.is_empty() { 0 } else { failed_passes.saturating_add(1) };
            let backoff = if failed_passes == 0 {
                self.cfg.scan_interval
            } else {
                self.cfg.scan_interval.max(ferry_protocol::membership::backoff(failed_passes + 2))
            };
            tokio::select! {
                () = &mut stop => return Ok(()),
                () = self.wake.notified() => {
                    // Let a burst of events settle into one pass.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                () = tokio::time::sleep(backoff) => {}
            }
        }
    }

    fn walk(dir: &Path, out: &mut Vec<(PathBuf, std::fs::FileType)>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            // The entry's own type: a symbolic link is not followed.
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                Self::walk(&e.path(), out);
            } else {
                out.push((e.path(), t));
            }
        }
    }

    /// Why a watched entry that is not a regular file is not uploaded.
    fn not_uploaded(t: &std::fs::FileType) -> &'static str {
        use std::os::unix::fs::FileTypeExt;
        if t.is_symlink() {
            "a symbolic link (not followed)"
        } else if t.is_fifo() {
            "a FIFO (not read)"
        } else if t.is_socket() {
            "a socket (not read)"
        } else if t.is_block_device() || t.is_char_device() {
            "a device (not read)"
        } else {
            "not a regular file"
        }
    }

    /// Records `path` as quarantined, logging it the first time.
    fn quarantine(&self, path: &Path, object: &str, priority: i64, reason: &str) -> Result<(), EdgeError> {
        if self.spool().quarantine(path, object, priority, reason)? {
            tracing::warn!(file = %names::display(path), reason, "not uploaded; quarantined (see `ferry edge status`)");
        }
        Ok(())
    }

    /// Records every watched file in the spool; files gone from disk are marked.
    fn scan(&self) -> Result<(), EdgeError> {
        let now = SystemClock.now_ms();
        let spool_files: HashSet<PathBuf> = ["", "-wal", "-shm", "-journal"]
            .iter()
            .map(|s| PathBuf::from(format!("{}{s}", self.cfg.spool.display())))
            .collect();
        let mut seen = HashSet::new();
        for (w, m) in &self.watches {
            let mut files = Vec::new();
            Self::walk(&w.dir, &mut files);
            for (p, kind) in files {
                if spool_files.contains(&p) {
                    continue;
                }
                let Ok(rel) = p.strip_prefix(&w.dir) else { continue };
                if !m.is_match(rel) {
                    continue;
                }
                let rel = rel.components().map(|c| names::object_segment(c.as_os_str())).collect::<Vec<_>>().join("/");
                let object = format!("{}/{}/{}/{rel}", self.cfg.prefix.trim_end_matches('/'), self.cfg.id, w.name());
                let priority = w.priority.rank();
                if !kind.is_file() {
                    self.quarantine(&p, &object, priority, Self::not_uploaded(&kind))?;
                    continue;
                }
                if let Err(e) = NsPath::parse(&object) {
                    self.quarantine(&p, &object, priority, &format!("its object path is not valid: {e}"))?;
                    continue;
                }
                let Ok(meta) = std::fs::symlink_metadata(&p) else { continue };
                if meta.nlink() > 1 && !self.cfg.upload_hardlinks {
                    let reason = format!(
                        "it has {} hard links (set upload_hardlinks = true to upload such files)",
                        meta.nlink()
                    );
                    self.quarantine(&p, &object, priority, &reason)?;
                    continue;
                }
                self.spool().observe(&p, &object, priority, meta.len(), mtime_ns(&meta), now)?;
                seen.insert(p);
            }
        }
        let spool = self.spool();
        for f in spool.pending()? {
            if !seen.contains(&f.path) && std::fs::symlink_metadata(&f.path).is_err() {
                if f.committed_size != f.size as i64 {
                    tracing::warn!(file = %names::display(&f.path), "file removed before it was fully uploaded");
                }
                spool.set_state(f.id, "gone")?;
            }
        }
        Ok(())
    }

    /// One pass: scan, upload what is pending (highest priority first), apply retention.
    pub async fn pass(&self) -> Result<PassReport, EdgeError> {
        self.scan()?;
        let mut report = PassReport::default();
        let pending = self.spool().pending()?;
        for f in pending {
            match self.upload(&f, &mut report).await {
                Ok(()) => {}
                // The node refuses this file for what it is (its name, its
                // place): it never will take it as it is, and the files
                // behind it must not wait.
                Err(EdgeError::Protocol(ProtocolError::Remote { code, message }))
                    if matches!(
                        code,
                        ErrorCode::InvalidInput
                            | ErrorCode::Unsupported
                            | ErrorCode::TooLarge
                            | ErrorCode::Exists
                            | ErrorCode::NotEmpty
                    ) =>
                {
                    self.quarantine(
                        &f.path,
                        &f.object,
                        f.priority,
                        &format!("the node refused it: {code}: {message}"),
                    )?;
                }
                Err(e @ EdgeError::Protocol(_)) => {
                    // The nodes are unreachable or refusing everyone: try again next pass.
                    report.errors.push(format!("{}: {e}", names::display(&f.path)));
                    break;
                }
                // This file only (unreadable, say): the others go on.
                Err(e) => report.errors.push(format!("{}: {e}", names::display(&f.path))),
            }
        }
        self.retention(&mut report)?;
        self.write_status(true)?;
        Ok(report)
    }

    fn note_sent(&self, bytes: u64) {
        let mut r = self.recent.lock().expect("rate lock poisoned");
        let now = Instant::now();
        r.push_back((now, bytes));
        while r.front().is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(10)) {
            r.pop_front();
        }
    }

    /// Keeps the last pass's first error in the spool, with the time
    /// passes started failing; a pass without errors clears them.
    fn record_error(&self, error: Option<&str>) -> Result<(), EdgeError> {
        let spool = self.spool();
        let had = spool.status("last_error")?.filter(|e| !e.is_empty());
        match error {
            Some(e) if had.as_deref() == Some(e) => {}
            Some(e) => {
                if had.is_none() {
                    spool.set_status("error_since_ms", &SystemClock.now_ms().to_string())?;
                }
                spool.set_status("last_error", e)?;
            }
            None if had.is_some() => {
                spool.set_status("last_error", "")?;
                spool.set_status("error_since_ms", "")?;
            }
            None => {}
        }
        Ok(())
    }

    fn write_status(&self, force: bool) -> Result<(), EdgeError> {
        {
            let mut at = self.status_at.lock().expect("status lock poisoned");
            if !force && at.elapsed() < Duration::from_secs(1) {
                return Ok(());
            }
            *at = Instant::now();
        }
        let rate = {
            let r = self.recent.lock().expect("rate lock poisoned");
            let bytes: u64 = r.iter().map(|(_, b)| b).sum();
            let span = r.front().map_or(0.0, |(t, _)| t.elapsed().as_secs_f64()).max(1.0);
            bytes as f64 / span
        };
        let spool = self.spool();
        spool.set_status("rate_bps", &format!("{rate:.0}"))?;
        spool.set_status("updated_ms", &SystemClock.now_ms().to_string())?;
        Ok(())
    }

    /// Reads, checks, encodes and sends one recorded chunk; returns its hash, raw and wire sizes.
    async fn send_chunk(
        &self,
        file: Arc<std::fs::File>,
        object: String,
        r: ChunkRow,
    ) -> Result<(ChunkHash, u64, u64), EdgeError> {
        let mut raw = vec![0u8; r.len as usize];
        file.read_exact_at(&mut raw, r.offset)?;
        if blake3::hash(&raw).as_bytes() != &r.hash {
            return Err(EdgeError::Rewritten);
        }
        let (codec, wire) = encode(&raw);
        let n = wire.len() as u64;
        self.limiter.take(n).await;
        self.cluster.put_chunk(&object, &r.hash, r.len, codec, Bytes::from(wire)).await?;
        Ok((r.hash, u64::from(r.len), n))
    }

    async fn upload(&self, f: &FileRow, report: &mut PassReport) -> Result<(), EdgeError> {
        let path = f.path.clone();
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) if !m.is_file() => {
                // Replaced by a link or a special file since the scan.
                let kind = m.file_type();
                return self.quarantine(&path, &f.object, f.priority, Self::not_uploaded(&kind));
            }
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.spool().set_state(f.id, "gone")?;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let (size, mtime) = (meta.len(), mtime_ns(&meta));
        if size != f.size || mtime != f.mtime_ns {
            return Ok(()); // changed since the scan; the next pass sees it
        }
        let now = SystemClock.now_ms();
        let settled = now - f.changed_ms >= self.cfg.settle.as_millis() as i64;
        let mut stable_offset = f.stable_offset;
        if size < stable_offset {
            tracing::info!(file = %names::display(&f.path), "file shrank; chunking it again");
            self.spool.lock().expect("spool lock poisoned").reset_chunks(f.id)?;
            stable_offset = 0;
        }
        // Cut what is new.
        let (p2, from) = (path.clone(), stable_offset);
        let (stable, tail) = tokio::task::spawn_blocking(move || cut(&p2, from, size, settled))
            .await
            .map_err(|e| EdgeError::Config(format!("chunking task: {e}")))??;
        let new_offset = stable.last().map_or(stable_offset, |(o, l, _)| o + u64::from(*l));
        if !stable.is_empty() {
            self.spool.lock().expect("spool lock poisoned").add_chunks(f.id, &stable, new_offset)?;
        }
        // Send what the node lacks.
        let rows = self.spool().chunks(f.id)?;
        let unsent: Vec<_> = rows.iter().filter(|r| !r.sent).cloned().collect();
        for batch in unsent.chunks(ASK_BATCH) {
            let hashes: Vec<ChunkHash> = batch.iter().map(|r| r.hash).collect();
            let missing: HashSet<ChunkHash> = self.cluster.has_chunks(&f.object, &hashes).await?.into_iter().collect();
            let held: Vec<i64> = batch.iter().filter(|r| !missing.contains(&r.hash)).map(|r| r.seq).collect();
            self.spool.lock().expect("spool lock poisoned").mark_sent(f.id, &held, true)?;
            let mut queued = HashSet::new();
            let to_send: Vec<ChunkRow> =
                batch.iter().filter(|r| missing.contains(&r.hash) && queued.insert(r.hash)).cloned().collect();
            let file = Arc::new(std::fs::File::open(&path)?);
            let mut sends = futures::stream::iter(to_send.into_iter().map(|r: ChunkRow| {
                let file = file.clone();
                self.send_chunk(file, f.object.clone(), r)
            }))
            .buffer_unordered(SEND_WINDOW);
            while let Some(done) = sends.next().await {
                match done {
                    Ok((hash, raw, wire)) => {
                        let seqs: Vec<i64> = batch.iter().filter(|r| r.hash == hash).map(|r| r.seq).collect();
                        {
                            let mut spool = self.spool.lock().expect("spool lock poisoned");
                            spool.mark_sent(f.id, &seqs, true)?;
                            spool.count("wire_bytes", wire)?;
                            spool.count("raw_bytes", raw)?;
                        }
                        report.chunks_sent += 1;
                        report.wire_bytes += wire;
                        self.note_sent(wire);
                        self.write_status(false)?;
                    }
                    Err(EdgeError::Rewritten) => {
                        tracing::info!(file = %names::display(&f.path), "file was rewritten; chunking it again");
                        self.spool.lock().expect("spool lock poisoned").reset_chunks(f.id)?;
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        // Commit when complete, or now and then while it grows.
        let changed = f.committed_size != size as i64 || f.committed_mtime_ns != mtime;
        if !changed {
            if settled {
                // Committed while it still grew, and it has not changed since.
                let spool = self.spool();
                spool.set_state(f.id, "uploaded")?;
                Self::count_uploaded(&spool, f, size)?;
            }
            return Ok(());
        }
        let since = Duration::from_millis((now - f.committed_ms).max(0) as u64);
        if !commit_due(settled, since, self.cfg.commit_interval, f.committed_size.max(0) as u64, size) {
            return Ok(());
        }
        let mut hashes: Vec<ChunkHash> = self.spool().chunks(f.id)?.iter().map(|r| r.hash).collect();
        if let Some((off, len)) = tail {
            let mut raw = vec![0u8; len as usize];
            std::fs::File::open(&path)?.read_exact_at(&mut raw, off)?;
            let hash = *blake3::hash(&raw).as_bytes();
            if !self.cluster.has_chunks(&f.object, &[hash]).await?.is_empty() {
                let (codec, wire) = encode(&raw);
                let n = wire.len() as u64;
                self.limiter.take(n).await;
                self.cluster.put_chunk(&f.object, &hash, len, codec, Bytes::from(wire)).await?;
                self.spool().count("wire_bytes", n)?;
                self.note_sent(n);
                report.wire_bytes += n;
            }
            hashes.push(hash);
        }
        let missing = self.cluster.commit(&f.object, size, &hashes).await?;
        if !missing.is_empty() {
            tracing::info!(file = %names::display(&f.path), missing = missing.len(), "node lacks chunks; sending them again");
            self.spool.lock().expect("spool lock poisoned").mark_missing(f.id, &missing)?;
            return Ok(());
        }
        let spool = self.spool();
        spool.committed(f.id, size, mtime, SystemClock.now_ms(), settled)?;
        if settled {
            Self::count_uploaded(&spool, f, size)?;
        }
        report.commits += 1;
        Ok(())
    }

    fn count_uploaded(spool: &Spool, f: &FileRow, size: u64) -> Result<(), EdgeError> {
        spool.count("files_uploaded", 1)?;
        spool.count("bytes_uploaded", size)?;
        tracing::info!(file = %names::display(&f.path), object = %f.object, bytes = size, "uploaded");
        Ok(())
    }

    /// Keeps watched files within the disk budget.
    fn retention(&self, report: &mut PassReport) -> Result<(), EdgeError> {
        let budget = self.cfg.budget.as_u64();
        if budget == 0 {
            return Ok(());
        }
        let spool = self.spool();
        let files: Vec<FileRow> =
            spool.files()?.into_iter().filter(|f| f.state == "pending" || f.state == "uploaded").collect();
        let mut total: u64 = files.iter().map(|f| f.size).sum();
        if total <= budget {
            spool.set_status("over_budget", "0")?;
            return Ok(());
        }
        let mut uploaded: Vec<&FileRow> = files.iter().filter(|f| f.state == "uploaded").collect();
        uploaded.sort_by_key(|f| f.committed_ms);
        for f in uploaded {
            if total <= budget {
                break;
            }
            if Self::remove_for_space(&spool, f, "deleted")? {
                total -= f.size;
                report.deleted += 1;
                tracing::info!(file = %names::display(&f.path), bytes = f.size, "deleted an uploaded file to stay within the disk budget");
            }
        }
        if total <= budget {
            spool.set_status("over_budget", "0")?;
            return Ok(());
        }
        match self.cfg.retention {
            Retention::Keep => {
                let was = spool.status("over_budget")?.is_some_and(|v| v != "0");
                if !was {
                    tracing::warn!(over = total - budget, "over the disk budget; keeping files not yet uploaded");
                }
                spool.set_status("over_budget", &(total - budget).to_string())?;
            }
            Retention::DropOldest => {
                let mut pending: Vec<&FileRow> = files.iter().filter(|f| f.state == "pending").collect();
                pending.sort_by_key(|f| (f.changed_ms, f.id));
                for f in pending {
                    if total <= budget {
                        break;
                    }
                    if Self::remove_for_space(&spool, f, "dropped")? {
                        spool.count("bytes_dropped", f.size)?;
                        total -= f.size;
                        report.dropped += 1;
                        tracing::warn!(file = %names::display(&f.path), bytes = f.size, "DROPPED before upload to stay within the disk budget");
                    }
                }
            }
        }
        Ok(())
    }

    /// Deletes a watched file for space and records it as `state`
    /// (`deleted` or `dropped`), unless it changed since the spool saw it.
    fn remove_for_space(spool: &Spool, f: &FileRow, state: &str) -> Result<bool, EdgeError> {
        match std::fs::metadata(&f.path) {
            Ok(m) if m.len() != f.size || mtime_ns(&m) != f.mtime_ns => return Ok(false),
            Ok(_) => match std::fs::remove_file(&f.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        spool.set_state(f.id, state)?;
        spool.count(if state == "dropped" { "files_dropped" } else { "files_deleted" }, 1)?;
        Ok(true)
    }
}

/// What `ferry edge status` shows.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Status {
    /// Files with bytes not yet in the store.
    pub files_pending: u64,
    /// Files whose bytes are all in the store, watched until they stop
    /// changing (not queued: nothing of them waits to be sent).
    pub files_settling: u64,
    /// Bytes not yet committed.
    pub queued_bytes: u64,
    /// Files uploaded whole.
    pub files_uploaded: u64,
    /// Bytes of files uploaded whole.
    pub uploaded_bytes: u64,
    /// Bytes sent on the wire (compressed chunks).
    pub wire_bytes: u64,
    /// Bytes of chunks before compression.
    pub raw_bytes: u64,
    /// Recent wire rate, bytes per second.
    pub rate_bps: f64,
    /// Queued bytes over the rate, if the rate is known.
    pub eta_secs: Option<f64>,
    /// The pending file that changed longest ago, and how long ago (s).
    pub oldest_pending: Option<(String, f64)>,
    /// Files not uploaded because they cannot be (special files, names
    /// a node refused, hard links); tried again when the agent starts.
    pub files_quarantined: u64,
    /// The first of them (at most 100), each with why.
    pub quarantined: Vec<(String, String)>,
    /// Files deleted after upload, for space.
    pub files_deleted: u64,
    /// Files deleted before upload, for space.
    pub files_dropped: u64,
    /// When the agent last wrote its status (ms since the epoch; 0 never).
    pub updated_ms: i64,
    /// The last upload pass's first error, while passes keep failing.
    pub last_error: Option<String>,
    /// Since when passes have been failing (ms since the epoch; 0: they are not).
    pub error_since_ms: i64,
    /// Bytes of watched files over the disk budget (kept: not uploaded yet).
    pub over_budget_bytes: u64,
}

/// Reads the status from a spool.
pub fn status(spool: &Spool) -> Result<Status, EdgeError> {
    let (settling, pending): (Vec<_>, Vec<_>) = spool.pending()?.into_iter().partition(|f| {
        u64::try_from(f.committed_size).is_ok_and(|c| c == f.size) && f.committed_mtime_ns == f.mtime_ns
    });
    let queued: u64 = pending.iter().map(|f| f.size.saturating_sub(f.committed_size.max(0) as u64)).sum();
    let rate: f64 = spool.status("rate_bps")?.and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let now = SystemClock.now_ms();
    let oldest = pending
        .iter()
        .min_by_key(|f| f.changed_ms)
        .map(|f| (names::display(&f.path), (now - f.changed_ms).max(0) as f64 / 1000.0));
    let quarantined = spool.quarantined()?;
    Ok(Status {
        files_pending: pending.len() as u64,
        files_settling: settling.len() as u64,
        queued_bytes: queued,
        files_uploaded: spool.counter("files_uploaded")?,
        uploaded_bytes: spool.counter("bytes_uploaded")?,
        wire_bytes: spool.counter("wire_bytes")?,
        raw_bytes: spool.counter("raw_bytes")?,
        rate_bps: rate,
        eta_secs: (rate > 0.0).then(|| queued as f64 / rate),
        oldest_pending: oldest,
        files_quarantined: quarantined.len() as u64,
        quarantined: quarantined
            .iter()
            .take(100)
            .map(|f| (names::display(&f.path), f.reason.clone().unwrap_or_default()))
            .collect(),
        files_deleted: spool.counter("files_deleted")?,
        files_dropped: spool.counter("files_dropped")?,
        updated_ms: spool.status("updated_ms")?.and_then(|v| v.parse().ok()).unwrap_or(0),
        last_error: spool.status("last_error")?.filter(|e| !e.is_empty()),
        error_since_ms: spool.status("error_since_ms")?.and_then(|v| v.parse().ok()).unwrap_or(0),
        over_budget_bytes: spool.status("over_budget")?.and_then(|v| v.parse().ok()).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_growing_file_is_committed_as_it_grows_by_a_quarter() {
        let interval = Duration::from_secs(30);
        // A log growing by 10 MB a minute for ten hours, checked every 10 s.
        let (mut committed, mut since, mut rewritten, mut commits) = (0u64, Duration::ZERO, 0u64, 0u32);
        for step in 1..=3600u64 {
            since += Duration::from_secs(10);
            let size = step * 10_000_000 / 6;
            if commit_due(false, since, interval, committed, size) {
                rewritten += size;
                commits += 1;
                committed = size;
                since = Duration::ZERO;
            }
        }
        let last = 3600 * 10_000_000 / 6;
        assert!(rewritten <= 5 * last, "{rewritten} bytes rewritten for a {last}-byte file");
        assert!(committed >= last / 5 * 4, "the store lags the file by more than a quarter: {committed} of {last}");
        assert!(commits > 10, "{commits} commits");
        // A settled file is committed at once; a file cut short at the next interval.
        assert!(commit_due(true, Duration::ZERO, interval, 100, 101));
        assert!(!commit_due(false, interval / 2, interval, 100, 200));
        assert!(commit_due(false, interval, interval, 100, 50));
        assert!(!commit_due(false, interval, interval, 100, 110));
    }
}
