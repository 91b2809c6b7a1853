//! The kernel side: turns FUSE requests into [`MountFs`] calls and
//! [`Passthrough`] decisions, and their results into replies. The rules
//! live in those two; this file only forwards.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig, LockOwner,
    MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use ferry_protocol::client::Cluster;
use ferry_protocol::codec::EntryKind;

use crate::error::FsError;
use crate::fs::MountFs;
use crate::handle::{Attr, Opened};
use crate::nodes::Nodes;
use crate::passthrough::{Passthrough, Way};

/// How long the kernel may cache attributes and entries, by default
/// (`ferry mount --attr-ttl`).
pub const ATTR_TTL: Duration = Duration::from_secs(1);

/// The adapter handed to fuser.
#[derive(Debug)]
pub struct FuseAdapter<N: Nodes = Cluster> {
    fs: Arc<MountFs<N>>,
    rt: tokio::runtime::Handle,
    uid: u32,
    gid: u32,
    pass: Arc<Passthrough<fuser::BackingId>>,
    /// What each open directory handle listed at offset 0: later offsets
    /// page through that, so a large directory is listed once per pass.
    dirs: Arc<Mutex<HashMap<u64, Listing>>>,
    next_dir: AtomicU64,
}

/// One directory listing pass: `.`, `..` and the entries.
type Listing = Arc<Vec<(String, Attr)>>;

/// Turns [`Attr`]s into kernel attributes; `Copy`, so replies can carry it into tasks.
#[derive(Debug, Clone, Copy)]
struct AttrMaker {
    uid: u32,
    gid: u32,
    blksize: u32,
    /// How long the kernel may keep what is made.
    ttl: Duration,
}

impl AttrMaker {
    fn make(self, a: &Attr) -> FileAttr {
        let (kind, perm, nlink) = match a.kind {
            EntryKind::Dir => (FileType::Directory, 0o755, 2),
            EntryKind::File => (FileType::RegularFile, 0o644, 1),
        };
        FileAttr {
            ino: INodeNo(a.ino),
            size: a.size,
            blocks: a.size.div_ceil(512),
            atime: a.mtime,
            mtime: a.mtime,
            ctime: a.mtime,
            crtime: a.mtime,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: self.blksize,
            flags: 0,
        }
    }
}

impl<N: Nodes> FuseAdapter<N> {
    /// The listing of `fh` for a read at `offset`: listed anew at offset 0.
    async fn listing(
        fs: &MountFs<N>,
        dirs: &Mutex<HashMap<u64, Listing>>,
        ino: u64,
        fh: u64,
        offset: u64,
    ) -> Result<Listing, FsError> {
        if offset > 0 {
            if let Some(l) = dirs.lock().expect("dir lock poisoned").get(&fh) {
                return Ok(l.clone());
            }
        }
        let dir = fs.dir_attr(&fs.path_of(ino)?);
        let mut all = vec![(".".to_string(), dir.clone()), ("..".to_string(), dir)];
        all.extend(fs.readdir(ino).await?);
        let all = Arc::new(all);
        dirs.lock().expect("dir lock poisoned").insert(fh, all.clone());
        Ok(all)
    }

    fn maker(&self) -> AttrMaker {
        AttrMaker { uid: self.uid, gid: self.gid, blksize: self.fs.block_size(), ttl: self.fs.attr_ttl() }
    }

