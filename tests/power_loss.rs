//! Power loss (issue 20): `repair` on a filesystem that forgets what was not made durable (`common::powerfs`), cut at every fsync and rename and at seeded write counts, then run again; and ENOSPC/EIO injected on write, fsync and rename.
//!
//! Every scenario puts the source, the backup (or the output) and any replica on one
//! [`PowerFs`]. An uninterrupted run gives the tree every interrupted one must reach,
//! and a power cut right after it must not lose any of it. Then, for each crash point,
//! a fresh copy is repaired until the power goes; the durable state must still hold
//! every original (untouched, or whole in the backup: an original is never changed
//! while its backup is not durable) and `--output`'s NEW_DIR absent or whole; the same
//! command run again on that state must give exactly the uninterrupted tree (names,
//! sizes, modes, mtimes), durably.

use crate::common;

use common::powerfs::{Cut, Fault, Op, PowerFs};
use common::*;
use recoverfs::engine::format::takhin::be_u32;
use serde_json::Value;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Output,
    InPlace,
}

/// A damaged tree to repair one way, with its replicas and extra arguments.
struct Scenario<'a> {
    master: &'a Path,
    replicas: &'a [&'a Path],
    mode: Mode,
    extra: &'a [&'a str],
}

/// One run's world: the filesystem, over a backing directory holding `data/` (a copy
/// of the master) and `replica<i>/`. The output and the backup go to directories that
/// do not exist yet (`out/new`, `backups/b`), so their parents are created by the repair.
struct World {
    fs: PowerFs,
    _backing: tempfile::TempDir,
}

impl World {
    fn new(sc: &Scenario) -> World {
        let backing = tempfile::tempdir().unwrap();
        copy_a(sc.master, &backing.path().join("data"));
        for (i, r) in sc.replicas.iter().enumerate() {
            copy_a(r, &backing.path().join(format!("replica{i}")));
        }
        World {
            fs: PowerFs::mount(backing.path()),
            _backing: backing,
        }
    }

    fn data(&self) -> PathBuf {
        self.fs.path().join("data")
    }
    fn backup(&self) -> PathBuf {
        self.fs.path().join("backups/b")
    }
    fn new_dir(&self) -> PathBuf {
        self.fs.path().join("out/new")
    }

    fn args(&self, sc: &Scenario) -> Vec<OsString> {
        let mut a = match sc.mode {
            Mode::Output => output_args(&self.data(), &self.new_dir(), sc.extra),
            Mode::InPlace => in_place_args(&self.data(), &self.backup(), sc.extra),
        };
        for i in 0..sc.replicas.len() {
            a.push("--replica".into());
            a.push(self.fs.path().join(format!("replica{i}")).into());
        }
        a
    }

    /// The repaired tree: NEW_DIR's entries, or the data directory's files and links.
    fn result(&self, mode: Mode) -> BTreeMap<PathBuf, Item> {
        match mode {
            Mode::Output => items(&self.new_dir()),
            Mode::InPlace => files_only(items(&self.data())),
        }
    }
}

