//! The FUSE mount against a real kernel mount: reads, listings, concurrent
//! readers, checkpoint writes (create, write, fsync, rename, unlink).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use ferry_cloud_tier::namespace::open_store_with_dirs;
use ferry_cloud_tier::testing::faulty::Faults;
use ferry_cloud_tier::testing::*;
use ferry_mount::fuse::{self, MountError};
use ferry_mount::MountFs;

/// FUSE is needed; under CI its absence is a failure.
fn fuse_available() -> bool {
    available(Path::new("/dev/fuse").exists(), "/dev/fuse missing: scripts/test.sh installs fuse3")
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

/// A cache node over a `file://` store holding `objects`, and a real FUSE
/// mount of it (1 GiB of local copies), all under `dir`.
struct Mounted {
    base: Arc<dyn ObjectStore>,
    n: TestNode,
    mnt: PathBuf,
    session: fuser::BackgroundSession,
    fs: Arc<MountFs>,
}

/// The node does not tell the mount its store's files (`Locate`: the store
/// is treated as remote), so reads go through the node and local copies.
async fn mounted(dir: &Path, objects: &[(&str, &[u8])]) -> Mounted {
    let root = dir.join("store");
    std::fs::create_dir_all(&root).expect("mkdir");
    let mut opened = open_store_with_dirs(&format!("file://{}", root.display()), &Default::default()).expect("open");
    opened.2 = None;
    mounted_with(dir, opened, objects).await
}

/// A node over the `file://` store at `root`, its directories and files
/// known as a local store's.
async fn mounted_over(dir: &Path, root: &Path, objects: &[(&str, &[u8])]) -> Mounted {
    let opened = open_store_with_dirs(&format!("file://{}", root.display()), &Default::default()).expect("open");
    mounted_with(dir, opened, objects).await
}

async fn mounted_with(
    dir: &Path,
    opened: ferry_cloud_tier::namespace::OpenedStore,
    objects: &[(&str, &[u8])],
) -> Mounted {
    let certs = certs(dir);
    let base = opened.0.clone();
    for (name, body) in objects {
        base.put(&StorePath::from(*name), PutPayload::from(body.to_vec())).await.expect("put");
    }
    let cfg = node_config(&dir.join("cache"), 64 << 20, 256 << 20);
    let n = start_node_over(&certs, &cfg, "/", opened, Faults::default()).await;
    let c = client(&certs, &[n.node.addr.to_string()]);
    let fs = MountFs::with_local_copies(c, dir.join("staging"), 1 << 30).await.expect("fs");
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).expect("mkdir mnt");
    let fs = Arc::new(fs);
    let session = fuse::mount(fs.clone(), &mnt, tokio::runtime::Handle::current()).expect("mount");
    Mounted { base, n, mnt, session, fs }
}

/// What the store holds at `name` once the node has uploaded every write.
async fn uploaded(n: &TestNode, base: &Arc<dyn ObjectStore>, name: &str) -> bytes::Bytes {
    assert!(n.node.node.journal().drain(Duration::from_secs(30)).await, "uploads never finished");
    base.get(&StorePath::from(name)).await.expect("in the store").bytes().await.expect("bytes")
}

