//! The edge path: chunks sent by robots (`HasChunks`, `PutChunk`), objects
//! committed from them (`Commit`), and the rule that an edge device writes
//! only below its own prefix.

use ferry_protocol::codec::{ChunkCodec, ChunkHash, MAX_CHUNK};
use ferry_protocol::ids::{Identity, Role};

use crate::error::NodeError;

use super::{parse_path, CacheNode};

/// Most bytes a chunk may take on the wire (zstd may grow incompressible data a little).
pub const MAX_CHUNK_WIRE: u32 = MAX_CHUNK + (64 << 10);

/// How a commit ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// Durable; whether the store has it already, and its version tag.
    Done(bool, String),
    /// Nothing written: these chunks are not here.
    Missing(Vec<ChunkHash>),
}

impl CacheNode {
    /// Sets where edge devices may write (`prefix/DEVICE_ID/...`) and the
    /// chunk store's budget.
    pub fn with_edge(mut self, prefix: &str, chunk_bytes: u64) -> Result<CacheNode, NodeError> {
        let prefix = parse_path(prefix)?;
        self.edge_prefix = if prefix.is_root() { String::new() } else { prefix.to_string() };
        self.chunks.set_budget(chunk_bytes);
        Ok(self)
    }

    /// Whether `peer` may change `path`: edge devices only below their own prefix.
    pub fn may_write(&self, peer: &Identity, path: &str) -> Result<(), NodeError> {
        if peer.role != Role::Edge {
            return Ok(());
        }
        let own = format!("{}/{}/", self.edge_prefix, peer.id);
        let path = parse_path(path)?;
        if path.as_str().starts_with(&own) {
            Ok(())
        } else {
            Err(NodeError::Unauthorized(format!("{peer} may write only below {own}, not {path}")))
        }
    }

    /// Answers `HasChunks`.
    pub fn handle_has_chunks(&self, chunks: &[ChunkHash]) -> Vec<ChunkHash> {
        self.chunks.missing(chunks)
    }

    /// Answers `PutChunk`: `wire` is the chunk as sent.
    pub async fn handle_put_chunk(
        &self,
        hash: &ChunkHash,
        raw_len: u32,
        codec: ChunkCodec,
        wire: &[u8],
    ) -> Result<(), NodeError> {
        if self.chunks.has(hash) {
            return Ok(());
        }
        let raw = ferry_protocol::chunk::decode(hash, raw_len, codec, wire)?;
        self.metrics.chunk_received(raw.len() as u64, wire.len() as u64);
        self.chunks.put(hash, raw).await
    }

    /// Answers `Commit`: writes `path` from chunks through the journal.
    pub async fn handle_commit(&self, path: &str, size: u64, chunks: &[ChunkHash]) -> Result<Committed, NodeError> {
        let (path, resolved) = self.writable(path)?;
        let missing = self.chunks.missing(chunks);
        if !missing.is_empty() {
            return Ok(Committed::Missing(missing));
        }
        let mut w = self.journal.begin(&path).await?;
        let mut total = 0u64;
        for h in chunks {
            let Some(bytes) = self.chunks.read(h).await? else {
                return Ok(Committed::Missing(vec![*h]));
            };
            total += bytes.len() as u64;
            if total > size {
                break;
            }
            w.write(&bytes).await?;
        }
        if total != size {
            return Err(NodeError::InvalidInput(format!("{path}: chunks hold {total}+ bytes, the commit says {size}")));
        }
        let entry = self.journal.commit(w).await?;
        let (persisted, etag) = self.committed(&path, &resolved.mount, &entry).await?;
        Ok(Committed::Done(persisted, etag))
    }
}