    /// Runs `op` on the runtime and answers with an entry.
    fn reply_entry<F>(&self, reply: ReplyEntry, op: impl FnOnce(Arc<MountFs<N>>) -> F)
    where
        F: std::future::Future<Output = Result<Attr, FsError>> + Send + 'static,
    {
        let maker = self.maker();
        let fut = op(self.fs.clone());
        self.rt.spawn(async move {
            match fut.await {
                Ok(a) => reply.entry(&maker.ttl, &maker.make(&a), Generation(0)),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    /// Runs `op` on the runtime and answers with attributes.
    fn reply_attr<F>(&self, reply: ReplyAttr, op: impl FnOnce(Arc<MountFs<N>>) -> F)
    where
        F: std::future::Future<Output = Result<Attr, FsError>> + Send + 'static,
    {
        let maker = self.maker();
        let fut = op(self.fs.clone());
        self.rt.spawn(async move {
            match fut.await {
                Ok(a) => reply.attr(&maker.ttl, &maker.make(&a)),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    /// Runs `op` on the runtime and answers ok or an errno.
    fn reply_empty<F>(&self, reply: ReplyEmpty, op: impl FnOnce(Arc<MountFs<N>>) -> F)
    where
        F: std::future::Future<Output = Result<(), FsError>> + Send + 'static,
    {
        let fut = op(self.fs.clone());
        self.rt.spawn(async move {
            match fut.await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }
}

/// A writer that cannot share the file the kernel reads inode `ino` from.
fn busy(ino: u64) -> FsError {
    let e = FsError::new(
        libc::ETXTBSY,
        format!("inode {ino} is open through a file this writer cannot share; retry once it is closed"),
    );
    tracing::warn!(error = %e, "write open refused");
    e
}

fn errno(e: &FsError) -> Errno {
    let n = e.errno();
    if n != libc::ENOENT {
        tracing::debug!(errno = n, error = %e, "filesystem call failed");
    }
    Errno::from_i32(n)
}

/// Longest file name, in bytes, as on local file systems.
const NAME_MAX: usize = 255;

fn name_str(name: &OsStr) -> Result<String, Errno> {
    if name.len() > NAME_MAX {
        return Err(Errno::from_i32(libc::ENAMETOOLONG));
    }
    name.to_str().map(str::to_string).ok_or(Errno::from_i32(libc::EINVAL))
}

/// What the namespace cannot hold (hard links, FIFOs, sockets, devices,
/// symbolic links): refused with one errno, documented, so tools that
/// try one see "Operation not permitted", not a missing file.
fn unsupported(what: &str, name: &OsStr) -> Errno {
    tracing::debug!(name = ?name, "{what} refused: the namespace holds files and directories only");
    Errno::from_i32(libc::EPERM)
}

impl<N: Nodes> Filesystem for FuseAdapter<N> {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // O_TRUNC arrives with the open, so overwriting a file does not first
        // copy its old bytes into the staging file (the kernel would otherwise
        // open without it and truncate afterwards).
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_ATOMIC_O_TRUNC);
        // Passthrough lets the kernel read whole local copies directly; kernels
        // without it (or without CAP_SYS_ADMIN) keep every read on the normal path.
        // Listings carry attributes (no lookup per entry for `ls -l`), the
        // kernel choosing per directory whether they are needed; lookups
        // and listings in one directory run in parallel.
        let _ = config.add_capabilities(
            fuser::InitFlags::FUSE_DO_READDIRPLUS
                | fuser::InitFlags::FUSE_READDIRPLUS_AUTO
                | fuser::InitFlags::FUSE_PARALLEL_DIROPS,
        );
        if config.add_capabilities(fuser::InitFlags::FUSE_PASSTHROUGH).is_ok() {
            let _ = config.set_max_stack_depth(2);
            self.pass.enable();
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match name_str(name) {
            Ok(name) => self.reply_entry(reply, move |fs| async move { fs.lookup(parent.0, &name).await }),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        match name_str(name) {
            Ok(_) => reply.error(unsupported("mknod", name)),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(&self, _req: &Request, _parent: INodeNo, name: &OsStr, _target: &Path, reply: ReplyEntry) {
        match name_str(name) {
            Ok(_) => reply.error(unsupported("symlink", name)),
            Err(e) => reply.error(e),
        }
    }

    fn link(&self, _req: &Request, _ino: INodeNo, _newparent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match name_str(name) {
            Ok(_) => reply.error(unsupported("link", name)),
            Err(e) => reply.error(e),
        }
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        // Terminal and file-system ioctls (isatty, FS_IOC_*) have no meaning here.
        reply.error(Errno::from_i32(libc::ENOTTY));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.reply_attr(reply, move |fs| async move { fs.getattr(ino.0).await });
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.reply_attr(reply, move |fs| async move {
            match size {
                Some(s) => fs.truncate(ino.0, fh.map(|f| f.0), s).await,
                // Modes, owners and times are not stored; report what is there.
                None => fs.getattr(ino.0).await,
            }
        });
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, _mode: u32, _umask: u32, reply: ReplyEntry) {
        match name_str(name) {
            Ok(name) => self.reply_entry(reply, move |fs| async move { fs.mkdir(parent.0, &name).await }),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match name_str(name) {
            Ok(name) => self.reply_empty(reply, move |fs| async move { fs.unlink(parent.0, &name).await }),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match name_str(name) {
            Ok(name) => self.reply_empty(reply, move |fs| async move { fs.rmdir(parent.0, &name).await }),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match (name_str(name), name_str(newname)) {
            (Ok(name), Ok(newname)) => self
                .reply_empty(reply, move |fs| async move { fs.rename(parent.0, &name, newparent.0, &newname).await }),
            (Err(e), _) | (_, Err(e)) => reply.error(e),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let pid = req.pid();
        let acc = flags.0 & libc::O_ACCMODE;
        let write = acc == libc::O_WRONLY || acc == libc::O_RDWR;
        let truncate = flags.0 & libc::O_TRUNC != 0;
        let fs = self.fs.clone();
        let pass = self.pass.clone();
        self.rt.spawn(async move {
            // A writer of an inode that another handle's file backs writes that file.
            let shared = write && pass.backed(ino.0);
            let opened = if shared {
                fs.open_shared(ino.0, truncate).await.and_then(|o| o.ok_or_else(|| busy(ino.0)))
            } else {
                fs.open(ino.0, write, truncate).await
            };
            match opened {
                Ok(Opened::Direct(fh)) => {
                    fs.opened_by(fh, pid);
                    reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO)
                }
                Ok(opened) => {
                    let fh = opened.fh();
                    match pass.decide(ino.0, fh, opened.file(), !write || shared, |f| reply.open_backing(f)) {
                        Way::Passthrough(id) => {
                            if write {
                                fs.passthrough_writes(fh);
                            }
                            reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &id)
                        }
                        Way::Cached => reply.opened(FileHandle(fh), FopenFlags::empty()),
                        Way::Refused => {
                            fs.discard(fh);
                            reply.error(errno(&busy(ino.0)))
                        }
                    }
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let name = match name_str(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let fs = self.fs.clone();
        let maker = self.maker();
        let pass = self.pass.clone();
        self.rt.spawn(async move {
            match fs.create(parent.0, &name).await {
                Ok((a, opened)) => {
                    let fh = opened.fh();
                    let attr = maker.make(&a);
                    match pass.decide(a.ino, fh, opened.file(), false, |f| reply.open_backing(f)) {
                        Way::Passthrough(id) => {
                            fs.passthrough_writes(fh);
                            reply.created_passthrough(
                                &maker.ttl,
                                &attr,
                                Generation(0),
                                FileHandle(fh),
                                FopenFlags::empty(),
                                &id,
                            )
                        }
                        Way::Cached => {
                            reply.created(&maker.ttl, &attr, Generation(0), FileHandle(fh), FopenFlags::empty())
                        }
                        Way::Refused => {
                            fs.discard(fh);
                            fs.forget(a.ino, 1); // the kernel takes no entry
                            reply.error(errno(&busy(a.ino)))
                        }
                    }
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn read(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let fs = self.fs.clone();
        let reader = req.pid();
        self.rt.spawn(async move {
            match fs.read(fh.0, offset, size, reader).await {
                Ok(b) => reply.data(&b),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        // Local staging write: fast enough to do on the FUSE thread.
        match self.fs.write(fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        self.reply_empty(reply, move |fs| async move { fs.flush(fh.0).await });
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        self.reply_empty(reply, move |fs| async move { fs.fsync(fh.0).await });
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.pass.release(fh.0);
        self.reply_empty(reply, move |fs| async move { fs.release(fh.0).await });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let fh = FileHandle(self.next_dir.fetch_add(1, Ordering::Relaxed));
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            // A directory with a time of its own in the store (a local
            // directory, a folder marker) may be listed from the kernel's
            // cache: the kernel drops that listing when the directory's time
            // changes (or this mount changes the directory). Others, whose
            // time never changes, are listed anew at each open.
            let flags = match fs.getattr(ino.0).await {
                Ok(a) if a.mtime != fs.started => FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE,
                _ => FopenFlags::empty(),
            };
            reply.opened(fh, flags);
        });
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let (fs, dirs) = (self.fs.clone(), self.dirs.clone());
        self.rt.spawn(async move {
            let all = match Self::listing(&fs, &dirs, ino.0, fh.0, offset).await {
                Ok(l) => l,
                Err(e) => return reply.error(errno(&e)),
            };
            for (i, (name, a)) in all.iter().enumerate().skip(offset as usize) {
                let kind = if a.kind == EntryKind::Dir { FileType::Directory } else { FileType::RegularFile };
                let ino = if i < 2 { ino.0 } else { a.ino };
                if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
                    break;
                }
            }
            reply.ok();
        });
    }

    fn readdirplus(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let (fs, dirs, maker) = (self.fs.clone(), self.dirs.clone(), self.maker());
        self.rt.spawn(async move {
            let all = match Self::listing(&fs, &dirs, ino.0, fh.0, offset).await {
                Ok(l) => l,
                Err(e) => return reply.error(errno(&e)),
            };
            let dir = match fs.path_of(ino.0) {
                Ok(d) => d,
                Err(e) => return reply.error(errno(&e)),
            };
            for (i, (name, a)) in all.iter().enumerate().skip(offset as usize) {
                if reply.add(INodeNo(a.ino), (i + 1) as u64, name, &maker.ttl, &maker.make(a), Generation(0)) {
                    break;
                }
                // Every entry but `.` and `..` is a lookup the kernel will forget.
                if i >= 2 {
                    if let Ok(p) = crate::fs::child(&dir, name) {
                        fs.entry(&p, a.clone());
                    }
                }
            }
            reply.ok();
        });
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.dirs.lock().expect("dir lock poisoned").remove(&fh.0);
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, _size: u32, reply: ReplyXattr) {
        // Objects carry no extended attributes. ENOSYS makes the kernel stop
        // asking (it answers EOPNOTSUPP itself from then on): `ls -l` asks
        // for ACLs of every file it lists.
        reply.error(Errno::from_i32(libc::ENOSYS));
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::from_i32(libc::ENOSYS));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // Object stores have no fixed capacity; report plenty.
        let bsize = self.fs.block_size();
        let blocks = (1u64 << 50) / u64::from(bsize);
        reply.statfs(blocks, blocks, blocks, 1 << 30, 1 << 30, bsize, 1024, bsize);
    }
}

/// Why a mount could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The mountpoint is missing, not a directory, or not empty.
    #[error("mountpoint {0}")]
    Mountpoint(String),
    /// The kernel refused the mount.
    #[error("mount failed: {0}")]
    Kernel(std::io::Error),
}

/// Checks that `dir` is an existing, empty directory.
pub fn check_mountpoint(dir: &Path) -> Result<(), MountError> {
    let probe = |dir: &Path| -> std::io::Result<(bool, bool)> {
        let meta = std::fs::metadata(dir)?;
        if !meta.is_dir() {
            return Ok((false, false));
        }
        let empty = std::fs::read_dir(dir)?.next().is_none();
        Ok((true, empty))
    };
    let found = match probe(dir) {
        // A mount whose process was killed (the kernel may still answer a
        // stat of it from its cache; a listing reaches the dead process):
        // nothing serves it any more, so detaching it loses nothing.
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            let detached = std::process::Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(dir)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !detached {
                return Err(MountError::Mountpoint(format!(
                    "{} is a dead mount left by a mount process that was killed; run `fusermount3 -u {}` (or `umount -l` as root)",
                    dir.display(),
                    dir.display()
                )));
            }
            tracing::warn!(dir = %dir.display(), "detached a dead mount left by a killed mount process");
            probe(dir)
        }
        other => other,
    }
    .map_err(|e| MountError::Mountpoint(format!("{}: {e}", dir.display())))?;
    match found {
        (false, _) => Err(MountError::Mountpoint(format!("{} is not a directory", dir.display()))),
        (true, false) => Err(MountError::Mountpoint(format!("{} is not empty", dir.display()))),
        (true, true) => Ok(()),
    }
}

/// Mounts `fs` at `dir`; the returned session unmounts when dropped or on `umount_and_join`.
pub fn mount<N: Nodes>(
    fs: Arc<MountFs<N>>,
    dir: &Path,
    rt: tokio::runtime::Handle,
) -> Result<fuser::BackgroundSession, MountError> {
    use std::os::unix::fs::MetadataExt;
    check_mountpoint(dir)?;
    let meta = std::fs::metadata(dir).map_err(|e| MountError::Mountpoint(e.to_string()))?;
    let adapter = FuseAdapter {
        fs,
        rt,
        uid: meta.uid(),
        gid: meta.gid(),
        pass: Arc::new(Passthrough::default()),
        dirs: Arc::default(),
        next_dir: AtomicU64::new(1),
    };
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::FSName("ferry".into()),
        MountOption::Subtype("ferry".into()),
        MountOption::RW,
        MountOption::NoAtime,
        MountOption::DefaultPermissions,
    ];
    config.n_threads = Some(4);
    fuser::spawn_mount(adapter, dir, &config).map_err(MountError::Kernel)
}
