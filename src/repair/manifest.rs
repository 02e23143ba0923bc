//! The backup manifest, `BACKUP_DIR/recoverfs-backup.json`: its typed on-disk schema, read and written atomically.

use super::fsio::{create_new, fsync, fsync_dir, tmp_beside};
use super::steps::Steps;
use super::{io_at, RepairError, Result};
use crate::engine::layout::escape_path;
use crate::engine::policy::Policy;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// The manifest's file name inside the backup directory.
pub const MANIFEST: &str = "recoverfs-backup.json";

/// What an in-place repair does to one path of the data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Cut a `.log` to its valid prefix (or, split around a record `--prefer` serves
    /// from a replica, to the records before it).
    Truncate,
    /// Replace an index with the rebuilt one.
    Rebuild,
    /// Write a rebuilt index where none was.
    Create,
    /// Remove a file the view leaves out (hidden segment, orphan index).
    Remove,
    /// Write a file of a salvaged run where none was: its `.log` (a byte range of an
    /// original `.log`) or a rebuilt index of it, both read from the backup copy. Also
    /// the primary's own records after a record `--prefer` serves from a replica: split
    /// off their segment (or run) as a segment of their own, the same kind of range.
    Salvage,
    /// Write a file of a range healed from a replica (`--replica`): its `.log` (a byte
    /// range of a replica's `.log`) or a rebuilt index of it, both read from the replica.
    /// The range is offsets the primary lacks, or a record `--prefer` serves instead of
    /// the primary's own. Usually where none was; it replaces only the file of a primary
    /// segment whose view holds no record, or of the segment whose first record is the
    /// preferred one (that original is backed up first, like a truncated one).
    Heal,
}

/// What an original was: the manifest's `kind` (`file` or `symlink` on disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OriginalKind {
    /// A regular file: `bytes` and `crc32` are of its content.
    File,
    /// A symlink: `bytes` and `crc32` are of its target text.
    Symlink,
}

/// An original as it was before the repair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Original {
    pub kind: OriginalKind,
    pub bytes: u64,
    /// CRC-32 of the file's bytes (of the link's target text for a symlink); known once backed up.
    pub crc32: Option<u32>,
}

/// Where a salvaged run's file comes from: bytes `[position, position + bytes)` of an
/// original `.log` that the same repair truncates, read from its backup copy (by then
/// the source may hold only the valid prefix).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSource {
    /// The original `.log`, relative to the data directory, escaped like an entry's `path`.
    pub log: String,
    /// The raw name when `log` had to be escaped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_bytes: Option<Vec<u8>>,
    /// The run's first byte in the original (the resync point).
    pub position: u64,
    /// The run's length: the size of its `.log`.
    pub bytes: u64,
}

impl RunSource {
    pub(super) fn new(log: &Path, position: u64, bytes: u64) -> Self {
        let (log_str, log_bytes) = escaped(log);
        RunSource {
            log: log_str,
            log_bytes,
            position,
            bytes,
        }
    }

    pub(super) fn rel(&self) -> PathBuf {
        raw_or_escaped(&self.log, &self.log_bytes)
    }
}

/// Where a healed range's file comes from: bytes `[position, position + bytes)` of the
/// `.log` `log` of the replica `replica`, read through the replica's door (never written).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealSource {
    /// The replica's data directory, absolute: one of the manifest's `replicas`.
    pub replica: String,
    /// The replica's `.log`, relative to its data directory, and the range in it.
    #[serde(flatten)]
    pub range: RunSource,
}

/// A relative path as the manifest stores it: escaped text, plus the raw bytes when they differ.
fn escaped(rel: &Path) -> (String, Option<Vec<u8>>) {
    let path = escape_path(rel);
    let raw = rel.as_os_str().as_bytes();
    let bytes = (path.as_bytes() != raw).then(|| raw.to_vec());
    (path, bytes)
}

