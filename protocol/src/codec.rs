//! The wire format: length-prefixed frames, pure encode and decode.
//!
//! Every message is one frame:
//!
//! ```text
//! +----------------+---------+------------------+
//! | length: u32 BE | tag: u8 | body (length-1)  |
//! +----------------+---------+------------------+
//! ```
//!
//! `length` counts the tag and the body and is at most [`MAX_FRAME`].
//! Integers are big-endian; strings are a `u16` length and UTF-8 bytes.
//! `decode` never reads a socket: given a byte slice it returns the message
//! and the number of bytes it used, [`DecodeError::Incomplete`] when the
//! slice holds only part of a frame, or [`DecodeError::Invalid`].
//!
//! One request travels per bidirectional QUIC stream. A `ReadRange` is
//! answered by a `Data` frame that announces a length, followed by exactly
//! that many raw bytes on the same stream (no further framing, so payloads
//! are never copied into frames); a `Put` frame is followed the same way by
//! the object's bytes. See `docs/PROTOCOL.md`.

use bytes::{BufMut, BytesMut};

use crate::error::ErrorCode;

/// Largest frame accepted (tag + body), 16 MiB.
pub const MAX_FRAME: u32 = 16 << 20;
/// Length of the frame header (length prefix).
pub const HEADER_LEN: usize = 4;

/// Why a buffer could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// More bytes are needed; at least this many in total.
    #[error("incomplete frame: need {0} bytes")]
    Incomplete(usize),
    /// The bytes can never form a valid message.
    #[error("invalid frame: {0}")]
    Invalid(String),
}

/// Whether an entry is a file (object) or a directory (common prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// An object.
    File = 0,
    /// A directory: a prefix shared by objects, or a mount point.
    Dir = 1,
}

/// Metadata of a file or directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// File or directory.
    pub kind: EntryKind,
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// Last modification, milliseconds since the Unix epoch (0 if unknown).
    pub mtime_ms: i64,
    /// The store's version tag for the object ("" if none).
    pub etag: String,
    /// Whether the bytes are durable in the object store (false while a write is pending).
    pub persisted: bool,
    /// When these bytes reached the store from this node's write-back
    /// journal: the version tag they had while pending (`~journal-N`), so a
    /// client that wrote them can recognise its own bytes. Otherwise "".
    pub origin: String,
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name within the directory (one path segment).
    pub name: String,
    /// Its metadata.
    pub info: ObjectInfo,
}

/// Messages a client sends, one per stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// First request on a connection: the client's protocol version.
    Hello { version: u16 },
    /// Metadata of one path.
    Stat { path: String },
    /// Entries directly under a directory.
    List { path: String },
    /// Bytes `[offset, offset + len)` of an object, clamped to its size.
    ReadRange { path: String, offset: u64, len: u64 },
    /// Bring a whole object (or every object under a directory) into the cache.
    Load { path: String },
    /// Write a whole object: exactly `len` raw bytes follow the frame. The
    /// node answers `Done` once the bytes are durable on its disk.
    Put { path: String, len: u64 },
    /// Delete an object.
    Delete { path: String },
    /// Rename an object.
    Rename { from: String, to: String },
    /// Make a directory in the store (a local directory, an S3 folder marker).
    Mkdir { path: String },
    /// Remove an empty directory from the store.
    Rmdir { path: String },
    /// Where a persisted object of a `file://` store lives on the node's
    /// own file system (for a client on the same host, which then reads
    /// the file itself).
    Locate { path: String },
    /// Write a whole object from a file a client on the node's own host
    /// placed in the node's inbox directory (named in `HelloOk`): the node
    /// takes the file over without copying it. `file` is a plain file name
    /// inside the inbox; `len` must be its size. Answered like `Put`.
    Adopt { path: String, file: String, len: u64 },
    /// Which of these chunks does the node lack? Answered with `Missing`.
    HasChunks { chunks: Vec<ChunkHash> },
    /// One content-addressed chunk: exactly `len` raw bytes follow the frame,
    /// encoded per `codec`; decoded they are `raw_len` bytes whose BLAKE3 is
    /// `hash`. Answered with `Done` once the node holds the chunk.
    PutChunk { hash: ChunkHash, raw_len: u32, codec: ChunkCodec, len: u32 },
    /// Write the object `path` as the concatenation of `chunks` (`size`
    /// bytes in all). Answered with `Done` once durable in the journal, or
    /// with `Missing` naming the chunks the node does not hold.
    Commit { path: String, size: u64, chunks: Vec<ChunkHash> },
    /// From another node: hold a copy of its journal entry `seq` for
    /// `path` (written at `mtime_ms`); exactly `len` raw bytes follow. The
    /// holder serves it and uploads it only if the writing node is gone.
    /// Answered with `Done` once durable.
    Hold { path: String, seq: u64, mtime_ms: i64, len: u64 },
    /// From the node that held `path`'s write `seq` first: it is in the
    /// store now, drop the copy.
    Release { path: String, seq: u64 },
    /// What the node holds: answered with `StatusOk`.
    Status,
    /// Page `page` of a file at version `etag`, only if the node has it
    /// cached (nothing is fetched): `Data` and the page's bytes, or a
    /// `NotFound` error. Nodes ask each other this after a join.
    Peek { path: String, page: u64, etag: String },
    /// Bring pages `[first, first + count)` of a file into the cache, skipping
    /// those already there. Answered with `LoadOk` (pages fetched, their bytes).
    Warm { path: String, first: u64, count: u64 },
    /// From another node: `path` changed in the store (a write, delete,
    /// rename, `mkdir`, `rmdir` or upload landed there), so cached metadata
    /// of it and listings of it and its directory are stale. Answered with `Done`.
    Changed { path: String },
    /// The client's reader `reader` (a process, a DataLoader rank) will
    /// read these pages in this order: they replace its previous order,
    /// or with `append` follow it (an order longer than a frame is sent in
    /// several). The node's tiers evict by it. Answered with `Done`.
    Announce { reader: String, append: bool, entries: Vec<PageRun> },
}