async fn unmount(session: fuser::BackgroundSession, n: TestNode) {
    blocking(move || session.umount_and_join().expect("unmount")).await;
    n.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mount_reads_lists_and_writes_checkpoints() {
    if !fuse_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let big = data(7 * PAGE as usize + 333, 1);
    let small = b"label,0\n".to_vec();
    let Mounted { base, n, mnt, session, .. } =
        mounted(dir.path(), &[("datasets/train/shard-0.bin", &big), ("datasets/train/labels.csv", &small)]).await;

    let m = mnt.clone();
    let (b2, s2) = (big.clone(), small.clone());
    blocking(move || {
        // Listings and sizes.
        let mut names: Vec<String> = std::fs::read_dir(m.join("datasets/train"))
            .expect("readdir")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
            .collect();
        names.sort();
        assert_eq!(names, ["labels.csv", "shard-0.bin"]);
        assert_eq!(std::fs::metadata(m.join("datasets/train/shard-0.bin")).expect("stat").len(), b2.len() as u64);
        assert!(std::fs::metadata(m.join("datasets")).expect("stat dir").is_dir());
        assert_eq!(std::fs::metadata(m.join("nope")).expect_err("missing").kind(), std::io::ErrorKind::NotFound);
        // Whole-file and random reads.
        assert!(std::fs::read(m.join("datasets/train/shard-0.bin")).expect("read") == b2);
        assert_eq!(std::fs::read(m.join("datasets/train/labels.csv")).expect("read"), s2);
        let mut f = std::fs::File::open(m.join("datasets/train/shard-0.bin")).expect("open");
        for off in [3 * PAGE - 7, 123, 6 * PAGE + 5, PAGE] {
            let mut buf = vec![0u8; 4096];
            f.seek(SeekFrom::Start(off)).expect("seek");
            f.read_exact(&mut buf).expect("read");
            assert!(buf[..] == b2[off as usize..off as usize + 4096], "random read at {off}");
        }
    })
    .await;

    // Concurrent readers of the same file.
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let p = mnt.join("datasets/train/shard-0.bin");
            let want = big.clone();
            // Spawned now, so the four reads run at the same time.
            tokio::task::spawn_blocking(move || assert!(std::fs::read(p).expect("read") == want))
        })
        .collect();
    for r in readers {
        r.await.expect("reader");
    }

    // A file read to the end gets a local copy; later reads do not reach the node.
    let files = dir.path().join("staging/files");
    let t0 = std::time::Instant::now();
    loop {
        let done = std::fs::read_dir(&files).expect("local copies dir").flatten().any(|e| {
            !e.file_name().to_string_lossy().starts_with('.') && e.metadata().is_ok_and(|m| m.len() == big.len() as u64)
        });
        if done {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "no local copy appeared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let served = |n: &TestNode| -> u64 {
        ["memory", "disk", "store"].iter().map(|t| n.node.node.metrics().served_from(t)).sum()
    };
    let before = served(&n);
    let p = mnt.join("datasets/train/shard-0.bin");
    let want = big.clone();
    blocking(move || assert!(std::fs::read(p).expect("hot read") == want)).await;
    assert_eq!(served(&n), before, "a hot read went to the cache node");

    // A trainer's checkpoint: mkdir -p, write to a temporary name, fsync, rename into place.
    let m = mnt.clone();
    let ckpt = data(3 * PAGE as usize + 99, 2);
    let ck = ckpt.clone();
    blocking(move || {
        std::fs::create_dir_all(m.join("checkpoints/run-7")).expect("mkdir -p");
        let tmp = m.join("checkpoints/run-7/step-1000.pt.tmp");
        let mut f = std::fs::File::create(&tmp).expect("create");
        for chunk in ck.chunks(100_000) {
            f.write_all(chunk).expect("write");
        }
        f.sync_all().expect("fsync");
        assert_eq!(std::fs::metadata(&tmp).expect("stat").len(), ck.len() as u64);
        drop(f);
        std::fs::rename(&tmp, m.join("checkpoints/run-7/step-1000.pt")).expect("rename");
        assert!(std::fs::read(m.join("checkpoints/run-7/step-1000.pt")).expect("read back") == ck);
        let names: Vec<_> = std::fs::read_dir(m.join("checkpoints/run-7"))
            .expect("readdir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["step-1000.pt"]);
        // Overwrite in place and remove.
        std::fs::write(m.join("checkpoints/run-7/latest"), b"step-1000").expect("write latest");
        assert_eq!(std::fs::read(m.join("checkpoints/run-7/latest")).expect("read latest"), b"step-1000");
        std::fs::remove_file(m.join("checkpoints/run-7/latest")).expect("unlink");
    })
    .await;
    // Written here, so read back from the local file the node adopted: the node serves nothing.
    let read_back = |m: std::path::PathBuf, want: Vec<u8>| {
        blocking(move || assert!(std::fs::read(m.join("checkpoints/run-7/step-1000.pt")).expect("read") == want))
    };
    let before = served(&n);
    read_back(mnt.clone(), ckpt.clone()).await;
    assert_eq!(served(&n), before, "reading back a checkpoint written here went to the cache node");
    let ns = n.node.node.handle_stat("/checkpoints/run-7/latest").await;
    let st = base.head(&StorePath::from("checkpoints/run-7/latest")).await.map(|m| m.size);
    let m = mnt.clone();
    let after = blocking(move || std::fs::metadata(m.join("checkpoints/run-7/latest")).map(|m| m.len())).await;
    let ns2 = n.node.node.handle_stat("/checkpoints/run-7/latest").await;
    assert!(
        after.is_err(),
        "after unlink: {after:?} node {ns:?} store {st:?} node-later {ns2:?} journal {:?}",
        n.node.node.journal().entries()
    );

    // The checkpoint reaches the object store intact.
    let t0 = std::time::Instant::now();
    loop {
        let got = base.get(&StorePath::from("checkpoints/run-7/step-1000.pt")).await;
        if let Ok(r) = got {
            assert!(r.bytes().await.expect("bytes")[..] == ckpt[..]);
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "checkpoint never reached the store");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(n.node.node.journal().drain(Duration::from_secs(30)).await);
    assert!(base.head(&StorePath::from("checkpoints/run-7/step-1000.pt.tmp")).await.is_err());
    // Uploaded now; the node still knows it came from this write, so it stays local.
    let before = served(&n);
    read_back(mnt.clone(), ckpt.clone()).await;
    assert_eq!(served(&n), before, "reading back an uploaded checkpoint written here went to the cache node");

    // Renamed into place only after the upload finished (a rename in the store, not in the journal).
    let m = mnt.clone();
    let second = data(2 * PAGE as usize + 7, 6);
    let s2 = second.clone();
    blocking(move || std::fs::write(m.join("checkpoints/run-7/step-2000.pt.tmp"), &s2).expect("write")).await;
    assert!(n.node.node.journal().drain(Duration::from_secs(30)).await);
    let m = mnt.clone();
    blocking(move || {
        let dir = m.join("checkpoints/run-7");
        std::fs::rename(dir.join("step-2000.pt.tmp"), dir.join("step-2000.pt")).expect("rename")
    })
    .await;
    let before = served(&n);
    let (m, s2) = (mnt.clone(), second.clone());
    blocking(move || assert!(std::fs::read(m.join("checkpoints/run-7/step-2000.pt")).expect("read") == s2)).await;
    assert_eq!(served(&n), before, "reading back a checkpoint renamed after its upload went to the cache node");

    unmount(session, n).await;
}

/// Checkpoint files written through a mount whose node shares the host (the
/// kernel writes the staging file directly): writes after an fsync, readers
/// while writing, sizes, truncation, and what reaches the store at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_after_fsync_on_the_same_host_keep_every_version_whole() {
    if !fuse_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let Mounted { base, n, mnt, session, .. } = mounted(dir.path(), &[]).await;

    let first = data(2 * PAGE as usize + 17, 3);
    let m = mnt.clone();
    let mut f = blocking(move || {
        std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(m.join("ck.pt"))
    })
    .await
    .expect("create");
    // Uploads wait, so the journal entry made by fsync is still there to see.
    n.store.fail_next(u64::MAX);
    let f1 = first.clone();
    let file = blocking(move || {
        f.write_all(&f1).expect("write");
        f.sync_all().expect("fsync");
        f
    })
    .await;
    // Durable on the node once fsync returned.
    let pending = n.node.node.journal().pending("/ck.pt").expect("journal entry after fsync");
    assert_eq!(pending.size, first.len() as u64);
    n.store.fail_next(0);

    // Written after the fsync: overwrite a few bytes, append more; others see it at once.
    let mut want = first.clone();
    want[10..20].copy_from_slice(b"0123456789");
    let more = data(PAGE as usize + 5, 4);
    want.extend_from_slice(&more);
    let m = mnt.clone();
    let w2 = want.clone();
    let file = blocking(move || {
        use std::os::unix::fs::FileExt;
        file.write_all_at(b"0123456789", 10).expect("overwrite");
        file.write_all_at(&more, (w2.len() - more.len()) as u64).expect("append");
        assert_eq!(std::fs::metadata(m.join("ck.pt")).expect("stat").len(), w2.len() as u64, "size while writing");
        assert!(std::fs::read(m.join("ck.pt")).expect("read while writing") == w2, "a reader while writing");
        file
    })
    .await;

    // Cut back to a shorter length after that, then close: the store ends with exactly this.
    let cut = 3 * PAGE as usize / 2;
    want.truncate(cut);
    blocking(move || {
        file.set_len(cut as u64).expect("ftruncate");
        drop(file);
    })
    .await;
    let stored = uploaded(&n, &base, "ck.pt").await;
    assert!(stored[..] == want[..], "the store holds {} bytes, not the last version", stored.len());
    let m = mnt.clone();
    let w2 = want.clone();
    blocking(move || assert!(std::fs::read(m.join("ck.pt")).expect("read back") == w2)).await;

    // A second checkpoint written and closed without fsync also arrives whole.
    let second = data(5 * PAGE as usize + 1, 5);
    let m = mnt.clone();
    let s2 = second.clone();
    blocking(move || std::fs::write(m.join("ck2.pt"), &s2).expect("write")).await;
    let stored = uploaded(&n, &base, "ck2.pt").await;
    assert!(stored[..] == second[..]);

    unmount(session, n).await;
}

/// A local copy appearing while a reader still has the file open: readers
/// that open afterwards read it too (the kernel refuses mixing page-cache and
/// passthrough opens of one inode, so they wait for the old opens to close).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_before_and_after_a_local_copy_appears_all_read() {
    if !fuse_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let body = data(3 * PAGE as usize + 5, 9);
    let Mounted { n, mnt, session, .. } = mounted(dir.path(), &[("shard.bin", &body)]).await;

    // Reader A opens first and keeps the file open; B reads it whole and closes.
    let (m, b) = (mnt.clone(), body.clone());
    let held = blocking(move || {
        let mut a = std::fs::File::open(m.join("shard.bin")).expect("open A");
        let mut head = vec![0u8; 4096];
        a.read_exact(&mut head).expect("read A");
        assert!(head[..] == b[..4096]);
        assert!(std::fs::read(m.join("shard.bin")).expect("read B") == b);
        a
    })
    .await;
    local_copy_appears(dir.path()).await;
    // C and D open while A is still open, then A finishes; afterwards E opens alone.
    let (m, b) = (mnt.clone(), body.clone());
    blocking(move || {
        let mut a = held;
        assert!(std::fs::read(m.join("shard.bin")).expect("read C") == b);
        let mut d = std::fs::File::open(m.join("shard.bin")).expect("open D");
        let mut rest = Vec::new();
        a.read_to_end(&mut rest).expect("read A to the end");
        assert!(rest[..] == b[4096..]);
        drop(a);
        let mut got = Vec::new();
        d.read_to_end(&mut got).expect("read D");
        assert!(got == b);
        drop(d);
        assert!(std::fs::read(m.join("shard.bin")).expect("read E") == b);
    })
    .await;

    unmount(session, n).await;
}

