//! A progress bar on stderr for long checks and repairs (only on a terminal).

use crate::engine::layout::{discover_target_with, resolve_target, total_log_bytes};
use crate::engine::source::{Mounts, Source};
use std::io;
use std::path::PathBuf;

/// Bytes above which a progress bar is worth showing (on a terminal).
const PROGRESS_ABOVE: u64 = 256 << 20;

/// A progress bar on stderr for long runs, drawn only when stderr is a terminal,
/// the work is large enough to take a while and `-q` was not given; otherwise it draws nothing.
pub struct Progress {
    bar: std::sync::Arc<indicatif::ProgressBar>,
}

impl Progress {
    /// Sized by the `.log` bytes under `path` (read once by the analysis) plus,
    /// with `and_copy`, every regular file's bytes (written once by a repair).
    pub fn new(path: &std::path::Path, verb: &str, and_copy: bool, mounts: Mounts) -> Self {
        let bar = indicatif::ProgressBar::hidden();
        // -q: nothing on stderr but errors.
        if std::io::IsTerminal::is_terminal(&io::stderr()) && crate::cli::log::verbosity() >= 0 {
            if let Some((t, l)) = resolve_target(path)
                .ok()
                .and_then(|t| discover_target_with(&t, mounts).ok().map(|l| (t, l)))
            {
                let logs = total_log_bytes(&l, t.only_segment);
                let total = logs + if and_copy { tree_bytes(&l.source) } else { 0 };
                if total > PROGRESS_ABOVE {
                    bar.set_length(total);
                    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                    bar.set_style(
                        indicatif::ProgressStyle::with_template(&format!(
                            "{verb} {{wide_bar}} {{bytes}}/{{total_bytes}} {{bytes_per_sec}} eta {{eta}}"
                        ))
                        .expect("valid template"),
                    );
                }
            }
        }
        Progress {
            bar: std::sync::Arc::new(bar),
        }
    }

    pub fn inc(&self, n: u64) {
        self.bar.inc(n)
    }

    /// A callback for the engine and the repair to report bytes through.
    pub fn sink(&self) -> Option<crate::repair::Progress> {
        let bar = self.bar.clone();
        Some(std::sync::Arc::new(move |n| bar.inc(n)))
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// Bytes of every regular file in the source (symlinks not followed).
fn tree_bytes(source: &Source) -> u64 {
    let mut total = 0;
    let mut stack = vec![PathBuf::new()];
    while let Some(d) = stack.pop() {
        for (name, ft) in source.read_dir(&d).unwrap_or_default() {
            let rel = d.join(name);
            if ft.is_dir() {
                stack.push(rel);
            } else if ft.is_file() {
                total += source.metadata(&rel).map_or(0, |m| m.len());
            }
        }
    }
    total
}
