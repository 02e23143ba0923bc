//! Ctrl-C (SIGINT, SIGTERM) during a repair: the front end's signal thread asks, the repair stops at its next safe point.
//!
//! Before a repair writes anything, a stop costs nothing, so the front end may end the
//! process at once (the analysis reads for minutes and has no safe points). Once it
//! writes, the repair checks here between files and between chunks of a copy, and
//! stops with [`RepairError::Interrupted`]: `--output` then removes its temporary tree;
//! `--in-place` leaves its manifest, from which the same command finishes the job.

use super::{RepairError, Result};
use std::sync::atomic::{AtomicU8, Ordering};

/// Nothing written yet (the state a process starts in).
const READING: u8 = 0;
/// A repair is writing: a stop must wait for a safe point.
const WRITING: u8 = 1;
/// A stop was asked for.
const STOP: u8 = 2;
/// The repair's work is committed: what is left (syncing, the summary) takes moments.
const DONE: u8 = 3;

static STATE: AtomicU8 = AtomicU8::new(READING);

/// When a repair asked to stop will stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopWhen {
    /// Nothing has been written: the caller may end the process now.
    Now,
    /// The repair is writing: it stops at its next safe point, and returns
    /// [`RepairError::Interrupted`].
    AtNextSafePoint,
    /// A stop was already asked for.
    AlreadyAsked,
    /// The repair is committed and about to report it: nothing to stop.
    Finishing,
}

/// Asks the repair running in this process to stop (the front end's signal thread calls this).
pub fn request_stop() -> StopWhen {
    match STATE.compare_exchange(READING, STOP, Ordering::SeqCst, Ordering::SeqCst) {
        Ok(_) => StopWhen::Now,
        Err(WRITING) => {
            match STATE.compare_exchange(WRITING, STOP, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => StopWhen::AtNextSafePoint,
                Err(DONE) => StopWhen::Finishing,
                Err(_) => StopWhen::AlreadyAsked,
            }
        }
        Err(DONE) => StopWhen::Finishing,
        Err(_) => StopWhen::AlreadyAsked,
    }
}

/// Called before a repair's first write: from here on a stop waits for a safe point.
/// Refused when a stop was asked for already.
pub(super) fn start_writing() -> Result<()> {
    loop {
        match STATE.load(Ordering::SeqCst) {
            STOP => return Err(stopped()),
            WRITING => return Ok(()),
            // READING, or DONE after an earlier repair in this process (a library caller's).
            s => {
                if STATE
                    .compare_exchange(s, WRITING, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    return Ok(());
                }
            }
        }
    }
}

/// Called once a repair's work is committed (the tree renamed into place, the manifest
/// marked applied): a signal from here on lets it finish and report.
pub(super) fn finish_writing() {
    // Only from WRITING: a stop asked for before this point has been, or will be, obeyed.
    let _ = STATE.compare_exchange(WRITING, DONE, Ordering::SeqCst, Ordering::SeqCst);
}

/// A safe point: `Err(Interrupted)` when a stop was asked for.
pub(super) fn interrupted() -> Result<()> {
    if STATE.load(Ordering::Relaxed) == STOP {
        return Err(stopped());
    }
    Ok(())
}

/// True once a stop was asked for (the test-only pause hook waits on it).
#[cfg(feature = "fault-injection")]
pub(super) fn stop_asked() -> bool {
    STATE.load(Ordering::Relaxed) == STOP
}

fn stopped() -> RepairError {
    RepairError::Interrupted {
        what: String::new(),
    }
}
