//! The spool: a SQLite database (WAL) of watched files, their chunks and
//! how far each got.
//!
//! The files themselves are the data: the spool records, per file, the
//! content-defined chunks cut so far (offset, length, BLAKE3) before any is
//! sent, marks each after the node acknowledged it, and records the size
//! the node committed. After a kill -9 or a reboot the agent continues from
//! there: chunks not marked are sent again (the node ignores ones it has),
//! and a commit not recorded is repeated (it writes the same bytes again).
//! Nothing in it has to be fsynced for correctness, so it runs with
//! `synchronous = NORMAL`: a power cut can only make work repeat.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use ferry_protocol::codec::ChunkHash;
use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension};

/// A spool error.
pub type SpoolResult<T> = Result<T, rusqlite::Error>;

/// What the agent knows about one watched file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRow {
    /// Row id.
    pub id: i64,
    /// Local path (any bytes the file system allows).
    pub path: PathBuf,
    /// Namespace path it uploads to.
    pub object: String,
    /// Higher goes first.
    pub priority: i64,
    /// Last observed size.
    pub size: u64,
    /// Last observed modification time (ns since the epoch).
    pub mtime_ns: i64,
    /// When size or mtime last changed (ms since the epoch).
    pub changed_ms: i64,
    /// Bytes covered by chunks cut at real boundaries.
    pub stable_offset: u64,
    /// Size the node last committed (-1: never).
    pub committed_size: i64,
    /// mtime of the file when that commit was made.
    pub committed_mtime_ns: i64,
    /// When the last commit was acknowledged (ms since the epoch).
    pub committed_ms: i64,
    /// `pending`, `uploaded`, `deleted` (uploaded, then removed for space),
    /// `dropped` (removed for space before upload), `gone` (removed by
    /// someone else) or `quarantined` (cannot be stored; see `reason`).
    pub state: String,
    /// Why a file is quarantined.
    pub reason: Option<String>,
}

/// One recorded chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkRow {
    /// Position in the file's chunk list.
    pub seq: i64,
    /// Byte offset in the file.
    pub offset: u64,
    /// Length in bytes.
    pub len: u32,
    /// BLAKE3 of the bytes.
    pub hash: ChunkHash,
    /// Whether the node acknowledged it.
    pub sent: bool,
}

/// The spool database.
#[derive(Debug)]
pub struct Spool {
    db: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS files(
    id INTEGER PRIMARY KEY,
    path TEXT UNIQUE NOT NULL,
    object TEXT NOT NULL,
    priority INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    changed_ms INTEGER NOT NULL,
    stable_offset INTEGER NOT NULL DEFAULT 0,
    committed_size INTEGER NOT NULL DEFAULT -1,
    committed_mtime_ns INTEGER NOT NULL DEFAULT -1,
    committed_ms INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'pending',
    reason TEXT
);
CREATE TABLE IF NOT EXISTS chunks(
    file_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    len INTEGER NOT NULL,
    hash BLOB NOT NULL,
    sent INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY(file_id, seq)
);
CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS status(name TEXT PRIMARY KEY, value TEXT NOT NULL);
";

/// A local path as stored: text where it is UTF-8, its bytes otherwise
/// (SQLite never finds a text equal to a blob, so each name has one form).
fn path_value(path: &Path) -> Value {
    match path.to_str() {
        Some(s) => Value::Text(s.to_string()),
        None => Value::Blob(path.as_os_str().as_encoded_bytes().to_vec()),
    }
}

fn path_of(v: Value) -> rusqlite::Result<PathBuf> {
    match v {
        Value::Text(s) => Ok(PathBuf::from(s)),
        Value::Blob(b) => Ok(PathBuf::from(OsString::from_vec(b))),
        other => Err(rusqlite::Error::InvalidColumnType(1, "path".into(), other.data_type())),
    }
}

fn file_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FileRow> {
    Ok(FileRow {
        id: r.get(0)?,
        path: path_of(r.get(1)?)?,
        object: r.get(2)?,
        priority: r.get(3)?,
        size: r.get::<_, i64>(4)? as u64,
        mtime_ns: r.get(5)?,
        changed_ms: r.get(6)?,
        stable_offset: r.get::<_, i64>(7)? as u64,
        committed_size: r.get(8)?,
        committed_mtime_ns: r.get(9)?,
        committed_ms: r.get(10)?,
        state: r.get(11)?,
        reason: r.get(12)?,
    })
}

const FILE_COLUMNS: &str = "id, path, object, priority, size, mtime_ns, changed_ms, stable_offset, committed_size, \
                            committed_mtime_ns, committed_ms, state, reason";

impl Spool {
    /// Opens (creating) the spool at `path`.
    pub fn open(path: &Path) -> SpoolResult<Spool> {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let db = Connection::open(path)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        db.execute_batch(SCHEMA)?;
        // Spools made before files could be quarantined.
        let has_reason = db.prepare("SELECT reason FROM files LIMIT 0").is_ok();
        if !has_reason {
            db.execute_batch("ALTER TABLE files ADD COLUMN reason TEXT")?;
        }
        // What a node refused may be accepted now (its configuration or
        // this agent's naming changed): each start tries once more.
        db.execute("UPDATE files SET state = 'pending', reason = NULL WHERE state = 'quarantined'", [])?;
        Ok(Spool { db })
    }