/// `cp -a SRC DST` (modes, times, links kept).
fn copy_a(src: &Path, dst: &Path) {
    let o = std::process::Command::new("cp")
        .arg("-a")
        .arg(src)
        .arg(dst)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "cp -a: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// SplitMix64, for seeded crash points.
fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What a power cut must never lose, checked on the durable state right after it:
/// every original is untouched or whole in the backup (in place), the source is untouched
/// and NEW_DIR absent or whole (`--output`), and every replica is untouched.
fn assert_recoverable(
    w: &World,
    sc: &Scenario,
    originals: &BTreeMap<PathBuf, Item>,
    want: &BTreeMap<PathBuf, Item>,
    what: &str,
) {
    for (i, r) in sc.replicas.iter().enumerate() {
        let got = items(&w.fs.path().join(format!("replica{i}")));
        assert_trees_eq(&got, &items(r), &format!("{what}: replica {i}"));
    }
    match sc.mode {
        Mode::Output => {
            assert_trees_eq(&items(&w.data()), originals, &format!("{what}: the source"));
            if w.new_dir().exists() {
                assert_trees_eq(&items(&w.new_dir()), want, &format!("{what}: NEW_DIR"));
            }
        }
        Mode::InPlace => {
            let now = items(&w.data());
            for (rel, orig) in originals {
                if matches!(orig, Item::Dir { .. }) || now.get(rel) == Some(orig) {
                    continue;
                }
                let copy = w.backup().join(rel);
                let backed_up = match orig {
                    Item::File { bytes, .. } => fs::read(&copy).ok().as_ref() == Some(bytes),
                    Item::Symlink(t) => fs::read_link(&copy).ok().as_ref() == Some(t),
                    Item::Dir { .. } => true,
                };
                assert!(
                    backed_up,
                    "{what}: {} changed (now {:?}) while the backup holds no whole copy of it",
                    rel.display(),
                    now.get(rel).map(short)
                );
            }
        }
    }
}

fn short(i: &Item) -> String {
    match i {
        Item::File { bytes, .. } => format!("{} bytes", bytes.len()),
        other => format!("{other:?}"),
    }
}

/// After a complete run: the result is `want`, nothing of ours is left anywhere, and
/// (in place) the manifest says applied and every original it lists is whole in the backup.
fn assert_complete(
    w: &World,
    sc: &Scenario,
    originals: &BTreeMap<PathBuf, Item>,
    want: &BTreeMap<PathBuf, Item>,
    what: &str,
) {
    assert_trees_eq(&w.result(sc.mode), want, what);
    for (p, _) in items(w.fs.path()) {
        assert!(
            !p.to_string_lossy().contains("recoverfs-tmp"),
            "{what}: {} left behind",
            p.display()
        );
    }
    if sc.mode == Mode::Output {
        assert_trees_eq(&items(&w.data()), originals, &format!("{what}: the source"));
        return;
    }
    let m: Value =
        serde_json::from_slice(&fs::read(w.backup().join("recoverfs-backup.json")).unwrap())
            .unwrap();
    assert_eq!(m["state"], "applied", "{what}");
    for e in m["entries"].as_array().unwrap() {
        if e["original"].is_null() {
            continue;
        }
        let rel = PathBuf::from(e["path"].as_str().unwrap());
        let Some(Item::File { bytes, .. }) = originals.get(&rel) else {
            continue;
        };
        assert!(
            fs::read(w.backup().join(&rel)).unwrap() == *bytes,
            "{what}: the backup of {} is not the original",
            rel.display()
        );
    }
}

/// Runs the scenario uninterrupted (its tree, and how many fsyncs, renames and writes it
/// takes), then once for each crash point; returns how many crash points were tried.
fn crash_everywhere(sc: &Scenario, seeded: u64) -> usize {
    let originals = items(sc.master);
    // The same command on a plain directory: the filesystem changes nothing of the result.
    let plain = tempfile::tempdir().unwrap();
    let plain_data = plain.path().join("data");
    copy_a(sc.master, &plain_data);
    let w = World::new(sc);
    let o = run(w.args(sc));
    assert_ok(&o, "uninterrupted");
    let counts = w.fs.counts();
    let want = w.result(sc.mode);
    assert!(!want.is_empty());
    if sc.replicas.is_empty() {
        let a = match sc.mode {
            Mode::Output => output_args(&plain_data, &plain.path().join("new"), sc.extra),
            Mode::InPlace => in_place_args(&plain_data, &plain.path().join("b"), sc.extra),
        };
        assert_ok(&run(&a), "on a plain directory");
        let got = match sc.mode {
            Mode::Output => items(&plain.path().join("new")),
            Mode::InPlace => files_only(items(&plain_data)),
        };
        assert_trees_eq(
            &got,
            &want,
            "on a plain directory, against the test filesystem",
        );
    }
    let mut w = w;
    assert_complete(&w, sc, &originals, &want, "uninterrupted");
    w.fs.power_cut();
    assert_complete(
        &w,
        sc,
        &originals,
        &want,
        "power cut after an uninterrupted run",
    );
    drop(w);
    assert!(counts.fsyncs > 3 && counts.renames > 0, "{counts:?}");

    let mut cuts = vec![];
    for nth in 1..=counts.fsyncs {
        cuts.push(Cut {
            op: Op::Fsync,
            nth,
            partial: None,
        });
        // The same boundary, with a random part of what was not synced kept, in order.
        cuts.push(Cut {
            op: Op::Fsync,
            nth,
            partial: Some(mix(nth)),
        });
    }
    for nth in 1..=counts.renames {
        cuts.push(Cut {
            op: Op::Rename,
            nth,
            partial: Some(mix(1000 + nth)),
        });
    }
    for k in 0..seeded {
        let nth = 1 + mix(k) % counts.writes;
        cuts.push(Cut {
            op: Op::Write,
            nth,
            partial: Some(mix(k + 7)),
        });
    }
    for cut in &cuts {
        let what = format!(
            "{:?} cut before {:?} {}{}",
            sc.mode,
            cut.op,
            cut.nth,
            cut.partial.map_or(String::new(), |s| format!(
                " (kept a random part, seed {s:#x})"
            ))
        );
        let mut w = World::new(sc);
        w.fs.arm(*cut);
        let args = w.args(sc);
        let o = run(&args);
        assert!(
            w.fs.cut_happened(),
            "{what}: never reached ({:?})",
            w.fs.counts()
        );
        assert!(!o.status.success(), "{what}: succeeded with the power off");
        assert!(!stderr(&o).contains("panicked"), "{what}: {}", stderr(&o));
        w.fs.power_cut();
        assert_recoverable(&w, sc, &originals, &want, &what);
        let o = run(&args);
        assert_ok(&o, &format!("{what}: the rerun"));
        assert_complete(&w, sc, &originals, &want, &format!("{what}, rerun"));
        w.fs.power_cut();
        assert_complete(
            &w,
            sc,
            &originals,
            &want,
            &format!("{what}, rerun, power cut"),
        );
    }
    cuts.len()
}

/// The seed example damaged (zeros after a middle segment, a torn tail, a missing index,
/// an orphan), under `--output`.
#[test]
fn power_loss_output_at_every_fsync_and_rename_converges() {
    let master = small_damaged();
    let sc = Scenario {
        master: master.path(),
        replicas: &[],
        mode: Mode::Output,
        extra: &[],
    };
    let n = crash_everywhere(&sc, 24);
    eprintln!("power_loss_output: {n} crash points");
}

/// The same tree in place, under both repairing policies.
#[test]
fn power_loss_in_place_at_every_fsync_and_rename_keeps_every_original() {
    let master = small_damaged();
    for policy in ["per-segment", "point-in-time"] {
        let sc = Scenario {
            master: master.path(),
            replicas: &[],
            mode: Mode::InPlace,
            extra: &["--policy", policy],
        };
        let n = crash_everywhere(&sc, 24);
        eprintln!("power_loss_in_place {policy}: {n} crash points");
    }
}

/// A segment with garbage over a record mid-segment, intact records after it: under
/// `salvage` the run after the damage becomes a segment of its own, cut out of the
/// backup copy of its original.
fn salvage_tree() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("t/partition-0");
    let clean = write_segment(&a, 0, 60, 40);
    write_segment(&a, 60, 10, 40);
    overwrite(
        &log_path(&a, 0),
        position_of(&clean, 20) as u64,
        &[0xa5; 60],
    );
    t
}