/// Waits until the mount has a local copy of some file.
async fn local_copy_appears(dir: &Path) {
    let files = dir.join("staging/files");
    let t0 = std::time::Instant::now();
    while !std::fs::read_dir(&files)
        .expect("local copies")
        .flatten()
        .any(|e| !e.file_name().to_string_lossy().starts_with('.'))
    {
        assert!(t0.elapsed() < Duration::from_secs(30), "no local copy appeared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A writer opening a file that another handle holds open through a kernel
/// backing file (a reader on a local copy, a second writer on this host) is
/// not refused: as on a local disk, the opens share one file.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_open_files_others_hold_open() {
    if !fuse_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let old = data(2 * PAGE as usize + 9, 11);
    let Mounted { base, n, mnt, session, .. } = mounted(dir.path(), &[("latest.pt", &old)]).await;

    // An evaluation job reads the current checkpoint from its local copy...
    let (m, o) = (mnt.clone(), old.clone());
    blocking(move || assert!(std::fs::read(m.join("latest.pt")).expect("first read") == o)).await;
    local_copy_appears(dir.path()).await;
    let new = data(3 * PAGE as usize + 1, 12);
    let (m, o, w) = (mnt.clone(), old.clone(), new.clone());
    blocking(move || {
        let mut reader = std::fs::File::open(m.join("latest.pt")).expect("open reader");
        let mut head = vec![0u8; 4096];
        reader.read_exact(&mut head).expect("read head");
        // ...while training overwrites it with the next one.
        let mut writer = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(m.join("latest.pt"))
            .expect("a writer opening a file a reader holds");
        writer.write_all(&w).expect("write");
        writer.sync_all().expect("fsync");
        drop(writer);
        // The reader goes on in the same file, which now holds the new bytes.
        assert!(head[..] == o[..4096]);
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).expect("reader after the overwrite");
        assert!(rest[..] == w[4096..], "the open reader does not see the new bytes");
    })
    .await;
    let stored = uploaded(&n, &base, "latest.pt").await;
    assert!(stored[..] == new[..], "the store does not hold the new checkpoint");
    let (m, w) = (mnt.clone(), new.clone());
    blocking(move || assert!(std::fs::read(m.join("latest.pt")).expect("read new") == w)).await;

    // Two writers of one new file on this host share it, as on a local disk:
    // the second one's truncate and write leave exactly its bytes.
    let (a, b) = (data(PAGE as usize + 3, 13), data(2 * PAGE as usize + 7, 14));
    let (m, a2, b2) = (mnt.clone(), a.clone(), b.clone());
    blocking(move || {
        let mut first = std::fs::File::create(m.join("two.pt")).expect("create first");
        first.write_all(&a2).expect("write first");
        let mut second = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(m.join("two.pt"))
            .expect("a second writer of one file");
        second.write_all(&b2).expect("write second");
        first.sync_all().expect("fsync first");
        drop(first);
        second.sync_all().expect("fsync second");
        drop(second);
    })
    .await;
    let stored = uploaded(&n, &base, "two.pt").await;
    assert!(stored[..] == b[..], "the store holds {} bytes, not the last closed version", stored.len());
    let (m, b2) = (mnt.clone(), b.clone());
    blocking(move || assert!(std::fs::read(m.join("two.pt")).expect("read two") == b2)).await;

    // Removed and made again while a reader holds the old one: a new file.
    let c = data(PAGE as usize + 11, 15);
    let (m, b2, c2) = (mnt.clone(), b.clone(), c.clone());
    blocking(move || {
        let mut reader = std::fs::File::open(m.join("two.pt")).expect("open reader");
        std::fs::remove_file(m.join("two.pt")).expect("unlink");
        std::fs::write(m.join("two.pt"), &c2).expect("a new file under the old name");
        let mut old = Vec::new();
        reader.read_to_end(&mut old).expect("read the removed file");
        assert!(old == b2, "the removed file changed under its reader");
    })
    .await;
    let stored = uploaded(&n, &base, "two.pt").await;
    assert!(stored[..] == c[..]);

    unmount(session, n).await;
}

/// A page whose fetch failed (a store error, a node restarting) is fetched
/// again by the next read through the same open file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_page_is_fetched_again_by_the_next_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = certs(dir.path());
    let base: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let body = data(3 * PAGE as usize, 6);
    base.put(&StorePath::from("f"), PutPayload::from(body.clone())).await.expect("put");
    // No prefetch anywhere, so the one failure meets the reader's own fetch.
    let cfg = ferry_cloud_tier::CloudConfig {
        prefetch: "none".into(),
        ..node_config(&dir.path().join("cache"), 64 << 20, 0)
    };
    let n = start_node(&certs, &cfg, "/", base, StorePath::default(), Faults::default()).await;
    let fs = MountFs::new(client(&certs, &[n.node.addr.to_string()]), dir.path().join("staging")).await.expect("fs");
    fs.set_readahead(0);
    let attr = fs.lookup(ferry_mount::ROOT_INO, "f").await.expect("lookup");
    let fh = match fs.open(attr.ino, false, false).await.expect("open") {
        ferry_mount::Opened::Handle(fh) => fh,
        _ => panic!("no local copy exists yet: reads go through the handle"),
    };
    n.store.fail_next(1);
    fs.read(fh, 0, 4096, 1).await.expect_err("the store failed the page's fetch");
    let again = fs.read(fh, 0, 4096, 1).await.expect("read again");
    assert!(again[..] == body[..4096]);
    let later = fs.read(fh, PAGE - 10, 4096, 1).await.expect("read across pages");
    assert!(later[..] == body[PAGE as usize - 10..PAGE as usize + 4086]);
    n.node.shutdown().await;
}

