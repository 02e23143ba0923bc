//! The command line around the front ends: `--version`, `completions`, `man`, and what the backup manifest says of the build.

use crate::common;

use common::*;

/// `--version` tells two builds apart: the git commit, and whether the tree was dirty.
#[test]
fn version_names_the_git_commit() {
    let o = run(["--version"]);
    assert!(o.status.success());
    let v = stdout(&o);
    assert!(v.starts_with("recoverfs 0."), "{v}");
    assert!(v.contains("(git "), "{v}");
    assert_eq!(
        v.trim_end(),
        format!("recoverfs {}", recoverfs::version::LONG)
    );
}

/// `completions SHELL` prints a script for each shell clap_complete knows.
#[test]
fn completions_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let o = run(["completions", shell]);
        assert!(o.status.success(), "{shell}");
        let text = stdout(&o);
        assert!(
            text.contains("recoverfs") && text.contains("verify-index"),
            "{shell}"
        );
    }
    assert_eq!(run(["completions", "tcsh"]).status.code(), Some(2));
}

/// `man` prints one roff page: every subcommand, the exit status table, the report, the files.
#[test]
fn man_prints_the_whole_page() {
    let o = run(["man"]);
    assert!(o.status.success());
    let page = stdout(&o);
    assert!(
        page.starts_with(".ie") || page.contains(".TH recoverfs"),
        "{page}"
    );
    for s in [
        ".SH \"RECOVERFS DUMP\"",
        ".SH \"EXIT STATUS\"",
        ".SH \"THE REPORT\"",
        ".SH \"FILES\"",
        "--verify-index",
        "nometa",
    ] {
        assert!(page.contains(s), "{s}");
    }
}

/// The backup manifest names the build that wrote it (version, git commit).
#[test]
fn the_backup_manifest_names_the_build() {
    let src = damaged();
    let b = tempfile::tempdir().unwrap();
    let bk = b.path().join("bk");
    assert_ok(&repair_in_place(src.path(), &bk, &[]), "repair");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bk.join("recoverfs-backup.json")).unwrap()).unwrap();
    assert_eq!(m["tool"], format!("recoverfs {}", recoverfs::version::LONG));
}
