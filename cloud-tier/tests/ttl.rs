//! Metadata TTL with an injected clock: a changed object is seen once its
//! cached metadata expires, and pages of two versions never mix.

use std::sync::Arc;

use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use ferry_cloud_tier::cache::CacheOptions;
use ferry_cloud_tier::clock::ManualClock;
use ferry_cloud_tier::metrics::Metrics;
use ferry_cloud_tier::namespace::Namespace;
use ferry_cloud_tier::CacheNode;

async fn read(node: &CacheNode, path: &str) -> Vec<u8> {
    let (_, mut s) = node.handle_read(path, 0, u64::MAX).await.expect("read");
    let mut out = Vec::new();
    while let Some(b) = s.next().await {
        out.extend_from_slice(&b.expect("bytes"));
    }
    out
}

fn local_store(dir: &std::path::Path) -> Arc<dyn ObjectStore> {
    let root = dir.join("store");
    std::fs::create_dir_all(&root).expect("mkdir");
    Arc::new(object_store::local::LocalFileSystem::new_with_prefix(&root).expect("store"))
}

/// A node over `store` with a metadata TTL of 60 s on a clock the test turns.
fn node_over(store: &Arc<dyn ObjectStore>, dir: &std::path::Path) -> (CacheNode, Arc<ManualClock>) {
    let mut ns = Namespace::empty(Arc::new(Metrics::new()));
    ns.add("/", store.clone(), StorePath::default(), 0).expect("mount");
    let clock = Arc::new(ManualClock::new(1_000_000));
    let opts = CacheOptions {
        page_size: 1 << 20,
        memory_bytes: 64 << 20,
        disk_bytes: 0,
        disk_dir: dir.join("cache"),
        ttl_ms: 60_000,
        eviction: Default::default(),
    };
    (CacheNode::new(ns, opts, clock.clone(), "n1").expect("node"), clock)
}

#[tokio::test]
async fn changed_objects_are_seen_after_the_ttl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = local_store(dir.path());
    store.put(&StorePath::from("f"), PutPayload::from(vec![1u8; 3 << 20])).await.expect("put v1");
    let (node, clock) = node_over(&store, dir.path());
    assert_eq!(read(&node, "/f").await, vec![1u8; 3 << 20]);

    // The object changes in the store (a different size, so the etag surely differs).
    store.put(&StorePath::from("f"), PutPayload::from(vec![2u8; 2 << 20])).await.expect("put v2");
    clock.advance(59_000);
    // Within the TTL the node trusts its metadata; the cached pages of v1 answer.
    assert_eq!(node.handle_stat("/f").await.expect("stat").size, 3 << 20);
    assert_eq!(read(&node, "/f").await, vec![1u8; 3 << 20]);

    clock.advance(2_000);
    // Past the TTL: new metadata, new etag, new pages; nothing of v1 leaks in.
    assert_eq!(node.handle_stat("/f").await.expect("stat").size, 2 << 20);
    assert_eq!(read(&node, "/f").await, vec![2u8; 2 << 20]);
}

#[tokio::test]
async fn listings_are_trusted_for_the_ttl_and_files_added_since_are_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = local_store(dir.path());
    store.put(&StorePath::from("d/a"), PutPayload::from(vec![1u8; 10])).await.expect("put a");
    let (node, clock) = node_over(&store, dir.path());
    let names = |l: Vec<ferry_protocol::codec::DirEntry>| l.into_iter().map(|e| e.name).collect::<Vec<_>>();
    assert_eq!(names(node.handle_list("/d").await.expect("list")), ["a"]);

    // Another tool adds a file and replaces one.
    store.put(&StorePath::from("d/b"), PutPayload::from(vec![2u8; 20])).await.expect("put b");
    store.put(&StorePath::from("d/a"), PutPayload::from(vec![3u8; 30])).await.expect("replace a");
    clock.advance(59_000);
    // Within the TTL the listing is trusted, but a file not in it is looked for in the store.
    assert_eq!(names(node.handle_list("/d").await.expect("list")), ["a"]);
    assert_eq!(node.handle_stat("/d/a").await.expect("stat a").size, 10);
    assert_eq!(node.handle_stat("/d/b").await.expect("stat b").size, 20);
    clock.advance(2_000);
    assert_eq!(names(node.handle_list("/d").await.expect("list")), ["a", "b"]);
    assert_eq!(node.handle_stat("/d/a").await.expect("stat a").size, 30);
    assert_eq!(read(&node, "/d/a").await, vec![3u8; 30]);
}
