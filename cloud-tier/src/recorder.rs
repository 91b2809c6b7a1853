//! Records the node's demand reads as an access trace (format in
//! docs/PREDICTOR.md) for `ferry predictor train|eval`.
//!
//! One file per node start, `TRACE_DIR/NODE_ID-UNIXSECONDS.trace`. A reader
//! is one client connection (`role:id@connection`). The first read in a
//! folder makes the node list that folder so the trace holds every file a
//! prefetcher could have fetched, read or not.

use std::collections::HashSet;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use ferry_predictor::trace::{Access, FileLine, Header, TRACE_VERSION};

/// Writes one trace file.
#[derive(Debug)]
pub struct Recorder {
    path: PathBuf,
    out: Mutex<BufWriter<std::fs::File>>,
    started: Instant,
    dirs: Mutex<HashSet<String>>,
}

impl Recorder {
    /// Creates `dir/NODE_ID-UNIXSECONDS.trace` and writes its header.
    pub fn create(dir: &Path, node_id: &str, page_size: u64) -> std::io::Result<Recorder> {
        std::fs::create_dir_all(dir)?;
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let path = dir.join(format!("{node_id}-{secs}.trace"));
        let mut out = BufWriter::new(std::fs::File::options().create(true).append(true).open(&path)?);
        let header = Header { ferry_trace: TRACE_VERSION, page_size, shape: "recorded".into(), seed: None };
        serde_json::to_writer(&mut out, &header)?;
        out.write_all(b"\n")?;
        out.flush()?;
        Ok(Recorder { path, out: Mutex::new(out), started: Instant::now(), dirs: Mutex::new(HashSet::new()) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn line(&self, value: &impl serde::Serialize) {
        let Ok(mut out) = self.out.lock() else { return };
        let written = serde_json::to_writer(&mut *out, value)
            .map_err(std::io::Error::other)
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush());
        if let Err(e) = written {
            tracing::warn!(path = %self.path.display(), error = %e, "trace line not written");
        }
    }

    /// Records a demand read.
    pub fn access(&self, reader: &str, path: &str, offset: u64, len: u64) {
        let time_us = self.started.elapsed().as_micros() as u64;
        self.line(&Access { time_us, reader: reader.to_string(), path: path.to_string(), offset, len });
    }

    /// Whether `path`'s folder is new to this trace (and marks it seen).
    pub fn first_in_folder(&self, path: &str) -> Option<String> {
        let dir = ferry_predictor::catalog::parent(path);
        let dir = if dir.is_empty() { "/" } else { dir };
        let mut dirs = self.dirs.lock().ok()?;
        dirs.insert(dir.to_string()).then(|| dir.to_string())
    }

    /// Records files of the dataset and their sizes.
    pub fn files(&self, files: impl IntoIterator<Item = (String, u64)>) {
        for (path, size) in files {
            self.line(&FileLine { path, size });
        }
    }
}
