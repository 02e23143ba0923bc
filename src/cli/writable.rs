//! `mount --writable UPPER_DIR`: the view on a private FUSE mount under UPPER_DIR, overlayfs on top at the mount point, writes kept in UPPER_DIR.

use crate::cli::sys::{is_mount_point, lazy_unmount};
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The directories of a writable mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layers {
    /// `UPPER_DIR/view`: where the read-only FUSE view is mounted (the overlay's lower).
    pub view: PathBuf,
    /// `UPPER_DIR/upper`: every file written or created through the mount point.
    pub upper: PathBuf,
    /// `UPPER_DIR/work`: overlayfs's scratch directory.
    pub work: PathBuf,
    /// The mount point the user named: the overlay.
    pub merged: PathBuf,
}

/// Checks the mount point and creates `UPPER_DIR/{view,upper,work}` (kept from an
/// earlier run: the writes in `upper` survive a remount).
pub fn prepare(upper_dir: &Path, mountpoint: &Path, source: &Path) -> Result<Layers, String> {
    let shown = |p: &Path| p.display().to_string();
    let merged = fs::canonicalize(mountpoint)
        .map_err(|e| format!("mountpoint {}: {e}", shown(mountpoint)))?;
    if !merged.is_dir() {
        return Err(format!("mountpoint {}: not a directory", shown(mountpoint)));
    }
    if is_mount_point(&merged) {
        return Err(format!(
            "mountpoint {}: already a mount point",
            shown(mountpoint)
        ));
    }
    let mut entries =
        fs::read_dir(&merged).map_err(|e| format!("mountpoint {}: {e}", shown(mountpoint)))?;
    if entries.next().is_some() {
        return Err(format!("mountpoint {}: not empty", shown(mountpoint)));
    }
    fs::create_dir_all(upper_dir).map_err(|e| format!("--writable {}: {e}", shown(upper_dir)))?;
    let dir =
        fs::canonicalize(upper_dir).map_err(|e| format!("--writable {}: {e}", shown(upper_dir)))?;
    let source = fs::canonicalize(source).unwrap_or_else(|_| source.to_path_buf());
    for (a, b, why) in [
        (&dir, &source, "inside the source"),
        (&merged, &source, "inside the source"),
        (&dir, &merged, "inside the mount point"),
        (&merged, &dir, "inside the --writable directory"),
    ] {
        if a.starts_with(b) {
            return Err(format!("{}: {why} {}", a.display(), b.display()));
        }
    }
    // overlayfs splits its options at ',' and its lower layers at ':'.
    for p in [&dir, &merged] {
        let t = p.to_string_lossy();
        if t.contains([',', ':', '\\']) || t.contains('\n') {
            return Err(format!(
                "{}: overlayfs cannot take a path with ',', ':' or '\\'",
                p.display()
            ));
        }
    }
    let l = Layers {
        view: dir.join("view"),
        upper: dir.join("upper"),
        work: dir.join("work"),
        merged,
    };
    if is_mount_point(&l.view) {
        return Err(format!(
            "{}: still mounted from an earlier run; unmount it with `umount -l {}`",
            l.view.display(),
            l.view.display()
        ));
    }
    for d in [&l.view, &l.upper, &l.work] {
        fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    Ok(l)
}

/// Mounts overlayfs at the mount point: the view below, `upper` above.
pub fn mount_overlay(l: &Layers) -> Result<(), String> {
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        l.view.display(),
        l.upper.display(),
        l.work.display()
    );
    mount(
        Some("recoverfs-overlay"),
        &l.merged,
        Some("overlay"),
        MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
        Some(data.as_str()),
    )
    .map_err(|e| {
        format!(
            "mounting overlayfs on {} ({data}): {e} (the upper directory must be on a local filesystem with xattrs, e.g. ext4, xfs or tmpfs; the kernel log says more)",
            l.merged.display()
        )
    })
}

/// Unmounts the overlay, detaching it lazily when it is busy.
pub fn unmount_overlay(l: &Layers) {
    if !is_mount_point(&l.merged) {
        return;
    }
    match umount2(&l.merged, MntFlags::empty()) {
        Ok(()) => tracing::info!("unmounted the overlay {}", l.merged.display()),
        Err(e) => {
            let why = if e == Errno::EBUSY { "busy" } else { e.desc() };
            tracing::warn!(
                "unmounting the overlay {}: {why}; detaching it lazily",
                l.merged.display()
            );
            if let Err(e) = lazy_unmount(&l.merged) {
                tracing::error!("detaching {}: {e}", l.merged.display());
            }
        }
    }
}

/// Waits until the overlay is no longer mounted (`umount MNT`, or a signal's unmount).
pub fn wait_unmounted(l: &Layers) {
    while is_mount_point(&l.merged) {
        std::thread::sleep(Duration::from_millis(200));
    }
}