/// Walking a dataset leaves no inode per file behind for the mount's
/// lifetime: what the kernel forgets, the mount forgets.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inodes_the_kernel_forgets_are_forgotten() {
    if !fuse_available() {
        return;
    }
    // Telling the kernel to drop its dentries needs root (a writable drop_caches).
    let may_drop = std::fs::OpenOptions::new().write(true).open("/proc/sys/vm/drop_caches").is_ok();
    if !available(may_drop, "/proc/sys/vm/drop_caches is not writable (the test needs root)") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let files: Vec<(String, Vec<u8>)> =
        (0..300).map(|i| (format!("frames/f{i:04}.jpg"), data(100 + i, i as u64))).collect();
    let objects: Vec<(&str, &[u8])> = files.iter().map(|(p, b)| (p.as_str(), b.as_slice())).collect();
    let Mounted { n, mnt, session, fs, .. } = mounted(dir.path(), &objects).await;
    let before = fs.inode_count();
    let walk = |m: PathBuf, files: Vec<(String, Vec<u8>)>| {
        blocking(move || {
            assert_eq!(std::fs::read_dir(m.join("frames")).expect("readdir").count(), files.len());
            for (p, body) in &files {
                assert!(std::fs::read(m.join(p)).expect("read") == *body, "{p}");
            }
        })
    };
    walk(mnt.clone(), files.clone()).await;
    let walked = fs.inode_count();
    assert!(walked > before + 300, "{walked} inodes after looking up 300 files ({before} before)");
    // The kernel drops unused dentries and inodes under memory pressure, or
    // when told to, and sends FORGET for each (no reply, so wait for them).
    blocking(|| std::fs::write("/proc/sys/vm/drop_caches", "2").expect("drop the kernel's dentries (as root)")).await;
    let t0 = std::time::Instant::now();
    while fs.inode_count() > before + 2 {
        assert!(t0.elapsed() < Duration::from_secs(30), "{} inodes still known ({before} before)", fs.inode_count());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Looked up again under new inodes: the same files.
    walk(mnt.clone(), files).await;
    unmount(session, n).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_mountpoints_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing: PathBuf = dir.path().join("missing");
    assert!(matches!(fuse::check_mountpoint(&missing), Err(MountError::Mountpoint(m)) if m.contains("No such file")));
    let full = dir.path().join("full");
    std::fs::create_dir_all(&full).expect("mkdir");
    std::fs::write(full.join("x"), b"x").expect("write");
    assert!(matches!(fuse::check_mountpoint(&full), Err(MountError::Mountpoint(m)) if m.contains("not empty")));
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").expect("write");
    assert!(matches!(fuse::check_mountpoint(&file), Err(MountError::Mountpoint(m)) if m.contains("not a directory")));
}

