//! [`ReadStream`]: the bytes of one `ReadRange`, page by page from the
//! cache (or the journal, for an object not yet uploaded), with pages read
//! ahead of the one being sent.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use ferry_protocol::codec::ObjectInfo;
use ferry_protocol::ids::NsPath;

use crate::cache::{PageCache, PageFill, PageRead};
use crate::error::NodeError;

use super::READAHEAD_PAGES;

struct Cursor {
    fill: PageFill,
    /// Offset in the page of the next chunk's first byte.
    at: u64,
    /// Wanted window of the page.
    want: (u64, u64),
    page_start: u64,
}

impl std::fmt::Debug for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cursor").field("at", &self.at).field("want", &self.want).finish()
    }
}

/// The bytes of a `ReadRange`, page by page, in order.
#[derive(Debug)]
pub struct ReadStream {
    cache: Arc<PageCache>,
    path: NsPath,
    pub(crate) info: ObjectInfo,
    pos: u64,
    end: u64,
    prefetched_to: u64,
    current: Option<Cursor>,
    ready: VecDeque<Bytes>,
    /// Set when the object is served from the write-back journal.
    pub(crate) journal: Option<Arc<std::fs::File>>,
}

impl ReadStream {
    pub(crate) fn new(cache: Arc<PageCache>, path: NsPath, info: ObjectInfo, pos: u64, end: u64) -> ReadStream {
        ReadStream {
            cache,
            path,
            info,
            pos,
            end,
            prefetched_to: 0,
            current: None,
            ready: VecDeque::new(),
            journal: None,
        }
    }

    async fn next_from_journal(&mut self) -> Option<Result<Bytes, NodeError>> {
        let file = self.journal.clone().expect("journal read");
        if self.pos >= self.end {
            return None;
        }
        let n = (self.end - self.pos).min(self.cache.page_size());
        let pos = self.pos;
        let r = tokio::task::spawn_blocking(move || -> std::io::Result<Bytes> {
            use std::os::unix::fs::FileExt;
            let mut buf = vec![0u8; n as usize];
            file.read_exact_at(&mut buf, pos)?;
            Ok(Bytes::from(buf))
        })
        .await
        .map_err(|e| NodeError::task("journal read task", e))
        .and_then(|r| r.map_err(NodeError::Io));
        self.pos += n;
        Some(r)
    }

    /// The next piece of the range; `None` at its end.
    pub async fn next(&mut self) -> Option<Result<Bytes, NodeError>> {
        if self.journal.is_some() {
            return self.next_from_journal().await;
        }
        let ps = self.cache.page_size();
        loop {
            if let Some(b) = self.ready.pop_front() {
                return Some(Ok(b));
            }
            if let Some(cur) = &mut self.current {
                match cur.fill.next().await {
                    Some(Ok(chunks)) => {
                        for c in chunks {
                            let (s, e) = (cur.at, cur.at + c.len() as u64);
                            cur.at = e;
                            let lo = s.max(cur.want.0);
                            let hi = e.min(cur.want.1);
                            if lo < hi {
                                self.ready.push_back(c.slice((lo - s) as usize..(hi - s) as usize));
                            }
                        }
                        continue;
                    }
                    Some(Err(e)) => {
                        self.current = None;
                        return Some(Err(e));
                    }
                    None => {
                        if cur.at < cur.want.1 {
                            let msg = format!("{} page {} ended early", self.path, cur.page_start / ps);
                            self.current = None;
                            return Some(Err(NodeError::Changed(msg)));
                        }
                        self.pos = cur.page_start + cur.want.1;
                        self.current = None;
                        continue;
                    }
                }
            }
            if self.pos >= self.end {
                return None;
            }
            let page = self.pos / ps;
            let page_start = page * ps;
            let want = (self.pos - page_start, (self.end - page_start).min(ps));
            // Read ahead within this request.
            let last_page = (self.end - 1) / ps;
            let ahead_to = (page + READAHEAD_PAGES).min(last_page);
            let from = self.prefetched_to.max(page + 1);
            for p in from..=ahead_to {
                self.cache.prefetch(&self.path, &self.info, p);
            }
            self.prefetched_to = self.prefetched_to.max(ahead_to + 1);
            self.cache.saw(&self.path, page);
            match self.cache.page(&self.path, &self.info, page).await {
                Ok(PageRead::Ready(b)) => {
                    if (b.len() as u64) < want.1 {
                        return Some(Err(NodeError::Corrupt(format!("{} page {page} is short", self.path))));
                    }
                    self.pos = page_start + want.1;
                    return Some(Ok(b.slice(want.0 as usize..want.1 as usize)));
                }
                Ok(PageRead::Filling(fill)) => {
                    self.current = Some(Cursor { fill, at: 0, want, page_start });
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }
}
