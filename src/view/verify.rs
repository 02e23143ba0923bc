//! Background verification (`--verify background`): one idle-priority thread validates every segment once the mount is live, its progress in the counters, stopped by a flag at unmount.

use crate::engine::layout::{discover, escape_path};
use crate::engine::segment::SegmentStatus;
use crate::view::metrics::Counters;
use crate::view::View;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// How a mount validates its segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verify {
    /// On first use only (the default).
    #[default]
    Lazy,
    /// On first use, and all of them in the background from the start.
    Background,
}

impl std::str::FromStr for Verify {
    type Err = String;
    fn from_str(v: &str) -> Result<Self, String> {
        match v {
            "lazy" => Ok(Verify::Lazy),
            "background" => Ok(Verify::Background),
            _ => Err(format!("verify={v}: expected lazy or background")),
        }
    }
}

/// A running background verification; [`Verification::stop`] ends it.
pub struct Verification {
    stop: Arc<AtomicBool>,
    finished: mpsc::Receiver<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Verification {
    /// Asks the thread to stop (it checks between segments) and joins it if it
    /// does within `wait`; otherwise leaves it detached (it stops at its next check).
    pub fn stop(mut self, wait: Duration) {
        self.stop.store(true, Ordering::Relaxed);
        match self.finished.recv_timeout(wait) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                tracing::info!(
                    "background verification still inside a segment; left to stop on its own"
                );
            }
        }
    }
}

/// Lowers the calling thread to the idle CPU class (`SCHED_IDLE`, else nice 19)
/// and the idle I/O class, so that readers of the mount come first.
fn lower_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param; pid 0 is the calling thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
        let e = io::Error::last_os_error();
        // SAFETY: plain syscalls on the calling thread (gettid never fails).
        let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19) };
        tracing::debug!("SCHED_IDLE refused ({e}); nice 19: {r}");
    }
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    const IOPRIO_CLASS_IDLE: libc::c_long = 3;
    const IOPRIO_CLASS_SHIFT: libc::c_long = 13;
    // SAFETY: ioprio_set(IOPRIO_WHO_PROCESS, 0: the calling thread, idle class) takes plain integers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0 as libc::c_long,
            IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT,
        )
    };
    if r != 0 {
        tracing::debug!("idle I/O priority refused: {}", io::Error::last_os_error());
    }
}

/// Readers first: before each segment the verifier waits while the daemon is
/// serving reads (one seen in the last [`QUIET`]), for at most [`MAX_WAIT`] per
/// segment, so that sustained reading defers it without starving it.
struct Pacer {
    reads: u64,
    changed: Instant,
}

/// How long without a daemon read counts as quiet.
const QUIET: Duration = Duration::from_millis(200);
/// The longest the verifier defers one segment to readers.
const MAX_WAIT: Duration = Duration::from_secs(2);

impl Pacer {
    fn new(c: &Counters) -> Self {
        Pacer {
            reads: c.daemon_reads.load(Ordering::Relaxed),
            changed: Instant::now()
                .checked_sub(QUIET)
                .unwrap_or_else(Instant::now),
        }
    }

    fn wait_for_quiet(&mut self, c: &Counters, stop: &AtomicBool) {
        let started = Instant::now();
        loop {
            let now = c.daemon_reads.load(Ordering::Relaxed);
            if now != self.reads {
                self.reads = now;
                self.changed = Instant::now();
            }
            if self.changed.elapsed() >= QUIET
                || started.elapsed() >= MAX_WAIT
                || stop.load(Ordering::Relaxed)
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl View {
    /// Starts validating every segment in one low-priority thread. Damage is
    /// logged as found; progress is in `metrics.prom`
    /// (`recoverfs_verify_segments_done` of `..._total`).
    pub fn start_verify(self: &Arc<Self>) -> io::Result<Verification> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, finished) = mpsc::channel();
        let view = self.clone();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("recoverfs-verify".into())
            .spawn(move || {
                lower_priority();
                view.verify_all(&flag);
                let _ = tx.send(());
            })?;
        Ok(Verification {
            stop,
            finished,
            thread: Some(thread),
        })
    }

    fn verify_all(&self, stop: &AtomicBool) {
        let c = &self.counters;
        let started = Instant::now();
        c.verify_running.store(1, Ordering::Relaxed);
        let layout = discover(&self.cfg.source);
        let total: usize = layout.logs.iter().map(|l| l.segments.len()).sum();
        c.verify_total.store(total as u64, Ordering::Relaxed);
        tracing::info!("background verification: {total} segment(s) to validate");
        let (mut truncated, mut unreadable) = (0u64, 0u64);
        let mut pacer = Pacer::new(c);
        'logs: for log in &layout.logs {
            for seg in &log.segments {
                pacer.wait_for_quiet(c, stop);
                if stop.load(Ordering::Relaxed) {
                    break 'logs;
                }
                let a = self.verdicts.analysis(log, seg);
                let path = || {
                    escape_path(
                        &log.file_rel(seg.base, crate::engine::format::takhin::FileKind::Log),
                    )
                };
                match a.status() {
                    SegmentStatus::Clean => {}
                    SegmentStatus::Truncated => {
                        truncated += 1;
                        tracing::warn!(
                            "background verification: {} is damaged (truncated in the view)",
                            path()
                        );
                    }
                    SegmentStatus::Unreadable => {
                        unreadable += 1;
                        tracing::warn!("background verification: {} is unreadable", path());
                    }
                }
                Counters::add(&c.verify_done, 1);
            }
        }
        c.verify_running.store(0, Ordering::Relaxed);
        let done = c.verify_done.load(Ordering::Relaxed);
        if stop.load(Ordering::Relaxed) {
            tracing::info!("background verification stopped after {done} of {total} segment(s)");
        } else {
            tracing::info!(
                "background verification done: {done} segment(s) in {:.1} s, {truncated} truncated, {unreadable} unreadable",
                started.elapsed().as_secs_f64()
            );
        }
    }
}