/// After the node adopted a staging file, later writes must not reach the
/// adopted bytes: they go to a copy until the next fsync hands that over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_after_an_adoption_leave_the_adopted_bytes_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let FileNode { certs, base, node: n, .. } = file_node(dir.path()).await;
    // Keep uploads from finishing, so the first version stays in the journal.
    n.store.fail_next(u64::MAX);
    let c = client(&certs, &[n.node.addr.to_string()]);
    let fs = MountFs::with_local_copies(c.clone(), dir.path().join("staging"), 1 << 30).await.expect("fs");
    let journal = n.node.node.journal().clone();

    let first = data(2 * PAGE as usize + 5, 3);
    let (attr, opened) = fs.create(ferry_mount::ROOT_INO, "ck.pt").await.expect("create");
    let fh = opened.fh();
    fs.write(fh, 0, &first).expect("write");
    fs.fsync(fh).await.expect("fsync");
    let e1 = journal.pending("/ck.pt").expect("journaled");
    let adopted = journal.data_path(&e1);
    assert!(std::fs::read(&adopted).expect("journal file") == first);

    fs.write(fh, 10, b"PATCH").expect("write after fsync");
    fs.truncate(attr.ino, Some(fh), first.len() as u64 + 100).await.expect("truncate");
    assert!(std::fs::read(&adopted).expect("journal file") == first, "a later write changed acknowledged bytes");
    fs.release(fh).await.expect("close");
    let mut want = first.clone();
    want[10..15].copy_from_slice(b"PATCH");
    let got = read_all(&c, "/ck.pt").await.expect("read");
    assert_eq!(got.len(), want.len() + 100);
    assert!(got[..want.len()] == want[..] && got[want.len()..].iter().all(|b| *b == 0));
    n.store.fail_next(0);
    assert!(journal.drain(Duration::from_secs(60)).await);
    let stored = base.get(&StorePath::from("ck.pt")).await.expect("stored").bytes().await.expect("bytes");
    assert!(stored[..] == got[..]);
    n.node.shutdown().await;
}

