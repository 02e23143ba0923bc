//! Metrics: `check --metrics` and the mount's `.recoverfs/metrics.prom`, parsed by a real Prometheus parser (Python's `prometheus_client`) and compared with `check --json`; `--verify background` to completion and a prompt unmount.

use crate::common;

use common::mount::Mounted;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// One parsed sample: name, labels, value, family type.
type Sample = (String, Vec<(String, String)>, f64, String);

/// Parses exposition text with `prometheus_client.parser`: sample name and
/// sorted labels (`name{k="v",...}`, values unescaped) to value. `None` (with a
/// message) when no python3 with `prometheus_client` is found; under CI, which
/// installs it, that fails the test ([`cannot_test`]).
fn parse_prom(text: &str) -> Option<BTreeMap<String, f64>> {
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        out.append([s.name, sorted(s.labels.items()), s.value, fam.type])
print(json.dumps(out))
"#;
    for py in ["python3", "/usr/bin/python3"] {
        let probe = Command::new(py)
            .args(["-c", "import prometheus_client"])
            .output();
        if !probe.is_ok_and(|o| o.status.success()) {
            continue;
        }
        let mut child = Command::new(py)
            .args(["-c", SCRIPT])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let o = child.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "prometheus_client rejected the text:\n{}\n{text}",
            String::from_utf8_lossy(&o.stderr)
        );
        let samples: Vec<Sample> = serde_json::from_slice(&o.stdout).unwrap();
        let mut out = BTreeMap::new();
        for (name, labels, value, _) in samples {
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            let key = if l.is_empty() {
                name
            } else {
                format!("{name}{{{}}}", l.join(","))
            };
            assert!(out.insert(key.clone(), value).is_none(), "{key} twice");
        }
        return Some(out);
    }
    cannot_test("no python3 with prometheus_client (apt install python3-prometheus-client): metrics not parsed");
    None
}

/// Unmounts, retrying for a moment while busy: a child another test thread is
/// spawning (python3, the CLI) holds copies of this thread's just-closed
/// descriptors until it execs. Returns how the daemon exited.
fn unmount(m: &mut Mounted) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !Command::new("umount")
        .arg(m.path())
        .status()
        .unwrap()
        .success()
    {
        assert!(Instant::now() < deadline, "umount kept failing");
        std::thread::sleep(Duration::from_millis(50));
    }
    m.child.take().unwrap().wait().unwrap()
}

fn get(m: &BTreeMap<String, f64>, key: &str) -> u64 {
    *m.get(key)
        .unwrap_or_else(|| panic!("{key} missing from {m:#?}")) as u64
}

/// 25 damaged logs (a torn tail each, one with a name that needs escaping) and one clean log.
fn many_damaged_logs() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    for i in 0..26u64 {
        let name = if i == 3 {
            "we\"ird\\topic-3".to_string()
        } else {
            format!("topic-{i}")
        };
        let dir = t.path().join(name).join("partition-0");
        fs::create_dir_all(&dir).unwrap();
        write_log(&dir, 0, 5 + i);
        if i < 25 {
            // A torn last record: i + 1 bytes of a record that never finished.
            let mut f = fs::OpenOptions::new()
                .append(true)
                .open(log_path(&dir, 0))
                .unwrap();
            f.write_all(&[0u8, 0, 0, 60, 1, 2, 3][..(i as usize % 7) + 1])
                .unwrap();
        }
    }
    t
}