fn raw_or_escaped(path: &str, raw: &Option<Vec<u8>>) -> PathBuf {
    match raw {
        Some(b) => PathBuf::from(OsString::from_vec(b.clone())),
        None => PathBuf::from(path),
    }
}

/// What a path holds after the repair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replacement {
    pub bytes: u64,
    /// Known at planning for rebuilt indexes, once backed up for truncated logs.
    pub crc32: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Relative to the data directory, escaped like the report's paths.
    pub path: String,
    /// The raw name when `path` had to be escaped (non-UTF-8, or a backslash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_bytes: Option<Vec<u8>>,
    pub action: Action,
    pub why: String,
    pub original: Option<Original>,
    pub new: Option<Replacement>,
    /// For [`Action::Salvage`] only: the original `.log` range the file is made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salvaged_from: Option<RunSource>,
    /// For [`Action::Heal`] only: the replica `.log` range the file is made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healed_from: Option<HealSource>,
}

impl ManifestEntry {
    pub(super) fn rel(&self) -> PathBuf {
        raw_or_escaped(&self.path, &self.path_bytes)
    }

    /// The fields a fresh plan must reproduce for an interrupted backup to be resumed.
    pub(super) fn same_plan(&self, other: &ManifestEntry) -> bool {
        self.path == other.path
            && self.path_bytes == other.path_bytes
            && self.action == other.action
            && self.original.as_ref().map(|o| (&o.kind, o.bytes))
                == other.original.as_ref().map(|o| (&o.kind, o.bytes))
            && self.new.as_ref().map(|n| n.bytes) == other.new.as_ref().map(|n| n.bytes)
            && self.salvaged_from == other.salvaged_from
            && self.healed_from == other.healed_from
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ManifestState {
    /// The plan is written; originals are being copied. The source is untouched.
    BackingUp,
    /// Every original is in the backup with its CRC-32; the source is being changed.
    BackedUp,
    /// The repair is complete.
    Applied,
}

/// `BACKUP_DIR/recoverfs-backup.json`: what an in-place repair changes, and how far it got.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: u32,
    pub tool: String,
    /// The data directory, absolute.
    pub source: String,
    /// The policy (the plan depends on it).
    pub policy: Policy,
    pub max_record_bytes: u64,
    pub state: ManifestState,
    pub entries: Vec<ManifestEntry>,
    /// The replicas (`--replica`, absolute) healed ranges are read from, in order;
    /// absent when none was given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<String>,
}

pub(super) fn manifest_entry(
    rel: &Path,
    action: Action,
    why: String,
    original: Option<Original>,
    new: Option<Replacement>,
) -> ManifestEntry {
    let (path, path_bytes) = escaped(rel);
    ManifestEntry {
        path_bytes,
        path,
        action,
        why,
        original,
        new,
        salvaged_from: None,
        healed_from: None,
    }
}

/// True when `rel` is a relative path that stays inside the directory it is joined to.
fn inside(rel: &Path) -> bool {
    rel.components().count() > 0
        && rel
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// Checks that a list of entries is one an apply can follow without guessing: every path
/// inside the data directory, each action with the replacement and origin it needs, every
/// salvaged run made from a range of an original `.log` that the same repair backs up and
/// truncates (or replaces whole with a healed range: the backup copy is where its bytes are
/// read), and every healed range read from one of `replicas`. `Err` says which entry.
pub(super) fn check_entries(
    entries: &[ManifestEntry],
    replicas: &[String],
) -> std::result::Result<(), String> {
    // By path, so that checking every run stays linear: a segment can hold tens of
    // thousands of runs (`engine::salvage::MAX_RUNS`), three entries each. A `.log`
    // replaced by a healed range keeps none of its bytes (a cut at 0).
    let backed_up: HashMap<PathBuf, (u64, u64)> = entries
        .iter()
        .filter(|o| matches!(o.action, Action::Truncate | Action::Heal))
        .filter_map(|o| {
            let orig = o
                .original
                .as_ref()
                .filter(|o| o.kind == OriginalKind::File)?;
            let cut = match o.action {
                Action::Truncate => o.new.as_ref().map_or(0, |n| n.bytes),
                _ => 0,
            };
            Some((o.rel(), (orig.bytes, cut)))
        })
        .collect();
    for e in entries {
        if !inside(&e.rel()) {
            return Err(format!(
                "entry {:?} is not a path inside the data directory",
                e.path
            ));
        }
        if (e.action == Action::Remove) != e.new.is_none() {
            return Err(format!(
                "entry {:?}: action {:?} does not match its replacement",
                e.path, e.action
            ));
        }
        if (e.action == Action::Salvage) != e.salvaged_from.is_some() {
            return Err(format!(
                "entry {:?}: action {:?} does not match its salvaged_from",
                e.path, e.action
            ));
        }
        if (e.action == Action::Heal) != e.healed_from.is_some() {
            return Err(format!(
                "entry {:?}: action {:?} does not match its healed_from",
                e.path, e.action
            ));
        }
        if let Some(h) = &e.healed_from {
            if !replicas.contains(&h.replica) || !Path::new(&h.replica).is_absolute() {
                return Err(format!(
                    "entry {:?}: healed from {:?}, not one of the manifest's replicas",
                    e.path, h.replica
                ));
            }
            let ok = inside(&h.range.rel())
                && h.range.bytes > 0
                && h.range.position.checked_add(h.range.bytes).is_some();
            if !ok {
                return Err(format!(
                    "entry {:?}: healed from bytes {}..+{} of {:?}, not a range of a file inside the replica",
                    e.path, h.range.position, h.range.bytes, h.range.log
                ));
            }
            continue;
        }
        let Some(from) = &e.salvaged_from else {
            continue;
        };
        if e.original.is_some() {
            return Err(format!(
                "entry {:?}: a salvaged run's file replaces nothing, yet an original is listed",
                e.path
            ));
        }
        let Some(&(original, cut)) = backed_up.get(&from.rel()) else {
            return Err(format!(
                "entry {:?}: salvaged from {:?}, which the repair does not back up and truncate",
                e.path, from.log
            ));
        };
        let fits = from
            .position
            .checked_add(from.bytes)
            .is_some_and(|end| from.position >= cut && end <= original);
        if !fits || from.bytes == 0 {
            return Err(format!(
                "entry {:?}: bytes {}..+{} are not after the valid prefix ({cut} bytes) of {:?} ({original} bytes)",
                e.path, from.position, from.bytes, from.log
            ));
        }
    }
    Ok(())
}

pub(super) fn read_manifest(path: &Path) -> Result<Option<Manifest>> {
    let bad = |what: String| RepairError::BadManifest {
        path: path.to_path_buf(),
        what,
    };
    let m: Manifest = match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| bad(format!("not a recoverfs backup manifest: {e}")))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_at(path, "could not read")(e)),
    };
    // The manifest steers writes and unlinks in the data directory: an entry
    // that escapes it, or lacks the replacement its action needs, is refused
    // before anything is touched.
    check_entries(&m.entries, &m.replicas).map_err(bad)?;
    Ok(Some(m))
}