/// Directories as tools make them in the store (an empty folder DLIO
/// creates, a checkpoint directory made before its first file) and as
/// users make them through the mount (`mkdir -p`), across a remount.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_directories_and_mkdir_outlive_the_mount() {
    if !fuse_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    std::fs::create_dir_all(root.join("ds/valid")).expect("an empty store directory");
    std::fs::create_dir_all(root.join("checkpoints")).expect("an empty store directory");
    let Mounted { n, mnt, session, .. } =
        mounted_over(&dir.path().join("one"), &root, &[("ds/train/a.bin", b"sample")]).await;
    let (m, r) = (mnt.clone(), root.clone());
    blocking(move || {
        let names = |p: &Path| -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(p)
                .expect("readdir")
                .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(&m.join("ds")), ["train", "valid"]);
        let valid = std::fs::metadata(m.join("ds/valid")).expect("an empty store directory is a directory");
        assert!(valid.is_dir());
        let year_2020 = std::time::UNIX_EPOCH + Duration::from_secs(1_577_836_800);
        assert!(valid.modified().expect("mtime") > year_2020, "{:?}", valid.modified());
        assert!(std::fs::metadata(m.join("ds")).expect("stat").modified().expect("mtime") > year_2020);
        assert!(names(&m.join("ds/valid")).is_empty());
        // A file written into an empty store directory.
        std::fs::write(m.join("checkpoints/x"), b"x").expect("write into an empty store directory");
        // mkdir -p reaches the store at once, before any file is below it.
        std::fs::create_dir_all(m.join("ck/run-1/sub")).expect("mkdir -p");
        assert!(r.join("ck/run-1/sub").is_dir(), "the store has the new directories");
        std::fs::write(m.join("ck/run-1/w.pt"), b"weights").expect("write");
    })
    .await;
    // In the store before this node goes (the next node has a journal of its own).
    assert!(n.node.node.journal().drain(Duration::from_secs(30)).await, "uploads never finished");
    unmount(session, n).await;

    // A new node and a new mount over the same store.
    let Mounted { n, mnt, session, .. } = mounted_over(&dir.path().join("two"), &root, &[]).await;
    let (m, r) = (mnt.clone(), root.clone());
    blocking(move || {
        assert!(std::fs::metadata(m.join("ck/run-1/sub")).expect("after a remount").is_dir());
        assert_eq!(std::fs::read(m.join("ck/run-1/w.pt")).expect("read"), b"weights");
        assert_eq!(std::fs::read(m.join("checkpoints/x")).expect("read"), b"x");
        let e = std::fs::remove_dir(m.join("ck/run-1")).expect_err("not empty");
        assert_eq!(e.kind(), std::io::ErrorKind::DirectoryNotEmpty, "{e}");
        std::fs::remove_dir(m.join("ck/run-1/sub")).expect("rmdir");
        assert!(!r.join("ck/run-1/sub").exists(), "rmdir reached the store");
        std::fs::remove_dir(m.join("ds/valid")).expect("rmdir another tool's directory");
        assert!(!r.join("ds/valid").exists());
        assert_eq!(std::fs::metadata(m.join("ds/valid")).expect_err("gone").kind(), std::io::ErrorKind::NotFound);
    })
    .await;
    unmount(session, n).await;
}

