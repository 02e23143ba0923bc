//! FUSE passthrough on real mounts: originals untouched (atimes too, mmap included), never a byte past a valid prefix, the same bytes with passthrough off or without the clone, and proof that it engaged.
//!
//! Every mount is owned by a [`Mounted`] guard that unmounts it even on panic.

use crate::common;

use common::mount::{mmap_read, Mounted};
use common::*;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The kernel granted passthrough to this mount (root, a kernel with FUSE_PASSTHROUGH).
fn engaged(m: &Mounted) -> bool {
    m.log().contains("passthrough on")
}

/// `(daemon reads, passthrough opens)` from the line the daemon logs when unmounted.
fn served(log: &str) -> (u64, u64) {
    let line = log
        .lines()
        .find(|l| l.contains("reads through the daemon"))
        .unwrap_or_else(|| panic!("no served line in:\n{log}"));
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    // The timestamp's numbers come first; the last two are the counts.
    (nums[nums.len() - 2], nums[nums.len() - 1])
}

/// Unmounts and returns the daemon's whole log. `umount` is retried for a
/// moment when busy: a child another test thread is spawning holds a copy of
/// this thread's just-closed descriptors until it execs.
fn unmount_log(mut m: Mounted) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::process::Command::new("umount")
        .arg(m.path())
        .status()
        .unwrap()
        .success()
    {
        assert!(Instant::now() < deadline, "umount kept failing");
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = m.child.take().unwrap().wait().unwrap();
    assert!(st.success(), "the daemon exits 0 after umount: {st}");
    m.log()
}

/// Every regular file of the view (`.recoverfs/` included), read whole.
fn read_view(mp: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    files_under(mp)
        .into_iter()
        // report.json names the access used; metrics.prom counts the reads themselves.
        .filter(|r| {
            r != Path::new(".recoverfs/report.json") && r != Path::new(".recoverfs/metrics.prom")
        })
        .map(|r| {
            let b = fs::read(mp.join(&r)).unwrap_or_else(|e| panic!("{}: {e}", r.display()));
            (r, b)
        })
        .collect()
}

#[test]
fn originals_unchanged_after_passthrough_reads_mmap_and_every_command() {
    let src = damaged_tree();
    age_atimes(src.path());
    let before = snapshot(src.path());
    let m = Mounted::new(src.path(), &[]);
    let mp = m.path().to_path_buf();
    let mut n = 0;
    for rel in files_under(&mp) {
        let p = mp.join(&rel);
        if let Ok(b) = fs::read(&p) {
            // metrics.prom is generated per open and counts these very reads: its
            // st_size is the previous open's length.
            if rel != Path::new(".recoverfs/metrics.prom") {
                assert_eq!(b.len() as u64, fs::metadata(&p).unwrap().len(), "{rel:?}");
            }
            // report.json and metrics.prom are direct I/O (generated per open): no shared mapping.
            if rel != Path::new(".recoverfs/report.json")
                && rel != Path::new(".recoverfs/metrics.prom")
            {
                assert!(
                    mmap_read(&p) == b,
                    "{}: mmap differs from read",
                    rel.display()
                );
            }
            n += b.len();
        }
    }
    assert!(n > 10_000);
    let log = unmount_log(m);
    if log.contains("passthrough on") {
        assert!(served(&log).1 > 0, "nothing was passed through:\n{log}");
    }
    assert_unchanged(&before, &snapshot(src.path()));
    // And after the other front ends.
    let _ = check_cli(src.path(), &[]);
    let _ = check_cli(src.path(), &["--json"]);
    assert!(dump(&log_path(&src.path().join("a/partition-0"), 0), &[])
        .status
        .success());
    let out = tempfile::tempdir().unwrap();
    let _ = repair_output(src.path(), &out.path().join("new"), &[]);
    assert!(out.path().join("new/a/partition-0").is_dir());
    assert_unchanged(&before, &snapshot(src.path()));
}