/// The parsed figures agree with `check --json`'s report.
fn assert_figures_match(m: &BTreeMap<String, f64>, report: &Value) {
    let s = &report["summary"];
    let n = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("summary.{k}"));
    for (metric, field) in [
        ("recoverfs_logs", "logs"),
        ("recoverfs_segments_known", "segments"),
        ("recoverfs_segments_validated", "segments"),
        ("recoverfs_segments_clean", "clean"),
        ("recoverfs_segments_truncated", "truncated"),
        ("recoverfs_segments_unreadable", "unreadable"),
        ("recoverfs_segments_hidden", "hidden"),
        ("recoverfs_records_kept", "records"),
        ("recoverfs_bytes_kept", "bytes_kept"),
        ("recoverfs_bytes_cut", "bytes_cut"),
        ("recoverfs_index_sets_rebuilt", "indexes_rebuilt"),
        ("recoverfs_gaps", "gaps"),
        ("recoverfs_overlaps", "overlaps"),
        ("recoverfs_orphans", "orphans"),
    ] {
        assert_eq!(get(m, metric), n(field), "{metric} vs summary.{field}");
    }
    assert_eq!(
        get(m, "recoverfs_view_differs"),
        u64::from(s["view_differs"].as_bool().unwrap())
    );
    // Per-log series: only damaged logs, at most 20 of them plus "(other)", summing to the totals.
    let per_log: BTreeMap<&str, f64> = m
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("recoverfs_log_bytes_cut{log=")
                .and_then(|l| l.strip_suffix('}'))
                .map(|l| (l, *v))
        })
        .collect();
    let damaged: Vec<&Value> = report["logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| {
            l["segments"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["status"] != "clean" || !s["visible"].as_bool().unwrap())
        })
        .collect();
    assert_eq!(get(m, "recoverfs_logs_damaged"), damaged.len() as u64);
    assert_eq!(per_log.len(), damaged.len().min(21), "{per_log:#?}");
    let sum: f64 = per_log.values().sum();
    assert_eq!(sum as u64, n("bytes_cut"));
    let kept: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("recoverfs_log_records_kept{"))
        .map(|(_, v)| v)
        .sum();
    let kept_damaged: u64 = damaged
        .iter()
        .flat_map(|l| l["segments"].as_array().unwrap())
        .map(|s| s["records"].as_u64().unwrap())
        .sum();
    assert_eq!(kept as u64, kept_damaged);
    if damaged.len() > 20 {
        assert!(per_log.contains_key("\"(other)\""), "{per_log:#?}");
    }
    // A log named with a quote and a backslash comes back intact from the parser.
    for l in &damaged {
        let path = l["path"].as_str().unwrap();
        let cut: u64 = l["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["original_bytes"].as_u64().unwrap() - s["valid_bytes"].as_u64().unwrap())
            .sum();
        if let Some(v) = per_log.get(format!("{path:?}").as_str()) {
            assert_eq!(*v as u64, cut, "{path}");
        }
    }
}

