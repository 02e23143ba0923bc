//! The backup manifest, `BACKUP_DIR/recoverfs-backup.json`: its typed on-disk schema, read and written atomically.

use super::fsio::{create_new, fsync, fsync_dir, tmp_beside};
use super::steps::Steps;
use super::{io_at, RepairError, Result};
use crate::engine::layout::escape_path;
use crate::engine::policy::Policy;
use serde::{Deserialize, Serialize};
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
    /// Cut a `.log` to its valid prefix.
    Truncate,
    /// Replace an index with the rebuilt one.
    Rebuild,
    /// Write a rebuilt index where none was.
    Create,
    /// Remove a file the view leaves out (hidden segment, orphan index).
    Remove,
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
}

impl ManifestEntry {
    pub(super) fn rel(&self) -> PathBuf {
        match &self.path_bytes {
            Some(b) => PathBuf::from(OsString::from_vec(b.clone())),
            None => PathBuf::from(&self.path),
        }
    }

    /// The fields a fresh plan must reproduce for an interrupted backup to be resumed.
    pub(super) fn same_plan(&self, other: &ManifestEntry) -> bool {
        self.path == other.path
            && self.path_bytes == other.path_bytes
            && self.action == other.action
            && self.original.as_ref().map(|o| (&o.kind, o.bytes))
                == other.original.as_ref().map(|o| (&o.kind, o.bytes))
            && self.new.as_ref().map(|n| n.bytes) == other.new.as_ref().map(|n| n.bytes)
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
}

pub(super) fn manifest_entry(
    rel: &Path,
    action: Action,
    why: String,
    original: Option<Original>,
    new: Option<Replacement>,
) -> ManifestEntry {
    let path = escape_path(rel);
    let raw = rel.as_os_str().as_bytes();
    ManifestEntry {
        path_bytes: (path.as_bytes() != raw).then(|| raw.to_vec()),
        path,
        action,
        why,
        original,
        new,
    }
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
    for e in &m.entries {
        let rel = e.rel();
        let inside = rel.components().count() > 0
            && rel
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !inside {
            return Err(bad(format!(
                "entry {:?} is not a path inside the data directory",
                e.path
            )));
        }
        if (e.action == Action::Remove) != e.new.is_none() {
            return Err(bad(format!(
                "entry {:?}: action {:?} does not match its replacement",
                e.path, e.action
            )));
        }
    }
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
    steps.step("manifest written, not yet renamed");
    fs::rename(&tmp, &path).map_err(io_at(&path, "could not rename into place"))?;
    steps.step("manifest renamed, directory not yet synced");
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
