//! `ferry cluster status` and `ferry load`: what each member holds, and
//! warming a tree page by page on the pages' owners.

use anyhow::{Context, Result};
use futures::StreamExt;

use ferry_protocol::client::Cluster;
use ferry_protocol::codec::EntryKind;

use crate::read::human;

/// Requests in flight while warming.
const WARM_CONCURRENCY: usize = 8;
/// Most pages one warm request asks for.
const WARM_RUN: u64 = 16;

/// Prints every member: address, health, capacity, share of the ring,
/// pages and bytes held, pending write-back bytes.
pub async fn status(cluster: &Cluster, json: bool) -> Result<()> {
    let view = cluster.membership().view();
    let shares: std::collections::HashMap<String, f64> = cluster.shares().into_iter().collect();
    let rows = futures::future::join_all(view.members.iter().map(|m| async move {
        let started = std::time::Instant::now();
        let answer = tokio::time::timeout(std::time::Duration::from_secs(3), async {
            cluster.node(&m.id).await?.status().await
        })
        .await
        .map_err(|_| "no answer within 3s".to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
        (m, started.elapsed(), answer)
    }))
    .await;
    if json {
        let members: Vec<serde_json::Value> = rows
            .iter()
            .map(|(m, took, answer)| {
                let mut v = serde_json::json!({
                    "id": m.id,
                    "addr": m.addr,
                    "capacity": m.capacity,
                    "ring_share": shares.get(&m.id).copied().unwrap_or(0.0),
                });
                match answer {
                    Ok(st) => {
                        v["healthy"] = true.into();
                        v["latency_ms"] = (took.as_secs_f64() * 1000.0).into();
                        v["pages"] = st.pages.into();
                        v["memory_bytes"] = st.memory_bytes.into();
                        v["disk_bytes"] = st.disk_bytes.into();
                        v["pending_writes"] = st.pending.into();
                        v["pending_bytes"] = st.pending_bytes.into();
                        v["held_writes"] = st.held.into();
                        v["held_bytes"] = st.held_bytes.into();
                    }
                    Err(e) => {
                        v["healthy"] = false.into();
                        v["error"] = e.clone().into();
                    }
                }
                v
            })
            .collect();
        println!("{}", serde_json::json!({ "source": view.source, "members": members }));
        return Ok(());
    }
    println!("{} member(s), from {}", view.members.len(), view.source);
    println!(
        "{:<16} {:<22} {:<14} {:>8} {:>6} {:>8} {:>11} {:>11} {:>16} {:>16}",
        "MEMBER", "ADDRESS", "HEALTH", "CAPACITY", "RING", "PAGES", "MEMORY", "DISK", "PENDING", "HELD FOR OTHERS"
    );
    for (m, took, answer) in &rows {
        let share = format!("{:.1}%", shares.get(&m.id).copied().unwrap_or(0.0) * 100.0);
        match answer {
            Ok(st) => println!(
                "{:<16} {:<22} {:<14} {:>8} {:>6} {:>8} {:>11} {:>11} {:>16} {:>16}",
                m.id,
                m.addr,
                format!("ok {:.1}ms", took.as_secs_f64() * 1000.0),
                m.capacity,
                share,
                st.pages,
                human(st.memory_bytes),
                human(st.disk_bytes),
                format!("{} ({})", human(st.pending_bytes), st.pending),
                format!("{} ({})", human(st.held_bytes), st.held),
            ),
            Err(e) => {
                println!("{:<16} {:<22} {:<14} {:>8} {:>6}", m.id, m.addr, "UNREACHABLE", m.capacity, share);
                println!("    {e}");
            }
        }
    }
    Ok(())
}

/// Every file at or below `path`, with its size.
async fn files(cluster: &Cluster, path: &str) -> Result<Vec<(String, u64)>> {
    let info = cluster.stat(path).await.with_context(|| format!("stat {path}"))?;
    if info.kind == EntryKind::File {
        return Ok(vec![(path.to_string(), info.size)]);
    }
    let mut out = Vec::new();
    let mut dirs = vec![path.trim_end_matches('/').to_string()];
    while let Some(dir) = dirs.pop() {
        let listed = match cluster.list(if dir.is_empty() { "/" } else { &dir }).await {
            Ok(l) => l,
            // Gone since its parent was listed, or a folder with nothing in it.
            Err(ferry_protocol::ProtocolError::Remote { code: ferry_protocol::ErrorCode::NotFound, .. })
                if dir != path.trim_end_matches('/') =>
            {
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("ls {dir}")),
        };
        for e in listed {
            let full = format!("{dir}/{}", e.name);
            match e.info.kind {
                EntryKind::Dir => dirs.push(full),
                EntryKind::File => out.push((full, e.info.size)),
            }
        }
    }
    out.sort();
    Ok(out)
}

/// What `ferry load` did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    /// Files below the path.
    pub files: u64,
    /// Page copies fetched into the owners' caches.
    pub fetched_pages: u64,
    /// Their bytes.
    pub fetched_bytes: u64,
    /// Page copies that were cached already.
    pub cached_pages: u64,
}