/// Pages `[first, end)` of the file at `path`, read in that order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRun {
    /// Namespace path of the file.
    pub path: String,
    /// First page.
    pub first: u64,
    /// One past the last page.
    pub end: u64,
}

impl PageRun {
    /// Bytes one run takes in an `Announce` frame.
    pub fn encoded_len(&self) -> usize {
        2 + self.path.len() + 16
    }
}

/// BLAKE3 hash of a chunk's decoded bytes.
pub type ChunkHash = [u8; 32];

/// Largest decoded chunk a node accepts.
pub const MAX_CHUNK: u32 = 4 << 20;

/// How a chunk's bytes travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ChunkCodec {
    /// As they are.
    Raw = 0,
    /// One zstd frame.
    Zstd = 1,
}

/// Messages a node sends back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Answer to `Hello`.
    ///
    /// `inbox` is the node's inbox directory for `Adopt` ("" if it has
    /// none); a client on the same host proves that by finding `inbox_token`
    /// in the file `.node` there.
    /// `replicas` lists the namespace mounts whose pages have more (or
    /// fewer) owners than a client's default: `(mount prefix, owners)`.
    HelloOk {
        version: u16,
        node_id: String,
        page_size: u32,
        inbox: String,
        inbox_token: String,
        replicas: Vec<(String, u32)>,
    },
    /// Answer to `Stat`.
    StatOk(ObjectInfo),
    /// Answer to `List`.
    ListOk(Vec<DirEntry>),
    /// Header of a `ReadRange` answer: exactly `len` raw bytes follow.
    Data { len: u64 },
    /// Answer to `Load`.
    LoadOk { objects: u64, bytes: u64 },
    /// A write, delete or rename succeeded; `persisted` tells whether the
    /// object store already has it (otherwise the node's journal does).
    /// `etag` is the object's version tag afterwards ("" after a delete).
    Done { persisted: bool, etag: String },
    /// The chunks (of a `HasChunks` or `Commit`) the node does not hold.
    Missing { chunks: Vec<ChunkHash> },
    /// Answer to `Status`.
    StatusOk(NodeStatus),
    /// Answer to `Locate`: the object's file, and what the node saw of it
    /// (the client checks the file it opens is that one).
    Located(Located),
    /// The request failed.
    Error { code: ErrorCode, message: String },
}

/// A persisted object's file on the node's host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Located {
    /// Absolute path of the file.
    pub file: String,
    /// Its inode number.
    pub inode: u64,
    /// Its size.
    pub size: u64,
    /// Its modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// The object's version tag (as `Stat` gives it).
    pub etag: String,
}

impl Located {
    /// `file` as `meta` describes it, at version `etag`.
    pub fn of(file: String, meta: &std::fs::Metadata, etag: String) -> Located {
        use std::os::unix::fs::MetadataExt;
        Located { file, inode: meta.ino(), size: meta.len(), mtime_ns: mtime_ns(meta), etag }
    }

    /// Whether `meta` (of a file just opened) is the file described.
    pub fn describes(&self, meta: &std::fs::Metadata) -> bool {
        use std::os::unix::fs::MetadataExt;
        meta.is_file() && meta.ino() == self.inode && meta.len() == self.size && mtime_ns(meta) == self.mtime_ns
    }
}

fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    use std::os::unix::fs::MetadataExt;
    meta.mtime().saturating_mul(1_000_000_000).saturating_add(meta.mtime_nsec())
}

