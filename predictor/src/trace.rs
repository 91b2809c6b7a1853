//! The trace format: what a node or mount records and what `ferry predictor`
//! learns from and evaluates on.
//!
//! A trace is a text file of JSON objects, one per line (documented in
//! docs/PREDICTOR.md):
//!
//! ```text
//! {"ferry_trace":1,"page_size":1048576,"shape":"multisensor","seed":7}
//! {"f":"/nus/samples/CAM_FRONT/0001_000000.jpg","s":183000}
//! {"t":1250,"r":"pid-4242","f":"/nus/samples/CAM_FRONT/0001_000000.jpg","o":0,"n":183000}
//! {"t":1300,"r":"pid-4242","announce":["/nus/samples/CAM_FRONT/0001_000083.jpg"]}
//! ```
//!
//! The header comes first. A file line (`f`, `s`) gives a file's size; every
//! file the dataset holds is listed, read or not, because a prefetcher may
//! fetch files nobody has read yet. An access line gives the time in
//! microseconds (`t`), the reader (`r`: a process, a connection), the file,
//! the offset (`o`) and the length (`n`). An announce line gives the order in
//! which a reader will read files.

use std::io::{BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;

/// Version of the trace format this crate reads and writes.
pub const TRACE_VERSION: u32 = 1;

/// The first line of a trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Format version; always [`TRACE_VERSION`].
    pub ferry_trace: u32,
    /// Cache page size the accesses are counted in.
    pub page_size: u64,
    /// What made the trace (`multisensor`, `clip`, `recorded`, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub shape: String,
    /// Seed of a generated trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// One demand read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    /// Microseconds since the trace started.
    #[serde(rename = "t")]
    pub time_us: u64,
    /// Who read: a process, a connection.
    #[serde(rename = "r")]
    pub reader: String,
    /// The file's path in the namespace.
    #[serde(rename = "f")]
    pub path: String,
    /// First byte read.
    #[serde(rename = "o")]
    pub offset: u64,
    /// Bytes read.
    #[serde(rename = "n")]
    pub len: u64,
}

/// A reader's announced read order (a sampler's index list turned into paths).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announce {
    #[serde(rename = "t")]
    pub time_us: u64,
    #[serde(rename = "r")]
    pub reader: String,
    pub announce: Vec<String>,
}

/// A file of the dataset and its size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileLine {
    #[serde(rename = "f")]
    pub path: String,
    #[serde(rename = "s")]
    pub size: u64,
}

/// One event of a trace, in time order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Access(Access),
    Announce(Announce),
}

impl Event {
    pub fn time_us(&self) -> u64 {
        match self {
            Event::Access(a) => a.time_us,
            Event::Announce(a) => a.time_us,
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Line {
    Access(Access),
    Announce(Announce),
    File(FileLine),
}

/// Errors reading a trace.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}:{line}: {message}")]
    Parse { path: String, line: usize, message: String },
}

/// A whole trace: header, the dataset's files and the events.
#[derive(Debug, Clone)]
pub struct Trace {
    /// Name shown in reports (the file stem for traces read from disk).
    pub name: String,
    pub header: Header,
    pub catalog: Catalog,
    pub events: Vec<Event>,
}

impl Trace {
    /// Reads a trace file.
    pub fn read(path: &Path) -> Result<Trace, TraceError> {
        let shown = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|source| TraceError::Io { path: shown.clone(), source })?;
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        Self::parse(&name, &shown, std::io::BufReader::new(file))
    }

    /// Parses a trace from a reader; `shown` names it in errors.
    pub fn parse(name: &str, shown: &str, input: impl BufRead) -> Result<Trace, TraceError> {
        let perr = |line: usize, message: String| TraceError::Parse { path: shown.to_string(), line, message };
        let mut lines = input.lines().enumerate();
        let header: Header = loop {
            match lines.next() {
                None => return Err(perr(1, "empty trace: the first line must be a header".into())),
                Some((i, line)) => {
                    let line = line.map_err(|source| TraceError::Io { path: shown.to_string(), source })?;
                    if line.trim().is_empty() {
                        continue;
                    }
                    let header: Header = serde_json::from_str(&line).map_err(|e| {
                        perr(i + 1, format!("not a trace header ({e}); expected {{\"ferry_trace\":1,...}}"))
                    })?;
                    if header.ferry_trace != TRACE_VERSION {
                        return Err(perr(
                            i + 1,
                            format!("trace format {} (this ferry reads {TRACE_VERSION})", header.ferry_trace),
                        ));
                    }
                    if header.page_size == 0 {
                        return Err(perr(i + 1, "page_size must be positive".into()));
                    }
                    break header;
                }
            }
        };
        let mut files = Vec::new();
        let mut events = Vec::new();
        for (i, line) in lines {
            let line = line.map_err(|source| TraceError::Io { path: shown.to_string(), source })?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Line>(&line) {
                Ok(Line::File(f)) => files.push((f.path, f.size)),
                Ok(Line::Access(a)) => events.push(Event::Access(a)),
                Ok(Line::Announce(a)) => events.push(Event::Announce(a)),
                Err(_) => return Err(perr(i + 1, format!("not a file, access or announce line: {line}"))),
            }
        }
        let catalog = Catalog::new(header.page_size, files);
        for (i, ev) in events.iter().enumerate() {
            if let Event::Access(a) = ev {
                if catalog.id(&a.path).is_none() {
                    return Err(perr(0, format!("event {}: {} is not among the trace's files", i + 1, a.path)));
                }
            }
        }
        events.sort_by_key(Event::time_us);
        Ok(Trace { name: name.to_string(), header, catalog, events })
    }

    /// Writes the trace in the format [`Trace::parse`] reads.
    pub fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        serde_json::to_writer(&mut *out, &self.header)?;
        out.write_all(b"\n")?;
        for f in self.catalog.files() {
            serde_json::to_writer(&mut *out, &FileLine { path: f.path.clone(), size: f.size })?;
            out.write_all(b"\n")?;
        }
        for ev in &self.events {
            match ev {
                Event::Access(a) => serde_json::to_writer(&mut *out, a)?,
                Event::Announce(a) => serde_json::to_writer(&mut *out, a)?,
            }
            out.write_all(b"\n")?;
        }
        Ok(())
    }

