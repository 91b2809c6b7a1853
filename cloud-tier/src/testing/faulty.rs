//! An object store wrapper that adds per-request latency, a shared
//! bandwidth cap and injected errors, and counts what passes through.
//!
//! It stacks like object_store's own `ThrottledStore`: wrap any store, hand
//! the wrapper to whatever expects a store. Tests use it to make failures
//! happen on purpose; benchmarks use it to make a local store behave like a
//! remote one, with both ferry and the direct baseline reading through the
//! same wrapper.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use tokio::time::Instant;

/// Throttling sleeps only when at least this far ahead of the allowed rate.
const MIN_SLEEP: Duration = Duration::from_millis(2);

/// Unused allowance a reader may catch up on.
const BURST: Duration = Duration::from_millis(10);

/// What to inject.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Added before every request is answered.
    pub latency: Duration,
    /// Bytes per second shared by all reads; `None` for no cap.
    pub bandwidth: Option<u64>,
    /// Added before every write (PUT, multipart upload) is sent.
    pub write_latency: Duration,
    /// Added after the store answered a LIST: the answer tells the store as
    /// it was when asked, and arrives this much later.
    pub reply_latency: Duration,
    /// GETs (not HEADs) wait until this gate opens, so a test decides when
    /// a fetch in flight finishes.
    pub gets_gate: Option<Gate>,
}

/// A gate requests wait at until a test opens it.
#[derive(Debug, Clone)]
pub struct Gate(Arc<tokio::sync::Semaphore>);

impl Gate {
    /// A closed gate.
    pub fn closed() -> Gate {
        Gate(Arc::new(tokio::sync::Semaphore::new(0)))
    }

    /// Lets every waiting and later request through.
    pub fn open(&self) {
        self.0.add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);
    }

    async fn pass(&self) {
        // The permit goes back at once: an open gate lets everyone through.
        let _ = self.0.acquire().await;
    }
}

/// Counts of what passed through.
#[derive(Debug, Default)]
pub struct Counters {
    /// GET requests.
    pub gets: AtomicU64,
    /// HEAD requests.
    pub heads: AtomicU64,
    /// LIST requests.
    pub lists: AtomicU64,
    /// PUT requests.
    pub puts: AtomicU64,
    /// Bytes returned by GETs.
    pub bytes_read: AtomicU64,
}

impl Counters {
    /// All read-side requests (GET, HEAD, LIST).
    pub fn reads(&self) -> u64 {
        self.gets.load(Ordering::SeqCst) + self.heads.load(Ordering::SeqCst) + self.lists.load(Ordering::SeqCst)
    }
}

/// Waits `d`, if there is anything to wait.
async fn pause(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

/// The wrapper store.
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    faults: Faults,
    fail_next: AtomicU64,
    next_free: Arc<Mutex<Option<Instant>>>,
    counters: Arc<Counters>,
}

impl fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyStore").field("inner", &self.inner.to_string()).field("faults", &self.faults).finish()
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

impl FaultyStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn ObjectStore>, faults: Faults) -> FaultyStore {
        FaultyStore {
            inner,
            faults,
            fail_next: AtomicU64::new(0),
            next_free: Arc::new(Mutex::new(None)),
            counters: Arc::new(Counters::default()),
        }
    }

    /// The counters (shared; they keep counting after this call).
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Makes the next `n` requests fail.
    pub fn fail_next(&self, n: u64) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    async fn before(&self) -> Result<()> {
        pause(self.faults.latency).await;
        let failed = self.fail_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        if failed {
            return Err(object_store::Error::Generic { store: "faulty", source: "injected fault".into() });
        }
        Ok(())
    }

    fn throttle(&self, stream: BoxStream<'static, Result<bytes::Bytes>>) -> BoxStream<'static, Result<bytes::Bytes>> {
        let counters = self.counters.clone();
        let Some(bw) = self.faults.bandwidth else {
            return stream
                .inspect(move |c| {
                    if let Ok(b) = c {
                        counters.bytes_read.fetch_add(b.len() as u64, Ordering::Relaxed);
                    }
                })
                .boxed();
        };
        let next_free = self.next_free.clone();
        stream
            .then(move |chunk| {
                let next_free = next_free.clone();
                let counters = counters.clone();
                async move {
                    if let Ok(b) = &chunk {
                        counters.bytes_read.fetch_add(b.len() as u64, Ordering::Relaxed);
                        let cost = Duration::from_secs_f64(b.len() as f64 / bw as f64);
                        let until = {
                            let mut nf = next_free.lock().expect("throttle lock poisoned");
                            let now = Instant::now();
                            // Up to BURST of unused allowance carries over, so timer
                            // overshoot does not lower the rate below the cap.
                            let start = nf.map_or(now, |t| t.max(now - BURST));
                            let until = start + cost;
                            *nf = Some(until);
                            until
                        };
                        // Timers tick in milliseconds: sleep only once the debt is worth a
                        // tick, so small chunks are not each rounded up to a whole one.
                        if until > Instant::now() + MIN_SLEEP {
                            tokio::time::sleep_until(until).await;
                        }
                    }
                    chunk
                }
            })
            .boxed()
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.counters.puts.fetch_add(1, Ordering::SeqCst);
        self.before().await?;
        pause(self.faults.write_latency).await;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.counters.puts.fetch_add(1, Ordering::SeqCst);
        self.before().await?;
        pause(self.faults.write_latency).await;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        if options.head {
            self.counters.heads.fetch_add(1, Ordering::SeqCst);
        } else {
            self.counters.gets.fetch_add(1, Ordering::SeqCst);
        }
        if let (Some(gate), false) = (&self.faults.gets_gate, options.head) {
            gate.pass().await;
        }
        self.before().await?;
        let res = self.inner.get_opts(location, options).await?;
        let (meta, range, attributes, extensions) =
            (res.meta.clone(), res.range.clone(), res.attributes.clone(), res.extensions.clone());
        let stream = self.throttle(crate::payload::into_stream(res));
        Ok(GetResult { payload: GetResultPayload::Stream(stream), meta, range, attributes, extensions })
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.counters.lists.fetch_add(1, Ordering::SeqCst);
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.counters.lists.fetch_add(1, Ordering::SeqCst);
        self.before().await?;
        let res = self.inner.list_with_delimiter(prefix).await;
        pause(self.faults.reply_latency).await;
        res
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.before().await?;
        self.inner.copy_opts(from, to, options).await
    }
}
