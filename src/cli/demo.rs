//! `demo`: writes a small damaged Takhin data directory, mounts its repaired view, and shows around.

use crate::cli::sys::{block_signals, lazy_unmount, wait_signal};
use crate::cli::EXIT_ERROR;
use crate::engine::analysis::{check_path, AnalyzeOptions};
use crate::engine::format::takhin::{segment_file_name, FileKind, SegmentWriter, KEY_LEN_AT};
use crate::engine::index::IndexKind;
use crate::engine::policy::Policy;
use crate::engine::scan::ScanOptions;
use crate::engine::source::Source;
use crate::view::fuse::session::{start_session, SessionOptions};
use crate::view::{View, ViewConfig};
use clap::Args;
use std::fs;
use std::io;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Print the tour and exit (unmount and clean up) instead of waiting for Ctrl-C.
    #[arg(long)]
    pub no_wait: bool,
    /// Only write the damaged data directory to DIR (created) and exit, to try check, mount and repair on it.
    #[arg(long, value_name = "DIR")]
    pub write_to: Option<std::path::PathBuf>,
}

fn segment(base: u64, n: u64, ts: i64) -> SegmentWriter {
    let mut w = SegmentWriter::new(base);
    for i in 0..n {
        let key = format!("order-{}", base + i);
        let value = format!(
            "{{\"order\":{},\"amount\":{},\"currency\":\"EUR\"}}",
            base + i,
            (base + i) * 7 % 1000
        );
        w.append(ts + i as i64, key.as_bytes(), value.as_bytes());
    }
    w
}

/// Writes the demo's data directory: one topic, two partitions, and every kind
/// of trouble the tour shows (a torn tail, a zero-filled tail, a garbled record
/// mid-segment, a missing index, a gap).
pub fn write_demo_data(root: &Path) -> io::Result<()> {
    let ts = 1_700_000_000_000;
    let p0 = root.join("orders/partition-0");
    let p1 = root.join("orders/partition-1");
    fs::create_dir_all(&p0)?;
    fs::create_dir_all(&p1)?;
    fs::write(
        root.join("orders/topic-metadata.json"),
        "{\"name\":\"orders\",\"partitions\":2}\n",
    )?;
    // Clean.
    segment(0, 40, ts).write_to(&p0)?;
    // A garbled record mid-segment: record 25's key_len is overwritten.
    let mut w = segment(40, 40, ts + 40);
    w.write_to(&p0)?;
    let pos = u64::from_be_bytes(w.index[25 * 16 + 8..25 * 16 + 16].try_into().unwrap()) as usize;
    w.log[pos + KEY_LEN_AT..pos + KEY_LEN_AT + 4].copy_from_slice(&[0x7f, 0xff, 0xff, 0xff]);
    fs::write(p0.join(segment_file_name(40, FileKind::Log)), &w.log)?;
    // Clean, but its .index was lost (and offsets 65..=79 are gone with the garbled tail).
    segment(80, 40, ts + 80).write_to(&p0)?;
    fs::remove_file(p0.join(segment_file_name(80, FileKind::Index)))?;
    // A gap (offsets 120..=199 missing), then a torn last write.
    let w = segment(200, 40, ts + 200);
    w.write_to(&p0)?;
    let torn = w.log.len() - 30;
    fs::write(
        p0.join(segment_file_name(200, FileKind::Log)),
        &w.log[..torn],
    )?;
    // Partition 1: a preallocated, zero-filled tail.
    let mut w = segment(0, 30, ts);
    w.write_to(&p1)?;
    w.log.extend(std::iter::repeat_n(0u8, 4096));
    fs::write(p1.join(segment_file_name(0, FileKind::Log)), &w.log)?;
    Ok(())
}

