//! Turning a GET result into a byte stream with large chunks.
//!
//! object_store hands local files back as an open file and streams them
//! 8 KiB at a time, each read in its own blocking task: a GiB costs 131072
//! task hand-offs. Here one blocking task reads the range in 1 MiB pieces
//! and passes them through a small bounded channel, so first bytes still
//! arrive at once and memory stays bounded.

use std::os::unix::fs::FileExt;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::{GetResult, GetResultPayload};

/// Size of the pieces read from local files.
pub const FILE_CHUNK: usize = 1 << 20;

/// The bytes of `res`, in pieces of up to [`FILE_CHUNK`] for local files.
pub fn into_stream(res: GetResult) -> BoxStream<'static, object_store::Result<Bytes>> {
    match res.payload {
        GetResultPayload::File(file, path) => {
            let (tx, rx) = tokio::sync::mpsc::channel::<object_store::Result<Bytes>>(4);
            let range = res.range;
            tokio::task::spawn_blocking(move || {
                let mut pos = range.start;
                while pos < range.end {
                    let n = (range.end - pos).min(FILE_CHUNK as u64) as usize;
                    let mut buf = vec![0u8; n];
                    let piece = file.read_exact_at(&mut buf, pos).map(|()| Bytes::from(buf)).map_err(|e| {
                        object_store::Error::Generic {
                            store: "LocalFileSystem",
                            source: format!("{}: {e}", path.display()).into(),
                        }
                    });
                    let failed = piece.is_err();
                    if tx.blocking_send(piece).is_err() || failed {
                        return;
                    }
                    pos += n as u64;
                }
            });
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }).boxed()
        }
        GetResultPayload::Stream(s) => s,
    }
}