#[test]
fn truncated_and_last_segments_never_pass_their_valid_prefix() {
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().join("t/partition-0");
    let clean = write_segment(&dir, 0, 40, 60);
    // A torn non-last segment (truncated mid-log) and a torn last one.
    let mid = write_segment(&dir, 40, 40, 60);
    cut_tail(&log_path(&dir, 40), 11);
    let last = write_segment(&dir, 80, 40, 60);
    append_zeros(&log_path(&dir, 80), 3000);
    let m = Mounted::new(src.path(), &[]);
    let shown = |b| m.path().join("t/partition-0").join(format!("{b:020}.log"));
    let expect = [
        (0u64, clean.log.clone()),
        (40, mid.log[..position_of(&mid, 39)].to_vec()),
        (80, last.log.clone()),
    ];
    for (b, want) in &expect {
        let p = shown(*b);
        assert_eq!(fs::metadata(&p).unwrap().len(), want.len() as u64, "{b}");
        assert!(fs::read(&p).unwrap() == *want, "segment {b}: read");
        assert!(mmap_read(&p) == *want, "segment {b}: mmap");
        // Nothing past the end, even asked for explicitly.
        let f = fs::File::open(&p).unwrap();
        let mut buf = [0u8; 4096];
        assert_eq!(f.read_at(&mut buf, want.len() as u64).unwrap(), 0, "{b}");
    }
    // The last segment grows while a reader holds it: never a byte past what was validated.
    let held = fs::File::open(shown(80)).unwrap();
    let mut junk = fs::OpenOptions::new()
        .append(true)
        .open(log_path(&dir, 80))
        .unwrap();
    std::io::Write::write_all(&mut junk, &[0xAB; 5000]).unwrap();
    drop(junk);
    let mut buf = vec![0u8; last.log.len() + 20_000];
    let mut got = 0;
    while let Ok(k) = held.read_at(&mut buf[got..], got as u64) {
        if k == 0 {
            break;
        }
        got += k;
    }
    assert!(got <= last.log.len(), "read {got} of {}", last.log.len());
    assert!(buf[..got] == last.log[..got]);
    drop(held);
    let engaged_here = engaged(&m);
    let log = unmount_log(m);
    if engaged_here {
        // Only the clean sealed segment was passed through (opened three times).
        assert_eq!(served(&log).1, 3, "{log}");
    }
}

#[test]
fn passthrough_off_gives_the_same_bytes() {
    let src = damaged_tree();
    age_atimes(src.path());
    let before = snapshot(src.path());
    let auto = Mounted::new(src.path(), &[]);
    let want = read_view(auto.path());
    drop(auto);
    let off = Mounted::new(src.path(), &["--passthrough", "off"]);
    assert!(read_view(off.path()) == want, "--passthrough off differs");
    assert!(!engaged(&off));
    let log = unmount_log(off);
    assert_eq!(served(&log).1, 0, "{log}");
    let opt = Mounted::new(src.path(), &["-o", "passthrough=off"]);
    assert!(!engaged(&opt));
    drop(opt);
    assert_unchanged(&before, &snapshot(src.path()));
}

/// The fallback door (plain O_NOATIME opens, the clone refused through the
/// test-only switch): passthrough stays off, the bytes are the same, atimes still.
#[cfg(feature = "fault-injection")]
#[test]
fn without_the_clone_passthrough_stays_off_and_gives_the_same_bytes() {
    let src = damaged_tree();
    age_atimes(src.path());
    let before = snapshot(src.path());
    let auto = Mounted::new(src.path(), &[]);
    let want = read_view(auto.path());
    drop(auto);
    let plain = Mounted::new_with(src.path(), &[], |c| {
        c.env("RECOVERFS_TEST_NO_CLONE", "1");
    });
    assert!(read_view(plain.path()) == want, "without the clone differs");
    let report: serde_json::Value =
        serde_json::from_slice(&fs::read(plain.path().join(".recoverfs/report.json")).unwrap())
            .unwrap();
    assert_eq!(report["source_access"], "O_NOATIME opens");
    let log = unmount_log(plain);
    assert!(
        log.contains("reading the source through O_NOATIME opens"),
        "{log}"
    );
    assert!(log.contains("passthrough off: the source is not a read-only clone"));
    assert_eq!(served(&log).1, 0);
    assert_unchanged(&before, &snapshot(src.path()));
    // check says which door it used.
    let (_, v) = check_json(src.path(), &[]);
    assert_eq!(v["source_access"], "read-only clone");
    let o = std::process::Command::new(bin())
        .args(["check", "--json"])
        .arg(src.path())
        .env("RECOVERFS_TEST_NO_CLONE", "1")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["source_access"], "O_NOATIME opens");
    assert_unchanged(&before, &snapshot(src.path()));
}

