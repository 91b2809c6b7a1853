//! Cluster state in etcd: members (leased, so a killed or partitioned node
//! drops out when its lease expires) and the pending-write registry (which
//! nodes hold a path's data that the object store does not have yet).
//!
//! Keys, below the configured prefix (default `/ferry`):
//!
//! - `PREFIX/members/ID`: a [`Member`] as JSON, attached to the node's lease;
//! - `PREFIX/pending/PATH`: a [`Pending`] as JSON, not leased: it must
//!   outlive its holders, so that nobody serves the store's older version
//!   while they are gone. Whoever uploads the data deletes it.
//!
//! Watches keep the last state they saw while etcd is unreachable and
//! reconnect with jittered backoff; a client whose etcd is gone goes on
//! with the last member list.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, PutOptions, WatchOptions};
use tokio::sync::watch;

use crate::error::ProtocolError;
use crate::membership::{backoff, EtcdConfig, Feed, Member, Membership, Pending, View};

fn etcd_err(what: &str, endpoints: &[String], e: etcd_client::Error) -> ProtocolError {
    ProtocolError::connection_from(format!("etcd at {}: {what}: {e}", endpoints.join(",")), e)
}

/// A connection to the cluster's etcd.
#[derive(Clone)]
pub struct Etcd {
    client: Client,
    cfg: EtcdConfig,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd").field("endpoints", &self.cfg.endpoints).field("prefix", &self.cfg.prefix).finish()
    }
}

