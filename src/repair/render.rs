//! The human summaries `repair` prints: what was written, or what changed in place.

use super::in_place::InPlaceSummary;
use super::manifest::{Action, ManifestEntry, MANIFEST};
use super::output::OutputSummary;
use crate::engine::layout::{display_name, escape_path};
use std::fmt::Write as _;
use std::path::Path;

/// A path as human text: non-UTF-8 bytes and control characters as `\xNN`, so no
/// name reaches the terminal raw.
fn shown(p: &Path) -> String {
    display_name(&escape_path(p)).into_owned()
}

pub fn render_output(data: &Path, output: &Path, s: &OutputSummary) -> String {
    let mut o = format!(
        "recoverfs repair {} --output {} (policy {})\n",
        shown(data),
        shown(output),
        s.report.policy
    );
    o.push_str(&s.report.render_human_body());
    // Holes are neither read nor written: what no other count covers was left a hole.
    let holes = s
        .bytes
        .saturating_sub(s.reflinked + s.kernel_copied + s.plain_copied + s.generated);
    let _ = writeln!(
        o,
        "Wrote {}: {} file(s), {} bytes ({} reflinked, {} by copy_file_range, {} by read/write, {} of rebuilt indexes{}); {} source entr(ies) left out.",
        shown(output),
        s.files,
        s.bytes,
        s.reflinked,
        s.kernel_copied,
        s.plain_copied,
        s.generated,
        match holes {
            0 => String::new(),
            n => format!(", {n} left as holes"),
        },
        s.left_out
    );
    let _ = writeln!(
        o,
        "Next: `recoverfs check {} --policy {}` should exit 0; then point the broker at it.",
        shown(output),
        s.report.policy
    );
    o
}

pub fn render_in_place(data: &Path, backup: &Path, s: &InPlaceSummary) -> String {
    let mut o = format!(
        "recoverfs repair {} --in-place --backup {} (policy {}){}\n",
        shown(data),
        shown(backup),
        s.report.policy,
        if s.dry_run { " --dry-run" } else { "" }
    );
    if s.resumed {
        let _ = writeln!(
            o,
            "Resuming the interrupted repair recorded in {}.",
            shown(&backup.join(MANIFEST))
        );
    } else {
        o.push_str(&s.report.render_human_body());
    }
    if s.entries.is_empty() {
        let _ = writeln!(
            o,
            "Nothing to repair: the view under {} equals {}. Nothing changed.",
            s.report.policy,
            shown(data)
        );
        return o;
    }
    for e in &s.entries {
        let verb = match e.action {
            Action::Truncate => "TRUNCATE",
            Action::Rebuild => "REBUILD ",
            Action::Create => "CREATE  ",
            Action::Remove => "REMOVE  ",
            Action::Salvage => "SALVAGE ",
            Action::Heal => "HEAL    ",
        };
        let sizes = match (&e.original, &e.new) {
            (Some(a), Some(b)) => format!("{} -> {} bytes", a.bytes, b.bytes),
            (None, Some(b)) => format!("{} bytes", b.bytes),
            (Some(a), None) => format!("{} bytes, moved to the backup", a.bytes),
            (None, None) => String::new(),
        };
        let _ = writeln!(
            o,
            "  {verb} {}: {sizes}; {}",
            display_name(&e.path),
            display_name(&e.why)
        );
    }
    for p in &s.specials {
        let _ = writeln!(
            o,
            "  LEAVE    {}: not a regular file; left where it is",
            shown(p)
        );
    }
    let backed: Vec<&ManifestEntry> = s.entries.iter().filter(|e| e.original.is_some()).collect();
    let bytes: u64 = backed
        .iter()
        .filter_map(|e| e.original.as_ref())
        .map(|o| o.bytes)
        .sum();
    if s.dry_run {
        let _ = writeln!(
            o,
            "Dry run: {} change(s) planned; {} original(s), {bytes} bytes, would be copied to {} first. Nothing was touched.",
            s.entries.len(),
            backed.len(),
            shown(backup)
        );
    } else {
        let _ = writeln!(
            o,
            "Repaired in place: {} change(s); {} original(s), {bytes} bytes, are in {} (manifest {MANIFEST}).",
            s.entries.len(),
            backed.len(),
            shown(backup)
        );
        let _ = writeln!(
            o,
            "Next: `recoverfs check {} --policy {}` should exit 0.",
            shown(data),
            s.report.policy
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use crate::engine::analysis::{check_path, AnalyzeOptions};
    use crate::engine::policy::Policy;
    use std::path::Path;

    /// The body `repair` prints is `check`'s human report without its title and its
    /// `Next:` line, exactly as when those two lines were filtered out of it.
    #[test]
    fn the_report_body_is_check_without_title_and_advice() {
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/takhin/data");
        for policy in Policy::ALL {
            let opts = AnalyzeOptions {
                policy,
                ..Default::default()
            };
            let (_, report) = check_path(&data, &opts, &|_| {}).unwrap();
            let full = report.render_human();
            let lines: Vec<&str> = full.lines().collect();
            assert!(lines[0].starts_with("recoverfs check "), "{full}");
            assert!(lines[lines.len() - 1].starts_with("Next: "), "{full}");
            let mut body = lines[1..lines.len() - 1].join("\n");
            body.push('\n');
            assert_eq!(report.render_human_body(), body, "{policy}");
        }
    }
}
