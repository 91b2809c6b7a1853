//! A cluster-aware client for the block protocol.
//!
//! [`NodeConn`] is one QUIC connection to one node; every request opens its
//! own bidirectional stream, so a slow read never blocks another.
//! [`Cluster`] holds the configured node list, computes each page's owner
//! with the consistent-hash [`Ring`] (no master on the data path), reads
//! several pages in flight, and falls back to the next owner when a node
//! cannot serve.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

use crate::codec::{ChunkCodec, ChunkHash, DirEntry, EntryKind, ObjectInfo, PageRun, Request, Response};
use crate::error::{ErrorCode, ProtocolError};
use crate::membership::{self, Membership};
use crate::ring::{page_key, Ring, DEFAULT_VNODES};
use crate::tls::CLOUD_SERVER_NAME;
use crate::wire;

/// Pages requested concurrently by one sequential read.
pub const DEFAULT_WINDOW: usize = 8;
/// QUIC connections a client keeps to each node; pages are spread over them.
/// One connection's packet processing runs on one task (one core). On the
/// 2-core machines ferry is benchmarked on, a second connection lowered warm
/// throughput (815 vs 940 MB/s, both ends in one process), so the default is
/// one; many-core readers may gain from more.
pub const CONNECTIONS_PER_NODE: usize = 1;
/// Bytes a reader asks the store for at once when it reads it directly
/// and no node told it the cluster's page size.
pub const DIRECT_PAGE_SIZE: u64 = 4 << 20;
/// How long to wait for a node to complete the handshake before trying the next one.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// One connection to one node, after the `Hello` exchange.
#[derive(Debug, Clone)]
pub struct NodeConn {
    conn: quinn::Connection,
    /// The node's id as it announced itself.
    pub node_id: String,
    /// The node's page size in bytes.
    pub page_size: u32,
    /// The node's inbox for [`NodeConn::adopt`], when the node runs on this
    /// host (its token file was found there); `None` otherwise.
    pub inbox: Option<std::path::PathBuf>,
    /// Owners per page of the mounts that set theirs, as the node told.
    pub replicas: Vec<(String, u32)>,
}

/// How a write ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Whether the object store already has the bytes (else the node's journal does).
    pub persisted: bool,
    /// The object's version tag afterwards.
    pub etag: String,
    /// Whether the node took the local file over instead of receiving its bytes.
    pub adopted: bool,
}

/// Whether `inbox` on this host holds the node's token: then the node and
/// this client share the directory.
fn local_inbox(inbox: &str, token: &str) -> Option<std::path::PathBuf> {
    if inbox.is_empty() || token.is_empty() {
        return None;
    }
    let dir = std::path::PathBuf::from(inbox);
    let found = std::fs::read_to_string(dir.join(INBOX_TOKEN_FILE)).ok()?;
    (found.trim() == token).then_some(dir)
}

/// The file in a node's inbox that holds its token.
pub const INBOX_TOKEN_FILE: &str = ".node";

fn unexpected(resp: Response) -> ProtocolError {
    match resp {
        Response::Error { code, message } => ProtocolError::Remote { code, message },
        other => ProtocolError::Unexpected(format!("{other:?}")),
    }
}

impl NodeConn {
    /// Connects to `addr` and exchanges `Hello`.
    pub async fn connect(endpoint: &quinn::Endpoint, addr: SocketAddr) -> Result<NodeConn, ProtocolError> {
        let conn = endpoint.connect(addr, CLOUD_SERVER_NAME)?.await?;
        let mut nc = NodeConn { conn, node_id: String::new(), page_size: 0, inbox: None, replicas: Vec::new() };
        match nc.call(&Request::Hello { version: crate::PROTOCOL_VERSION }).await?.0 {
            Response::HelloOk { version, node_id, page_size, inbox, inbox_token, replicas } => {
                if version != crate::PROTOCOL_VERSION {
                    return Err(ProtocolError::Remote {
                        code: ErrorCode::VersionMismatch,
                        message: format!("node speaks version {version}, this client {}", crate::PROTOCOL_VERSION),
                    });
                }
                if page_size == 0 {
                    return Err(ProtocolError::Malformed("node announced page size 0".into()));
                }
                nc.node_id = node_id;
                nc.page_size = page_size;
                nc.inbox = local_inbox(&inbox, &inbox_token);
                nc.replicas = replicas;
                Ok(nc)
            }
            other => Err(unexpected(other)),
        }
    }

    /// Transport statistics of the connection (MTU, losses, congestion).
    pub fn stats(&self) -> quinn::ConnectionStats {
        self.conn.stats()
    }

    /// Whether the connection has closed.
    pub fn is_closed(&self) -> bool {
        self.conn.close_reason().is_some()
    }

    async fn call(&self, req: &Request) -> Result<(Response, quinn::RecvStream), ProtocolError> {
        let (mut send, mut recv) = self.conn.open_bi().await?;
        wire::write_request(&mut send, req).await?;
        send.finish()?;
        let resp = wire::read_response(&mut recv).await?;
        Ok((resp, recv))
    }

    /// Metadata of `path`.
    pub async fn stat(&self, path: &str) -> Result<ObjectInfo, ProtocolError> {
        match self.call(&Request::Stat { path: path.into() }).await?.0 {
            Response::StatOk(info) => Ok(info),
            other => Err(unexpected(other)),
        }
    }

    /// Entries directly under `path`.
    pub async fn list(&self, path: &str) -> Result<Vec<DirEntry>, ProtocolError> {
        match self.call(&Request::List { path: path.into() }).await?.0 {
            Response::ListOk(entries) => Ok(entries),
            other => Err(unexpected(other)),
        }
    }

