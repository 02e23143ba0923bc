//! The fuser adapter: each FUSE request becomes one `View` call and one reply; write-like requests answer EROFS.

use crate::view::{xattr_reply, Attr, EntryType, View, ViewError, XattrReply};
use fuser::{
    AccessFlags, BsdFileFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType,
    Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenAccMode,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub mod passthrough;
pub mod session;

use crate::view::metrics::Counters;
use passthrough::{OpenMode, Passthrough};
use std::sync::atomic::Ordering;

/// Entry TTL of files and symlinks: zero. The source may change under the
/// mount (a broker still writing), so every path walk to a file reaches the
/// view, which re-checks the source's stamp and answers with fresh attributes.
const FILE_ENTRY_TTL: Duration = Duration::ZERO;
/// Entry TTL of a sealed segment's `.log` (clean, not its log's last, shown
/// whole) while passthrough serves it. A broker never writes to it again, each
/// open still reaches the view, which validates it, and a reader of a
/// passed-through file already sees the source as it is; keeping the name saves
/// one of the two round trips an open through the mount waits for. A change the
/// source watcher sees drops the name and the attributes at once; until then a
/// `stat` by path may show the attributes of moments before (as `fstat` of an
/// open file may). With `--passthrough off` every path walk asks the view.
const SEALED_ENTRY_TTL: Duration = Duration::from_secs(1);
/// Attribute TTL of files and symlinks: what an open file's reads and `fstat`
/// may reuse without asking. Short, and the view drops it early (an inode
/// invalidation) when the source watcher sees the file change; with
/// FUSE_AUTO_INVAL_DATA the kernel then re-reads the attributes before the next
/// read and drops pages beyond a shrunk size. Zero would cost a GETATTR per read.
const FILE_ATTR_TTL: Duration = Duration::from_secs(1);
/// Attribute and entry TTL of directories. A directory's identity does not
/// change with its contents (listings always reach the view), and without a TTL
/// every path walk would cost one lookup per component: `ls -l` of a 10,000
/// segment log went from 12 requests per entry to 5.
const DIR_TTL: Duration = Duration::from_secs(60);

/// (attribute TTL, entry TTL) of an entry; `passthrough`: whether sealed segments are passed through.
fn ttls(a: &Attr, passthrough: bool) -> (Duration, Duration) {
    match a.kind {
        EntryType::Dir => (DIR_TTL, DIR_TTL),
        EntryType::File if a.sealed && passthrough => (FILE_ATTR_TTL, SEALED_ENTRY_TTL),
        EntryType::File | EntryType::Symlink => (FILE_ATTR_TTL, FILE_ENTRY_TTL),
    }
}

thread_local! {
    /// Each worker thread's read buffer, reused across requests.
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The owner, group and mode bits shown instead of the originals' (`-o uid=,gid=,umask=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Owner {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Cleared from every mode shown.
    pub umask: u16,
}

impl Owner {
    fn apply(&self, mut a: FileAttr) -> FileAttr {
        a.uid = self.uid.unwrap_or(a.uid);
        a.gid = self.gid.unwrap_or(a.gid);
        a.perm &= !self.umask;
        a
    }
}

/// The FUSE filesystem: a [`View`] behind fuser's trait.
pub struct RecoverFs {
    view: Arc<View>,
    /// Largest readahead asked of the kernel, in bytes.
    max_readahead: u32,
    owner: Owner,
    passthrough: Arc<Passthrough>,
    /// The view's live counters (reads, bytes, opens, EIO), bumped here.
    counters: Arc<Counters>,
    /// The session's unmounter, once the session exists: [`Filesystem::destroy`] takes
    /// the mount from the session with it (see there).
    unmounter: Arc<parking_lot::Mutex<Option<fuser::SessionUnmounter>>>,
}

impl RecoverFs {
    pub fn new(view: Arc<View>, max_readahead: u32, passthrough: Arc<Passthrough>) -> Self {
        RecoverFs {
            max_readahead,
            owner: Owner::default(),
            passthrough,
            counters: view.counters().clone(),
            view,
            unmounter: Arc::default(),
        }
    }

    /// Where the session's unmounter goes once the session exists.
    pub fn unmounter_slot(&self) -> Arc<parking_lot::Mutex<Option<fuser::SessionUnmounter>>> {
        self.unmounter.clone()
    }

    /// Shows `owner`'s ids and mode mask instead of the originals'.
    pub fn with_owner(self, owner: Owner) -> Self {
        RecoverFs { owner, ..self }
    }

    fn attr(&self, a: &Attr) -> FileAttr {
        self.owner.apply(file_attr(a))
    }

    /// The errno of a view error, counting EIO answers.
    fn errno(&self, e: &ViewError) -> Errno {
        let n = e.errno();
        if n == libc::EIO {
            Counters::add(&self.counters.eio, 1);
        }
        Errno::from_i32(n)
    }
}

fn errno(e: &ViewError) -> Errno {
    Errno::from_i32(e.errno())
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.mtime,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn file_type(k: EntryType) -> FileType {
    match k {
        EntryType::Dir => FileType::Directory,
        EntryType::File => FileType::RegularFile,
        EntryType::Symlink => FileType::Symlink,
    }
}

fn reply_xattr(fs: &RecoverFs, r: Result<Vec<u8>, ViewError>, size: u32, reply: ReplyXattr) {
    match r.and_then(|v| xattr_reply(v, size)) {
        Ok(XattrReply::Size(n)) => reply.size(n),
        Ok(XattrReply::Data(d)) => reply.data(&d),
        Err(e) => reply.error(fs.errno(&e)),
    }
}

impl Filesystem for RecoverFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // Ask for large reads; the kernel may cap them lower (its answer is not an error).
        let _ = config.set_max_readahead(self.max_readahead);
        // Re-check attributes before reads once they were invalidated, and drop
        // cached pages when a file's size or mtime changes (see FILE_ATTR_TTL).
        if let Err(missing) = config.add_capabilities(InitFlags::FUSE_AUTO_INVAL_DATA) {
            tracing::warn!(
                "kernel lacks {missing:?}: a changed file is seen at its next lookup or open only"
            );
        }
        // A file opened with direct I/O (one changed moments ago) must still map
        // shared: readers such as index lookups mmap their files.
        if let Err(missing) = config.add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP) {
            tracing::warn!(
                "kernel lacks {missing:?}: a file changed in the last seconds cannot be mapped shared"
            );
        }
        if self.passthrough.wanted() {
            // Depth 2: the backing files may themselves be on a stacked fs (overlayfs).
            let granted = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(2).is_ok();
            self.passthrough.set_granted(granted);
            if granted {
                tracing::info!("passthrough on: whole original files are served by the kernel");
            } else {
                tracing::info!(
                    "passthrough off: the kernel does not offer FUSE_PASSTHROUGH; every read goes through the daemon"
                );
            }
        }
        Ok(())
    }

    fn destroy(&mut self) {
        tracing::info!(
            "served {} reads through the daemon; {} opens passed through",
            self.counters.daemon_reads.load(Ordering::Relaxed),
            self.passthrough.opens()
        );
        // Called as the session ends, before fuser drops the mount. After `umount
        // MOUNTPOINT` the mount is gone, but fuser 0.18 would unmount it again on drop
        // (its check of the FUSE device takes a closed connection for a live one) and log
        // "Failed to umount filesystem: Invalid argument" on every clean unmount. Taken
        // here, the mount's last unmount answers to us: EINVAL (nothing mounted there any
        // more) is the clean case, anything else is said.
        if let Some(mut u) = self.unmounter.lock().take() {
            match u.unmount() {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    tracing::debug!("the mount was already gone: {e}")
                }
                Err(e) => tracing::warn!("unmounting: {e}"),
            }
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        Counters::add(&self.counters.lookups, 1);
        match self.view.lookup(parent.0, name) {
            Ok(a) => {
                let (attr_ttl, entry_ttl) = ttls(&a, self.passthrough.enabled());
                reply.entry_with_ttls(&attr_ttl, &entry_ttl, &self.attr(&a), Generation(0))
            }
            Err(e) => reply.error(self.errno(&e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.view.getattr(ino.0) {
            Ok(a) => reply.attr(&ttls(&a, self.passthrough.enabled()).0, &self.attr(&a)),
            Err(e) => reply.error(self.errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.view.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(self.errno(&e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let write = flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0;
        match self.view.open(ino.0, write) {
            Ok(o) => {
                let mode = self.passthrough.open(
                    ino.0,
                    o.fh,
                    o.whole,
                    || self.view.backing_file(o.fh),
                    |file| reply.open_backing(file),
                );
                let mut f = FopenFlags::empty();
                match mode {
                    OpenMode::Passthrough(id) => {
                        Counters::add(&self.counters.passthrough_opens, 1);
                        Counters::add(&self.counters.open_files, 1);
                        return reply.opened_passthrough(FileHandle(o.fh), f, &id);
                    }
                    OpenMode::Busy => {
                        self.view.release(o.fh);
                        tracing::warn!(
                            "inode {}: open refused (EBUSY): its source changed while passed through to a reader that still holds it",
                            ino.0
                        );
                        return reply.error(Errno::EBUSY);
                    }
                    OpenMode::Cached => {}
                }
                if o.keep_cache {
                    f |= FopenFlags::FOPEN_KEEP_CACHE;
                }
                if o.direct_io {
                    f |= FopenFlags::FOPEN_DIRECT_IO;
                }
                Counters::add(&self.counters.open_files, 1);
                reply.opened(FileHandle(o.fh), f)
            }
            Err(e) => reply.error(self.errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        Counters::add(&self.counters.daemon_reads, 1);
        READ_BUF.with_borrow_mut(|buf| match self.view.read_into(fh.0, offset, size, buf) {
            Ok(n) => {
                Counters::add(&self.counters.daemon_read_bytes, n as u64);
                reply.data(&buf[..n])
            }
            Err(e) => reply.error(self.errno(&e)),
        })
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
        self.passthrough.release(fh.0);
        self.view.release(fh.0);
        Counters::sub(&self.counters.open_files, 1);
        reply.ok()
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing is ever written, so there is nothing to flush. ENOSYS (not ok)
        // makes the kernel stop sending FLUSH for the rest of the mount: every
        // close of a file would otherwise wait for one more round trip.
        reply.error(Errno::ENOSYS)
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.view.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(self.errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.view.dir_entries(fh.0) {
            Ok(entries) => {
                for (i, e) in entries.iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(e.ino), (i + 1) as u64, file_type(e.kind), &e.name) {
                        break;
                    }
                }
                reply.ok()
            }
            Err(e) => reply.error(self.errno(&e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.view.release(fh.0);
        reply.ok()
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let st = self.view.statfs();
        reply.statfs(st.blocks, 0, 0, st.files, 0, st.bsize, 255, st.frsize)
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        reply_xattr(self, self.view.getxattr(ino.0, name), size, reply)
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        reply_xattr(self, self.view.listxattr(ino.0), size, reply)
    }

    fn access(&self, _req: &Request, _ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        if mask.contains(AccessFlags::W_OK) {
            reply.error(errno(&ViewError::ReadOnly))
        } else {
            reply.ok()
        }
    }

    // Every write-like request: EROFS (the mount is `ro` too, so the kernel
    // usually answers before asking; these cover the rest).

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(errno(&ViewError::ReadOnly))
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(errno(&ViewError::ReadOnly))
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(errno(&ViewError::ReadOnly))
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(errno(&ViewError::ReadOnly))
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(errno(&ViewError::ReadOnly))
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(errno(&ViewError::ReadOnly))
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(errno(&ViewError::ReadOnly))
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(errno(&ViewError::ReadOnly))
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(errno(&ViewError::ReadOnly))
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok() // nothing written, nothing to sync
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(errno(&ViewError::ReadOnly))
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(errno(&ViewError::ReadOnly))
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(errno(&ViewError::ReadOnly))
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(errno(&ViewError::ReadOnly))
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        reply.error(errno(&ViewError::ReadOnly))
    }
}