    /// Opens an existing spool read-only (for `ferry edge status`).
    pub fn open_read_only(path: &Path) -> SpoolResult<Spool> {
        let db = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Spool { db })
    }

    /// Records what a scan saw of `path`. A changed size or mtime makes an
    /// uploaded file pending again.
    pub fn observe(
        &self,
        path: &Path,
        object: &str,
        priority: i64,
        size: u64,
        mtime_ns: i64,
        now_ms: i64,
    ) -> SpoolResult<()> {
        let found = self.file_by_path(path)?;
        match found {
            None => {
                self.db.execute(
                    "INSERT INTO files(path, object, priority, size, mtime_ns, changed_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![path_value(path), object, priority, size as i64, mtime_ns, now_ms],
                )?;
            }
            Some(f) if f.size != size || f.mtime_ns != mtime_ns => {
                let state = if f.state == "uploaded" || f.state == "gone" { "pending" } else { f.state.as_str() };
                self.db.execute(
                    "UPDATE files SET size = ?2, mtime_ns = ?3, changed_ms = ?4, priority = ?5, state = ?6 WHERE id = ?1",
                    params![f.id, size as i64, mtime_ns, now_ms, priority, state],
                )?;
            }
            Some(f) if f.state == "gone" => {
                self.set_state(f.id, "pending")?;
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// The row of `path`.
    pub fn file_by_path(&self, path: &Path) -> SpoolResult<Option<FileRow>> {
        self.db
            .query_row(&format!("SELECT {FILE_COLUMNS} FROM files WHERE path = ?1"), [path_value(path)], file_row)
            .optional()
    }

    /// Records `path` (not stored yet, or refused) as quarantined for
    /// `reason`; it is tried again when the agent starts. Returns whether
    /// it was not quarantined already.
    pub fn quarantine(&self, path: &Path, object: &str, priority: i64, reason: &str) -> SpoolResult<bool> {
        let changed = self.db.execute(
            "INSERT INTO files(path, object, priority, size, mtime_ns, changed_ms, state, reason) \
             VALUES (?1, ?2, ?3, 0, 0, 0, 'quarantined', ?4) \
             ON CONFLICT(path) DO UPDATE SET state = 'quarantined', reason = ?4 WHERE state <> 'quarantined'",
            params![path_value(path), object, priority, reason],
        )?;
        Ok(changed > 0)
    }

    /// Quarantined files and why, oldest first.
    pub fn quarantined(&self) -> SpoolResult<Vec<FileRow>> {
        let mut st =
            self.db.prepare(&format!("SELECT {FILE_COLUMNS} FROM files WHERE state = 'quarantined' ORDER BY id"))?;
        let rows = st.query_map([], file_row)?.collect();
        rows
    }

    /// The row with id `id`.
    pub fn file(&self, id: i64) -> SpoolResult<Option<FileRow>> {
        self.db.query_row(&format!("SELECT {FILE_COLUMNS} FROM files WHERE id = ?1"), [id], file_row).optional()
    }

    /// Files still to upload, highest priority first, then oldest change first.
    pub fn pending(&self) -> SpoolResult<Vec<FileRow>> {
        let mut st = self.db.prepare(&format!(
            "SELECT {FILE_COLUMNS} FROM files WHERE state = 'pending' ORDER BY priority DESC, changed_ms, id"
        ))?;
        let rows = st.query_map([], file_row)?.collect();
        rows
    }

    /// Every file row.
    pub fn files(&self) -> SpoolResult<Vec<FileRow>> {
        let mut st = self.db.prepare(&format!("SELECT {FILE_COLUMNS} FROM files ORDER BY id"))?;
        let rows = st.query_map([], file_row)?.collect();
        rows
    }

    /// Sets a file's state.
    pub fn set_state(&self, id: i64, state: &str) -> SpoolResult<()> {
        self.db.execute("UPDATE files SET state = ?2 WHERE id = ?1", params![id, state])?;
        Ok(())
    }

    /// Records chunks cut at real boundaries and the new stable offset, in one transaction.
    pub fn add_chunks(&mut self, id: i64, chunks: &[(u64, u32, ChunkHash)], stable_offset: u64) -> SpoolResult<()> {
        let tx = self.db.transaction()?;
        let next: i64 =
            tx.query_row("SELECT COALESCE(MAX(seq) + 1, 0) FROM chunks WHERE file_id = ?1", [id], |r| r.get(0))?;
        {
            let mut ins =
                tx.prepare("INSERT INTO chunks(file_id, seq, offset, len, hash) VALUES (?1, ?2, ?3, ?4, ?5)")?;
            for (i, (off, len, hash)) in chunks.iter().enumerate() {
                ins.execute(params![id, next + i as i64, *off as i64, *len, &hash[..]])?;
            }
        }
        tx.execute("UPDATE files SET stable_offset = ?2 WHERE id = ?1", params![id, stable_offset as i64])?;
        tx.commit()
    }

    /// Forgets a file's chunks (it was rewritten): chunking starts again at 0.
    pub fn reset_chunks(&mut self, id: i64) -> SpoolResult<()> {
        let tx = self.db.transaction()?;
        tx.execute("DELETE FROM chunks WHERE file_id = ?1", [id])?;
        tx.execute("UPDATE files SET stable_offset = 0 WHERE id = ?1", [id])?;
        tx.commit()
    }

    /// A file's chunks in order.
    pub fn chunks(&self, id: i64) -> SpoolResult<Vec<ChunkRow>> {
        let mut st =
            self.db.prepare("SELECT seq, offset, len, hash, sent FROM chunks WHERE file_id = ?1 ORDER BY seq")?;
        let rows = st
            .query_map([id], |r| {
                let h: Vec<u8> = r.get(3)?;
                let mut hash = [0u8; 32];
                if h.len() == 32 {
                    hash.copy_from_slice(&h);
                }
                Ok(ChunkRow {
                    seq: r.get(0)?,
                    offset: r.get::<_, i64>(1)? as u64,
                    len: r.get(2)?,
                    hash,
                    sent: r.get::<_, i64>(4)? != 0,
                })
            })?
            .collect();
        rows
    }

    /// Marks chunks of a file as held (`true`) or not (`false`) by the node.
    pub fn mark_sent(&mut self, id: i64, seqs: &[i64], sent: bool) -> SpoolResult<()> {
        let tx = self.db.transaction()?;
        {
            let mut up = tx.prepare("UPDATE chunks SET sent = ?3 WHERE file_id = ?1 AND seq = ?2")?;
            for s in seqs {
                up.execute(params![id, s, i64::from(sent)])?;
            }
        }
        tx.commit()
    }

    /// Marks every chunk of a file whose hash is in `hashes` as not held.
    pub fn mark_missing(&mut self, id: i64, hashes: &[ChunkHash]) -> SpoolResult<()> {
        let tx = self.db.transaction()?;
        {
            let mut up = tx.prepare("UPDATE chunks SET sent = 0 WHERE file_id = ?1 AND hash = ?2")?;
            for h in hashes {
                up.execute(params![id, &h[..]])?;
            }
        }
        tx.commit()
    }

    /// Records an acknowledged commit; `done` makes the file `uploaded`.
    pub fn committed(&self, id: i64, size: u64, mtime_ns: i64, now_ms: i64, done: bool) -> SpoolResult<()> {
        self.db.execute(
            "UPDATE files SET committed_size = ?2, committed_mtime_ns = ?3, committed_ms = ?4, \
             state = CASE WHEN ?5 THEN 'uploaded' ELSE state END WHERE id = ?1",
            params![id, size as i64, mtime_ns, now_ms, done],
        )?;
        Ok(())
    }

    /// Adds `by` to counter `name`.
    pub fn count(&self, name: &str, by: u64) -> SpoolResult<()> {
        self.db.execute(
            "INSERT INTO counters(name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = value + ?2",
            params![name, by as i64],
        )?;
        Ok(())
    }

    /// Counter `name` (0 if never counted).
    pub fn counter(&self, name: &str) -> SpoolResult<u64> {
        Ok(self
            .db
            .query_row("SELECT value FROM counters WHERE name = ?1", [name], |r| r.get::<_, i64>(0))
            .optional()?
            .unwrap_or(0) as u64)
    }

    /// Sets a status value.
    pub fn set_status(&self, name: &str, value: &str) -> SpoolResult<()> {
        self.db.execute(
            "INSERT INTO status(name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = ?2",
            params![name, value],
        )?;
        Ok(())
    }

    /// A status value.
    pub fn status(&self, name: &str) -> SpoolResult<Option<String>> {
        self.db.query_row("SELECT value FROM status WHERE name = ?1", [name], |r| r.get(0)).optional()
    }
}
