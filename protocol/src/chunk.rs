//! Chunks: how ferry cuts data into content-addressed pieces and puts them
//! on the wire, used by the robot (logs), the cache node (commits) and the
//! model pusher (weights).
//!
//! A file is cut by FastCDC into chunks of 16 KiB to 256 KiB (64 KiB on
//! average), each named by its BLAKE3 hash, so an insertion changes only
//! the chunks near it and a re-copied file costs only hashes. On the wire a
//! chunk is zstd-compressed unless that saves less than 5 %; the receiver
//! decodes it and checks length and hash before using it.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Mutex;

use crate::codec::{ChunkCodec, ChunkHash, MAX_CHUNK};

/// Content-defined chunk sizes: minimum, average (the target) and maximum.
pub const CHUNK_MIN: u32 = 16 << 10;
/// Average chunk size.
pub const CHUNK_AVG: u32 = 64 << 10;
/// Maximum chunk size.
pub const CHUNK_MAX: u32 = 256 << 10;
/// zstd level for chunks.
const ZSTD_LEVEL: i32 = 3;

/// One chunk of a file: offset, length and hash.
pub type Cut = (u64, u32, ChunkHash);

/// What [`cut`] found: the chunks, and the tail (offset and length) when the
/// data seen so far ends inside a chunk.
pub type Cuts = (Vec<Cut>, Option<(u64, u32)>);

/// Why a chunk's wire bytes were refused.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    /// Longer than any chunk may be.
    #[error("chunk of {0} bytes exceeds {MAX_CHUNK}")]
    TooLarge(u32),
    /// The zstd payload is broken.
    #[error("chunk {hash} does not decompress")]
    Decompress {
        /// The chunk's hash, hex.
        hash: String,
        /// zstd's error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not as long as announced.
    #[error("chunk {hash} decodes to {got} bytes, not the announced {announced}")]
    Length {
        /// The chunk's hash, hex.
        hash: String,
        /// Bytes decoded.
        got: usize,
        /// Bytes announced.
        announced: u32,
    },
    /// The bytes do not hash to the chunk's name.
    #[error("chunk {0} does not match its hash")]
    Hash(String),
}

/// Cuts `[from, to)` of a file into content-defined chunks. When `last_is_final`
/// is false the last chunk (cut only by the end of the data seen so far) is
/// returned apart as the tail.
pub fn cut(path: &Path, from: u64, to: u64, last_is_final: bool) -> std::io::Result<Cuts> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(from))?;
    let source = f.take(to.saturating_sub(from));
    let mut chunks = Vec::new();
    for c in fastcdc::v2020::StreamCDC::new(source, CHUNK_MIN as usize, CHUNK_AVG as usize, CHUNK_MAX as usize) {
        let c = c.map_err(|e| std::io::Error::other(format!("chunking {}: {e}", path.display())))?;
        chunks.push((from + c.offset, c.length as u32, *blake3::hash(&c.data).as_bytes()));
    }
    let tail = if last_is_final { None } else { chunks.pop().map(|(o, l, _)| (o, l)) };
    Ok((chunks, tail))
}

/// Encodes a chunk for the wire: zstd unless that does not make it smaller.
///
/// One compression context (about a megabyte) serves the whole process
/// rather than one made and freed per chunk.
pub fn encode(raw: &[u8]) -> (ChunkCodec, Vec<u8>) {
    static CONTEXT: Mutex<Option<zstd::bulk::Compressor<'static>>> = Mutex::new(None);
    let compressed = match &mut *CONTEXT.lock().unwrap_or_else(std::sync::PoisonError::into_inner) {
        Some(c) => c.compress(raw),
        slot => zstd::bulk::Compressor::new(ZSTD_LEVEL).and_then(|c| slot.insert(c).compress(raw)),
    };
    match compressed {
        Ok(z) if z.len() < raw.len() / 20 * 19 => (ChunkCodec::Zstd, z),
        _ => (ChunkCodec::Raw, raw.to_vec()),
    }
}

