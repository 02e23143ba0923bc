//! Build script: records the git commit this binary is built from, and whether the tree was dirty (`--version`, the backup manifest).

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    // A source tarball or a tree without git builds too: the commit is then "unknown".
    let described = match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(commit) if !commit.is_empty() => {
            // --no-optional-locks: a plain `git status` refreshes .git/index, whose
            // mtime is watched below, so every build would make the next one rerun this
            // and rebuild the crate (`cargo fuzz run` rebuilt it before each target).
            let dirty = git(&[
                "--no-optional-locks",
                "status",
                "--porcelain",
                "--untracked-files=no",
            ])
            .is_some_and(|s| !s.is_empty());
            format!("git {commit}{}", if dirty { ", dirty" } else { "" })
        }
        _ => "git unknown".to_string(),
    };
    println!("cargo:rustc-env=RECOVERFS_GIT={described}");
    // Rebuilt when the commit moves or a tracked file changes.
    for args in [
        ["rev-parse", "--git-dir"],
        ["rev-parse", "--git-common-dir"],
    ] {
        if let Some(dir) = git(&args) {
            for f in ["HEAD", "index", "refs", "packed-refs"] {
                let p = Path::new(&dir).join(f);
                if p.exists() {
                    println!("cargo:rerun-if-changed={}", p.display());
                }
            }
        }
    }
    for p in [
        "src",
        "tests",
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        "README.md",
    ] {
        println!("cargo:rerun-if-changed={p}");
    }
}
