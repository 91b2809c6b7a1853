//! Writes through a cache node: journal, background upload, rename, delete,
//! write-through, and recovery of acknowledged writes after a crash.

mod common;

use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};

use common::*;
use ferry_cloud_tier::namespace::open_store;
use ferry_cloud_tier::testing::faulty::Faults;
use ferry_protocol::codec::EntryKind;
use ferry_protocol::{ErrorCode, ProtocolError};

async fn stored(store: &Arc<dyn ObjectStore>, prefix: &StorePath, name: &str) -> Option<Vec<u8>> {
    let loc = StorePath::parse(format!("{prefix}/{name}").trim_start_matches('/')).expect("path");
    match store.get(&loc).await {
        Ok(r) => Some(r.bytes().await.expect("body").to_vec()),
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => panic!("store get {name}: {e}"),
    }
}

async fn wait_stored(store: &Arc<dyn ObjectStore>, prefix: &StorePath, name: &str, want: &[u8]) {
    let t0 = std::time::Instant::now();
    loop {
        if stored(store, prefix, name).await.as_deref() == Some(want) {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "{name} never reached the store");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn local(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write local file");
    p
}

async fn write_suite(base: Arc<dyn ObjectStore>, prefix: StorePath) {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = certs(dir.path());
    let cfg = node_config(&dir.path().join("cache"), 64 << 20, 256 << 20);
    let n = start_node(&certs, &cfg, "/ckpt", base.clone(), prefix.clone(), Faults::default()).await;
    let c = client(&certs, &[n.node.addr.to_string()]);

    // A multi-page checkpoint: acknowledged from the journal, readable at once, then persisted.
    let body = data(5 * PAGE as usize + 123, 1);
    let persisted =
        c.put_file("/ckpt/run-7/step-1000.pt.tmp", &local(dir.path(), "a", &body)).await.expect("put").persisted;
    assert!(!persisted, "default mounts acknowledge from the journal");
    assert!(read_all(&c, "/ckpt/run-7/step-1000.pt.tmp").await.expect("read back") == body);
    // Rename into place, as trainers do.
    c.rename("/ckpt/run-7/step-1000.pt.tmp", "/ckpt/run-7/step-1000.pt").await.expect("rename");
    assert!(read_all(&c, "/ckpt/run-7/step-1000.pt").await.expect("read renamed") == body);
    let listing: Vec<String> = c.list("/ckpt/run-7").await.expect("list").into_iter().map(|e| e.name).collect();
    assert_eq!(listing, ["step-1000.pt"]);
    wait_stored(&base, &prefix, "run-7/step-1000.pt", &body).await;
    assert!(n.node.node.journal().drain(Duration::from_secs(30)).await);
    assert_eq!(stored(&base, &prefix, "run-7/step-1000.pt.tmp").await, None, "the temporary name must not persist");
    let info = c.stat("/ckpt/run-7/step-1000.pt").await.expect("stat");
    assert!(info.persisted && info.size == body.len() as u64, "{info:?}");
    assert!(read_all(&c, "/ckpt/run-7/step-1000.pt").await.expect("read from store") == body);

    // Overwrite: the new bytes win everywhere.
    let v2 = data(PAGE as usize / 3, 2);
    c.put_file("/ckpt/run-7/step-1000.pt", &local(dir.path(), "b", &v2)).await.expect("overwrite");
    assert!(read_all(&c, "/ckpt/run-7/step-1000.pt").await.expect("read v2") == v2);
    wait_stored(&base, &prefix, "run-7/step-1000.pt", &v2).await;
    assert!(n.node.node.journal().drain(Duration::from_secs(30)).await);
    assert!(read_all(&c, "/ckpt/run-7/step-1000.pt").await.expect("read v2 from store") == v2);

    // Rename of a persisted object, then delete.
    assert!(c.rename("/ckpt/run-7/step-1000.pt", "/ckpt/run-7/final.pt").await.expect("rename persisted"));
    assert_eq!(stored(&base, &prefix, "run-7/final.pt").await.as_deref(), Some(&v2[..]));
    assert_eq!(stored(&base, &prefix, "run-7/step-1000.pt").await, None);
    c.delete("/ckpt/run-7/final.pt").await.expect("delete");
    assert_eq!(stored(&base, &prefix, "run-7/final.pt").await, None);
    let e = c.stat("/ckpt/run-7/final.pt").await.expect_err("deleted");
    assert!(matches!(e, ProtocolError::Remote { code: ErrorCode::NotFound, .. }), "{e}");

    // Bad writes change nothing.
    let e = c.put_file("/ckpt/../escape", &local(dir.path(), "c", b"x")).await.expect_err("traversal");
    assert!(matches!(e, ProtocolError::Remote { code: ErrorCode::InvalidInput, .. }), "{e}");
    let e = c.put_file("/nowhere/x", &local(dir.path(), "d", b"x")).await.expect_err("no mount");
    assert!(matches!(e, ProtocolError::Remote { code: ErrorCode::NotFound, .. }), "{e}");
    let e = c.delete("/ckpt/never-written").await.expect_err("missing");
    assert!(matches!(e, ProtocolError::Remote { code: ErrorCode::NotFound, .. }), "{e}");
    n.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_local_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    std::fs::create_dir_all(&root).expect("mkdir");
    let (store, prefix) = open_store(&format!("file://{}", root.display()), &Default::default()).expect("open");
    write_suite(store, prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_s3() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("ferry-writes");
    let (store, prefix) = open_store("s3://ferry-writes/ck", &moto.options()).expect("open s3");
    write_suite(store, prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_through_mount_acknowledges_once_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = certs(dir.path());
    let base: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let mut cfg = node_config(&dir.path().join("cache"), 16 << 20, 64 << 20);
    cfg.mounts.clear();
    let store = Arc::new(ferry_cloud_tier::testing::faulty::FaultyStore::new(base.clone(), Faults::default()));
    let mut ns = ferry_cloud_tier::namespace::Namespace::empty(Arc::new(ferry_cloud_tier::metrics::Metrics::new()));
    ns.add("/wt", store, StorePath::default(), 0).expect("mount");
    ns.set_write_through("/wt", true);
    let node = ferry_cloud_tier::RunningNode::start_with(
        &cfg,
        ns,
        tls_of(&certs, "cloud-1"),
        Arc::new(ferry_cloud_tier::clock::SystemClock),
    )
    .await
    .expect("start");
    let c = client(&certs, &[node.addr.to_string()]);
    let body = data(3 * PAGE as usize, 9);
    let written = c.put_file("/wt/x.bin", &local(dir.path(), "x", &body)).await.expect("put");
    assert!(written.persisted);
    assert_eq!(
        written.etag,
        c.stat("/wt/x.bin").await.expect("stat").etag,
        "write-through answers with the store's version"
    );
    assert_eq!(stored(&base, &StorePath::default(), "x.bin").await.as_deref(), Some(&body[..]));
    assert!(c.stat("/wt/x.bin").await.expect("stat").persisted);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_stays_visible_while_its_first_file_uploads() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A listing tells the store as it was when asked but arrives 500 ms later;
    // the upload of the directory's only file lands (and leaves the journal)
    // 100 ms after it was acknowledged, in between.
    let faults = Faults {
        write_latency: Duration::from_millis(100),
        reply_latency: Duration::from_millis(500),
        ..Default::default()
    };
    let FileNode { certs, base, prefix, node: n } = file_node_with(dir.path(), faults).await;
    let c = client(&certs, &[n.node.addr.to_string()]);
    let body = data(1000, 5);
    assert!(!c.put_file("/run-7/step-1.pt", &local(dir.path(), "s", &body)).await.expect("put").persisted);
    let info = c.stat("/run-7").await.expect("the directory of a file being uploaded");
    assert_eq!(info.kind, EntryKind::Dir);
    wait_stored(&base, &prefix, "run-7/step-1.pt", &body).await;
    assert_eq!(c.stat("/run-7").await.expect("the directory once uploaded").kind, EntryKind::Dir);
    n.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_write_survives_a_crash_before_upload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = certs(dir.path());
    let root = dir.path().join("store");
    std::fs::create_dir_all(&root).expect("mkdir");
    let (base, prefix) = open_store(&format!("file://{}", root.display()), &Default::default()).expect("open");
    let cfg = node_config(&dir.path().join("cache"), 16 << 20, 64 << 20);
    let body = data(2 * PAGE as usize + 7, 33);
    {
        // The store refuses every request, so nothing can be uploaded before the "crash".
        let n = start_node(&certs, &cfg, "/", base.clone(), prefix.clone(), Faults::default()).await;
        n.store.fail_next(u64::MAX);
        let c = client(&certs, &[n.node.addr.to_string()]);
        assert!(!c.put_file("/ckpt.pt", &local(dir.path(), "k", &body)).await.expect("put acknowledged").persisted);
        assert_eq!(n.node.node.journal().entries().len(), 1);
        // Crash: drop everything without shutdown; no flush, no drain.
        std::mem::forget(n);
    }
    assert_eq!(stored(&base, &prefix, "ckpt.pt").await, None);
    let n = start_node(&certs, &cfg, "/", base.clone(), prefix.clone(), Faults::default()).await;
    let c = client(&certs, &[n.node.addr.to_string()]);
    // Readable from the recovered journal before it is uploaded, then persisted intact.
    let info = c.stat("/ckpt.pt").await.expect("stat recovered");
    assert_eq!((info.kind, info.size), (EntryKind::File, body.len() as u64));
    wait_stored(&base, &prefix, "ckpt.pt", &body).await;
    assert!(n.node.node.journal().drain(Duration::from_secs(30)).await);
    assert!(read_all(&c, "/ckpt.pt").await.expect("read") == body);
    n.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_host_writer_hands_its_file_over_without_a_copy() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let FileNode { certs, base, prefix, node: n } = file_node(dir.path()).await;
    let c = client(&certs, &[n.node.addr.to_string()]);

    // The node runs on this host, so the client finds its inbox.
    let inbox = c.inbox_for("/ckpt/step-1.pt").await.expect("a same-host node offers its inbox");
    // Hold uploads back, so the write is seen while still only in the journal.
    n.store.fail_next(u64::MAX);
    assert_eq!(inbox, n.node.node.inbox_dir());
    let body = data(3 * PAGE as usize + 11, 5);
    let staged = local(&inbox, "m1-1", &body);
    let written = c.put_file("/ckpt/step-1.pt", &staged).await.expect("adopt");
    assert!(written.adopted && !written.persisted);
    // The journal holds the very same inode: nothing was copied.
    let entry = n.node.node.journal().pending("/ckpt/step-1.pt").expect("journaled");
    let journal_file = n.node.node.journal().data_path(&entry);
    assert_eq!(
        std::fs::metadata(&journal_file).expect("journal file").ino(),
        std::fs::metadata(&staged).expect("staged").ino()
    );
    assert_eq!(c.stat("/ckpt/step-1.pt").await.expect("stat").etag, written.etag);
    assert!(read_all(&c, "/ckpt/step-1.pt").await.expect("read back") == body);

    // Once uploaded, the node still tells which write the stored object came from.
    n.store.fail_next(0);
    wait_stored(&base, &prefix, "ckpt/step-1.pt", &body).await;
    assert!(n.node.node.journal().drain(Duration::from_secs(60)).await);
    let info = c.stat("/ckpt/step-1.pt").await.expect("stat");
    assert!(info.persisted);
    assert_ne!(info.etag, written.etag);
    assert_eq!(info.origin, written.etag);
    n.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopt_refuses_what_is_not_a_plain_inbox_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let FileNode { base, prefix, node: n, .. } = file_node(dir.path()).await;
    let node = &n.node.node;
    let inbox = node.inbox_dir().to_path_buf();
    let secret = local(dir.path(), "secret", b"not for the store");
    std::os::unix::fs::symlink(&secret, inbox.join("link")).expect("symlink");
    local(&inbox, "short", b"12345");
    std::fs::create_dir(inbox.join("adir")).expect("mkdir");
    for (name, len) in [
        ("../secret", 17),
        ("/etc/hostname", 1),
        ("a/b", 1),
        (".node", 32),
        ("", 0),
        ("link", 17),
        ("adir", 0),
        ("short", 6),
        ("missing", 1),
    ] {
        let err = node.handle_adopt("/x.bin", name, len).await.expect_err(name);
        assert_eq!(err.code(), ErrorCode::InvalidInput, "{name}: {err}");
    }
    // Nothing was taken: no journal entry, nothing stored, the inbox file untouched.
    assert!(node.journal().entries().is_empty());
    assert_eq!(stored(&base, &prefix, "x.bin").await, None);
    assert_eq!(std::fs::read(inbox.join("short")).expect("still there"), b"12345");
    let journal_dir = inbox.parent().expect("journal").to_path_buf();
    let leftovers: Vec<String> = std::fs::read_dir(&journal_dir)
        .expect("journal dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name != "inbox")
        .collect();
    assert!(leftovers.is_empty(), "journal files left behind: {leftovers:?}");
    n.node.shutdown().await;
}

/// A `file://` store holds links a user made: one inside the store works,
/// one leading out of it is neither read, listed nor written through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_in_a_local_store_never_lead_outside_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::write(outside.join("secret"), b"private").expect("write");
    let FileNode { certs, node: n, .. } = file_node(dir.path()).await;
    let root = dir.path().join("store");
    std::fs::create_dir_all(root.join("d")).expect("mkdir");
    std::fs::write(root.join("d/inside.txt"), b"ok").expect("write");
    std::os::unix::fs::symlink(outside.join("secret"), root.join("d/secret-link")).expect("symlink");
    std::os::unix::fs::symlink(&outside, root.join("d/out-dir")).expect("symlink");
    std::os::unix::fs::symlink("../../outside/secret", root.join("d/relative-link")).expect("symlink");
    std::os::unix::fs::symlink(root.join("d/inside.txt"), root.join("d/inside-link")).expect("symlink");
    let c = client(&certs, &[n.node.addr.to_string()]);
    assert_eq!(read_all(&c, "/d/inside-link").await.expect("a link inside the store"), b"ok");
    for p in ["/d/secret-link", "/d/out-dir/secret", "/d/relative-link"] {
        match read_all(&c, p).await {
            Err(ProtocolError::Remote { code: ErrorCode::Unauthorized | ErrorCode::NotFound, .. }) => {}
            other => panic!("{p}: {other:?}"),
        }
    }
    let mut names: Vec<String> = c.list("/d").await.expect("list").into_iter().map(|e| e.name).collect();
    names.sort();
    assert_eq!(names, ["inside-link", "inside.txt"]);
    let planted = local(dir.path(), "planted", b"planted");
    match c.put_file("/d/out-dir/planted", &planted).await {
        Err(ProtocolError::Remote { code: ErrorCode::Unauthorized, message }) => {
            assert!(message.contains("outside"), "{message}");
        }
        other => panic!("a write through a link out of the store: {other:?}"),
    }
    match c.mkdir("/d/out-dir/made").await {
        Err(ProtocolError::Remote { code: ErrorCode::Unauthorized, .. }) => {}
        other => panic!("mkdir through a link out of the store: {other:?}"),
    }
    assert_eq!(std::fs::read_dir(&outside).expect("outside").count(), 1, "something was made outside the store");
    n.node.shutdown().await;
}
