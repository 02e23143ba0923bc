//! `check --map` and `check --html`: the text map's proportions and legend, the page's
//! escaping and segment count, and the page as a real headless browser renders it.

use crate::common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A hostile partition name: markup if it were ever written raw.
const HOSTILE: &str = "t-<img src=x onerror=alert(1)>\"'&-0";

/// One log: a clean segment, a segment with a zero-filled tail as long as both
/// segments (so the cut is half the bytes), a gap, and one more clean segment.
fn tree() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let log = t.path().join(HOSTILE);
    write_segment(&log, 0, 100, 100);
    write_segment(&log, 100, 100, 100);
    write_segment(&log, 300, 50, 100);
    let kept: u64 = [0, 100]
        .iter()
        .map(|b| fs::metadata(log_path(&log, *b)).unwrap().len())
        .sum();
    append_zeros(&log_path(&log, 100), kept as usize);
    (t, log)
}

/// The (kept, cut) bytes of the report's single log, and its segment count.
fn bytes_of(root: &Path) -> (u64, u64, usize) {
    let (_, j) = check_json(root, &[]);
    let segs = j["logs"][0]["segments"].as_array().unwrap();
    let kept = segs
        .iter()
        .map(|s| s["valid_bytes"].as_u64().unwrap())
        .sum();
    let orig: u64 = segs
        .iter()
        .map(|s| s["original_bytes"].as_u64().unwrap())
        .sum();
    (kept, orig - kept, segs.len())
}