#[test]
fn check_metrics_writes_the_report_figures_atomically() {
    let t = many_damaged_logs();
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("recoverfs.prom");
    fs::write(&file, "stale\n").unwrap();
    let o = check_cli(t.path(), &["--json", "--metrics", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    // Replaced by rename: no temporary file left beside it, readable by all.
    let names: Vec<_> = fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["recoverfs.prom"]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o644
    );
    let text = fs::read_to_string(&file).unwrap();
    assert!(text.contains("# TYPE recoverfs_bytes_cut gauge"));
    // The label is the name itself in Prometheus escaping (one backslash is `\\`).
    assert!(
        text.contains(r#"log="we\"ird\\topic-3/partition-0""#),
        "{text}"
    );
    let Some(m) = parse_prom(&text) else { return };
    assert_figures_match(&m, &report);
    assert!(get(&m, "recoverfs_check_timestamp_seconds") > 1_700_000_000);
    // A directory that cannot hold the file: exit 2, one line.
    let o = check_cli(t.path(), &["--metrics", "/nonexistent/dir/x.prom"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--metrics /nonexistent/dir/x.prom"));
}

/// The mount's metrics.prom once background verification is done: the same
/// figures as `check --json`, and opening report.json then validates nothing.
#[test]
fn background_verify_fills_the_mounts_metrics_and_report_json_validates_nothing() {
    let t = many_damaged_logs();
    let (_, report) = check_json(t.path(), &[]);
    let mut m = Mounted::new(t.path(), &["-o", "verify=background"]);
    let prom = m.path().join(".recoverfs/metrics.prom");
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        let text = fs::read_to_string(&prom).unwrap();
        let line = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .map(|v| v.parse::<u64>().unwrap())
        };
        let (done, total) = (
            line("recoverfs_verify_segments_done"),
            line("recoverfs_verify_segments_total"),
        );
        if total.is_some_and(|t| t > 0)
            && done == total
            && line("recoverfs_verify_running") == Some(0)
        {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "verification never finished:\n{text}\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        m.log()
            .contains("background verification done: 26 segment(s)"),
        "{}",
        m.log()
    );
    assert!(
        m.log().contains("is damaged"),
        "damage is logged as found:\n{}",
        m.log()
    );
    let report_json = fs::read(m.path().join(".recoverfs/report.json")).unwrap();
    let after = fs::read_to_string(&prom).unwrap();
    let mut served: Value = serde_json::from_slice(&report_json).unwrap();
    let mut expected = report.clone();
    served.as_object_mut().unwrap().remove("source");
    expected.as_object_mut().unwrap().remove("source");
    assert_eq!(served, expected, "report.json is check --json's report");
    let Some(before) = parse_prom(&text) else {
        unmount(&mut m);
        return;
    };
    let after = parse_prom(&after).unwrap();
    assert_eq!(get(&before, "recoverfs_verify_segments_total"), 26);
    assert_eq!(get(&before, "recoverfs_logs_pending"), 0);
    assert_figures_match(&before, &report);
    assert_figures_match(&after, &report);
    // Opening report.json (and metrics.prom) after the verification validated nothing new.
    assert_eq!(
        get(&before, "recoverfs_validations_total"),
        26,
        "every segment validated once"
    );
    assert_eq!(get(&after, "recoverfs_validations_total"), 26);
    assert_eq!(get(&after, "recoverfs_verdict_cache_misses_total"), 26);
    assert!(get(&after, "recoverfs_verdict_cache_hits_total") >= 26);
    assert_eq!(get(&after, "recoverfs_verdict_cache_evictions_total"), 0);
    // The daemon served report.json's bytes and metrics.prom's first read.
    assert!(get(&after, "recoverfs_daemon_read_bytes_total") >= report_json.len() as u64);
    assert!(get(&after, "recoverfs_daemon_reads_total") >= 2);
    assert_eq!(get(&after, "recoverfs_eio_total"), 0);
    // Counted once the open is answered (and released asynchronously by the kernel).
    assert!(get(&after, "recoverfs_open_files") <= 2);
    // The daemon exits once unmounted (the verifier, done, holds nothing up).
    assert!(unmount(&mut m).success());
}

/// A lazy mount's metrics cover only what was looked up, and validate nothing themselves.
#[test]
fn lazy_metrics_validate_nothing() {
    let t = many_damaged_logs();
    let mut m = Mounted::new(t.path(), &[]);
    let prom = m.path().join(".recoverfs/metrics.prom");
    let text = fs::read_to_string(&prom).unwrap();
    let _ = fs::metadata(
        m.path()
            .join("topic-0/partition-0/00000000000000000000.log"),
    )
    .unwrap();
    let text2 = fs::read_to_string(&prom).unwrap();
    unmount(&mut m);
    let (Some(a), Some(b)) = (parse_prom(&text), parse_prom(&text2)) else {
        return;
    };
    assert_eq!(get(&a, "recoverfs_segments_known"), 26);
    assert_eq!(get(&a, "recoverfs_segments_validated"), 0);
    assert_eq!(get(&a, "recoverfs_validations_total"), 0);
    assert_eq!(get(&a, "recoverfs_logs_pending"), 26);
    assert_eq!(get(&a, "recoverfs_verify_segments_total"), 0);
    assert_eq!(get(&b, "recoverfs_segments_validated"), 1);
    assert_eq!(get(&b, "recoverfs_validations_total"), 1);
    assert_eq!(get(&b, "recoverfs_logs_pending"), 25);
    assert_eq!(get(&b, "recoverfs_segments_truncated"), 1);
    assert_eq!(get(&b, "recoverfs_logs"), 1);
}

/// Unmounting while the verifier is still at work stops it where it is (rather than
/// waiting for it to finish), and it says where it stopped. A reader keeps the mount
/// busy meanwhile: the verifier defers each segment to readers (up to 2 s), so it is
/// mid-way through the 8 when the unmount comes, however fast the machine.
#[test]
fn unmount_during_background_verification_is_prompt() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let o = Command::new(bin())
        .args(["synth", "--partitions", "8", "--segment-mb", "32"])
        .arg(&src)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut m = Mounted::new(&src, &["--verify", "background"]);
    let prom = m.path().join(".recoverfs/metrics.prom");
    let value = |text: &str, name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse::<u64>().ok())
    };
    // Each read of metrics.prom is a daemon read; briefly open, so the unmount can pass.
    let unmounted = Arc::new(AtomicBool::new(false));
    let reader = {
        let (prom, unmounted) = (prom.clone(), unmounted.clone());
        std::thread::spawn(move || {
            while !unmounted.load(Ordering::Relaxed) && fs::read(&prom).is_ok() {
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    // The verifier is at work: it knows its 8 segments and has not finished them.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = fs::read_to_string(&prom).unwrap();
        if value(&text, "recoverfs_verify_running") == Some(1)
            && value(&text, "recoverfs_verify_segments_total") == Some(8)
        {
            break;
        }
        // The deadline only bounds a hang.
        assert!(
            Instant::now() < deadline,
            "the verifier never started:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(unmount(&mut m).success());
    unmounted.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    let log = m.log();
    let done: u64 = log
        .lines()
        .find_map(|l| {
            l.split_once("background verification stopped after ")
                .map(|x| x.1)
        })
        .and_then(|rest| rest.trim_end().strip_suffix(" of 8 segment(s)"))
        .unwrap_or_else(|| panic!("the verifier was not stopped by the unmount:\n{log}"))
        .parse()
        .unwrap();
    assert!(done < 8, "{log}");
    let o = check_cli(Path::new(&src), &["--verify", "background"]);
    assert_eq!(o.status.code(), Some(2), "check has no --verify");
    let os = std::ffi::OsStr::new;
    let o = run([
        os("mount"),
        src.as_os_str(),
        t.path().as_os_str(),
        os("--verify"),
        os("eager"),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("lazy"), "{}", stderr(&o));
}