/// Decodes a chunk's wire bytes and checks them against `hash` and `raw_len`.
pub fn decode(hash: &ChunkHash, raw_len: u32, codec: ChunkCodec, wire: &[u8]) -> Result<Vec<u8>, ChunkError> {
    if raw_len > MAX_CHUNK {
        return Err(ChunkError::TooLarge(raw_len));
    }
    let raw = match codec {
        ChunkCodec::Raw => wire.to_vec(),
        ChunkCodec::Zstd => zstd::bulk::decompress(wire, raw_len as usize)
            .map_err(|source| ChunkError::Decompress { hash: hex::encode(hash), source })?,
    };
    if raw.len() != raw_len as usize {
        return Err(ChunkError::Length { hash: hex::encode(hash), got: raw.len(), announced: raw_len });
    }
    if blake3::hash(&raw).as_bytes() != hash {
        return Err(ChunkError::Hash(hex::encode(hash)));
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn cutting_resumes_at_a_boundary_and_finds_the_same_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("log.bin");
        let body = bytes(3 << 20, 1);
        std::fs::write(&p, &body).expect("write");
        let (all, tail) = cut(&p, 0, body.len() as u64, true).expect("cut");
        assert!(tail.is_none());
        assert_eq!(all.iter().map(|c| u64::from(c.1)).sum::<u64>(), body.len() as u64);
        assert!(all.iter().all(|c| c.1 >= CHUNK_MIN || c.0 + u64::from(c.1) == body.len() as u64));
        assert!(all.iter().all(|c| c.1 <= CHUNK_MAX));
        // A file seen half-written: the last chunk is only a tail...
        let half = body.len() as u64 / 2;
        let (first, tail) = cut(&p, 0, half, false).expect("cut");
        let (toff, tlen) = tail.expect("a tail");
        assert_eq!(toff + u64::from(tlen), half);
        // ...and resuming after the stable chunks finds exactly the whole file's chunks.
        let resume = first.last().map_or(0, |c| c.0 + u64::from(c.1));
        let (rest, _) = cut(&p, resume, body.len() as u64, true).expect("cut");
        let joined: Vec<_> = first.into_iter().chain(rest).collect();
        assert_eq!(joined, all);
        for (off, len, hash) in &all {
            assert_eq!(blake3::hash(&body[*off as usize..(*off + u64::from(*len)) as usize]).as_bytes(), hash);
        }
    }

    #[test]
    fn inserted_bytes_change_only_nearby_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let body = bytes(4 << 20, 2);
        let mut edited = body.clone();
        edited.splice(1 << 20..1 << 20, b"inserted".iter().copied());
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, &body).expect("write");
        std::fs::write(&b, &edited).expect("write");
        let ha: HashSet<ChunkHash> = cut(&a, 0, body.len() as u64, true).expect("cut").0.iter().map(|c| c.2).collect();
        let cb = cut(&b, 0, edited.len() as u64, true).expect("cut").0;
        let new = cb.iter().filter(|c| !ha.contains(&c.2)).count();
        assert!(new <= 3, "{new} of {} chunks changed after one insertion", cb.len());
    }

    #[test]
    fn encoding_compresses_what_compresses_and_round_trips() {
        let text = b"timestamp=1 topic=/imu value=0.0\n".repeat(2000);
        let (codec, wire) = encode(&text);
        assert_eq!(codec, ChunkCodec::Zstd);
        assert!(wire.len() < text.len() / 5);
        let hash = *blake3::hash(&text).as_bytes();
        assert_eq!(decode(&hash, text.len() as u32, codec, &wire).expect("decode"), text);
        let noise = bytes(64 << 10, 3);
        let (codec, wire) = encode(&noise);
        assert_eq!(codec, ChunkCodec::Raw);
        assert_eq!(wire, noise);
    }

    #[test]
    fn decoding_refuses_what_is_not_the_chunk_it_claims() {
        let text = b"frame 1 frame 2 frame 3 ".repeat(500);
        let hash = *blake3::hash(&text).as_bytes();
        let (codec, wire) = encode(&text);
        let n = text.len() as u32;
        assert!(matches!(decode(&hash, n + 1, codec, &wire), Err(ChunkError::Length { .. })));
        assert!(matches!(decode(&hash, MAX_CHUNK + 1, codec, &wire), Err(ChunkError::TooLarge(_))));
        assert!(matches!(decode(&hash, n, ChunkCodec::Zstd, b"not zstd"), Err(ChunkError::Decompress { .. })));
        let mut other = text.clone();
        other[0] ^= 1;
        assert!(matches!(decode(&hash, n, ChunkCodec::Raw, &other), Err(ChunkError::Hash(_))));
    }
}