/// A directory of thousands of files (many kernel readdir calls, with
/// attributes) lists every entry once with its size, again from the
/// kernel's cache, and a change made by another client through the node
/// shows in the mount's listing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_directories_list_whole_and_follow_changes() {
    if !fuse_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    std::fs::create_dir_all(root.join("ds")).expect("mkdir");
    let expected: Vec<(String, u64)> = (0..3000).map(|i| (format!("img {i:05} #%41.jpg"), (i % 17) as u64)).collect();
    for (name, size) in &expected {
        std::fs::write(root.join("ds").join(name), vec![7u8; *size as usize]).expect("write sample");
    }
    let Mounted { n, mnt, session, .. } = mounted_over(&dir.path().join("m"), &root, &[]).await;
    let certs = dir.path().join("m/certs");
    let other = client(&certs, &[n.node.addr.to_string()]);
    let m = mnt.clone();
    let listing = move || -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = std::fs::read_dir(m.join("ds"))
            .expect("readdir")
            .map(|e| {
                let e = e.expect("entry");
                (e.file_name().into_string().expect("utf8"), e.metadata().expect("stat").len())
            })
            .collect();
        v.sort();
        v
    };
    let l = listing.clone();
    let (first, second) = blocking(move || (l(), l())).await;
    assert_eq!(first, expected);
    assert_eq!(second, expected, "listed again");

    // Through this mount: seen at once.
    let (m, l) = (mnt.clone(), listing.clone());
    blocking(move || {
        std::fs::write(m.join("ds/new.jpg"), b"12345").expect("write");
        assert!(l().contains(&("new.jpg".to_string(), 5)));
        std::fs::remove_file(m.join("ds/img 00000 #%41.jpg")).expect("unlink");
        assert!(!l().iter().any(|(n, _)| n == "img 00000 #%41.jpg"));
    })
    .await;
    // Through another client of the node: seen once it is in the store.
    other.put_bytes("/ds/other.jpg", b"abc").await.expect("another client writes");
    assert!(n.node.node.journal().drain(Duration::from_secs(30)).await, "upload");
    let l = listing.clone();
    let seen = blocking(move || {
        (0..100).any(|_| {
            let found = l().contains(&("other.jpg".to_string(), 3));
            if !found {
                std::thread::sleep(Duration::from_millis(100));
            }
            found
        })
    })
    .await;
    assert!(seen, "another client's file never showed in the mount's listing");
    unmount(session, n).await;
}
