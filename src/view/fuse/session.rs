//! Mount wiring: session options, the read-only mount, kernel-cache invalidation, readahead.

use crate::engine::source::SourceAccess;
use crate::view::fuse::passthrough::Passthrough;
use crate::view::fuse::{Owner, RecoverFs};
use crate::view::{Change, View};
use fuser::{Config, INodeNo, MountOption, Session, SessionACL};
use std::io;
use std::path::Path;
use std::sync::Arc;

/// Largest read the kernel may send and readahead we ask for (1 MiB).
pub const MAX_READ: u32 = 1 << 20;

/// How to mount: the kernel-facing options.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub fsname: String,
    /// Shown as the type `fuse.<subtype>` by findmnt, df -T and /proc/mounts.
    pub subtype: String,
    pub allow_other: bool,
    /// Root (and the mount's owner) only; exclusive with `allow_other`.
    pub allow_root: bool,
    /// The owner, group and mode bits shown instead of the originals'.
    pub owner: Owner,
    /// Worker threads (at least 2: one slow validation must not stall every reader).
    pub threads: usize,
    /// Extra mount options passed through (nodev, noexec, ...).
    pub extra: Vec<MountOption>,
    /// Serve whole original files by FUSE passthrough where the kernel allows it (`--passthrough auto`).
    pub passthrough: bool,
}

/// Mounts `view` at `mountpoint` (read-only) and wires the kernel-cache
/// invalidation the view asks for when a source file changes. The mount is
/// live when this returns.
pub fn start_session(
    view: Arc<View>,
    mountpoint: &Path,
    opts: &SessionOptions,
) -> io::Result<Session<RecoverFs>> {
    let mut cfg = Config::default();
    cfg.mount_options = vec![
        MountOption::RO,
        MountOption::FSName(opts.fsname.clone()),
        // A kernel option: fuser's own Subtype only reaches fusermount3, not mount(2).
        MountOption::CUSTOM(format!("subtype={}", opts.subtype)),
        MountOption::NoDev,
        MountOption::NoSuid,
        // The kernel checks every access against the modes and owners the view
        // shows (the originals'), whoever may reach the mount.
        MountOption::DefaultPermissions,
    ];
    for o in &opts.extra {
        if !cfg.mount_options.contains(o) {
            cfg.mount_options.push(o.clone());
        }
    }
    if opts.allow_other {
        cfg.acl = SessionACL::All;
    } else if opts.allow_root {
        cfg.acl = SessionACL::RootAndOwner;
    }
    cfg.n_threads = Some(opts.threads.max(2));
    cfg.clone_fd = true;
    tracing::info!(
        "reading the source through {}",
        view.config().source.access().as_str()
    );
    if let Err(e) = view.start_watching() {
        tracing::warn!("not watching the source for changes ({e}): changes are seen at the next lookup or open only");
    }
    let access = view.config().source.access();
    if opts.passthrough && access != SourceAccess::ReadOnlyClone {
        // The kernel reopens a backing file without O_NOATIME: only the clone keeps atimes still.
        tracing::info!(
            "passthrough off: the source is not a read-only clone, and passthrough reads would move the originals' atimes"
        );
    }
    let passthrough = Arc::new(Passthrough::new(
        opts.passthrough && access == SourceAccess::ReadOnlyClone,
    ));
    let fs = RecoverFs::new(view.clone(), MAX_READ, passthrough.clone()).with_owner(opts.owner);
    let slot = fs.unmounter_slot();
    let mut session = Session::new(fs, mountpoint, &cfg)?;
    *slot.lock() = Some(session.unmount_callable());
    // Invalidations go through their own thread: sent from inside a request
    // handler they could wait on a page lock held by the very read being served.
    let notifier = session.notifier();
    let (tx, rx) = std::sync::mpsc::channel::<u64>();
    let weak = Arc::downgrade(&view);
    std::thread::Builder::new()
        .name("recoverfs-inval".into())
        .spawn(move || {
            for ino in rx {
                if let Err(e) = notifier.inval_inode(INodeNo(ino), 0, 0) {
                    tracing::debug!("invalidating inode {ino}: {e}");
                }
                // A sealed segment's name may be cached: the next path walk must ask again.
                if let Some((parent, name)) = weak.upgrade().and_then(|v| v.entry_of(ino)) {
                    if let Err(e) = notifier.inval_entry(INodeNo(parent), &name) {
                        tracing::debug!("invalidating the name of inode {ino}: {e}");
                    }
                }
            }
        })?;
    let tx = parking_lot::Mutex::new(tx);
    let weak = Arc::downgrade(&view);
    view.set_invalidator(Box::new(move |ino, change| {
        // Only a change seen is one to report; lost events may have hidden none.
        if change == Change::Seen && passthrough.changed_while_passed_through(ino) {
            let path = weak.upgrade().and_then(|v| v.path_of(ino));
            tracing::warn!(
                "{}: the source changed while passed through to an open reader; that reader sees the source as it is now, not as validated",
                path.map_or(format!("inode {ino}"), |p| p.display().to_string())
            );
        }
        let _ = tx.lock().send(ino);
    }));
    Ok(session)
}

/// Raises the mount's readahead to 1 MiB (root only; the default 128 KiB
/// halves sequential throughput through FUSE). Best effort.
pub fn raise_readahead(mountpoint: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::metadata(mountpoint) else {
        return;
    };
    let dev = m.dev();
    let bdi = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        libc::major(dev),
        libc::minor(dev)
    );
    match std::fs::write(&bdi, format!("{}\n", MAX_READ / 1024)) {
        Ok(()) => tracing::debug!("readahead set to {} KiB via {bdi}", MAX_READ / 1024),
        Err(e) => tracing::debug!("readahead left as is ({bdi}: {e})"),
    }
}