impl Etcd {
    /// Connects and checks that etcd answers (a wrong address fails here,
    /// within `timeout`, not at the first use).
    pub async fn connect(cfg: &EtcdConfig) -> Result<Etcd, ProtocolError> {
        if cfg.endpoints.is_empty() {
            return Err(ProtocolError::connection("no etcd endpoints configured"));
        }
        if cfg.timeout.is_zero() {
            return Err(ProtocolError::connection("etcd timeout must be above 0"));
        }
        if !cfg.prefix.starts_with('/') || cfg.prefix.ends_with('/') {
            return Err(ProtocolError::connection(format!(
                "etcd prefix {:?} must start with / and not end with one",
                cfg.prefix
            )));
        }
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(cfg.timeout)
            .with_timeout(cfg.timeout)
            // etcd refuses pings more often than every 5 s (--grpc-keepalive-min-time).
            .with_keep_alive(Duration::from_secs(10), cfg.timeout);
        if !cfg.user.is_empty() {
            opts = opts.with_user(cfg.user.clone(), cfg.password.clone());
        }
        if cfg.cert.is_empty() != cfg.key.is_empty() {
            return Err(ProtocolError::connection("etcd cert and key must be given together"));
        }
        let read = |what: &str, path: &str| {
            std::fs::read(path).map_err(|e| ProtocolError::connection_from(format!("etcd {what} {path}: {e}"), e))
        };
        if !cfg.ca.is_empty() || !cfg.cert.is_empty() {
            let mut tls = etcd_client::TlsOptions::new();
            if !cfg.ca.is_empty() {
                tls = tls.ca_certificate(etcd_client::Certificate::from_pem(read("ca", &cfg.ca)?));
            }
            if !cfg.cert.is_empty() {
                tls = tls.identity(etcd_client::Identity::from_pem(read("cert", &cfg.cert)?, read("key", &cfg.key)?));
            }
            opts = opts.with_tls(tls);
        }
        let silent = |_| {
            ProtocolError::connection(format!(
                "etcd at {}: no answer within {:?}",
                cfg.endpoints.join(","),
                cfg.timeout
            ))
        };
        let connect = Client::connect(cfg.endpoints.clone(), Some(opts));
        let mut client = tokio::time::timeout(cfg.timeout, connect)
            .await
            .map_err(silent)?
            .map_err(|e| etcd_err("cannot connect", &cfg.endpoints, e))?;
        // Connecting is lazy: ask something so a wrong address fails now.
        tokio::time::timeout(cfg.timeout, client.get(format!("{}/", cfg.prefix), None))
            .await
            .map_err(silent)?
            .map_err(|e| etcd_err("cannot read", &cfg.endpoints, e))?;
        Ok(Etcd { client, cfg: cfg.clone() })
    }

    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}/{kind}/{name}", self.cfg.prefix)
    }

    /// The member list, kept current by a watch.
    pub async fn members(&self) -> Result<Membership, ProtocolError> {
        let source = format!("etcd at {}", self.cfg.endpoints.join(","));
        let mut snapshots = self.watch_prefix(&self.key("members", "")).await?;
        let to_view = move |s: &Snapshot| {
            let mut members: Vec<Member> = s
                .entries
                .values()
                .filter_map(|v| serde_json::from_slice::<Member>(v).ok())
                .filter(|m| m.capacity > 0)
                .collect();
            members.sort_by(|a, b| a.id.cmp(&b.id));
            View { members, epoch: s.epoch, source: source.clone() }
        };
        let (tx, rx) = watch::channel(Arc::new(to_view(&snapshots.borrow())));
        let task = tokio::spawn(async move {
            while snapshots.changed().await.is_ok() {
                let view = to_view(&snapshots.borrow_and_update());
                if tx.send(Arc::new(view)).is_err() {
                    return;
                }
            }
        });
        Ok(Membership::fed(rx, Feed(task)))
    }

    /// The pending-write registry by path, kept current by a watch.
    pub async fn pending(&self) -> Result<PendingWatch, ProtocolError> {
        let prefix = self.key("pending", "");
        let rx = self.watch_prefix(&prefix).await?;
        Ok(PendingWatch { rx, prefix })
    }

    /// Records that `holders` hold `path`'s data up to `pending.seq`.
    pub async fn put_pending(&self, path: &str, pending: &Pending) -> Result<(), ProtocolError> {
        let value = serde_json::to_vec(pending).expect("pending record serializes");
        self.client
            .kv_client()
            .put(self.key("pending", path.trim_start_matches('/')), value, None)
            .await
            .map_err(|e| etcd_err("recording a pending write", &self.cfg.endpoints, e))?;
        Ok(())
    }

    /// Removes `path`'s pending record if it still names write `seq` (a
    /// newer write's record stays).
    pub async fn clear_pending(&self, path: &str, seq: u64) -> Result<(), ProtocolError> {
        let key = self.key("pending", path.trim_start_matches('/'));
        let mut kv = self.client.kv_client();
        let got =
            kv.get(key.clone(), None).await.map_err(|e| etcd_err("reading a pending write", &self.cfg.endpoints, e))?;
        let Some(current) = got.kvs().first() else { return Ok(()) };
        let ours = serde_json::from_slice::<Pending>(current.value()).is_ok_and(|p| p.seq == seq);
        if !ours {
            return Ok(());
        }
        // Delete only if nobody replaced the record since it was read.
        let txn = etcd_client::Txn::new()
            .when([etcd_client::Compare::mod_revision(
                key.clone(),
                etcd_client::CompareOp::Equal,
                current.mod_revision(),
            )])
            .and_then([etcd_client::TxnOp::delete(key, None)]);
        kv.txn(txn).await.map_err(|e| etcd_err("clearing a pending write", &self.cfg.endpoints, e))?;
        Ok(())
    }

    /// Registers `member` under a lease of `ttl`, kept alive in the
    /// background (and granted again if it expired, e.g. after a partition).
    pub async fn register(&self, member: &Member, ttl: Duration) -> Result<Registration, ProtocolError> {
        let ttl_s = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        if ttl_s < 1 {
            return Err(ProtocolError::connection(format!("lease_ttl must be at least 1s, got {ttl:?}")));
        }
        let key = self.key("members", &member.id);
        let value = serde_json::to_vec(member).expect("member serializes");
        let lease = grant_and_put(&mut self.client.clone(), ttl_s, &key, &value)
            .await
            .map_err(|e| etcd_err("registering", &self.cfg.endpoints, e))?;
        let lease_id = Arc::new(std::sync::atomic::AtomicI64::new(lease));
        let (mut client, endpoints, id) = (self.client.clone(), self.cfg.endpoints.clone(), lease_id.clone());
        let task = tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                let lease = id.load(std::sync::atomic::Ordering::SeqCst);
                match keep_alive(&mut client, lease, ttl).await {
                    Ok(()) => {}
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(etcd = %endpoints.join(","), error = %e, "etcd lease lost; registering again");
                        tokio::time::sleep(backoff(failures)).await;
                    }
                }
                match grant_and_put(&mut client, ttl_s, &key, &value).await {
                    Ok(l) => {
                        failures = 0;
                        id.store(l, std::sync::atomic::Ordering::SeqCst);
                    }
                    Err(e) => tracing::warn!(etcd = %endpoints.join(","), error = %e, "etcd registration failed"),
                }
            }
        });
        Ok(Registration { client: self.client.clone(), lease: lease_id, feed: Some(Feed(task)) })
    }

    async fn watch_prefix(&self, prefix: &str) -> Result<watch::Receiver<Snapshot>, ProtocolError> {
        let mut client = self.client.clone();
        let (entries, revision) = read_prefix(&mut client, prefix)
            .await
            .map_err(|e| etcd_err(&format!("reading {prefix}"), &self.cfg.endpoints, e))?;
        let (tx, rx) = watch::channel(Snapshot { entries, epoch: 1 });
        let (prefix, endpoints) = (prefix.to_string(), self.cfg.endpoints.clone());
        tokio::spawn(async move {
            let mut revision = revision;
            let mut failures = 0u32;
            loop {
                match follow(&mut client, &prefix, revision, &tx).await {
                    Ok(()) => return, // nobody listens any more
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(etcd = %endpoints.join(","), error = %e, "etcd watch lost; keeping the last state");
                        tokio::time::sleep(backoff(failures)).await;
                    }
                }
                // Read the whole state again: events may have been compacted away.
                match read_prefix(&mut client, &prefix).await {
                    Ok((entries, rev)) => {
                        failures = 0;
                        revision = rev;
                        let changed = tx.borrow().entries != entries;
                        if changed {
                            tx.send_modify(|s| {
                                s.entries = entries;
                                s.epoch += 1;
                            });
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "etcd still unreachable"),
                }
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(rx)
    }
}

/// Everything below a prefix.
#[derive(Debug, Clone)]
struct Snapshot {
    entries: BTreeMap<String, Vec<u8>>,
    epoch: u64,
}

/// The pending-write registry, as last seen.
#[derive(Debug, Clone)]
pub struct PendingWatch {
    rx: watch::Receiver<Snapshot>,
    prefix: String,
}

impl PendingWatch {
    /// The record of `path`, if it has data not yet in the store.
    pub fn get(&self, path: &str) -> Option<Pending> {
        let key = format!("{}{}", self.prefix, path.trim_start_matches('/'));
        self.rx.borrow().entries.get(&key).and_then(|v| serde_json::from_slice(v).ok())
    }

    /// Every record, by path.
    pub fn all(&self) -> Vec<(String, Pending)> {
        self.rx
            .borrow()
            .entries
            .iter()
            .filter_map(|(k, v)| {
                let path = format!("/{}", k.strip_prefix(&self.prefix)?);
                Some((path, serde_json::from_slice(v).ok()?))
            })
            .collect()
    }
}

/// A node's registration; [`Registration::leave`] ends it at once, dropping it lets the lease expire.
pub struct Registration {
    client: Client,
    lease: Arc<std::sync::atomic::AtomicI64>,
    feed: Option<Feed>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration").field("lease", &self.lease).finish()
    }
}

impl Registration {
    /// Revokes the lease: the node is out of every client's ring now.
    pub async fn leave(mut self) -> Result<(), ProtocolError> {
        drop(self.feed.take());
        let lease = self.lease.load(std::sync::atomic::Ordering::SeqCst);
        self.client
            .lease_revoke(lease)
            .await
            .map_err(|e| ProtocolError::connection_from(format!("etcd: leaving: {e}"), e))?;
        Ok(())
    }
}

async fn grant_and_put(client: &mut Client, ttl_s: i64, key: &str, value: &[u8]) -> Result<i64, etcd_client::Error> {
    let lease = client.lease_grant(ttl_s, None).await?.id();
    client.put(key, value, Some(PutOptions::new().with_lease(lease))).await?;
    Ok(lease)
}

/// Keeps `lease` alive until it is lost (returns `Ok` when etcd says it expired).
async fn keep_alive(client: &mut Client, lease: i64, ttl: Duration) -> Result<(), etcd_client::Error> {
    let (mut keeper, mut stream) = client.lease_keep_alive(lease).await?;
    let every = (ttl / 3).max(Duration::from_millis(300));
    loop {
        keeper.keep_alive().await?;
        match tokio::time::timeout(ttl, stream.message()).await {
            Ok(Ok(Some(r))) if r.ttl() > 0 => {}
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(etcd_client::Error::LeaseKeepAliveError("no answer to a keep-alive".into())),
        }
        tokio::time::sleep(every).await;
    }
}

async fn read_prefix(
    client: &mut Client,
    prefix: &str,
) -> Result<(BTreeMap<String, Vec<u8>>, i64), etcd_client::Error> {
    let resp = client.get(prefix, Some(GetOptions::new().with_prefix())).await?;
    let revision = resp.header().map_or(0, |h| h.revision());
    let entries =
        resp.kvs().iter().filter_map(|kv| Some((kv.key_str().ok()?.to_string(), kv.value().to_vec()))).collect();
    Ok((entries, revision))
}

/// Applies watch events after `revision` to `tx` until the watch fails
/// (`Err`) or nobody listens (`Ok`).
async fn follow(
    client: &mut Client,
    prefix: &str,
    revision: i64,
    tx: &watch::Sender<Snapshot>,
) -> Result<(), etcd_client::Error> {
    let mut stream =
        client.watch(prefix, Some(WatchOptions::new().with_prefix().with_start_revision(revision + 1))).await?;
    loop {
        tokio::select! {
            () = tx.closed() => return Ok(()),
            msg = stream.message() => {
                let Some(resp) = msg? else {
                    return Err(etcd_client::Error::WatchError("watch ended".into()));
                };
                if resp.canceled() {
                    return Err(etcd_client::Error::WatchError(format!("watch cancelled: {}", resp.cancel_reason())));
                }
                if resp.events().is_empty() {
                    continue;
                }
                tx.send_modify(|s| {
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        let Ok(key) = kv.key_str() else { continue };
                        match ev.event_type() {
                            EventType::Put => {
                                s.entries.insert(key.to_string(), kv.value().to_vec());
                            }
                            EventType::Delete => {
                                s.entries.remove(key);
                            }
                        }
                    }
                    s.epoch += 1;
                });
            }
        }
    }
}