    /// Bytes `[offset, offset + len)` of `path` (fewer at the end of the
    /// object), in the pieces they arrived in (no copy).
    pub async fn read_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<Bytes>, ProtocolError> {
        let (resp, mut recv) = self.call(&Request::ReadRange { path: path.into(), offset, len }).await?;
        match resp {
            Response::Data { len: n } => {
                if n > len {
                    return Err(ProtocolError::Malformed(format!("asked for {len} bytes, node announced {n}")));
                }
                let mut chunks: Vec<Bytes> = Vec::new();
                let mut got = 0u64;
                while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
                    got += chunk.bytes.len() as u64;
                    if got > n {
                        return Err(ProtocolError::Malformed(format!("node announced {n} bytes and sent more")));
                    }
                    chunks.push(chunk.bytes);
                }
                if got != n {
                    return Err(ProtocolError::Malformed(format!("node announced {n} bytes and sent {got}")));
                }
                Ok(chunks)
            }
            other => Err(unexpected(other)),
        }
    }

    /// Writes `len` bytes from `body` as the object `path`; returns whether
    /// the object store already has them (else the node's journal does).
    pub async fn put<R>(&self, path: &str, len: u64, body: &mut R) -> Result<Written, ProtocolError>
    where
        R: tokio::io::AsyncRead + Unpin,
    {
        let (mut send, mut recv) = self.conn.open_bi().await?;
        wire::write_request(&mut send, &Request::Put { path: path.into(), len }).await?;
        let copied = match tokio::io::copy(&mut tokio::io::AsyncReadExt::take(body, len), &mut send).await {
            Ok(n) => n,
            // The node may refuse the write before reading its body: its answer says why.
            Err(e) => {
                return match wire::read_response(&mut recv).await {
                    Ok(Response::Error { code, message }) => Err(ProtocolError::Remote { code, message }),
                    _ => Err(ProtocolError::Io(e)),
                };
            }
        };
        if copied != len {
            let _ = send.reset(quinn::VarInt::from_u32(ErrorCode::InvalidInput as u32));
            return Err(ProtocolError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{path}: source ended after {copied} of {len} bytes"),
            )));
        }
        send.finish()?;
        match wire::read_response(&mut recv).await? {
            Response::Done { persisted, etag } => Ok(Written { persisted, etag, adopted: false }),
            other => Err(unexpected(other)),
        }
    }

    /// Hands the file `name` in this node's inbox (see [`NodeConn::inbox`])
    /// over as the object `path`; `len` is its size. Nothing is copied: the
    /// node links the file into its journal, so the caller must not change
    /// it afterwards.
    pub async fn adopt(&self, path: &str, name: &str, len: u64) -> Result<Written, ProtocolError> {
        match self.call(&Request::Adopt { path: path.into(), file: name.into(), len }).await?.0 {
            Response::Done { persisted, etag } => Ok(Written { persisted, etag, adopted: true }),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes `path`.
    pub async fn delete(&self, path: &str) -> Result<(), ProtocolError> {
        match self.call(&Request::Delete { path: path.into() }).await?.0 {
            Response::Done { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Renames `from` to `to`; returns whether the object store already has it.
    pub async fn rename(&self, from: &str, to: &str) -> Result<bool, ProtocolError> {
        match self.call(&Request::Rename { from: from.into(), to: to.into() }).await?.0 {
            Response::Done { persisted, .. } => Ok(persisted),
            other => Err(unexpected(other)),
        }
    }

    /// Where persisted object `path` lives on this node's file system.
    pub async fn locate(&self, path: &str) -> Result<crate::codec::Located, ProtocolError> {
        match self.call(&Request::Locate { path: path.into() }).await?.0 {
            Response::Located(l) => Ok(l),
            other => Err(unexpected(other)),
        }
    }

    /// Makes directory `path` in the store.
    pub async fn mkdir(&self, path: &str) -> Result<(), ProtocolError> {
        match self.call(&Request::Mkdir { path: path.into() }).await?.0 {
            Response::Done { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Removes empty directory `path` from the store.
    pub async fn rmdir(&self, path: &str) -> Result<(), ProtocolError> {
        match self.call(&Request::Rmdir { path: path.into() }).await?.0 {
            Response::Done { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Tells a node that `path` changed in the store (nodes only).
    pub async fn changed(&self, path: &str) -> Result<(), ProtocolError> {
        match self.call(&Request::Changed { path: path.into() }).await?.0 {
            Response::Done { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Tells the node that `reader` will read `runs` in this order
    /// (replacing its previous order, or with `append` after it).
    pub async fn announce(&self, reader: &str, append: bool, runs: Vec<PageRun>) -> Result<(), ProtocolError> {
        match self.call(&Request::Announce { reader: reader.into(), append, entries: runs }).await?.0 {
            Response::Done { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// The chunks among `chunks` the node does not hold.
    pub async fn has_chunks(&self, chunks: &[ChunkHash]) -> Result<Vec<ChunkHash>, ProtocolError> {
        match self.call(&Request::HasChunks { chunks: chunks.to_vec() }).await?.0 {
            Response::Missing { chunks } => Ok(chunks),
            other => Err(unexpected(other)),
        }
    }

    /// Sends one chunk: `data` is its encoding per `codec`, decoding to
    /// `raw_len` bytes with BLAKE3 `hash`.
    pub async fn put_chunk(
        &self,
        hash: &ChunkHash,
        raw_len: u32,
        codec: ChunkCodec,
        data: Bytes,
    ) -> Result<(), ProtocolError> {
        let len = u32::try_from(data.len()).map_err(|_| ProtocolError::Malformed("chunk over 4 GiB".into()))?;
        let (mut send, mut recv) = self.conn.open_bi().await?;
        wire::write_request(&mut send, &Request::PutChunk { hash: *hash, raw_len, codec, len }).await?;
        if let Err(e) = send.write_chunk(data).await {
            return match wire::read_response(&mut recv).await {
                Ok(Response::Error { code, message }) => Err(ProtocolError::Remote { code, message }),
                _ => Err(ProtocolError::Io(e.into())),
            };
        }
        send.finish()?;
        match wire::read_response(&mut recv).await? {
            Response::Done { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Writes `path` as the concatenation of `chunks`; returns the chunks the
    /// node lacks (then nothing was written), or none once it is durable.
    pub async fn commit(&self, path: &str, size: u64, chunks: &[ChunkHash]) -> Result<Vec<ChunkHash>, ProtocolError> {
        match self.call(&Request::Commit { path: path.into(), size, chunks: chunks.to_vec() }).await?.0 {
            Response::Done { .. } => Ok(Vec::new()),
            Response::Missing { chunks } => Ok(chunks),
            other => Err(unexpected(other)),
        }
    }

    /// Gives the node a copy of this node's journal entry `seq` of `path`
    /// (`len` bytes from `body`); returns once the copy is durable there.
    pub async fn hold<R>(
        &self,
        path: &str,
        seq: u64,
        mtime_ms: i64,
        len: u64,
        body: &mut R,
    ) -> Result<(), ProtocolError>
    where
        R: tokio::io::AsyncRead + Unpin,
    {
        let (mut send, mut recv) = self.conn.open_bi().await?;
        wire::write_request(&mut send, &Request::Hold { path: path.into(), seq, mtime_ms, len }).await?;
        let copied = tokio::io::copy(&mut tokio::io::AsyncReadExt::take(body, len), &mut send).await?;
        if copied != len {
            let _ = send.reset(quinn::VarInt::from_u32(ErrorCode::InvalidInput as u32));
            return Err(ProtocolError::Malformed(format!("{path}: journal entry ended after {copied} of {len} bytes")));
        }
        send.finish()?;
        match wire::read_response(&mut recv).await? {
            Response::Done { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Tells a holder that write `seq` of `path` is in the store now.
    pub async fn release(&self, path: &str, seq: u64) -> Result<(), ProtocolError> {
        match self.call(&Request::Release { path: path.into(), seq }).await?.0 {
            Response::Done { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// What the node holds.
    pub async fn status(&self) -> Result<crate::codec::NodeStatus, ProtocolError> {
        match self.call(&Request::Status).await?.0 {
            Response::StatusOk(st) => Ok(st),
            other => Err(unexpected(other)),
        }
    }

    /// Page `page` of `path` at version `etag` if the node has it cached.
    pub async fn peek(&self, path: &str, page: u64, etag: &str) -> Result<Option<Bytes>, ProtocolError> {
        let (resp, mut recv) = self.call(&Request::Peek { path: path.into(), page, etag: etag.into() }).await?;
        match resp {
            Response::Data { len } => {
                let bytes = recv.read_to_end(usize::try_from(len).unwrap_or(usize::MAX).saturating_add(1)).await?;
                if bytes.len() as u64 != len {
                    return Err(ProtocolError::Malformed(format!("peek announced {len} bytes, sent {}", bytes.len())));
                }
                Ok(Some(Bytes::from(bytes)))
            }
            Response::Error { code: ErrorCode::NotFound, .. } => Ok(None),
            other => Err(unexpected(other)),
        }
    }

    /// Asks the node to bring pages `[first, first + count)` of `path` into
    /// its cache; returns the pages it fetched (those it held are skipped)
    /// and their bytes.
    pub async fn warm(&self, path: &str, first: u64, count: u64) -> Result<(u64, u64), ProtocolError> {
        match self.call(&Request::Warm { path: path.into(), first, count }).await?.0 {
            Response::LoadOk { objects, bytes } => Ok((objects, bytes)),
            other => Err(unexpected(other)),
        }
    }

    /// Asks the node to bring `path` into its cache.
    pub async fn load(&self, path: &str) -> Result<(u64, u64), ProtocolError> {
        match self.call(&Request::Load { path: path.into() }).await?.0 {
            Response::LoadOk { objects, bytes } => Ok((objects, bytes)),
            other => Err(unexpected(other)),
        }
    }
}

/// How long a request waits for an owner that has never answered this
/// client before it is also sent to the next owner.
pub const HEDGE_FIRST: Duration = Duration::from_millis(300);
/// Bounds of the hedging deadline derived from a node's answer times.
pub const HEDGE_MIN: Duration = Duration::from_millis(150);
/// See [`HEDGE_MIN`].
pub const HEDGE_MAX: Duration = Duration::from_secs(1);

/// What a client has seen of one member.
#[derive(Debug, Default)]
struct Health {
    /// Failures (connection refused or lost, no answer in time) in a row.
    failures: u32,
    /// The member is asked last until then.
    avoid_until: Option<Instant>,
    /// Smoothed answer time and its mean deviation, in seconds (as TCP
    /// estimates a retransmission timeout, RFC 6298).
    srtt: Option<f64>,
    rttvar: f64,
}

#[derive(Debug)]
struct Member {
    id: String,
    addr: String,
    /// Connections to the member; pages are spread over them.
    conns: Vec<Mutex<Option<NodeConn>>>,
    health: std::sync::Mutex<Health>,
}

impl Member {
    fn new(m: &membership::Member) -> Member {
        Member {
            id: m.id.clone(),
            addr: m.addr.clone(),
            conns: (0..CONNECTIONS_PER_NODE).map(|_| Mutex::new(None)).collect(),
            health: std::sync::Mutex::new(Health::default()),
        }
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().expect("member health lock poisoned")
    }

    /// Datagrams received so far on the member's open connection for
    /// `lane` (`None` without one, or while it is being opened).
    fn received(&self, lane: usize) -> Option<u64> {
        let slot = self.conns[lane % self.conns.len()].try_lock().ok()?;
        slot.as_ref().filter(|c| !c.is_closed()).map(|c| c.stats().udp_rx.datagrams)
    }

    fn avoided(&self) -> bool {
        self.health().avoid_until.is_some_and(|t| Instant::now() < t)
    }

    /// How long to wait for this member before asking the next owner too.
    fn hedge_after(&self) -> Duration {
        let h = self.health();
        match h.srtt {
            None => HEDGE_FIRST,
            Some(s) => Duration::from_secs_f64(s + 4.0 * h.rttvar).clamp(HEDGE_MIN, HEDGE_MAX),
        }
    }

    fn answered(&self, took: Duration) {
        let mut h = self.health();
        let t = took.as_secs_f64();
        match h.srtt {
            None => {
                h.srtt = Some(t);
                h.rttvar = t / 2.0;
            }
            Some(s) => {
                h.rttvar = 0.75 * h.rttvar + 0.25 * (s - t).abs();
                h.srtt = Some(0.875 * s + 0.125 * t);
            }
        }
        h.failures = 0;
        h.avoid_until = None;
    }

    /// The member failed or did not answer in time: ask it last for a
    /// while, longer after each failure in a row, with jitter.
    fn failed(&self) {
        let mut h = self.health();
        h.failures = h.failures.saturating_add(1);
        h.avoid_until = Some(Instant::now() + membership::backoff(h.failures));
    }
}

/// The ring over one member list.
#[derive(Debug)]
struct Layout {
    epoch: u64,
    members: Vec<Arc<Member>>,
    ring: Ring,
}

impl Layout {
    fn new(view: &membership::View, old: Option<&Layout>) -> Layout {
        let members: Vec<Arc<Member>> = view
            .members
            .iter()
            .map(|m| {
                old.and_then(|o| o.members.iter().find(|x| x.id == m.id && x.addr == m.addr).cloned())
                    .unwrap_or_else(|| Arc::new(Member::new(m)))
            })
            .collect();
        let weights: Vec<(&str, u32)> = view.members.iter().map(|m| (m.id.as_str(), m.capacity)).collect();
        Layout { epoch: view.epoch, members, ring: Ring::weighted(&weights, DEFAULT_VNODES) }
    }
}

/// Reads straight from the object stores behind the cluster, for when no
/// cache node answers (`[direct]` in client.toml; off by default). An
/// implementation answers only for data the store holds whole: a path with
/// writes still pending on the nodes is `Unavailable`, never its older
/// version; and it caps its requests in flight, so a fleet of readers
/// does not fall on the store at once.
pub trait Direct: std::fmt::Debug + Send + Sync {
    /// Metadata of `path`.
    fn stat<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<ObjectInfo, ProtocolError>>;
    /// Entries directly under `path`.
    fn list<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Vec<DirEntry>, ProtocolError>>;
    /// Bytes `[offset, offset + len)` of `path` (fewer at its end).
    fn read_range<'a>(
        &'a self,
        path: &'a str,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'a, Result<Vec<Bytes>, ProtocolError>>;
}

/// A client over the cluster's members: a static list, or one kept
/// current from etcd (the ring is rebuilt on every change, no restart).
#[derive(Debug, Clone)]
pub struct Cluster {
    endpoint: quinn::Endpoint,
    membership: Membership,
    layout: Arc<std::sync::RwLock<Arc<Layout>>>,
    window: usize,
    replicas: usize,
    /// Owners per page of the mounts that set their own, as the nodes tell.
    mount_replicas: Arc<std::sync::RwLock<Vec<(String, usize)>>>,
    direct: Option<Arc<dyn Direct>>,
}

impl Cluster {
    /// A client over `nodes` (`HOST:PORT` or `ID@HOST:PORT` each).
    /// Connections open on first use.
    pub fn new(endpoint: quinn::Endpoint, nodes: &[String]) -> Result<Cluster, ProtocolError> {
        if nodes.is_empty() {
            return Err(ProtocolError::connection("no cache nodes configured"));
        }
        Ok(Cluster::over(endpoint, Membership::fixed(membership::parse_static(nodes)?)))
    }

    /// A client over whatever members `membership` lists from moment to moment.
    pub fn over(endpoint: quinn::Endpoint, membership: Membership) -> Cluster {
        let layout = Layout::new(&membership.view(), None);
        Cluster {
            endpoint,
            membership,
            layout: Arc::new(std::sync::RwLock::new(Arc::new(layout))),
            window: DEFAULT_WINDOW,
            replicas: 1,
            mount_replicas: Arc::default(),
            direct: None,
        }
    }

    /// Reads from `direct` (the object stores themselves) when no owner of
    /// the data answers.
    pub fn with_direct(mut self, direct: Arc<dyn Direct>) -> Cluster {
        self.direct = Some(direct);
        self
    }

    /// Sets how many pages one read keeps in flight.
    pub fn with_window(mut self, window: usize) -> Cluster {
        self.window = window.max(1);
        self
    }

    /// Sets how many owners each page has (reads are spread over them and
    /// go to any healthy one); 1 by default.
    pub fn with_replicas(mut self, replicas: usize) -> Cluster {
        self.replicas = replicas.max(1);
        self
    }

    /// Owners per page where the path's mount does not set its own.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// Owners per page of `path`: its mount's `replicas` as the nodes tell
    /// (the longest mount prefix holding the path), else [`Cluster::replicas`].
    pub fn replicas_for(&self, path: &str) -> usize {
        let mounts = self.mount_replicas.read().expect("replicas lock poisoned");
        mounts
            .iter()
            .filter(|(m, _)| {
                m == "/" || path.strip_prefix(m.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
            .max_by_key(|(m, _)| m.len())
            .map_or(self.replicas, |(_, n)| (*n).max(1))
    }

    /// The member list this client follows.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    fn layout(&self) -> Arc<Layout> {
        let view = self.membership.view();
        {
            let cur = self.layout.read().expect("layout lock poisoned");
            if cur.epoch == view.epoch {
                return cur.clone();
            }
        }
        let mut cur = self.layout.write().expect("layout lock poisoned");
        if cur.epoch != view.epoch {
            let next = Layout::new(&view, Some(&cur));
            tracing::info!(
                members = %view.members.iter().map(|m| m.id.as_str()).collect::<Vec<_>>().join(","),
                source = %view.source,
                "cluster membership changed"
            );
            *cur = Arc::new(next);
        }
        cur.clone()
    }

    /// Member ids owning page `page` of `path`, in preference order (the
    /// first [`Cluster::replicas`] are its replicas).
    pub fn owners(&self, path: &str, page: u64) -> Vec<String> {
        let layout = self.layout();
        layout.ring.owners(&page_key(path, page)).into_iter().map(|i| layout.members[i].id.clone()).collect()
    }

    /// Each member's share of the ring, by id.
    pub fn shares(&self) -> Vec<(String, f64)> {
        let layout = self.layout();
        layout.members.iter().map(|m| m.id.clone()).zip(layout.ring.shares()).collect()
    }

    /// The members to ask for `key`, best first: its `replicas` (rotated by
    /// `spread`, so reads of consecutive pages go to different replicas),
    /// then the other owners; members that failed lately go last.
    fn order(&self, layout: &Layout, key: &[u8], spread: u64, replicas: usize) -> Vec<Arc<Member>> {
        let owners = layout.ring.owners(key);
        let r = replicas.min(owners.len()).max(1);
        let mut order: Vec<Arc<Member>> = Vec::with_capacity(owners.len());
        if !owners.is_empty() {
            let rot = (spread % r as u64) as usize;
            order.extend(owners[..r].iter().cycle().skip(rot).take(r).map(|&i| layout.members[i].clone()));
            order.extend(owners[r..].iter().map(|&i| layout.members[i].clone()));
        }
        order.sort_by_key(|m| m.avoided());
        order
    }

    async fn conn(&self, m: &Member, lane: usize) -> Result<NodeConn, ProtocolError> {
        let mut slot = m.conns[lane % m.conns.len()].lock().await;
        if let Some(c) = slot.as_ref() {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let addr = tokio::net::lookup_host(&m.addr)
            .await
            .map_err(|e| ProtocolError::connection_from(format!("resolve {}: {e}", m.addr), e))?
            .next()
            .ok_or_else(|| ProtocolError::connection(format!("{} resolves to no address", m.addr)))?;
        let attempt = tokio::time::timeout(CONNECT_TIMEOUT, NodeConn::connect(&self.endpoint, addr)).await;
        let c = match attempt {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                return Err(match e {
                    ProtocolError::Connection { message, source } => {
                        ProtocolError::Connection { message: format!("{} ({}): {message}", m.id, m.addr), source }
                    }
                    other => other,
                });
            }
            Err(_) => {
                return Err(ProtocolError::connection(format!(
                    "{} ({}): no answer within {CONNECT_TIMEOUT:?}",
                    m.id, m.addr
                )));
            }
        };
        {
            let mut mounts = self.mount_replicas.write().expect("replicas lock poisoned");
            *mounts = c.replicas.iter().map(|(m, n)| (m.clone(), *n as usize)).collect();
        }
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Notes that member `id` failed or did not answer in time: it is asked
    /// last for a while.
    pub fn failed(&self, id: &str) {
        if let Some(m) = self.layout().members.iter().find(|m| m.id == id) {
            m.failed();
        }
    }

    /// Datagrams received so far from member `id` on its first connection
    /// (`None` when there is none open): still growing, the member is alive.
    pub fn received(&self, id: &str) -> Option<u64> {
        self.layout().members.iter().find(|m| m.id == id)?.received(0)
    }

    /// Whether member `id` answered lately (not failed or too slow since).
    pub fn healthy(&self, id: &str) -> bool {
        self.layout().members.iter().any(|m| m.id == id && !m.avoided())
    }

    /// A connection to the member with id `id`.
    pub async fn node(&self, id: &str) -> Result<NodeConn, ProtocolError> {
        let layout = self.layout();
        let m = layout
            .members
            .iter()
            .find(|m| m.id == id)
            .ok_or_else(|| ProtocolError::connection(format!("{id} is not a member of the cluster")))?;
        let started = Instant::now();
        let c = self.conn(m, 0).await;
        match &c {
            Ok(_) => m.answered(started.elapsed()),
            Err(_) => m.failed(),
        }
        c
    }

    fn no_members(&self) -> ProtocolError {
        ProtocolError::connection(format!("no cache nodes: {} lists none", self.membership.view().source))
    }

    /// Runs `op` against the owners of `key` in preference order until one
    /// answers. For writes: each owner is asked only after the one before
    /// failed.
    async fn with_owner<T, F, Fut>(&self, key: &[u8], lane: usize, op: F) -> Result<T, ProtocolError>
    where
        F: Fn(NodeConn) -> Fut,
        Fut: std::future::Future<Output = Result<T, ProtocolError>>,
    {
        let layout = self.layout();
        let mut last = None;
        for m in self.order(&layout, key, 0, 1) {
            let (m, took, r) = self.attempt(m, lane, &op).await;
            if let Some(done) = settle(&m, took, r, &mut last) {
                return done;
            }
        }
        Err(last.unwrap_or_else(|| self.no_members()))
    }

    /// `op` on a connection to `m`, and how long it took.
    async fn attempt<T, F, Fut>(
        &self,
        m: Arc<Member>,
        lane: usize,
        op: &F,
    ) -> (Arc<Member>, Duration, Result<T, ProtocolError>)
    where
        F: Fn(NodeConn) -> Fut,
        Fut: std::future::Future<Output = Result<T, ProtocolError>>,
    {
        let started = Instant::now();
        let r = match self.conn(&m, lane).await {
            Ok(c) => op(c).await,
            Err(e) => Err(e),
        };
        (m, started.elapsed(), r)
    }

    /// Runs the read `op` against the owners of `key`: when an owner does
    /// not answer within a deadline derived from its answer times so far,
    /// the next owner is asked too and the first answer wins (a killed or
    /// partitioned node costs a reader that deadline, not a timeout).
    /// `spread` rotates the first `replicas` owners (see [`Cluster::order`]).
    async fn hedged<T, F, Fut>(
        &self,
        key: &[u8],
        (spread, replicas): (u64, usize),
        lane: usize,
        op: F,
    ) -> Result<T, ProtocolError>
    where
        F: Fn(NodeConn) -> Fut,
        Fut: std::future::Future<Output = Result<T, ProtocolError>>,
    {
        let layout = self.layout();
        let order = self.order(&layout, key, spread, replicas);
        let mut running = futures::stream::FuturesUnordered::new();
        let mut next = 0;
        let mut last = None;
        // Datagrams the latest owner asked had sent when last looked at.
        let mut seen = None;
        loop {
            if running.is_empty() {
                let Some(m) = order.get(next) else {
                    return Err(last.unwrap_or_else(|| self.no_members()));
                };
                seen = m.received(lane);
                running.push(self.attempt(m.clone(), lane, &op));
                next += 1;
            }
            let hedge = order.get(next).map(|_| order[next - 1].hedge_after());
            tokio::select! {
                Some((m, took, r)) = running.next() => {
                    if let Some(done) = settle(&m, took, r, &mut last) {
                        return done;
                    }
                }
                () = tokio::time::sleep(hedge.unwrap_or_default()), if hedge.is_some() => {
                    let slow = &order[next - 1];
                    // A node still sending on its connection is alive, only
                    // busy (a saturated link): asking another owner too
                    // would add to the load, not cut the wait.
                    let now = slow.received(lane);
                    if now.is_some() && now > seen {
                        seen = now;
                        continue;
                    }
                    tracing::debug!(node = %slow.id, after = ?hedge, "no answer in time; asking the next owner too");
                    slow.failed();
                    seen = order[next].received(lane);
                    running.push(self.attempt(order[next].clone(), lane, &op));
                    next += 1;
                }
            }
        }
    }

    /// Transport statistics of every open connection, by node.
    pub async fn stats(&self) -> Vec<(String, quinn::ConnectionStats)> {
        let mut out = Vec::new();
        for m in self.layout().members.iter() {
            for slot in &m.conns {
                if let Some(c) = slot.lock().await.as_ref() {
                    out.push((m.addr.clone(), c.stats()));
                }
            }
        }
        out
    }
    /// Page size announced by the nodes.
    /// Without any node to ask, a reader reading the store directly uses
    /// [`DIRECT_PAGE_SIZE`].
    pub async fn page_size(&self, path: &str) -> Result<u64, ProtocolError> {
        let key = page_key(path, 0);
        let direct = |_: &dyn Direct| -> BoxFuture<'_, _> { Box::pin(async { Ok(DIRECT_PAGE_SIZE) }) };
        self.or_direct(&key, (0, 1), 0, |c| async move { Ok(u64::from(c.page_size)) }, direct).await
    }

    /// Metadata of `path`.
    pub async fn stat(&self, path: &str) -> Result<ObjectInfo, ProtocolError> {
        let key = page_key(path, 0);
        self.or_direct(&key, (0, 1), 0, |c| async move { c.stat(path).await }, |d| d.stat(path)).await
    }

    /// Entries directly under `path`.
    pub async fn list(&self, path: &str) -> Result<Vec<DirEntry>, ProtocolError> {
        let key = page_key(path, 0);
        self.or_direct(&key, (0, 1), 0, |c| async move { c.list(path).await }, |d| d.list(path)).await
    }

    /// A read from the owners of `key` ([`Cluster::hedged`]); when none of
    /// them can be reached (all known down, or every attempt failed to
    /// connect) and direct reads are configured, from the store itself.
    async fn or_direct<'d, T, F, Fut>(
        &'d self,
        key: &[u8],
        spread: (u64, usize),
        lane: usize,
        op: F,
        direct: impl FnOnce(&'d dyn Direct) -> BoxFuture<'d, Result<T, ProtocolError>>,
    ) -> Result<T, ProtocolError>
    where
        F: Fn(NodeConn) -> Fut,
        Fut: std::future::Future<Output = Result<T, ProtocolError>>,
    {
        let Some(d) = self.direct.as_deref() else {
            return self.hedged(key, spread, lane, op).await;
        };
        let layout = self.layout();
        // Owners every recent attempt failed on are not waited for again
        // until their backoff ends.
        if layout.members.iter().any(|m| !m.avoided()) {
            match self.hedged(key, spread, lane, op).await {
                Err(e) if e.is_connection() => {
                    tracing::debug!(error = %e, "no cache node answers; reading the store directly")
                }
                done => return done,
            }
        }
        direct(d).await
    }

    /// Tells the nodes that cache these pages that `reader` will read them
    /// in this order: each replica owner of a page is told of the pages it
    /// owns, in order, so it evicts by the order (Belady). Orders longer
    /// than a frame go in several requests. Members that could not be
    /// told are returned with the error (the order is advice: reads work
    /// without it).
    pub async fn announce(&self, reader: &str, runs: &[PageRun]) -> Vec<(String, ProtocolError)> {
        let layout = self.layout();
        let mut per: Vec<Vec<PageRun>> = vec![Vec::new(); layout.members.len()];
        for run in runs {
            let r = self.replicas_for(&run.path);
            for page in run.first..run.end {
                for &i in layout.ring.owners(&page_key(&run.path, page)).iter().take(r) {
                    let mine = &mut per[i];
                    match mine.last_mut() {
                        Some(last) if last.path == run.path && last.end == page => last.end = page + 1,
                        _ => mine.push(PageRun { path: run.path.clone(), first: page, end: page + 1 }),
                    }
                }
            }
        }
        // Room for the frame's header, the reader's name and the count.
        let budget = crate::codec::MAX_FRAME as usize - 64 - reader.len();
        let sends = layout.members.iter().zip(per).filter(|(m, _)| !m.avoided()).map(|(m, runs)| async move {
            let mut batches: Vec<Vec<PageRun>> = vec![Vec::new()];
            let mut size = 0;
            for run in runs {
                if size + run.encoded_len() > budget {
                    batches.push(Vec::new());
                    size = 0;
                }
                size += run.encoded_len();
                batches.last_mut().expect("a batch").push(run);
            }
            let conn = self.conn(m, 0).await.map_err(|e| (m.id.clone(), e))?;
            for (i, batch) in batches.into_iter().enumerate() {
                conn.announce(reader, i > 0, batch).await.map_err(|e| (m.id.clone(), e))?;
            }
            Ok::<(), (String, ProtocolError)>(())
        });
        futures::future::join_all(sends).await.into_iter().filter_map(Result::err).collect()
    }

    /// Asks the owner of `path` to preload it.
    pub async fn load(&self, path: &str) -> Result<(u64, u64), ProtocolError> {
        self.with_owner(&page_key(path, 0), 0, |c| async move { c.load(path).await }).await
    }

    /// Writes the file at `local` as the object `path` through the path's
    /// owner. When `local` lies in that node's inbox the node adopts it
    /// without a copy (then `local` must not change afterwards).
    pub async fn put_file(&self, path: &str, local: &std::path::Path) -> Result<Written, ProtocolError> {
        self.with_owner(&page_key(path, 0), 0, |c| async move {
            let mut f = tokio::fs::File::open(local).await?;
            let len = f.metadata().await?.len();
            let name = local.file_name().and_then(|n| n.to_str());
            match (&c.inbox, name) {
                (Some(inbox), Some(name)) if local.parent() == Some(inbox.as_path()) => c.adopt(path, name, len).await,
                _ => c.put(path, len, &mut f).await,
            }
        })
        .await
    }

    /// The chunks among `chunks` that the node taking `path`'s writes lacks.
    pub async fn has_chunks(&self, path: &str, chunks: &[ChunkHash]) -> Result<Vec<ChunkHash>, ProtocolError> {
        self.with_owner(&page_key(path, 0), 0, |c| async move { c.has_chunks(chunks).await }).await
    }

    /// Sends one chunk of `path` to the node taking `path`'s writes.
    pub async fn put_chunk(
        &self,
        path: &str,
        hash: &ChunkHash,
        raw_len: u32,
        codec: ChunkCodec,
        data: Bytes,
    ) -> Result<(), ProtocolError> {
        self.with_owner(&page_key(path, 0), 0, |c| {
            let data = data.clone();
            async move { c.put_chunk(hash, raw_len, codec, data).await }
        })
        .await
    }

    /// Commits `path` from chunks at the node taking its writes; returns the
    /// chunks that node lacks (nothing written then), or none when durable.
    pub async fn commit(&self, path: &str, size: u64, chunks: &[ChunkHash]) -> Result<Vec<ChunkHash>, ProtocolError> {
        self.with_owner(&page_key(path, 0), 0, |c| async move { c.commit(path, size, chunks).await }).await
    }

    /// Writes `bytes` as the object `path` through the path's owner.
    pub async fn put_bytes(&self, path: &str, bytes: &[u8]) -> Result<Written, ProtocolError> {
        self.with_owner(&page_key(path, 0), 0, |c| async move {
            let mut body = bytes;
            c.put(path, bytes.len() as u64, &mut body).await
        })
        .await
    }

    /// The inbox of the node that owns `path`, when that node runs on this host.
    pub async fn inbox_for(&self, path: &str) -> Option<std::path::PathBuf> {
        self.with_owner(&page_key(path, 0), 0, |c| async move { Ok(c.inbox.clone()) }).await.ok().flatten()
    }

    /// Deletes `path` through its owner.
    pub async fn delete(&self, path: &str) -> Result<(), ProtocolError> {
        self.with_owner(&page_key(path, 0), 0, |c| async move { c.delete(path).await }).await
    }

    /// The file of persisted object `path`, when its owner runs on this
    /// host over a `file://` store (`None` otherwise, or when the object
    /// is not in the store yet).
    pub async fn locate(&self, path: &str) -> Option<crate::codec::Located> {
        self.with_owner(&page_key(path, 0), 0, |c| async move {
            if c.inbox.is_none() {
                return Ok(None);
            }
            Ok(c.locate(path).await.ok())
        })
        .await
        .ok()
        .flatten()
    }

    /// Makes directory `path` through the owner of its metadata.
    pub async fn mkdir(&self, path: &str) -> Result<(), ProtocolError> {
        self.with_owner(&page_key(path, 0), 0, |c| async move { c.mkdir(path).await }).await
    }

    /// Removes empty directory `path` through the owner of its metadata.
    pub async fn rmdir(&self, path: &str) -> Result<(), ProtocolError> {
        self.with_owner(&page_key(path, 0), 0, |c| async move { c.rmdir(path).await }).await
    }

    /// Renames `from` to `to` through the owner of `from`.
    pub async fn rename(&self, from: &str, to: &str) -> Result<bool, ProtocolError> {
        self.with_owner(&page_key(from, 0), 0, |c| async move { c.rename(from, to).await }).await
    }

    /// Reads one page-aligned piece from its owner.
    pub async fn read_page(
        &self,
        path: &str,
        page: u64,
        page_size: u64,
        start: u64,
        end: u64,
    ) -> Result<Bytes, ProtocolError> {
        Ok(concat(self.read_piece(path, page, page, page_size, start, end).await?))
    }

    /// Reads one page-aligned piece from the owner of page `route`, in the
    /// pieces it arrived in.
    async fn read_piece(
        &self,
        path: &str,
        page: u64,
        route: u64,
        page_size: u64,
        start: u64,
        end: u64,
    ) -> Result<Vec<Bytes>, ProtocolError> {
        debug_assert!(start / page_size == page && (end - 1) / page_size == page);
        let data = self
            .or_direct(
                &page_key(path, route),
                (if route == page { page } else { 0 }, self.replicas_for(path)),
                page as usize,
                |c| async move { c.read_range(path, start, end - start).await },
                |d| d.read_range(path, start, end - start),
            )
            .await?;
        let got: usize = data.iter().map(Bytes::len).sum();
        if got as u64 != end - start {
            return Err(ProtocolError::Malformed(format!(
                "page {page} of {path}: expected {} bytes, got {got} (object changed?)",
                end - start,
            )));
        }
        Ok(data)
    }

    /// Streams bytes `[offset, offset + len)` of `path` into `out`, pages in
    /// flight concurrently, each from its owner. Returns the bytes written.
    pub async fn read_to<W>(&self, path: &str, offset: u64, len: Option<u64>, out: &mut W) -> Result<u64, ProtocolError>
    where
        W: AsyncWrite + Unpin,
    {
        let info = self.stat(path).await?;
        let end = match len {
            Some(l) => offset.saturating_add(l).min(info.size),
            None => info.size,
        };
        let mut stream = std::pin::pin!(self.pieces(path, &info, offset, end).await?);
        let mut written = 0;
        while let Some(chunks) = stream.try_next().await? {
            for bytes in chunks {
                out.write_all(&bytes).await?;
                written += bytes.len() as u64;
            }
        }
        out.flush().await?;
        Ok(written)
    }

    /// Bytes `[offset, end)` of `path`, whose metadata is `info` (from
    /// [`Cluster::stat`]), as a stream of pieces in order, pages in flight
    /// concurrently, each from its owner.
    pub async fn pieces<'a>(
        &'a self,
        path: &'a str,
        info: &ObjectInfo,
        offset: u64,
        end: u64,
    ) -> Result<impl futures::Stream<Item = Result<Vec<Bytes>, ProtocolError>> + 'a, ProtocolError> {
        if info.kind == EntryKind::Dir {
            return Err(ProtocolError::Remote {
                code: ErrorCode::InvalidInput,
                message: format!("{path} is a directory"),
            });
        }
        let page_size = self.page_size(path).await?;
        let end = end.min(info.size);
        let (first, last) = if offset >= end { (1, 0) } else { (offset / page_size, (end - 1) / page_size) };
        let persisted = info.persisted;
        let pieces = (first..=last).map(move |p| (p, (p * page_size).max(offset), ((p + 1) * page_size).min(end)));
        Ok(futures::stream::iter(pieces)
            // An object not yet persisted lives in the journal of page 0's owner.
            .map(move |(p, s, e)| self.read_piece(path, p, if persisted { p } else { 0 }, page_size, s, e))
            .buffered(self.window))
    }
}

/// What an owner's answer means for a request: `Some` when it is final (an
/// answer, or an error no other owner would change), `None` to ask the next
/// owner (the error kept in `last`). Connection failures count against `m`.
fn settle<T>(
    m: &Member,
    took: Duration,
    r: Result<T, ProtocolError>,
    last: &mut Option<ProtocolError>,
) -> Option<Result<T, ProtocolError>> {
    match r {
        Ok(v) => {
            m.answered(took);
            Some(Ok(v))
        }
        Err(e) if e.try_elsewhere() => {
            if e.is_connection() {
                m.failed();
            }
            tracing::debug!(node = %m.id, error = %e, "trying next owner");
            *last = Some(e);
            None
        }
        Err(e) => Some(Err(e)),
    }
}

/// One buffer of `chunks`, copied only when there is more than one.
fn concat(mut chunks: Vec<Bytes>) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().expect("one chunk"),
        _ => {
            let mut whole = bytes::BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
            for c in chunks {
                whole.extend_from_slice(&c);
            }
            whole.freeze()
        }
    }
}