/// What a node holds, for `ferry cluster status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStatus {
    /// The node's id.
    pub node_id: String,
    /// Pages in its cache tiers.
    pub pages: u64,
    /// Bytes in its memory tier.
    pub memory_bytes: u64,
    /// Bytes in its disk tier.
    pub disk_bytes: u64,
    /// Writes in its journal the store does not have yet.
    pub pending: u64,
    /// Their bytes.
    pub pending_bytes: u64,
    /// Copies it holds of other nodes' pending writes.
    pub held: u64,
    /// Their bytes.
    pub held_bytes: u64,
}

mod tag {
    pub const HELLO: u8 = 0x01;
    pub const STAT: u8 = 0x02;
    pub const LIST: u8 = 0x03;
    pub const READ_RANGE: u8 = 0x04;
    pub const LOAD: u8 = 0x05;
    pub const PUT: u8 = 0x06;
    pub const DELETE: u8 = 0x07;
    pub const RENAME: u8 = 0x08;
    pub const ADOPT: u8 = 0x09;
    pub const HAS_CHUNKS: u8 = 0x0A;
    pub const PUT_CHUNK: u8 = 0x0B;
    pub const COMMIT: u8 = 0x0C;
    pub const HOLD: u8 = 0x0D;
    pub const RELEASE: u8 = 0x0E;
    pub const STATUS: u8 = 0x0F;
    pub const WARM: u8 = 0x10;
    pub const PEEK: u8 = 0x11;
    pub const MKDIR: u8 = 0x12;
    pub const RMDIR: u8 = 0x13;
    pub const LOCATE: u8 = 0x14;
    pub const CHANGED: u8 = 0x15;
    pub const ANNOUNCE: u8 = 0x16;
    pub const LOCATED: u8 = 0x89;
    pub const HELLO_OK: u8 = 0x81;
    pub const STAT_OK: u8 = 0x82;
    pub const LIST_OK: u8 = 0x83;
    pub const DATA: u8 = 0x84;
    pub const LOAD_OK: u8 = 0x85;
    pub const DONE: u8 = 0x86;
    pub const MISSING: u8 = 0x87;
    pub const STATUS_OK: u8 = 0x88;
    pub const ERROR: u8 = 0xFF;
}

/// Splits one frame off the front of `buf`: returns the tag, the body and
/// the bytes consumed.
pub fn split_frame(buf: &[u8]) -> Result<(u8, &[u8], usize), DecodeError> {
    if buf.len() < HEADER_LEN {
        return Err(DecodeError::Incomplete(HEADER_LEN));
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len == 0 {
        return Err(DecodeError::Invalid("empty frame".into()));
    }
    if len > MAX_FRAME {
        return Err(DecodeError::Invalid(format!("frame of {len} bytes exceeds {MAX_FRAME}")));
    }
    let total = HEADER_LEN + len as usize;
    if buf.len() < total {
        return Err(DecodeError::Incomplete(total));
    }
    Ok((buf[HEADER_LEN], &buf[HEADER_LEN + 1..total], total))
}

/// Length of the whole frame announced by a 4-byte header.
pub fn frame_len(header: [u8; HEADER_LEN]) -> Result<usize, DecodeError> {
    let len = u32::from_be_bytes(header);
    if len == 0 || len > MAX_FRAME {
        return Err(DecodeError::Invalid(format!("bad frame length {len}")));
    }
    Ok(HEADER_LEN + len as usize)
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Invalid("body shorter than its fields".into()));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(self.u64()? as i64)
    }
    fn string(&mut self) -> Result<String, DecodeError> {
        let n = self.u16()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Invalid("string is not UTF-8".into()))
    }
    fn kind(&mut self) -> Result<EntryKind, DecodeError> {
        match self.u8()? {
            0 => Ok(EntryKind::File),
            1 => Ok(EntryKind::Dir),
            k => Err(DecodeError::Invalid(format!("unknown entry kind {k}"))),
        }
    }
    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(DecodeError::Invalid(format!("bad boolean {b}"))),
        }
    }
    fn hash(&mut self) -> Result<ChunkHash, DecodeError> {
        let mut h = [0u8; 32];
        h.copy_from_slice(self.take(32)?);
        Ok(h)
    }
    fn hashes(&mut self) -> Result<Vec<ChunkHash>, DecodeError> {
        let n = self.u32()? as usize;
        if n > self.buf.len() / 32 {
            return Err(DecodeError::Invalid(format!("{n} chunk hashes do not fit their frame")));
        }
        (0..n).map(|_| self.hash()).collect()
    }
    fn codec(&mut self) -> Result<ChunkCodec, DecodeError> {
        match self.u8()? {
            0 => Ok(ChunkCodec::Raw),
            1 => Ok(ChunkCodec::Zstd),
            c => Err(DecodeError::Invalid(format!("unknown chunk codec {c}"))),
        }
    }
    fn info(&mut self) -> Result<ObjectInfo, DecodeError> {
        Ok(ObjectInfo {
            kind: self.kind()?,
            size: self.u64()?,
            mtime_ms: self.i64()?,
            etag: self.string()?,
            persisted: self.bool()?,
            origin: self.string()?,
        })
    }
    fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Invalid(format!("{} trailing bytes in frame", self.buf.len())))
        }
    }
}

