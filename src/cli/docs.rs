//! `completions` and `man`: shell completion scripts (clap_complete) and the man page (clap_mangen), from the same clap definition.

use crate::cli::{Cli, EXIT_CLEAN, EXIT_ERROR};
use clap::{Args, CommandFactory};
use std::io::{self, Write};
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to write a completion script for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// The exit status of every subcommand: one table, printed by `man` and copied in the README.
pub const EXIT_STATUS: &[(&str, &str)] = &[
    ("check", "0 the policy's view equals the source; 1 it differs (bytes cut, segments hidden, an index rebuilt because the original is missing or differs, an orphan left out, a file unreadable; under strict any anomaly, gaps included; with --replica, a range healed or a divergence between copies); 2 could not check (missing path, no Takhin log there, a replica refused, usage error)."),
    ("dump", "0 every file given is clean (every record was examined, even past --limit or a closed pipe); 1 damage in at least one (or an index that disagrees with its .log, or has no .log to be checked against); 2 a file could not be read, or usage error."),
    ("mount", "0 the mount is live (background) or was unmounted cleanly (foreground); 2 the mount failed or was refused (DATA_DIR holds no Takhin log and --allow-empty was not given, a bad option, an unusable mountpoint). mount.recoverfs (mount -t recoverfs) exits 32 when the mount failed and 1 on a usage error, as mount(8) expects."),
    ("repair", "0 the repaired tree was written, or nothing needed repair (with --dry-run: nothing would change); 1 --policy strict refused, or --dry-run found changes pending; 2 any other refusal or error; 130 interrupted (Ctrl-C, SIGTERM): stopped at a safe point, run the same command again to finish."),
    ("demo, completions, man", "0 done; 2 error."),
];

pub fn completions(a: &CompletionsArgs) -> ExitCode {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "recoverfs", &mut out);
    write_out(&out)
}