#[test]
fn power_loss_in_place_salvage_keeps_every_original() {
    let master = salvage_tree();
    let sc = Scenario {
        master: master.path(),
        replicas: &[],
        mode: Mode::InPlace,
        extra: &["--policy", "salvage"],
    };
    let n = crash_everywhere(&sc, 16);
    eprintln!("power_loss_in_place_salvage: {n} crash points");
}

/// A replica of three clean segments, and the primary it heals: a bit flipped in a value
/// of segment 0 (a divergence `--prefer replica` heals by a split: segment 0 cut before
/// it, the record from the replica, the rest salvaged from the backup), the middle segment
/// lost and the last one torn.
fn healing_trees() -> (tempfile::TempDir, tempfile::TempDir) {
    let replica = tempfile::tempdir().unwrap();
    let r = replica.path().join("p/partition-0");
    let w0 = write_segment(&r, 0, 30, 40);
    write_segment(&r, 30, 30, 40);
    write_segment(&r, 60, 30, 40);
    let primary = clone_tree(replica.path());
    let p = primary.path().join("p/partition-0");
    let at = position_of(&w0, 10);
    let key_len = be_u32(&w0.log, at + 20) as usize;
    let mut log = w0.log.clone();
    log[at + 28 + key_len + 3] ^= 0x10;
    fs::write(log_path(&p, 0), &log).unwrap();
    for ext in ["log", "index", "timeindex"] {
        fs::remove_file(seg_path(&p, 30, ext)).unwrap();
    }
    cut_tail(&log_path(&p, 60), 9);
    (primary, replica)
}