struct Writer<'a> {
    buf: &'a mut BytesMut,
    start: usize,
}

impl<'a> Writer<'a> {
    fn new(buf: &'a mut BytesMut, tag: u8) -> Writer<'a> {
        let start = buf.len();
        buf.put_u32(0);
        buf.put_u8(tag);
        Writer { buf, start }
    }
    fn string(&mut self, s: &str) {
        // Strings longer than u16::MAX are truncated at a char boundary;
        // paths are limited to 4096 bytes and messages are short.
        let mut end = s.len().min(u16::MAX as usize);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.buf.put_u16(end as u16);
        self.buf.put_slice(&s.as_bytes()[..end]);
    }
    fn hashes(&mut self, hs: &[ChunkHash]) {
        self.buf.put_u32(hs.len() as u32);
        for h in hs {
            self.buf.put_slice(h);
        }
    }
    fn info(&mut self, i: &ObjectInfo) {
        self.buf.put_u8(i.kind as u8);
        self.buf.put_u64(i.size);
        self.buf.put_i64(i.mtime_ms);
        self.string(&i.etag);
        self.buf.put_u8(u8::from(i.persisted));
        self.string(&i.origin);
    }
    fn finish(self) {
        let len = (self.buf.len() - self.start - HEADER_LEN) as u32;
        self.buf[self.start..self.start + HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    }
}

impl Request {
    /// The request's name in logs and metrics (`op` label).
    pub fn name(&self) -> &'static str {
        match self {
            Request::Hello { .. } => "hello",
            Request::Stat { .. } => "stat",
            Request::List { .. } => "list",
            Request::ReadRange { .. } => "read",
            Request::Load { .. } => "load",
            Request::Put { .. } => "put",
            Request::Delete { .. } => "delete",
            Request::Rename { .. } => "rename",
            Request::Mkdir { .. } => "mkdir",
            Request::Rmdir { .. } => "rmdir",
            Request::Locate { .. } => "locate",
            Request::Adopt { .. } => "adopt",
            Request::HasChunks { .. } => "has_chunks",
            Request::PutChunk { .. } => "put_chunk",
            Request::Commit { .. } => "commit",
            Request::Hold { .. } => "hold",
            Request::Release { .. } => "release",
            Request::Status => "status",
            Request::Warm { .. } => "warm",
            Request::Peek { .. } => "peek",
            Request::Changed { .. } => "changed",
            Request::Announce { .. } => "announce",
        }
    }

    /// The namespace paths this request changes (none for reads).
    pub fn written_paths(&self) -> Vec<&str> {
        match self {
            Request::Put { path, .. }
            | Request::Adopt { path, .. }
            | Request::Delete { path }
            | Request::Mkdir { path }
            | Request::Rmdir { path }
            | Request::Commit { path, .. }
            | Request::Hold { path, .. } => vec![path],
            Request::Rename { from, to } => vec![from, to],
            Request::Hello { .. }
            | Request::Locate { .. }
            | Request::Stat { .. }
            | Request::List { .. }
            | Request::ReadRange { .. }
            | Request::Load { .. }
            | Request::HasChunks { .. }
            | Request::PutChunk { .. }
            | Request::Release { .. }
            | Request::Status
            | Request::Warm { .. }
            | Request::Changed { .. }
            | Request::Announce { .. }
            | Request::Peek { .. } => Vec::new(),
        }
    }

    /// Appends this request as one frame.
    pub fn encode(&self, buf: &mut BytesMut) {
        match self {
            Request::Hello { version } => {
                let w = Writer::new(buf, tag::HELLO);
                w.buf.put_u16(*version);
                w.finish();
            }
            Request::Stat { path } => {
                let mut w = Writer::new(buf, tag::STAT);
                w.string(path);
                w.finish();
            }
            Request::List { path } => {
                let mut w = Writer::new(buf, tag::LIST);
                w.string(path);
                w.finish();
            }
            Request::ReadRange { path, offset, len } => {
                let mut w = Writer::new(buf, tag::READ_RANGE);
                w.string(path);
                w.buf.put_u64(*offset);
                w.buf.put_u64(*len);
                w.finish();
            }
            Request::Load { path } => {
                let mut w = Writer::new(buf, tag::LOAD);
                w.string(path);
                w.finish();
            }
            Request::Put { path, len } => {
                let mut w = Writer::new(buf, tag::PUT);
                w.string(path);
                w.buf.put_u64(*len);
                w.finish();
            }
            Request::Delete { path } => {
                let mut w = Writer::new(buf, tag::DELETE);
                w.string(path);
                w.finish();
            }
            Request::Mkdir { path } => {
                let mut w = Writer::new(buf, tag::MKDIR);
                w.string(path);
                w.finish();
            }
            Request::Rmdir { path } => {
                let mut w = Writer::new(buf, tag::RMDIR);
                w.string(path);
                w.finish();
            }
            Request::Changed { path } => {
                let mut w = Writer::new(buf, tag::CHANGED);
                w.string(path);
                w.finish();
            }
            Request::Announce { reader, append, entries } => {
                let mut w = Writer::new(buf, tag::ANNOUNCE);
                w.string(reader);
                w.buf.put_u8(u8::from(*append));
                w.buf.put_u32(entries.len() as u32);
                for e in entries {
                    w.string(&e.path);
                    w.buf.put_u64(e.first);
                    w.buf.put_u64(e.end);
                }
                w.finish();
            }
            Request::Locate { path } => {
                let mut w = Writer::new(buf, tag::LOCATE);
                w.string(path);
                w.finish();
            }
            Request::Rename { from, to } => {
                let mut w = Writer::new(buf, tag::RENAME);
                w.string(from);
                w.string(to);
                w.finish();
            }
            Request::Adopt { path, file, len } => {
                let mut w = Writer::new(buf, tag::ADOPT);
                w.string(path);
                w.string(file);
                w.buf.put_u64(*len);
                w.finish();
            }
            Request::HasChunks { chunks } => {
                let mut w = Writer::new(buf, tag::HAS_CHUNKS);
                w.hashes(chunks);
                w.finish();
            }
            Request::PutChunk { hash, raw_len, codec, len } => {
                let w = Writer::new(buf, tag::PUT_CHUNK);
                w.buf.put_slice(hash);
                w.buf.put_u32(*raw_len);
                w.buf.put_u8(*codec as u8);
                w.buf.put_u32(*len);
                w.finish();
            }
            Request::Commit { path, size, chunks } => {
                let mut w = Writer::new(buf, tag::COMMIT);
                w.string(path);
                w.buf.put_u64(*size);
                w.hashes(chunks);
                w.finish();
            }
            Request::Hold { path, seq, mtime_ms, len } => {
                let mut w = Writer::new(buf, tag::HOLD);
                w.string(path);
                w.buf.put_u64(*seq);
                w.buf.put_i64(*mtime_ms);
                w.buf.put_u64(*len);
                w.finish();
            }
            Request::Release { path, seq } => {
                let mut w = Writer::new(buf, tag::RELEASE);
                w.string(path);
                w.buf.put_u64(*seq);
                w.finish();
            }
            Request::Status => Writer::new(buf, tag::STATUS).finish(),
            Request::Peek { path, page, etag } => {
                let mut w = Writer::new(buf, tag::PEEK);
                w.string(path);
                w.buf.put_u64(*page);
                w.string(etag);
                w.finish();
            }
            Request::Warm { path, first, count } => {
                let mut w = Writer::new(buf, tag::WARM);
                w.string(path);
                w.buf.put_u64(*first);
                w.buf.put_u64(*count);
                w.finish();
            }
        }
    }

    /// Decodes one request from the front of `buf`.
    pub fn decode(buf: &[u8]) -> Result<(Request, usize), DecodeError> {
        let (tag, body, used) = split_frame(buf)?;
        let mut r = Reader { buf: body };
        let req = match tag {
            tag::HELLO => Request::Hello { version: r.u16()? },
            tag::STAT => Request::Stat { path: r.string()? },
            tag::LIST => Request::List { path: r.string()? },
            tag::READ_RANGE => Request::ReadRange { path: r.string()?, offset: r.u64()?, len: r.u64()? },
            tag::LOAD => Request::Load { path: r.string()? },
            tag::PUT => Request::Put { path: r.string()?, len: r.u64()? },
            tag::DELETE => Request::Delete { path: r.string()? },
            tag::RENAME => Request::Rename { from: r.string()?, to: r.string()? },
            tag::MKDIR => Request::Mkdir { path: r.string()? },
            tag::RMDIR => Request::Rmdir { path: r.string()? },
            tag::LOCATE => Request::Locate { path: r.string()? },
            tag::CHANGED => Request::Changed { path: r.string()? },
            tag::ANNOUNCE => {
                let reader = r.string()?;
                let append = r.bool()?;
                let n = r.u32()? as usize;
                if n > r.buf.len() / 18 {
                    return Err(DecodeError::Invalid(format!("{n} announced runs do not fit their frame")));
                }
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let run = PageRun { path: r.string()?, first: r.u64()?, end: r.u64()? };
                    if run.end < run.first {
                        return Err(DecodeError::Invalid(format!(
                            "announced pages {}..{} of {} run backwards",
                            run.first, run.end, run.path
                        )));
                    }
                    entries.push(run);
                }
                Request::Announce { reader, append, entries }
            }
            tag::ADOPT => Request::Adopt { path: r.string()?, file: r.string()?, len: r.u64()? },
            tag::HAS_CHUNKS => Request::HasChunks { chunks: r.hashes()? },
            tag::PUT_CHUNK => {
                Request::PutChunk { hash: r.hash()?, raw_len: r.u32()?, codec: r.codec()?, len: r.u32()? }
            }
            tag::COMMIT => Request::Commit { path: r.string()?, size: r.u64()?, chunks: r.hashes()? },
            tag::HOLD => Request::Hold { path: r.string()?, seq: r.u64()?, mtime_ms: r.i64()?, len: r.u64()? },
            tag::RELEASE => Request::Release { path: r.string()?, seq: r.u64()? },
            tag::STATUS => Request::Status,
            tag::PEEK => Request::Peek { path: r.string()?, page: r.u64()?, etag: r.string()? },
            tag::WARM => Request::Warm { path: r.string()?, first: r.u64()?, count: r.u64()? },
            t => return Err(DecodeError::Invalid(format!("unknown request tag 0x{t:02x}"))),
        };
        r.finish()?;
        Ok((req, used))
    }
}