fn write_out(b: &[u8]) -> ExitCode {
    let mut o = io::stdout().lock();
    match o.write_all(b).and_then(|_| o.flush()) {
        Ok(()) => ExitCode::from(EXIT_CLEAN),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::from(EXIT_CLEAN),
        Err(e) => {
            eprintln!("recoverfs: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Escapes text for roff: a leading `.` or `'` and backslashes.
fn roff(s: &str) -> String {
    let s = s.replace('\\', "\\e");
    s.lines()
        .map(|l| {
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn section(out: &mut Vec<u8>, title: &str, paragraphs: &[&str]) {
    let _ = writeln!(out, ".SH \"{title}\"");
    for p in paragraphs {
        let _ = writeln!(out, ".PP\n{}", roff(p));
    }
}

/// The whole man page, as roff.
pub fn man_page() -> Vec<u8> {
    let cmd = Cli::command();
    let man = clap_mangen::Man::new(cmd.clone()).date("");
    let mut out = Vec::new();
    let _ = man.render_title(&mut out);
    let _ = man.render_name_section(&mut out);
    let _ = man.render_synopsis_section(&mut out);
    let _ = man.render_description_section(&mut out);
    let _ = man.render_options_section(&mut out);
    // Every subcommand: its synopsis, what it does, its options and examples.
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_name();
        let sub = sub.clone().bin_name(format!("recoverfs {name}"));
        let m = clap_mangen::Man::new(sub.clone());
        let _ = writeln!(out, ".SH \"RECOVERFS {}\"", name.to_uppercase());
        let mut part = Vec::new();
        let _ = m.render_synopsis_section(&mut part);
        let _ = m.render_description_section(&mut part);
        let _ = m.render_options_section(&mut part);
        let part = String::from_utf8_lossy(&part)
            .replace(".SH SYNOPSIS", ".SS Synopsis")
            .replace(".SH DESCRIPTION", ".SS Description")
            .replace(".SH OPTIONS", ".SS Options");
        out.extend_from_slice(part.as_bytes());
        if let Some(after) = sub.get_after_long_help().or(sub.get_after_help()) {
            let _ = writeln!(out, ".PP\n.nf\n{}\n.fi", roff(&after.to_string()));
        }
    }
    let _ = writeln!(out, ".SH \"EXIT STATUS\"");
    for (cmd, text) in EXIT_STATUS {
        let _ = writeln!(out, ".TP\n.B {cmd}\n{}", roff(text));
    }
    section(&mut out, "THE REPORT", &[
        "check prints one line per log (segments, the records the view serves, the next offset, its findings), one line per finding: TRUNCATED (where and why a segment's valid prefix ends, the bytes cut, the records kept, and the time after which records are lost), DAMAGED (a damaged segment the policy does not serve at all), UNREADABLE, INDEX (an original index that is missing or disagrees with the rebuilt one), HIDDEN (left out under point-in-time, with its offsets and time span), EIO (refused under strict), GAP, OVERLAP, ORPHAN, UNRECOGNIZED; then the totals and a Next: line whose commands can be pasted.",
        "check --json (and repair --json, and .recoverfs/report.json in a mount) print the schema-1 JSON report: summary, logs[] with gaps, overlaps, orphans, unrecognized and segments[] (path, base_offset, status clean|truncated|unreadable, original_bytes, valid_bytes, records, first_offset, last_offset, min_timestamp, max_timestamp, damage {kind, class, position, record, detail}, index, timeindex, visible, view kept|truncated|hidden|eio).",
        "Damage kinds: incomplete-record, zero-fill, bad-size, bad-lengths, offset-mismatch; classed tail (in a log's last segment: an unclean shutdown) or mid-log (data after it was lost). Policies: per-segment (every valid prefix), point-in-time (stop at the first damage or gap), strict (repair nothing; damaged segments fail with EIO).",
    ]);
    section(&mut out, "FILES", &[
        "In a mounted view, .recoverfs/ at the root holds report.json (the whole-tree report, as check --json), raw/ (the untouched originals, for cmp) and tails/<path>.log.tail (the bytes cut from each truncated segment). Segment files carry the xattrs user.recoverfs.status, .valid_bytes, .original_bytes, .records and .damage; index files carry their own (status: match, or why the original was rebuilt; original_bytes of the original index, or missing; valid_bytes: the rebuilt size; records: its entries). Mount with -o nometa (--no-meta) to hide .recoverfs/ and the xattrs, so that cp -a, tar or rsync of the view's root copy exactly the repaired log.",
        "repair --in-place writes BACKUP_DIR/recoverfs-backup.json: the plan, the CRC-32 of every original and replacement, its state, and the recoverfs version and git commit that wrote it (tool).",
    ]);
    section(&mut out, "ENVIRONMENT", &[
        "RUST_LOG overrides -v/-q, e.g. RUST_LOG=recoverfs=debug (our lines only) or RUST_LOG=debug (fuser's too). A background mount without --log-file logs to syslog (/dev/log, read by journald): journalctl -t recoverfs. RECOVERFS_SYSLOG_SOCKET names another socket.",
    ]);
    let _ = man.render_version_section(&mut out);
    out
}

pub fn man() -> ExitCode {
    write_out(&man_page())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_man_page_covers_every_subcommand_and_the_exit_codes() {
        let page = String::from_utf8(man_page()).unwrap();
        for s in [
            "CHECK",
            "DUMP",
            "MOUNT",
            "REPAIR",
            "DEMO",
            "COMPLETIONS",
            "MAN",
        ] {
            assert!(page.contains(&format!(".SH \"RECOVERFS {s}\"")), "{s}");
        }
        for s in [
            "EXIT STATUS",
            "THE REPORT",
            "FILES",
            "report.json",
            "tails/",
            "32",
        ] {
            assert!(page.contains(s), "{s}");
        }
        assert!(!page.contains("SYNTH"));
    }
}