pub fn run(a: &DemoArgs) -> ExitCode {
    match demo(a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("recoverfs demo: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn demo(a: &DemoArgs) -> Result<(), String> {
    if let Some(dir) = &a.write_to {
        // Never mixed into someone's files: DIR must be new or empty.
        match fs::read_dir(dir).map(|mut d| d.next().is_some()) {
            Ok(true) => {
                return Err(format!(
                    "{}: not empty; give a new or empty directory",
                    dir.display()
                ))
            }
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(format!("{}: {e}", dir.display()))
            }
            _ => {}
        }
        write_demo_data(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        println!("wrote a damaged Takhin data directory to {}", dir.display());
        return Ok(());
    }
    let sigs = block_signals();
    let tmp = tempfile::Builder::new()
        .prefix("recoverfs-demo-")
        .tempdir()
        .map_err(|e| format!("temporary directory: {e}"))?;
    let data = tmp.path().join("data");
    let view_dir = tmp.path().join("view");
    fs::create_dir_all(&view_dir).map_err(|e| e.to_string())?;
    write_demo_data(&data).map_err(|e| format!("writing the demo data: {e}"))?;
    let policy = Policy::PerSegment;
    let source = Source::open(&data).map_err(|e| format!("{}: {e}", data.display()))?;
    let view = Arc::new(View::new(ViewConfig {
        source: Arc::new(source),
        source_label: data.display().to_string(),
        policy,
        scan: ScanOptions::default(),
        cache_bytes: 16 << 20,
    }));
    let opts = SessionOptions {
        fsname: "recoverfs-demo".into(),
        subtype: "recoverfs".into(),
        allow_other: false,
        allow_root: false,
        owner: Default::default(),
        threads: 2,
        extra: vec![],
        passthrough: true,
    };
    let session = start_session(view, &view_dir, &opts).map_err(|e| {
        format!(
            "mounting on {}: {e} (the demo needs /dev/fuse and root or fusermount3)",
            view_dir.display()
        )
    })?;
    let bg = session
        .spawn()
        .map_err(|e| format!("starting the FUSE session: {e}"))?;
    let tour = tour(&data, &view_dir, policy, !a.no_wait);
    print!("{tour}");
    if !a.no_wait {
        println!("Press Ctrl-C to unmount and remove the demo.");
        wait_signal(&sigs);
        println!();
    }
    if let Err(e) = bg.umount_and_join() {
        eprintln!(
            "recoverfs demo: unmounting {}: {e}; detaching it",
            view_dir.display()
        );
        let _ = lazy_unmount(&view_dir);
    }
    println!(
        "Unmounted {} and removed {}.",
        view_dir.display(),
        tmp.path().display()
    );
    Ok(())
}

/// The tour's text; `to_try` adds commands to run while the demo waits (not when it
/// is about to remove what they point at).
fn tour(data: &Path, view: &Path, policy: Policy, to_try: bool) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "recoverfs demo\n  damaged data directory: {}\n  repaired view (mounted): {}\n",
        data.display(),
        view.display()
    );
    let opts = AnalyzeOptions {
        policy,
        ..Default::default()
    };
    if let Ok((_, report)) = check_path(data, &opts, &|_| {}) {
        let _ = writeln!(o, "What `recoverfs check` finds:");
        for line in report.render_human().lines() {
            let _ = writeln!(o, "  {line}");
        }
        let _ = writeln!(o, "\nDamaged vs repaired sizes (read through the mount):");
        for (_, s) in report.segments() {
            if s.original_bytes == s.valid_bytes && s.index.is_match() {
                continue;
            }
            let shown = fs::metadata(view.join(&s.path))
                .map(|m| m.len().to_string())
                .unwrap_or_else(|e| format!("({e})"));
            let why = match &s.damage {
                Some(d) => format!("{} damage: {}", d.class.as_str(), d.kind()),
                None => format!("index {}: rebuilt", s.index.describe(IndexKind::Offset)),
            };
            let _ = writeln!(
                o,
                "  {:<45} {:>6} bytes -> {:>6} bytes   {why}",
                s.path, s.original_bytes, shown
            );
        }
    }
    salvage_tour(&mut o, data, to_try);
    if !to_try {
        let _ = writeln!(
            o,
            "\n(--no-wait: the view is unmounted and removed now. `recoverfs demo` keeps it mounted \
             until Ctrl-C; `recoverfs demo --write-to DIR` keeps the damaged data.)\n"
        );
        return o;
    }
    let v = view.display();
    let p0 = "orders/partition-0";
    let _ = writeln!(
        o,
        "\nThree commands to try in another terminal:\n  \
         ls -l {v}/{p0}                      # the repaired segments and rebuilt indexes\n  \
         getfattr -d -m user.recoverfs {v}/{p0}/{}   # why it was cut\n  \
         cmp {v}/.recoverfs/raw/{p0}/{l200} {v}/{p0}/{l200}   # the original vs the repaired: EOF on the shorter\n\
         (and {v}/.recoverfs/report.json holds the whole report as JSON.)\n",
        segment_file_name(40, FileKind::Log),
        l200 = segment_file_name(200, FileKind::Log)
    );
    o
}

/// The tour's word on `--policy salvage`: the runs it would add to the view.
/// What `--policy salvage` adds to the demo log; with `to_try`, commands to run on it
/// (only when the data outlives the tour).
fn salvage_tour(o: &mut String, data: &Path, to_try: bool) {
    use std::fmt::Write as _;
    let opts = AnalyzeOptions {
        policy: Policy::Salvage,
        ..Default::default()
    };
    let Ok((_, report)) = check_path(data, &opts, &|_| {}) else {
        return;
    };
    let _ = writeln!(
        o,
        "\nWhat `--policy salvage` adds: the intact records after mid-segment damage, each run shown as a segment of its own:"
    );
    for (_, s) in report.segments() {
        for (r, _) in s.shown_runs() {
            let _ = writeln!(
                o,
                "  {} <- {} record(s), offsets {}..={}, bytes {}.. of {} ({})",
                r.path,
                r.records,
                r.first_offset,
                r.last_offset,
                r.position,
                s.path,
                if r.confirmed_by_index {
                    "confirmed by the index"
                } else {
                    "chained"
                }
            );
        }
    }
    if !to_try {
        return;
    }
    let _ = writeln!(
        o,
        "  try: recoverfs dump {}/orders/partition-0/{} --salvage | tail -4\n       recoverfs mount {} /mnt/salvage --policy salvage",
        data.display(),
        segment_file_name(40, FileKind::Log),
        data.display()
    );
}
