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

#[tokio::test]
async fn changed_objects_are_seen_after_the_ttl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    std::fs::create_dir_all(&root).expect("mkdir");
    let store: Arc<dyn ObjectStore> =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(&root).expect("store"));
    store.put(&StorePath::from("f"), PutPayload::from(vec![1u8; 3 << 20])).await.expect("put v1");
    let mut ns = Namespace::empty(Arc::new(Metrics::new()));
    ns.add("/", store.clone(), StorePath::default(), 0).expect("mount");
    let clock = Arc::new(ManualClock::new(1_000_000));
    let opts = CacheOptions {
        page_size: 1 << 20,
        memory_bytes: 64 << 20,
        disk_bytes: 0,
        disk_dir: dir.path().join("cache"),
        ttl_ms: 60_000,
    };
    let node = CacheNode::new(ns, opts, clock.clone(), "n1").expect("node");
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
