//! Edge uploads at the node: content-addressed chunks, commits, and the
//! rule that a device writes only below its own prefix.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};

use common::*;
use ferry_cloud_tier::testing::faulty::Faults;
use ferry_protocol::client::Cluster;
use ferry_protocol::codec::{ChunkCodec, ChunkHash};
use ferry_protocol::ids::{NodeId, Role};
use ferry_protocol::{tls, transport, ErrorCode, ProtocolError};

fn edge_client(certs: &std::path::Path, id: &str, nodes: &[String]) -> Cluster {
    tls::issue(certs, Role::Edge, &NodeId::new(id).expect("id")).expect("issue edge");
    let ep = transport::client_endpoint(&tls_of(certs, id)).expect("endpoint");
    Cluster::new(ep, nodes).expect("cluster")
}

fn hash(b: &[u8]) -> ChunkHash {
    *blake3::hash(b).as_bytes()
}

fn code(e: ProtocolError) -> ErrorCode {
    match e {
        ProtocolError::Remote { code, .. } => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn stored(store: &Arc<dyn ObjectStore>, name: &str) -> Option<Vec<u8>> {
    match store.get(&StorePath::from(name)).await {
        Ok(r) => Some(r.bytes().await.expect("body").to_vec()),
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_are_committed_from_verified_chunks_within_the_device_prefix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = certs(dir.path());
    let base: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let cfg = node_config(&dir.path().join("cache"), 16 << 20, 64 << 20);
    let n = start_node(&certs, &cfg, "/", base.clone(), StorePath::default(), Faults::default()).await;
    let nodes = [n.node.addr.to_string()];
    let edge = edge_client(&certs, "robot-17", &nodes);
    let obj = "/logs/robot-17/robot/run-1.mcap";

    let a = data(70_000, 1);
    let b = vec![7u8; 50_000]; // compresses well
    let (ha, hb) = (hash(&a), hash(&b));
    assert_eq!(edge.has_chunks(obj, &[ha, hb, ha]).await.expect("ask"), vec![ha, hb]);

    // A commit naming chunks the node lacks writes nothing and says which.
    assert_eq!(edge.commit(obj, 120_000, &[ha, hb]).await.expect("commit"), vec![ha, hb]);
    // A chunk that does not match its hash is refused and not kept.
    let e =
        edge.put_chunk(obj, &ha, 70_000, ChunkCodec::Raw, Bytes::from(data(70_000, 2))).await.expect_err("bad hash");
    assert_eq!(code(e), ErrorCode::Corrupted);
    let e = edge
        .put_chunk(obj, &hb, 50_000, ChunkCodec::Zstd, Bytes::from_static(b"not zstd"))
        .await
        .expect_err("bad zstd");
    assert_eq!(code(e), ErrorCode::InvalidInput);
    assert_eq!(edge.has_chunks(obj, &[ha, hb]).await.expect("ask"), vec![ha, hb]);

    edge.put_chunk(obj, &ha, 70_000, ChunkCodec::Raw, Bytes::from(a.clone())).await.expect("raw chunk");
    let z = zstd::bulk::compress(&b, 3).expect("zstd");
    edge.put_chunk(obj, &hb, 50_000, ChunkCodec::Zstd, Bytes::from(z)).await.expect("zstd chunk");
    assert!(edge.has_chunks(obj, &[ha, hb]).await.expect("ask").is_empty());
    let m = n.node.node.metrics();
    assert_eq!(m.chunks_received.get(), 2);
    assert!(m.chunk_wire_bytes.get() < m.chunk_bytes.get(), "the zstd chunk travelled compressed");

    // A wrong total is refused; a right one commits: a, b, a again.
    let e = edge.commit(obj, 1, &[ha, hb, ha]).await.expect_err("size");
    assert_eq!(code(e), ErrorCode::InvalidInput);
    assert!(edge.commit(obj, 190_000, &[ha, hb, ha]).await.expect("commit").is_empty());
    let want: Vec<u8> = [&a[..], &b[..], &a[..]].concat();
    assert!(read_all(&edge, obj).await.expect("read back") == want);
    assert!(n.node.node.journal().drain(Duration::from_secs(30)).await);
    assert!(stored(&base, "logs/robot-17/robot/run-1.mcap").await.expect("stored") == want);

    // Outside its own prefix a device may write nothing, by any request.
    for path in ["/logs/robot-2/x.mcap", "/datasets/x.bin", "/logs/robot-17", "/logs/robot-170/x"] {
        let e = edge.commit(path, 70_000, &[ha]).await.expect_err(path);
        assert_eq!(code(e), ErrorCode::Unauthorized, "{path}");
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").expect("write");
        let e = edge.put_file(path, &f).await.expect_err(path);
        assert_eq!(code(e), ErrorCode::Unauthorized, "{path}");
    }
    let e = edge.rename(obj, "/datasets/stolen.mcap").await.expect_err("rename out");
    assert_eq!(code(e), ErrorCode::Unauthorized);
    assert_eq!(stored(&base, "logs/robot-2/x.mcap").await, None);
    assert_eq!(stored(&base, "datasets/x.bin").await, None);
    assert!(stored(&base, "logs/robot-17/robot/run-1.mcap").await.is_some());
    // Other roles are not limited to a prefix.
    let client = client(&certs, &nodes);
    assert!(client.commit("/datasets/ab.bin", 120_000, &[ha, hb]).await.expect("client commit").is_empty());

    // An edge whose certificate comes from another CA gets nowhere.
    let other = dir.path().join("other");
    tls::init_ca(&other, "other").expect("other CA");
    let stranger = edge_client(&other, "robot-17", &nodes);
    let e = stranger.has_chunks(obj, &[ha]).await.expect_err("foreign edge");
    assert!(matches!(e, ProtocolError::Connection { .. }), "{e:?}");
    n.node.shutdown().await;
}