/// Warms every page at or below `path` on its first `replicas` owners
/// (default: each file's mount's, see [`Cluster::replicas_for`]),
/// spread over the cluster, skipping pages already cached (so an
/// interrupted load resumes where it stopped when run again).
pub async fn load(cluster: &Cluster, path: &str, replicas: Option<usize>, progress: bool) -> Result<Loaded> {
    let files = files(cluster, path).await?;
    let page_size = cluster.page_size(path).await.context("page size")?;
    // One job per run of consecutive pages of a file on one owner.
    let mut jobs: Vec<(String, String, u64, u64, u64)> = Vec::new();
    for (file, size) in &files {
        let pages = size.div_ceil(page_size);
        let replicas = replicas.unwrap_or_else(|| cluster.replicas_for(file));
        let mut runs: std::collections::BTreeMap<String, Vec<u64>> = std::collections::BTreeMap::new();
        for p in 0..pages {
            for owner in cluster.owners(file, p).into_iter().take(replicas.max(1)) {
                runs.entry(owner).or_default().push(p);
            }
        }
        for (owner, pages) in runs {
            let mut i = 0;
            while i < pages.len() {
                let first = pages[i];
                let mut n = 1;
                while i + (n as usize) < pages.len() && pages[i + n as usize] == first + n && n < WARM_RUN {
                    n += 1;
                }
                let bytes = (*size).min((first + n) * page_size) - first * page_size;
                jobs.push((owner.clone(), file.clone(), first, n, bytes));
                i += n as usize;
            }
        }
    }
    let total: u64 = jobs.iter().map(|j| j.4).sum();
    let bar = if progress { indicatif::ProgressBar::new(total) } else { indicatif::ProgressBar::hidden() };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("literal template")
            .progress_chars("=> "),
    );
    bar.set_message(format!("warming {path}"));
    let results: Vec<Result<(u64, u64, u64)>> = futures::stream::iter(jobs)
        .map(|(owner, file, first, count, bytes)| {
            let bar = bar.clone();
            async move {
                let conn = cluster.node(&owner).await.with_context(|| format!("{file}: owner {owner}"))?;
                let (fetched, fetched_bytes) =
                    conn.warm(&file, first, count).await.with_context(|| format!("warm {file} on {owner}"))?;
                bar.inc(bytes);
                Ok((fetched, fetched_bytes, count - fetched.min(count)))
            }
        })
        .buffer_unordered(WARM_CONCURRENCY)
        .collect()
        .await;
    bar.finish_and_clear();
    let mut out = Loaded { files: files.len() as u64, ..Loaded::default() };
    for r in results {
        let (f, b, c) = r?;
        out.fetched_pages += f;
        out.fetched_bytes += b;
        out.cached_pages += c;
    }
    Ok(out)
}
