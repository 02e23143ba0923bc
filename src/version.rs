//! This build's identity: the package version, the git commit it was built from, and whether that tree was dirty.

/// `git <12 hex digits>[, dirty]`, or `git unknown` when built outside a git tree (see `build.rs`).
pub const GIT: &str = env!("RECOVERFS_GIT");

/// `--version`'s text and the backup manifest's `tool`: `0.1.0 (git 1d91f4f2ab3c, dirty)`.
pub const LONG: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("RECOVERFS_GIT"), ")");