#[test]
fn text_map_is_proportional_with_a_legend() {
    let (t, _) = tree();
    let (kept, cut, _) = bytes_of(t.path());
    let o = check_cli(t.path(), &["--map", "--map-width", "60"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(!out.contains('\x1b'), "colour on a pipe:\n{out}");
    let lines: Vec<&str> = out.lines().collect();
    let legend = lines
        .iter()
        .position(|l| l.starts_with("legend:"))
        .expect("a legend");
    for word in [
        "█ kept",
        "░ cut",
        "· hidden",
        "! unreadable",
        "| gap",
        "x refused",
    ] {
        assert!(lines[legend].contains(word), "{}", lines[legend]);
    }
    let bar = lines[legend - 1];
    assert!(
        lines[legend - 2].contains("3 segment(s)") && lines[legend - 2].contains("1 gap(s)"),
        "{}",
        lines[legend - 2]
    );
    // 60 columns in all: 59 of bytes and the gap's.
    assert_eq!(bar.chars().count(), 60, "{bar}");
    assert_eq!(bar.matches('|').count(), 1, "{bar}");
    let cols = 59.0;
    let total = (kept + cut) as f64;
    let near = |n: usize, share: u64| (n as f64 - cols * share as f64 / total).abs() <= 1.0;
    let (k, c) = (bar.matches('█').count(), bar.matches('░').count());
    assert!(
        near(k, kept) && near(c, cut),
        "{bar}: {kept} kept, {cut} cut"
    );
    // The gap follows the cut segment: cut, then the break, then the last segment kept.
    assert!(bar.contains("░|█"), "{bar}");
}

#[test]
fn map_width_defaults_to_80_off_a_terminal_and_json_refuses_it() {
    let (t, _) = tree();
    let out = stdout(&check_cli(t.path(), &["--map"]));
    let legend = out.lines().position(|l| l.starts_with("legend:")).unwrap();
    assert_eq!(out.lines().nth(legend - 1).unwrap().chars().count(), 80);
    let o = check_cli(t.path(), &["--map", "--json"]);
    assert_eq!(o.status.code(), Some(2));
}

/// Writes the page and returns it.
fn page(root: &Path, dir: &Path) -> (PathBuf, String) {
    let html = dir.join("report.html");
    let o = check_cli(root, &["--html", html.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let text = fs::read_to_string(&html).unwrap();
    (html, text)
}

#[test]
fn html_page_is_self_contained_and_escapes_names() {
    let (t, _) = tree();
    let out = tempfile::tempdir().unwrap();
    let (_, html) = page(t.path(), out.path());
    let (_, _, segs) = bytes_of(t.path());
    assert_eq!(html.matches("data-seg=").count(), segs);
    // The hostile name only ever escaped.
    assert!(!html.contains("<img"), "injected markup");
    assert!(html.contains("t-&lt;img src=x onerror=alert(1)&gt;&quot;&#39;&amp;-0"));
    // Nothing fetched: no script, no external reference.
    for bad in [
        "<script",
        "src=\"http",
        "href=\"http",
        "url(",
        "@import",
        "<link",
    ] {
        assert!(!html.contains(bad), "{bad}");
    }
    // The time of the cut, phrased as `check` does.
    let (_, j) = check_json(t.path(), &[]);
    let ts = j["logs"][0]["segments"][1]["max_timestamp"]
        .as_i64()
        .unwrap();
    let when = recoverfs::engine::render::iso8601_ms(ts);
    assert!(
        html.contains(&format!("records after {when} are lost")),
        "no cut time {when}"
    );
    assert!(html.contains("zero-fill"));
}

#[test]
fn the_map_and_page_show_what_is_served_from_elsewhere_and_where_copies_disagree() {
    // A torn tail the replica still holds, and a value the replica holds otherwise.
    let t = tempfile::tempdir().unwrap();
    let log = t.path().join("t/partition-0");
    write_segment(&log, 0, 40, 100);
    write_segment(&log, 40, 40, 100);
    let replica = tempfile::tempdir().unwrap();
    copy_tree(t.path(), replica.path());
    let last = log_path(&log, 40);
    let keep = record_positions(&fs::read(&last).unwrap())[30];
    fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(keep as u64 + 7)
        .unwrap();
    let first = log_path(&log, 0);
    let mut b = fs::read(&first).unwrap();
    let at = record_positions(&b)[5] + 40; // inside offset 5's value
    b[at] ^= 1;
    fs::write(&first, b).unwrap();
    let out = tempfile::tempdir().unwrap();
    let html = out.path().join("r.html");
    let r = replica.path().to_str().unwrap();
    let o = check_cli(
        t.path(),
        &["--replica", r, "--map", "--html", html.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("t/partition-0: 2 segment(s), ")
            && stdout(&o).contains("0 gap(s), 10 record(s) served from replicas"),
        "{}",
        stdout(&o)
    );
    let page = fs::read_to_string(&html).unwrap();
    assert!(page.contains("<th>records healed from replicas</th><td class=\"n\">10</td>"));
    assert!(page.contains("<th>divergences between copies</th><td class=\"n\">1</td>"));
    assert!(
        page.contains("<td>healed</td><td><code>t/partition-0/00000000000000000070.log</code></td><td>70..=79</td><td class=\"n\">10</td>"),
        "no healed row"
    );
    assert!(page.contains("t/partition-0/00000000000000000040.log byte "));
    assert!(
        page.contains("<td class=\"n\">5</td><td>value</td>"),
        "no divergence row"
    );
    // Under salvage, a run after mid-segment damage is listed the same way.
    let s = tempfile::tempdir().unwrap();
    let log = s.path().join("t/partition-0");
    write_segment(&log, 0, 40, 100);
    write_segment(&log, 40, 40, 100);
    let mut b = fs::read(log_path(&log, 0)).unwrap();
    let at = record_positions(&b)[10];
    b[at..at + 8].fill(0xff);
    fs::write(log_path(&log, 0), b).unwrap();
    let o = check_cli(
        s.path(),
        &[
            "--policy",
            "salvage",
            "--map",
            "--html",
            html.to_str().unwrap(),
        ],
    );
    assert!(
        stdout(&o).contains("record(s) salvaged after damage"),
        "{}",
        stdout(&o)
    );
    let page = fs::read_to_string(&html).unwrap();
    assert!(page.contains("<td>salvaged</td>"), "no salvaged row");
    assert!(page.contains("<th>runs salvaged</th>"));
}

/// The width and height in a PNG's IHDR.
fn png_size(b: &[u8]) -> (u32, u32) {
    assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&b[12..16], b"IHDR");
    let be = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().unwrap());
    (be(16), be(20))
}

#[test]
fn html_page_renders_in_a_headless_browser() {
    let Some(browser) = common::browser::chromium() else {
        return;
    };
    let (t, _) = tree();
    let out = tempfile::tempdir().unwrap();
    let (html, _) = page(t.path(), out.path());
    let (_, _, segs) = bytes_of(t.path());
    let url = format!("file://{}", html.display());
    let chrome = |extra: &[&str]| common::browser::run_chromium(&browser, out.path(), extra, &url);
    let shot = out.path().join("shot.png");
    chrome(&[&format!("--screenshot={}", shot.display())]);
    assert_eq!(png_size(&fs::read(&shot).unwrap()), (1200, 800));
    let dom = chrome(&["--dump-dom"]);
    assert_eq!(dom.matches("data-seg=").count(), segs, "{dom}");
    assert_eq!(dom.matches("<rect class=\"cut\"").count(), 1);
    // The parsed page holds no element the name could have injected.
    assert!(!dom.contains("<img"), "injected markup in the DOM");
    assert!(dom.contains("onerror=alert(1)&gt;"));
    // What a reader sees: every line `check` prints, as it prints it (the hostile
    // name as text, line breaks as breaks), each path on one line, the cut drawn.
    let seen = common::browser::render(&browser, &html, out.path());
    let text = stdout(&check_cli(t.path(), &[]));
    assert!(!seen.text.contains("\\x0a"), "{}", seen.text);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            seen.text.contains(line.trim_end()),
            "not on the rendered page: {line:?}\n{}",
            seen.text
        );
    }
    assert!(seen.text.contains(HOSTILE), "{}", seen.text);
    for (code, lines) in &seen.code_lines {
        assert_eq!(*lines, 1, "{code:?} wraps over {lines} lines");
    }
    assert!(
        seen.cut_px.len() == 1 && seen.cut_px[0] >= 2.0,
        "{:?}",
        seen.cut_px
    );
}

/// `check --map` run on a pseudo-terminal (util-linux `script`), `NO_COLOR` as given.
fn on_a_terminal(root: &Path, no_color: Option<&str>) -> Option<String> {
    let script = recoverfs::cli::sys::which("script")?;
    let cmd = format!(
        "stty cols 50; {} check '{}' --map",
        bin().display(),
        root.display()
    );
    let mut c = Command::new(script);
    c.args(["-qec", &cmd, "/dev/null"]).env_remove("NO_COLOR");
    if let Some(v) = no_color {
        c.env("NO_COLOR", v);
    }
    Some(stdout(&c.output().unwrap()))
}

#[test]
fn colour_and_width_follow_the_terminal_and_no_color() {
    let (t, _) = tree();
    // A plain name: the hostile one would need shell quoting here.
    let root = t.path().join("plain");
    fs::rename(t.path().join(HOSTILE), &root).unwrap();
    let Some(coloured) = on_a_terminal(&root, None) else {
        cannot_test("no `script` (util-linux) to make a terminal");
        return;
    };
    assert!(coloured.contains("\x1b[32m█"), "{coloured:?}");
    let plain = on_a_terminal(&root, Some("1")).unwrap();
    assert!(!plain.contains('\x1b'), "{plain:?}");
    // The terminal's 50 columns, not 80.
    let bar = plain
        .lines()
        .take_while(|l| !l.starts_with("legend:"))
        .last()
        .unwrap()
        .trim_end_matches('\r');
    assert_eq!(bar.chars().count(), 50, "{bar:?}");
}