impl Response {
    /// Appends this response as one frame.
    pub fn encode(&self, buf: &mut BytesMut) {
        match self {
            Response::HelloOk { version, node_id, page_size, inbox, inbox_token, replicas } => {
                let mut w = Writer::new(buf, tag::HELLO_OK);
                w.buf.put_u16(*version);
                w.string(node_id);
                w.buf.put_u32(*page_size);
                w.string(inbox);
                w.string(inbox_token);
                w.buf.put_u32(replicas.len() as u32);
                for (mount, n) in replicas {
                    w.string(mount);
                    w.buf.put_u32(*n);
                }
                w.finish();
            }
            Response::StatOk(info) => {
                let mut w = Writer::new(buf, tag::STAT_OK);
                w.info(info);
                w.finish();
            }
            Response::ListOk(entries) => {
                let mut w = Writer::new(buf, tag::LIST_OK);
                w.buf.put_u32(entries.len() as u32);
                for e in entries {
                    w.string(&e.name);
                    w.info(&e.info);
                }
                w.finish();
            }
            Response::Data { len } => {
                let w = Writer::new(buf, tag::DATA);
                w.buf.put_u64(*len);
                w.finish();
            }
            Response::LoadOk { objects, bytes } => {
                let w = Writer::new(buf, tag::LOAD_OK);
                w.buf.put_u64(*objects);
                w.buf.put_u64(*bytes);
                w.finish();
            }
            Response::Located(l) => {
                let mut w = Writer::new(buf, tag::LOCATED);
                w.string(&l.file);
                w.buf.put_u64(l.inode);
                w.buf.put_u64(l.size);
                w.buf.put_i64(l.mtime_ns);
                w.string(&l.etag);
                w.finish();
            }
            Response::Done { persisted, etag } => {
                let mut w = Writer::new(buf, tag::DONE);
                w.buf.put_u8(u8::from(*persisted));
                w.string(etag);
                w.finish();
            }
            Response::Missing { chunks } => {
                let mut w = Writer::new(buf, tag::MISSING);
                w.hashes(chunks);
                w.finish();
            }
            Response::StatusOk(st) => {
                let mut w = Writer::new(buf, tag::STATUS_OK);
                w.string(&st.node_id);
                for v in
                    [st.pages, st.memory_bytes, st.disk_bytes, st.pending, st.pending_bytes, st.held, st.held_bytes]
                {
                    w.buf.put_u64(v);
                }
                w.finish();
            }
            Response::Error { code, message } => {
                let mut w = Writer::new(buf, tag::ERROR);
                w.buf.put_u16(*code as u16);
                w.string(message);
                w.finish();
            }
        }
    }