    /// Writes the trace to a file.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        self.write(&mut out)?;
        out.flush()
    }

    /// The accesses only.
    pub fn accesses(&self) -> impl Iterator<Item = &Access> {
        self.events.iter().filter_map(|e| match e {
            Event::Access(a) => Some(a),
            Event::Announce(_) => None,
        })
    }
}

/// Reads every `*.trace` file of a directory (or one file), sorted by name.
pub fn read_dir(path: &Path) -> Result<Vec<Trace>, TraceError> {
    if path.is_file() {
        return Ok(vec![Trace::read(path)?]);
    }
    let io = |source| TraceError::Io { path: path.display().to_string(), source };
    let mut names: Vec<_> = std::fs::read_dir(path)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "trace"))
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(TraceError::Parse {
            path: path.display().to_string(),
            line: 0,
            message: "no *.trace files here".into(),
        });
    }
    names.iter().map(|p| Trace::read(p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let text = "{\"ferry_trace\":1,\"page_size\":4}\n{\"f\":\"/d/b\",\"s\":9}\n{\"f\":\"/d/a\",\"s\":3}\n\
                    {\"t\":5,\"r\":\"x\",\"f\":\"/d/b\",\"o\":4,\"n\":5}\n{\"t\":1,\"r\":\"x\",\"announce\":[\"/d/a\"]}\n";
        let t = Trace::parse("t", "t", text.as_bytes()).expect("parses");
        assert_eq!(t.events.len(), 2);
        assert_eq!(t.events[0].time_us(), 1, "events come out in time order");
        assert_eq!(t.catalog.file(t.catalog.id("/d/b").expect("listed")).pages, 3);
        let mut out = Vec::new();
        t.write(&mut out).expect("writes");
        let again = Trace::parse("t", "t", out.as_slice()).expect("parses again");
        assert_eq!(again.events, t.events);

        let bad = "{\"ferry_trace\":1,\"page_size\":4}\n{\"t\":5,\"r\":\"x\",\"f\":\"/nope\",\"o\":0,\"n\":1}\n";
        let e = Trace::parse("t", "t", bad.as_bytes()).expect_err("unknown file");
        assert!(e.to_string().contains("/nope"), "{e}");
        let e = Trace::parse("t", "t", "{\"ferry_trace\":2,\"page_size\":4}\n".as_bytes()).expect_err("version");
        assert!(e.to_string().contains("format 2"), "{e}");
        let e = Trace::parse("t", "t", "{\"ferry_trace\":1,\"page_size\":4}\nhello\n".as_bytes()).expect_err("junk");
        assert!(e.to_string().contains(":2:"), "{e}");
    }
}