#[test]
fn power_loss_in_place_healing_with_prefer_keeps_every_original() {
    let (primary, replica) = healing_trees();
    let sc = Scenario {
        master: primary.path(),
        replicas: &[replica.path()],
        mode: Mode::InPlace,
        extra: &["--prefer", "replica"],
    };
    let n = crash_everywhere(&sc, 16);
    eprintln!("power_loss_in_place_healing: {n} crash points");
}

/// ENOSPC and EIO from the filesystem on write, fsync and rename, from the first, a middle
/// and the last such operation of a run on: each run ends with exit status 2 and the error
/// on a line naming the file (under the mount) and what failed, without a panic; the
/// originals are all still there (in place: untouched or whole in the backup; `--output`:
/// the source untouched, no NEW_DIR); once the fault is cleared the same command finishes
/// with the uninterrupted tree, durably.
#[test]
fn injected_enospc_and_eio_end_in_a_clear_error_and_a_rerun_converges() {
    let master = small_damaged();
    let originals = items(master.path());
    let mut tried = 0;
    for mode in [Mode::Output, Mode::InPlace] {
        let sc = Scenario {
            master: master.path(),
            replicas: &[],
            mode,
            extra: &[],
        };
        let w = World::new(&sc);
        assert_ok(&run(w.args(&sc)), "uninterrupted");
        let counts = w.fs.counts();
        let want = w.result(mode);
        drop(w);
        for op in [Op::Write, Op::Fsync, Op::Rename] {
            for errno in [libc::ENOSPC, libc::EIO] {
                let total = counts.of(op);
                let mut at = vec![1, total.div_ceil(2), total];
                at.dedup();
                for nth in at {
                    let what = format!("{mode:?}: errno {errno} from {op:?} {nth} of {total} on");
                    let mut w = World::new(&sc);
                    w.fs.inject(Fault { op, nth, errno });
                    let args = w.args(&sc);
                    let o = run(&args);
                    let err = stderr(&o);
                    assert_eq!(o.status.code(), Some(2), "{what}: {err}");
                    assert!(!err.contains("panicked"), "{what}: {err}");
                    let msg = std::io::Error::from_raw_os_error(errno).to_string();
                    let mp = w.fs.path().to_str().unwrap().to_string();
                    let line = err.lines().find(|l| l.contains(&msg));
                    assert!(
                        line.is_some_and(|l| l.contains(&mp) && l.contains("could not")),
                        "{what}: no line names the file and what failed: {err}"
                    );
                    assert_recoverable(&w, &sc, &originals, &want, &what);
                    if mode == Mode::Output {
                        assert!(!w.new_dir().exists(), "{what}: a partial NEW_DIR");
                    }
                    w.fs.clear_faults();
                    assert_ok(&run(&args), &format!("{what}: the rerun"));
                    assert_complete(&w, &sc, &originals, &want, &format!("{what}, rerun"));
                    w.fs.power_cut();
                    assert_complete(&w, &sc, &originals, &want, &format!("{what}, power cut"));
                    tried += 1;
                }
            }
        }
    }
    eprintln!("injected faults: {tried} runs");
}
