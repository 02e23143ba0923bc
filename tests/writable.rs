//! `mount --writable`: overlayfs on the repaired view, so a broker can open segments
//! read-write; writes land in UPPER_DIR, the source stays byte-for-byte (and atime) unchanged,
//! and `umount MNT` or a signal takes both layers away.

use crate::common;

use common::*;
use recoverfs::cli::sys::{is_mount_point, lazy_unmount};
use recoverfs::engine::format::takhin::Record;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A writable mount: both layers detached and the daemon reaped on drop, even on panic.
struct Writable {
    mnt: tempfile::TempDir,
    upper: tempfile::TempDir,
    log: tempfile::TempDir,
    child: Option<Child>,
}

impl Writable {
    fn new(src: &Path) -> Writable {
        let mnt = tempfile::tempdir().unwrap();
        let upper = tempfile::tempdir().unwrap();
        let log = tempfile::tempdir().unwrap();
        let child = Command::new(bin())
            .arg("mount")
            .arg(src)
            .arg(mnt.path())
            .arg("--writable")
            .arg(upper.path())
            .arg("--foreground")
            .arg("--log-file")
            .arg(log.path().join("daemon.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut w = Writable {
            mnt,
            upper,
            log,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !is_mount_point(&w.merged()) {
            if let Some(st) = w.child.as_mut().unwrap().try_wait().unwrap() {
                let mut err = String::new();
                let _ = w
                    .child
                    .as_mut()
                    .unwrap()
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err);
                panic!("daemon exited ({st}) before mounting: {err}\n{}", w.log());
            }
            assert!(Instant::now() < deadline, "no overlay:\n{}", w.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        w
    }

    fn merged(&self) -> PathBuf {
        fs::canonicalize(self.mnt.path()).unwrap()
    }

    fn view(&self) -> PathBuf {
        fs::canonicalize(self.upper.path()).unwrap().join("view")
    }

    fn log(&self) -> String {
        fs::read_to_string(self.log.path().join("daemon.log")).unwrap_or_default()
    }

    /// Waits (at most 30 s) for the daemon to exit once both layers are gone.
    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "daemon still up:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Writable {
    fn drop(&mut self) {
        // The overlay first (it holds the view), then the view, then the daemon.
        for p in [self.merged(), self.view()] {
            if is_mount_point(&p) {
                let _ = lazy_unmount(&p);
            }
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A partition whose last segment has a zero-filled tail (cut in the view).
fn source() -> (tempfile::TempDir, PathBuf, Vec<u8>) {
    let t = tempfile::tempdir().unwrap();
    let part = t.path().join("orders/partition-0");
    write_segment(&part, 0, 20, 30);
    let w = write_segment(&part, 20, 20, 30);
    append_zeros(&log_path(&part, 20), 1000);
    (t, part, w.log)
}

fn no_mount_left(w: &Writable) {
    assert!(!is_mount_point(&w.merged()), "overlay left behind");
    assert!(!is_mount_point(&w.view()), "view left behind");
}

#[test]
fn a_segment_opened_read_write_through_the_overlay_takes_a_record_and_the_source_stays() {
    let (src, part, prefix) = source();
    age_all_atimes(src.path());
    let before = snapshot_all(src.path());
    let mut w = Writable::new(src.path());
    let seg = w
        .merged()
        .join("orders/partition-0")
        .join(log_path(&part, 20).file_name().unwrap());
    // The view's segment: the valid prefix only, the zeros cut.
    assert_eq!(fs::metadata(&seg).unwrap().len(), prefix.len() as u64);
    let rec = Record {
        offset: 40,
        timestamp: 1_800_000_000_000,
        key: b"appended".to_vec(),
        value: b"by a broker on the view".to_vec(),
    };
    let mut bytes = Vec::new();
    rec.encode_into(&mut bytes, [0; 4]);
    {
        let mut f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&seg)
            .expect("O_RDWR through the overlay");
        f.seek(SeekFrom::End(0)).unwrap();
        f.write_all(&bytes).unwrap();
        f.sync_all().unwrap();
        let mut back = Vec::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut back).unwrap();
        let mut want = prefix.clone();
        want.extend_from_slice(&bytes);
        assert!(back == want, "read back differs");
    }
    // The merged segment scans clean with the new record (its indexes, not appended to
    // here, are short by one entry); the write is in the upper layer.
    let (_, j) = check_json(&w.merged(), &[]);
    let last = &j["logs"][0]["segments"][1];
    assert_eq!(
        (
            &last["status"],
            &last["records"],
            &j["logs"][0]["next_offset"]
        ),
        (&"clean".into(), &21.into(), &41.into()),
        "{j}"
    );
    let up = fs::canonicalize(w.upper.path())
        .unwrap()
        .join("upper/orders/partition-0")
        .join(log_path(&part, 20).file_name().unwrap());
    assert_eq!(
        fs::metadata(up).unwrap().len(),
        (prefix.len() + bytes.len()) as u64
    );
    // `umount MNT`: the daemon takes its view away and exits.
    let st = Command::new("umount").arg(w.merged()).status().unwrap();
    assert!(st.success(), "umount failed");
    assert!(w.wait_exit().success(), "{}", w.log());
    no_mount_left(&w);
    assert_unchanged(&before, &snapshot_all(src.path()));
}

#[test]
fn another_user_reads_through_the_overlay_and_sigterm_unmounts_both_layers() {
    let (src, part, prefix) = source();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(src.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let mut w = Writable::new(src.path());
    assert!(is_mount_point(&w.view()));
    // overlayfs revalidates the view's cached entries as the caller: without allow_other
    // on the private view, FUSE refused them and a non-root access failed with ESTALE.
    let seg = w
        .merged()
        .join("orders/partition-0")
        .join(log_path(&part, 20).file_name().unwrap());
    // Looked up by root first: the overlay's cached entry is then revalidated as nobody.
    assert_eq!(fs::metadata(&seg).unwrap().len(), prefix.len() as u64);
    use std::os::unix::process::CommandExt;
    let o = Command::new("cat")
        .arg(&seg)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(o.status.success(), "cat as nobody: {}", stderr(&o));
    assert!(o.stdout == prefix, "nobody read other bytes");
    let pid = nix::unistd::Pid::from_raw(w.child.as_ref().unwrap().id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(w.wait_exit().success(), "{}", w.log());
    no_mount_left(&w);
}

#[test]
fn writable_refuses_what_would_nest_or_is_not_empty() {
    let (src, _, _) = source();
    let mnt = tempfile::tempdir().unwrap();
    let inside = src.path().join("upper");
    let o = run(argv(&[
        &"mount",
        &src.path(),
        &mnt.path(),
        &"--writable",
        &inside,
    ]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("inside the source"), "{}", stderr(&o));
    fs::write(mnt.path().join("x"), b"").unwrap();
    let upper = tempfile::tempdir().unwrap();
    let o = run(argv(&[
        &"mount",
        &src.path(),
        &mnt.path(),
        &"--writable",
        &upper.path(),
    ]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not empty"), "{}", stderr(&o));
    assert!(!is_mount_point(&upper.path().join("view")));
    // An upper layer overlayfs refuses (procfs): one line, exit 2, the view unmounted again.
    fs::remove_file(mnt.path().join("x")).unwrap();
    std::os::unix::fs::symlink("/proc/self", upper.path().join("upper")).unwrap();
    let o = run(argv(&[
        &"mount",
        &src.path(),
        &mnt.path(),
        &"--writable",
        &upper.path(),
    ]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("mounting overlayfs"), "{}", stderr(&o));
    assert!(
        !is_mount_point(&upper.path().join("view")),
        "view left behind"
    );
    assert!(!is_mount_point(mnt.path()));
}