#[test]
fn passthrough_engages_for_sealed_segments_and_raw_files() {
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().join("t/partition-0");
    let w = write_segment(&dir, 0, 2000, 100);
    write_segment(&dir, 2000, 10, 100);
    fs::write(src.path().join("t/notes.txt"), b"plain\n").unwrap();
    let m = Mounted::new(src.path(), &[]);
    if !engaged(&m) {
        cannot_test("passthrough not granted (not root, or a kernel before 6.9)");
        return;
    }
    let seg = m.path().join("t/partition-0/00000000000000000000.log");
    assert!(fs::metadata(&seg).unwrap().len() > 200_000);
    assert!(fs::read(&seg).unwrap() == w.log);
    assert!(mmap_read(&seg) == w.log);
    assert_eq!(fs::read(m.path().join("t/notes.txt")).unwrap(), b"plain\n");
    let raw = m
        .path()
        .join(".recoverfs/raw/t/partition-0/00000000000000002000.log");
    assert!(fs::read(raw).unwrap() == fs::read(log_path(&dir, 2000)).unwrap());
    // A source change under a passthrough reader is logged.
    let held = fs::File::open(&seg).unwrap();
    let mut b = [0u8; 10];
    held.read_exact_at(&mut b, 0).unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(log_path(&dir, 0))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"x"))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !m.log().contains("the source changed while passed through") {
        assert!(Instant::now() < deadline, "change not logged:\n{}", m.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(held);
    let log = unmount_log(m);
    let (reads, opens) = served(&log);
    assert_eq!(
        reads, 0,
        "the daemon served reads of passed-through files:\n{log}"
    );
    assert!(opens >= 4, "{log}");
    // The same reads with passthrough off go through the daemon.
    let m = Mounted::new(src.path(), &["--passthrough", "off"]);
    fs::read(m.path().join("t/partition-0/00000000000000000000.log")).unwrap();
    let (reads, opens) = served(&unmount_log(m));
    assert!(reads > 0 && opens == 0);
}

/// The kernel refuses (EIO) a cached open of an inode held open by passthrough
/// and the reverse: opens of one file that change mode while another is held
/// still read, with the right bytes.
#[test]
fn opens_that_change_mode_while_another_is_held_still_read() {
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().join("t/partition-0");
    let mut w = write_segment(&dir, 0, 30, 50);
    let first = w.log.clone();
    let m = Mounted::new(src.path(), &[]);
    let shown = m.path().join("t/partition-0/00000000000000000000.log");
    // The last segment: on the daemon path, held open.
    let held = fs::File::open(&shown).unwrap();
    let mut b = vec![0u8; first.len()];
    held.read_exact_at(&mut b, 0).unwrap();
    // A new segment seals it: its next open could be passed through, but must not
    // be while the cached one is held.
    write_segment(&dir, 30, 5, 50);
    assert!(fs::read(&shown).unwrap() == first);
    assert!(mmap_read(&shown) == first);
    drop(held);
    // Now passed through (when permitted), held; the source changes (records
    // appended to the sealed segment): a new open reads the new view, not EIO.
    let held = fs::File::open(&shown).unwrap();
    held.read_exact_at(&mut b, 0).unwrap();
    append_late(&mut w, &dir, 3, 1, 20);
    // A sealed segment's name and attributes may be kept by the kernel until the
    // source watcher's notice lands (README, passthrough): the new size is seen
    // within moments.
    wait_for_size(&shown, w.log.len());
    assert!(
        fs::read(&shown).unwrap() == w.log,
        "the grown sealed segment"
    );
    drop(held);
    assert!(fs::read(&shown).unwrap() == w.log);
    let log = unmount_log(m);
    assert!(!log.contains("ERROR"), "{log}");
}

/// `recoverfs_lookups_total` as the mount's `metrics.prom` says now (reading it costs one lookup).
fn lookups(m: &Mounted) -> u64 {
    let text = fs::read_to_string(m.path().join(".recoverfs/metrics.prom")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("recoverfs_lookups_total "))
        .unwrap_or_else(|| panic!("no lookup counter in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn with_passthrough_a_sealed_segments_name_is_kept_and_a_source_change_drops_it() {
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().join("t/partition-0");
    let mut w = write_segment(&dir, 0, 30, 50);
    write_segment(&dir, 30, 5, 50); // segment 0 is sealed: not its log's last
    for passthrough in [true, false] {
        let opts: &[&str] = if passthrough {
            &[]
        } else {
            &["--passthrough", "off"]
        };
        let m = Mounted::new(src.path(), opts);
        if passthrough && !engaged(&m) {
            cannot_test("passthrough not granted: only the daemon path is checked");
            continue;
        }
        let shown = m.path().join("t/partition-0/00000000000000000000.log");
        let last = m.path().join("t/partition-0/00000000000000000030.log");
        assert_eq!(fs::read(&shown).unwrap(), w.log);
        let before = lookups(&m);
        for _ in 0..20 {
            assert_eq!(fs::metadata(&shown).unwrap().len(), w.log.len() as u64);
            assert_eq!(fs::read(&shown).unwrap().len(), w.log.len());
            // The last segment may still grow: its name is asked for every time.
            fs::metadata(&last).unwrap();
        }
        let asked = lookups(&m) - before;
        if passthrough {
            // 20 walks to the last segment, one to metrics.prom, and the sealed
            // segment's at most once a second.
            assert!(
                asked <= 23,
                "{asked} lookups: the sealed segment's name was not kept"
            );
        } else {
            assert!(
                asked >= 41,
                "{asked} lookups: without passthrough every walk asks"
            );
        }
    }
    // With passthrough, a change to the sealed segment is seen by a `stat` by path
    // within moments: the source watcher drops the kept name and attributes.
    let m = Mounted::new(src.path(), &[]);
    let shown = m.path().join("t/partition-0/00000000000000000000.log");
    assert_eq!(fs::metadata(&shown).unwrap().len(), w.log.len() as u64);
    append_late(&mut w, &dir, 10, 5, 33);
    wait_for_size(&shown, w.log.len());
    assert_eq!(fs::read(&shown).unwrap(), w.log);
    // And a sealed segment removed from the source is gone from the view.
    for ext in ["log", "index", "timeindex"] {
        fs::remove_file(seg_path(&dir, 0, ext)).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while fs::metadata(&shown).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the removed segment was still shown"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