    /// Decodes one response from the front of `buf`.
    pub fn decode(buf: &[u8]) -> Result<(Response, usize), DecodeError> {
        let (tag, body, used) = split_frame(buf)?;
        let mut r = Reader { buf: body };
        let resp = match tag {
            tag::HELLO_OK => Response::HelloOk {
                version: r.u16()?,
                node_id: r.string()?,
                page_size: r.u32()?,
                inbox: r.string()?,
                inbox_token: r.string()?,
                // Absent from nodes before version 6, which then fail the version check, not decoding.
                replicas: if r.buf.is_empty() {
                    Vec::new()
                } else {
                    let n = r.u32()? as usize;
                    // Each entry takes at least 8 bytes; refuse counts the body cannot hold.
                    if n > r.buf.len() / 8 {
                        return Err(DecodeError::Invalid(format!("{n} replica counts do not fit their frame")));
                    }
                    (0..n).map(|_| Ok((r.string()?, r.u32()?))).collect::<Result<_, DecodeError>>()?
                },
            },
            tag::STAT_OK => Response::StatOk(r.info()?),
            tag::LIST_OK => {
                let n = r.u32()? as usize;
                // Each entry takes at least 24 bytes; refuse counts the body cannot hold.
                if n > r.buf.len() / 24 {
                    return Err(DecodeError::Invalid(format!("list of {n} entries does not fit its frame")));
                }
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    entries.push(DirEntry { name: r.string()?, info: r.info()? });
                }
                Response::ListOk(entries)
            }
            tag::DATA => Response::Data { len: r.u64()? },
            tag::LOAD_OK => Response::LoadOk { objects: r.u64()?, bytes: r.u64()? },
            tag::DONE => Response::Done { persisted: r.bool()?, etag: r.string()? },
            tag::LOCATED => Response::Located(Located {
                file: r.string()?,
                inode: r.u64()?,
                size: r.u64()?,
                mtime_ns: r.i64()?,
                etag: r.string()?,
            }),
            tag::MISSING => Response::Missing { chunks: r.hashes()? },
            tag::STATUS_OK => Response::StatusOk(NodeStatus {
                node_id: r.string()?,
                pages: r.u64()?,
                memory_bytes: r.u64()?,
                disk_bytes: r.u64()?,
                pending: r.u64()?,
                pending_bytes: r.u64()?,
                held: r.u64()?,
                held_bytes: r.u64()?,
            }),
            tag::ERROR => {
                let c = r.u16()?;
                let code =
                    ErrorCode::from_wire(c).ok_or_else(|| DecodeError::Invalid(format!("unknown error code {c}")))?;
                Response::Error { code, message: r.string()? }
            }
            t => return Err(DecodeError::Invalid(format!("unknown response tag 0x{t:02x}"))),
        };
        r.finish()?;
        Ok((resp, used))
    }
}

