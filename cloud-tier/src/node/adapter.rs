//! The QUIC adapter: accepts connections, checks the peer's certificate
//! identity, reads one request per stream, lets [`CacheNode`] answer it and
//! writes the answer. Names, authorisation and limits come from the
//! request and the node; this file only moves bytes.

use std::sync::Arc;
use std::time::Instant;

use ferry_protocol::codec::{Request, Response};
use ferry_protocol::ids::{Identity, Role};
use ferry_protocol::tls;
use ferry_protocol::{wire, ErrorCode, ProtocolError};

use crate::error::NodeError;

use super::{CacheNode, Committed, MAX_CHUNK_WIRE};

fn error_response(e: &NodeError) -> Response {
    Response::Error { code: e.code(), message: e.to_string() }
}

/// Copies of other nodes' writes come only from cache nodes.
fn from_node(peer: &Identity) -> Result<(), NodeError> {
    if peer.role == Role::Cloud {
        Ok(())
    } else {
        Err(NodeError::Unauthorized(format!("{peer} is not a cache node; only cache nodes hold copies of writes")))
    }
}

async fn handle_stream(
    node: Arc<CacheNode>,
    peer: Arc<Identity>,
    reader: Arc<str>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) -> Result<(), ProtocolError> {
    let req = match wire::read_request(&mut recv).await {
        Ok(r) => r,
        Err(ProtocolError::Malformed(m)) => {
            wire::write_response(&mut send, &Response::Error { code: ErrorCode::InvalidInput, message: m }).await?;
            send.finish()?;
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let t0 = Instant::now();
    let op = req.name();
    // Edge devices change only their own prefix; every role reads (and
    // writes) only what its access rules allow.
    let writes = req.written_paths();
    let refused =
        writes.iter().find_map(|p| node.may_write(&peer, p).err()).or_else(|| node.access().check(&peer, &req).err());
    if let Some(e) = refused {
        tracing::warn!(%peer, op, error = %e, "refused a request");
        wire::write_response(&mut send, &error_response(&e)).await?;
        send.finish()?;
        let _ = recv.stop(quinn::VarInt::from_u32(ErrorCode::Unauthorized as u32));
        return Ok(());
    }
    let resp = match req {
        Request::Hello { version } => node.handle_hello(version),
        Request::Stat { path } => node.handle_stat(&path).await.map_or_else(|e| error_response(&e), Response::StatOk),
        Request::List { path } => node.handle_list(&path).await.map_or_else(|e| error_response(&e), Response::ListOk),
        Request::Put { path, len } => node
            .handle_put(&path, len, &mut recv)
            .await
            .map_or_else(|e| error_response(&e), |(persisted, etag)| Response::Done { persisted, etag }),
        Request::Adopt { path, file, len } => node
            .handle_adopt(&path, &file, len)
            .await
            .map_or_else(|e| error_response(&e), |(persisted, etag)| Response::Done { persisted, etag }),
        Request::HasChunks { chunks } => Response::Missing { chunks: node.handle_has_chunks(&chunks) },
        Request::PutChunk { hash, raw_len, codec, len } => {
            if len > MAX_CHUNK_WIRE {
                error_response(&NodeError::InvalidInput(format!("chunk of {len} bytes on the wire is too large")))
            } else {
                match recv.read_to_end(len as usize + 1).await {
                    Ok(wire) if wire.len() == len as usize => {
                        node.handle_put_chunk(&hash, raw_len, codec, &wire).await.map_or_else(
                            |e| error_response(&e),
                            |()| Response::Done { persisted: false, etag: String::new() },
                        )
                    }
                    Ok(wire) => error_response(&NodeError::InvalidInput(format!(
                        "chunk announced {len} bytes, {} arrived",
                        wire.len()
                    ))),
                    Err(e) => return Err(ProtocolError::Malformed(format!("chunk body: {e}"))),
                }
            }
        }
        Request::Commit { path, size, chunks } => match node.handle_commit(&path, size, &chunks).await {
            Ok(Committed::Done(persisted, etag)) => Response::Done { persisted, etag },
            Ok(Committed::Missing(chunks)) => Response::Missing { chunks },
            Err(e) => error_response(&e),
        },
        Request::Delete { path } => node
            .handle_delete(&path)
            .await
            .map_or_else(|e| error_response(&e), |()| Response::Done { persisted: true, etag: String::new() }),
        Request::Locate { path } => {
            node.handle_locate(&path).await.map_or_else(|e| error_response(&e), Response::Located)
        }
        Request::Mkdir { path } => node
            .handle_mkdir(&path)
            .await
            .map_or_else(|e| error_response(&e), |()| Response::Done { persisted: true, etag: String::new() }),
        Request::Rmdir { path } => node
            .handle_rmdir(&path)
            .await
            .map_or_else(|e| error_response(&e), |()| Response::Done { persisted: true, etag: String::new() }),
        Request::Rename { from, to } => node
            .handle_rename(&from, &to)
            .await
            .map_or_else(|e| error_response(&e), |persisted| Response::Done { persisted, etag: String::new() }),
        Request::Hold { path, seq, mtime_ms, len } => match from_node(&peer) {
            Err(e) => error_response(&e),
            Ok(()) => node
                .handle_hold(peer.id.as_str(), &path, seq, mtime_ms, len, &mut recv)
                .await
                .map_or_else(|e| error_response(&e), |()| Response::Done { persisted: false, etag: String::new() }),
        },
        Request::Release { path, seq } => match from_node(&peer).and_then(|()| node.handle_release(&path, seq)) {
            Err(e) => error_response(&e),
            Ok(()) => Response::Done { persisted: true, etag: String::new() },
        },
        Request::Changed { path } => match from_node(&peer).and_then(|()| node.handle_changed(&path)) {
            Err(e) => error_response(&e),
            Ok(()) => Response::Done { persisted: true, etag: String::new() },
        },
        Request::Announce { reader, append, entries } => {
            match node.handle_announce(peer.id.as_str(), &reader, append, &entries) {
                Err(e) => error_response(&e),
                Ok(_) => Response::Done { persisted: true, etag: String::new() },
            }
        }
        Request::Status => Response::StatusOk(node.handle_status()),
        Request::Peek { path, page, etag } => match node.handle_peek(&path, page, &etag).await {
            Err(e) => error_response(&e),
            Ok(bytes) => {
                wire::write_response(&mut send, &Response::Data { len: bytes.len() as u64 }).await?;
                send.write_chunk(bytes).await?;
                send.finish()?;
                node.metrics.observe(op, t0.elapsed().as_secs_f64());
                return Ok(());
            }
        },
        Request::Warm { path, first, count } => node
            .handle_warm(&path, first, count)
            .await
            .map_or_else(|e| error_response(&e), |(objects, bytes)| Response::LoadOk { objects, bytes }),
        Request::Load { path } => node
            .handle_load(&path)
            .await
            .map_or_else(|e| error_response(&e), |(objects, bytes)| Response::LoadOk { objects, bytes }),
        Request::ReadRange { path, offset, len } => {
            match node.handle_read(&path, offset, len).await.inspect(|(n, stream)| {
                node.on_read(&reader, &path, &stream.info, offset, *n);
            }) {
                Err(e) => error_response(&e),
                Ok((n, mut stream)) => {
                    wire::write_response(&mut send, &Response::Data { len: n }).await?;
                    while let Some(piece) = stream.next().await {
                        match piece {
                            Ok(b) => send.write_chunk(b).await?,
                            Err(e) => {
                                tracing::warn!(%path, error = %e, "read failed mid-stream");
                                let _ = send.reset(quinn::VarInt::from_u32(u32::from(e.code() as u16)));
                                return Ok(());
                            }
                        }
                    }
                    send.finish()?;
                    node.metrics.observe(op, t0.elapsed().as_secs_f64());
                    return Ok(());
                }
            }
        }
    };
    wire::write_response(&mut send, &resp).await?;
    send.finish()?;
    node.metrics.observe(op, t0.elapsed().as_secs_f64());
    Ok(())
}

async fn handle_connection(node: Arc<CacheNode>, incoming: quinn::Incoming) {
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(error = %e, "refused connection");
            return;
        }
    };
    let peer = match tls::peer_identity(&conn) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(remote = %conn.remote_address(), error = %e, "peer without a usable identity");
            conn.close(quinn::VarInt::from_u32(ErrorCode::Unauthorized as u32), b"no identity");
            return;
        }
    };
    tracing::debug!(remote = %conn.remote_address(), %peer, "connection");
    let reader: Arc<str> = format!("{peer}@{}", conn.stable_id()).into();
    let peer = Arc::new(peer);
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                let (node, peer, reader) = (node.clone(), peer.clone(), reader.clone());
                tokio::spawn(async move {
                    if let Err(e) = handle_stream(node, peer, reader, send, recv).await {
                        tracing::debug!(error = %e, "stream ended with an error");
                    }
                });
            }
            Err(_) => return,
        }
    }
}

/// Serves the block protocol on `endpoint` until it is closed.
pub async fn serve(endpoint: quinn::Endpoint, node: Arc<CacheNode>) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(handle_connection(node.clone(), incoming));
    }
}
