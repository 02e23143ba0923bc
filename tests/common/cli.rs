//! Runs the `recoverfs` binary: one runner, and one helper per invocation the tests repeat.
#![allow(dead_code)]

use serde_json::Value;
use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::{Command, Output};

use super::bin;

/// One command-line argument: a `&str`, a `Path`, an `OsStr`...
pub type Arg<'a> = &'a dyn AsRef<OsStr>;

/// `recoverfs ARGS...`, with no injected failure, waited for: status, stdout, stderr.
pub fn run<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(args: I) -> Output {
    Command::new(bin())
        .args(args)
        .env_remove("RECOVERFS_TEST_FAIL_AT")
        .output()
        .unwrap()
}

/// `recoverfs ARGS...` made to stop abruptly at repair step `step` (needs the
/// `fault-injection` feature; exit code 86 when it stopped there).
pub fn run_failing_at<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(args: I, step: u32) -> Output {
    Command::new(bin())
        .args(args)
        .env("RECOVERFS_TEST_FAIL_AT", step.to_string())
        .output()
        .unwrap()
}

/// After a run stopped at step `step` (`killed`, which must have exited 86), runs
/// `args` again, which must finish.
pub fn rerun_after_kill<S: AsRef<OsStr>>(killed: &Output, args: &[S], step: u32) {
    assert_eq!(
        killed.status.code(),
        Some(86),
        "step {step}: {}",
        stderr(killed)
    );
    let o = run(args);
    assert!(
        o.status.success(),
        "rerun after step {step}: {}",
        stderr(&o)
    );
}

/// `ARGS...` as owned arguments.
pub fn argv(args: &[Arg]) -> Vec<OsString> {
    args.iter().map(|a| a.as_ref().to_owned()).collect()
}

/// `recoverfs SUB PATH EXTRA...`.
pub fn run_on(sub: &str, path: &Path, extra: &[&str]) -> Output {
    run(argv(&[&sub, &path])
        .into_iter()
        .chain(extra.iter().map(OsString::from)))
}

/// Stdout, lossily decoded.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Stderr, lossily decoded.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `recoverfs check PATH EXTRA...`.
pub fn check_cli(path: &Path, extra: &[&str]) -> Output {
    run_on("check", path, extra)
}

/// `recoverfs check PATH --policy POLICY`'s exit code.
pub fn check_code(path: &Path, policy: &str) -> Option<i32> {
    check_cli(path, &["--policy", policy]).status.code()
}

/// `recoverfs check PATH --json EXTRA...`: exit code and the parsed report.
pub fn check_json(path: &Path, extra: &[&str]) -> (Option<i32>, Value) {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let o = check_cli(path, &args);
    (
        o.status.code(),
        serde_json::from_slice(&o.stdout).expect("check --json prints JSON"),
    )
}

/// `recoverfs dump SEGMENT EXTRA...`.
pub fn dump(segment: &Path, extra: &[&str]) -> Output {
    run_on("dump", segment, extra)
}

/// `repair SRC --output NEW EXTRA...`, the arguments.
pub fn output_args(src: &Path, new: &Path, extra: &[&str]) -> Vec<OsString> {
    let mut a = argv(&[&"repair", &src, &"--output", &new]);
    a.extend(extra.iter().map(OsString::from));
    a
}

/// `repair SRC --in-place --backup BACKUP EXTRA...`, the arguments.
pub fn in_place_args(src: &Path, backup: &Path, extra: &[&str]) -> Vec<OsString> {
    let mut a = argv(&[&"repair", &src, &"--in-place", &"--backup", &backup]);
    a.extend(extra.iter().map(OsString::from));
    a
}

/// `recoverfs repair SRC --output NEW EXTRA...`.
pub fn repair_output(src: &Path, new: &Path, extra: &[&str]) -> Output {
    run(output_args(src, new, extra))
}

/// `recoverfs repair SRC --in-place --backup BACKUP EXTRA...`.
pub fn repair_in_place(src: &Path, backup: &Path, extra: &[&str]) -> Output {
    run(in_place_args(src, backup, extra))
}

/// Asserts `o` exited 0, showing its stderr (after `what`) if not.
pub fn assert_ok(o: &Output, what: &str) {
    assert!(o.status.success(), "{what}: {}", stderr(o));
}

/// The steps an uninterrupted `repair --in-place` takes, from its backup's manifest:
/// two for each of the three manifest writes, each original copied into the backup,
/// and each change (a kill-at-every-step loop is past the last one when it succeeds).
pub fn in_place_steps(backup: &Path) -> u32 {
    let m: Value = serde_json::from_slice(
        &std::fs::read(backup.join("recoverfs-backup.json")).expect("the manifest"),
    )
    .expect("a JSON manifest");
    let es = m["entries"].as_array().expect("entries");
    let copies = es.iter().filter(|e| e["original"].is_object()).count();
    2 * (3 + es.len() + copies) as u32
}