/// A folder's files (name, size, version tag) as the predictor's catalog takes
/// them, or `None` (logged) when the folder could not be listed.
pub fn listed_files(
    dir: &str,
    entries: Result<Vec<DirEntry>, impl std::fmt::Display>,
) -> Option<Vec<(String, u64, String)>> {
    match entries {
        Ok(entries) => Some(
            entries
                .into_iter()
                .filter(|e| e.info.kind == EntryKind::File)
                .map(|e| (e.name, e.info.size, e.info.etag))
                .collect(),
        ),
        Err(e) => {
            tracing::debug!(%dir, error = %e, "no listing for prefetch");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn info() -> ObjectInfo {
        ObjectInfo {
            kind: EntryKind::File,
            size: 42,
            mtime_ms: -5,
            etag: "e\u{e9}".into(),
            persisted: true,
            origin: "~journal-7".into(),
        }
    }

    fn requests() -> Vec<Request> {
        vec![
            Request::Hello { version: 1 },
            Request::Stat { path: "/datasets/a.bin".into() },
            Request::List { path: "/".into() },
            Request::ReadRange { path: "/x".into(), offset: u64::MAX - 1, len: 7 },
            Request::Load { path: "/d".into() },
            Request::Put { path: "/ckpt/step-1.pt".into(), len: 1 << 33 },
            Request::Delete { path: "/x".into() },
            Request::Rename { from: "/a.tmp".into(), to: "/a".into() },
            Request::Mkdir { path: "/data/valid".into() },
            Request::Rmdir { path: "/data/valid".into() },
            Request::Locate { path: "/data/train/a.npz".into() },
            Request::Adopt { path: "/ckpt/step-2.pt".into(), file: "m12-3".into(), len: 5 },
            Request::HasChunks { chunks: vec![[7; 32], [0; 32]] },
            Request::HasChunks { chunks: vec![] },
            Request::PutChunk { hash: [9; 32], raw_len: 65536, codec: ChunkCodec::Zstd, len: 1200 },
            Request::Commit { path: "/logs/robot-17/a.mcap".into(), size: 1 << 30, chunks: vec![[1; 32], [2; 32]] },
            Request::Hold { path: "/ckpt/a".into(), seq: 7, mtime_ms: -1, len: 9 },
            Request::Release { path: "/ckpt/a".into(), seq: 7 },
            Request::Status,
            Request::Warm { path: "/d/x".into(), first: 3, count: 9 },
            Request::Peek { path: "/d/x".into(), page: 2, etag: "\"e\"".into() },
            Request::Changed { path: "/data/train/a b\t.npz".into() },
            Request::Announce {
                reader: "mount:4242".into(),
                append: true,
                entries: vec![
                    PageRun { path: "/d/a".into(), first: 0, end: 3 },
                    PageRun { path: "/d/b c".into(), first: 7, end: 8 },
                ],
            },
            Request::Announce { reader: String::new(), append: false, entries: Vec::new() },
        ]
    }

    fn responses() -> Vec<Response> {
        vec![
            Response::HelloOk {
                version: 1,
                node_id: "n1".into(),
                page_size: 4 << 20,
                inbox: "/var/lib/ferry/journal/inbox".into(),
                inbox_token: "t".into(),
                replicas: vec![("/models".into(), 3), ("/".into(), 1)],
            },
            Response::StatOk(info()),
            Response::ListOk(vec![
                DirEntry { name: "a".into(), info: info() },
                DirEntry { name: "b".into(), info: info() },
            ]),
            Response::ListOk(vec![]),
            Response::Data { len: 1 << 40 },
            Response::LoadOk { objects: 3, bytes: 9 },
            Response::Located(Located {
                file: "/srv/store/a.npz".into(),
                inode: 77,
                size: 1 << 30,
                mtime_ns: -5,
                etag: "7-1".into(),
            }),
            Response::Done { persisted: false, etag: "~journal-3".into() },
            Response::Missing { chunks: vec![[3; 32]] },
            Response::StatusOk(NodeStatus { node_id: "n".into(), pages: 1, held_bytes: 8, ..NodeStatus::default() }),
            Response::Error { code: ErrorCode::NotFound, message: "no such object".into() },
        ]
    }

    #[test]
    fn requests_round_trip() {
        for req in requests() {
            let mut buf = BytesMut::new();
            req.encode(&mut buf);
            let (back, used) = Request::decode(&buf).expect("decodes");
            assert_eq!(back, req);
            assert_eq!(used, buf.len());
        }
    }

    #[test]
    fn responses_round_trip() {
        for resp in responses() {
            let mut buf = BytesMut::new();
            resp.encode(&mut buf);
            let (back, used) = Response::decode(&buf).expect("decodes");
            assert_eq!(back, resp);
            assert_eq!(used, buf.len());
        }
    }

    #[test]
    fn every_prefix_is_incomplete() {
        for req in requests() {
            let mut buf = BytesMut::new();
            req.encode(&mut buf);
            for cut in 0..buf.len() {
                assert!(
                    matches!(Request::decode(&buf[..cut]), Err(DecodeError::Incomplete(_))),
                    "{req:?} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn two_frames_back_to_back() {
        let mut buf = BytesMut::new();
        Request::Stat { path: "/a".into() }.encode(&mut buf);
        Request::List { path: "/b".into() }.encode(&mut buf);
        let (first, used) = Request::decode(&buf).expect("first");
        let (second, _) = Request::decode(&buf[used..]).expect("second");
        assert_eq!(first, Request::Stat { path: "/a".into() });
        assert_eq!(second, Request::List { path: "/b".into() });
    }

    #[test]
    fn rejects_bad_frames() {
        assert!(matches!(Request::decode(&[0, 0, 0, 0]), Err(DecodeError::Invalid(_))));
        assert!(matches!(Request::decode(&[0xff, 0, 0, 0, 1]), Err(DecodeError::Invalid(_))));
        assert!(matches!(Request::decode(&[0, 0, 0, 1, 0x77]), Err(DecodeError::Invalid(_))));
        // Trailing bytes inside a frame.
        assert!(matches!(Request::decode(&[0, 0, 0, 4, tag::HELLO, 0, 1, 9]), Err(DecodeError::Invalid(_))));
        // A list that claims more entries than fit.
        assert!(matches!(
            Response::decode(&[0, 0, 0, 5, tag::LIST_OK, 0xff, 0xff, 0xff, 0xff]),
            Err(DecodeError::Invalid(_))
        ));
    }

    #[test]
    fn decoded_frames_reencode_exactly() {
        // Unknown error codes are refused, not silently mapped.
        assert!(Response::decode(&[0, 0, 0, 5, tag::ERROR, 0, 99, 0, 0]).is_err());
        let mut buf = BytesMut::new();
        Response::Error { code: ErrorCode::Internal, message: "x".into() }.encode(&mut buf);
        let (r, n) = Response::decode(&buf).expect("decodes");
        let mut again = BytesMut::new();
        r.encode(&mut again);
        assert_eq!(&again[..], &buf[..n]);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..20_000 {
            let n = rng.random_range(0..64);
            let mut b: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            if b.len() >= 4 && rng.random_bool(0.8) {
                let len = (b.len() - 4) as u32;
                b[..4].copy_from_slice(&len.to_be_bytes());
            }
            let _ = Request::decode(&b);
            let _ = Response::decode(&b);
        }
    }
}