/// Writes the manifest atomically: temporary file, fsync, rename, fsync of the directory.
pub(super) fn write_manifest(backup: &Path, m: &Manifest, steps: &mut Steps) -> Result<()> {
    let path = backup.join(MANIFEST);
    let tmp = tmp_beside(&path);
    let _ = fs::remove_file(&tmp);
    let mut f = create_new(&tmp)?;
    let text = serde_json::to_string_pretty(m).expect("the manifest serializes") + "\n";
    f.write_all(text.as_bytes())
        .map_err(io_at(&tmp, "could not write"))?;
    fsync(&f, &tmp)?;
    steps.step("manifest written, not yet renamed")?;
    fs::rename(&tmp, &path).map_err(io_at(&path, "could not rename into place"))?;
    // Once `applied` is recorded the repair is done: an interrupt no longer stops it.
    if m.state == ManifestState::Applied {
        steps.mark("manifest renamed, directory not yet synced");
    } else {
        steps.step("manifest renamed, directory not yet synced")?;
    }
    fsync_dir(backup)
}

/// True when the backup directory holds nothing but what a killed run may leave before its manifest.
pub(super) fn backup_is_blank(backup: &Path) -> Result<bool> {
    match fs::read_dir(backup) {
        Ok(it) => {
            for e in it {
                let e = e.map_err(io_at(backup, "could not list"))?;
                if e.path() != tmp_beside(&backup.join(MANIFEST)) {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
            Err(RepairError::NotADirectory(backup.to_path_buf()))
        }
        Err(e) => Err(io_at(backup, "could not list")(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Manifests written by recoverfs 0.1.0 before the schema was typed (kind and policy
    /// were strings): together they hold every kind, state, action, a null original and
    /// replacement, null CRCs, and an escaped non-UTF-8 path with its raw bytes.
    const STORED: [(&str, &str); 2] = [
        (
            "manifest-applied.json",
            include_str!("testdata/manifest-applied.json"),
        ),
        (
            "manifest-backing-up.json",
            include_str!("testdata/manifest-backing-up.json"),
        ),
    ];

    /// A stored manifest still parses, and written again it is the same bytes.
    #[test]
    fn stored_manifests_parse_and_are_written_byte_for_byte() {
        for (name, text) in STORED {
            let t = tempfile::tempdir().unwrap();
            let path = t.path().join(MANIFEST);
            fs::write(&path, text).unwrap();
            let m = read_manifest(&path).unwrap().expect(name);
            let kinds: Vec<_> = m
                .entries
                .iter()
                .filter_map(|e| e.original.as_ref())
                .collect();
            assert!(!kinds.is_empty(), "{name}");
            fs::remove_file(&path).unwrap();
            write_manifest(t.path(), &m, &mut Steps::new()).unwrap();
            assert_eq!(fs::read_to_string(&path).unwrap(), text, "{name}");
        }
    }

    fn truncate(rel: &str, original: u64, cut: u64) -> ManifestEntry {
        manifest_entry(
            Path::new(rel),
            Action::Truncate,
            String::new(),
            Some(Original {
                kind: OriginalKind::File,
                bytes: original,
                crc32: None,
            }),
            Some(Replacement {
                bytes: cut,
                crc32: None,
            }),
        )
    }

    fn salvage(rel: &str, from: RunSource) -> ManifestEntry {
        let mut e = manifest_entry(
            Path::new(rel),
            Action::Salvage,
            String::new(),
            None,
            Some(Replacement {
                bytes: from.bytes,
                crc32: None,
            }),
        );
        e.salvaged_from = Some(from);
        e
    }

    /// A salvaged run's entry is followed only when it is made from a range after the
    /// valid prefix of a `.log` the same manifest backs up and truncates; anything else
    /// is refused when the manifest is read, before a byte is touched.
    #[test]
    fn salvage_entries_are_checked_against_their_original() {
        let log = "t/p/00000000000000000000.log";
        let run = "t/p/00000000000000000006.log";
        let ok = vec![
            truncate(log, 1000, 200),
            salvage(run, RunSource::new(Path::new(log), 300, 700)),
        ];
        assert_eq!(check_entries(&ok, &[]), Ok(()));
        // The run's name may come before its original in the manifest.
        let mut swapped = ok.clone();
        swapped.reverse();
        assert_eq!(check_entries(&swapped, &[]), Ok(()));

        let bad = |entries: Vec<ManifestEntry>, what: &str| {
            let e = check_entries(&entries, &[]).unwrap_err();
            assert!(e.contains(what), "{what}: {e}");
            // And through the file, as a resumed repair reads it.
            let t = tempfile::tempdir().unwrap();
            let m = Manifest {
                schema: 1,
                tool: String::new(),
                source: "/d".into(),
                policy: Policy::Salvage,
                max_record_bytes: 1 << 26,
                state: ManifestState::BackedUp,
                entries,
                replicas: vec![],
            };
            write_manifest(t.path(), &m, &mut Steps::new()).unwrap();
            let e = read_manifest(&t.path().join(MANIFEST)).unwrap_err();
            assert!(
                matches!(e, RepairError::BadManifest { .. }) && e.to_string().contains(what),
                "{e}"
            );
        };
        let from = |position, bytes| RunSource::new(Path::new(log), position, bytes);
        bad(
            vec![salvage(run, from(300, 700))],
            "which the repair does not back up and truncate",
        );
        bad(
            vec![truncate(log, 1000, 200), salvage(run, from(100, 50))],
            "not after the valid prefix",
        );
        bad(
            vec![truncate(log, 1000, 200), salvage(run, from(300, 701))],
            "not after the valid prefix",
        );
        bad(
            vec![truncate(log, 1000, 200), salvage(run, from(u64::MAX, 2))],
            "not after the valid prefix",
        );
        bad(
            vec![truncate(log, 1000, 200), salvage(run, from(300, 0))],
            "not after the valid prefix",
        );
        let escaping = RunSource::new(Path::new("../x/00000000000000000000.log"), 300, 10);
        bad(
            vec![truncate(log, 1000, 200), salvage(run, escaping)],
            "which the repair does not back up and truncate",
        );
        let mut no_origin = salvage(run, from(300, 700));
        no_origin.salvaged_from = None;
        bad(
            vec![truncate(log, 1000, 200), no_origin],
            "does not match its salvaged_from",
        );
        let mut stray = truncate(log, 1000, 200);
        stray.salvaged_from = Some(from(300, 700));
        bad(vec![stray], "does not match its salvaged_from");
        let mut replaces = salvage(run, from(300, 700));
        replaces.original = truncate(log, 1, 1).original;
        bad(
            vec![truncate(log, 1000, 200), replaces],
            "replaces nothing, yet an original is listed",
        );
    }

    fn heal(rel: &str, replica: &str, position: u64, bytes: u64) -> ManifestEntry {
        let mut e = manifest_entry(
            Path::new(rel),
            Action::Heal,
            String::new(),
            None,
            Some(Replacement { bytes, crc32: None }),
        );
        e.healed_from = Some(HealSource {
            replica: replica.into(),
            range: RunSource::new(Path::new("t/p/00000000000000000000.log"), position, bytes),
        });
        e
    }

    /// A healed range's entry is followed only when it names one of the manifest's
    /// replicas and a non-empty range of a file inside it; a `.log` a healed range
    /// replaces (backed up whole) may be where salvaged runs are read from.
    #[test]
    fn heal_entries_are_checked_against_the_replicas() {
        let r = vec!["/r1".to_string()];
        let run = "t/p/00000000000000000100.log";
        assert_eq!(check_entries(&[heal(run, "/r1", 0, 10)], &r), Ok(()));
        let refused = |entries: &[ManifestEntry], replicas: &[String], what: &str| {
            let e = check_entries(entries, replicas).unwrap_err();
            assert!(e.contains(what), "{what}: {e}");
        };
        refused(
            &[heal(run, "/r2", 0, 10)],
            &r,
            "not one of the manifest's replicas",
        );
        refused(
            &[heal(run, "/r1", 0, 10)],
            &[],
            "not one of the manifest's replicas",
        );
        let rel = vec!["r1".to_string()];
        refused(
            &[heal(run, "r1", 0, 10)],
            &rel,
            "not one of the manifest's replicas",
        );
        refused(
            &[heal(run, "/r1", 0, 0)],
            &r,
            "not a range of a file inside the replica",
        );
        refused(
            &[heal(run, "/r1", u64::MAX, 2)],
            &r,
            "not a range of a file inside the replica",
        );
        let mut escaping = heal(run, "/r1", 0, 10);
        escaping.healed_from.as_mut().unwrap().range =
            RunSource::new(Path::new("../x/00000000000000000000.log"), 0, 10);
        refused(&[escaping], &r, "not a range of a file inside the replica");
        let mut bare = heal(run, "/r1", 0, 10);
        bare.healed_from = None;
        refused(&[bare], &r, "does not match its healed_from");
        let mut stray = truncate(run, 100, 10);
        stray.healed_from = heal(run, "/r1", 0, 10).healed_from;
        refused(&[stray], &r, "does not match its healed_from");
        // On disk: the range's fields beside the replica, and back.
        let text = serde_json::to_string(&heal(run, "/r1", 3, 10)).unwrap();
        assert!(
            text.contains(r#""action":"heal""#)
                && text.contains(r#""healed_from":{"replica":"/r1","log":"t/p/00000000000000000000.log","position":3,"bytes":10}"#),
            "{text}"
        );
        let back: ManifestEntry = serde_json::from_str(&text).unwrap();
        assert_eq!(back, heal(run, "/r1", 3, 10));
        // A healed range over an empty primary segment: the runs found in that `.log`
        // are read from its backup copy, anywhere in it (nothing of it is kept).
        let log = "t/p/00000000000000000000.log";
        let mut over = heal(log, "/r1", 0, 50);
        over.original = truncate(log, 1000, 0).original;
        let from = |position, bytes| RunSource::new(Path::new(log), position, bytes);
        let ok = vec![over.clone(), salvage(run, from(0, 1000))];
        assert_eq!(check_entries(&ok, &r), Ok(()));
        refused(
            &[over.clone(), salvage(run, from(10, 991))],
            &r,
            "not after the valid prefix",
        );
        // Without an original it backs nothing up: no run can be read from it.
        refused(
            &[heal(log, "/r1", 0, 50), salvage(run, from(0, 10))],
            &r,
            "which the repair does not back up and truncate",
        );
    }

    /// A salvage entry round-trips, non-UTF-8 original name included; the other
    /// entries gain no field.
    #[test]
    fn salvage_entries_round_trip() {
        use std::os::unix::ffi::OsStrExt;
        let raw = Path::new(std::ffi::OsStr::from_bytes(
            b"t\xff/00000000000000000000.log",
        ));
        let from = RunSource::new(raw, 300, 700);
        assert!(from.log_bytes.is_some());
        assert_eq!(from.rel(), raw);
        let entries = vec![
            truncate("a/00000000000000000000.log", 1000, 200),
            salvage("a/00000000000000000006.log", from),
        ];
        let text = serde_json::to_string(&entries).unwrap();
        assert_eq!(text.matches("salvaged_from").count(), 1, "{text}");
        let back: Vec<ManifestEntry> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, entries);
        assert_eq!(back[1].action, Action::Salvage);
        assert!(text.contains("\"action\":\"salvage\""), "{text}");
    }

    /// The typed fields read back as what the strings said.
    #[test]
    fn kind_and_policy_are_typed() {
        let m: Manifest = serde_json::from_str(STORED[1].1).unwrap();
        assert_eq!(m.policy, Policy::PointInTime);
        assert_eq!(m.state, ManifestState::BackingUp);
        let kinds: Vec<OriginalKind> = m
            .entries
            .iter()
            .filter_map(|e| e.original.as_ref().map(|o| o.kind))
            .collect();
        assert_eq!(kinds[0], OriginalKind::Symlink);
        assert!(kinds[1..].iter().all(|k| *k == OriginalKind::File));
        let m: Manifest = serde_json::from_str(STORED[0].1).unwrap();
        assert_eq!(m.policy, Policy::PerSegment);
        assert!(m.entries.iter().any(|e| e.path_bytes.is_some()));
    }
}
