//! The numbered steps of a repair, where an interrupt stops it; with the `fault-injection` feature (tests only), an abrupt stop or a pause at one of them.
//!
//! A step is a point where a crash must leave something a rerun can finish. The
//! integration tests kill a repair at every step in turn to prove it, and pause one at a
//! step to send it a real signal there; in a build without the feature (the default, and
//! every release) a step is only a safe point for an interrupt ([`super::interrupt`]).

use super::interrupt::interrupted;
use super::Result;

/// Exit code when an injected failure stops the process.
#[cfg(feature = "fault-injection")]
pub const EXIT_INJECTED: i32 = 86;
/// `RECOVERFS_TEST_FAIL_AT=N` makes a repair exit abruptly (no cleanup, no
/// destructors) when it reaches step N, to prove a rerun recovers.
#[cfg(feature = "fault-injection")]
pub const FAIL_AT_ENV: &str = "RECOVERFS_TEST_FAIL_AT";

/// `RECOVERFS_TEST_PAUSE_AT=N` makes a repair wait at step N (step 0: before it
/// reads anything) until it is interrupted (at most a minute), after printing
/// "paused at step N" on stderr: a test then sends it a real signal there.
#[cfg(feature = "fault-injection")]
pub const PAUSE_AT_ENV: &str = "RECOVERFS_TEST_PAUSE_AT";

/// Counts the steps of a repair, and stops the process at the one a test asks for.
#[cfg(feature = "fault-injection")]
pub(super) struct Steps {
    n: u64,
    fail_at: Option<u64>,
}

/// With `RECOVERFS_TEST_PAUSE_AT=N`: waits at step `n` until a stop is asked for.
#[cfg(feature = "fault-injection")]
pub(super) fn pause_at(n: u64) {
    let pause = std::env::var(PAUSE_AT_ENV)
        .ok()
        .and_then(|v| v.parse().ok());
    if pause != Some(n) {
        return;
    }
    eprintln!("recoverfs repair: paused at step {n}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !super::interrupt::stop_asked() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Without the `fault-injection` feature: no pause anywhere.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(super) fn pause_at(_n: u64) {}

#[cfg(feature = "fault-injection")]
impl Steps {
    pub(super) fn new() -> Self {
        Steps {
            n: 0,
            fail_at: std::env::var(FAIL_AT_ENV).ok().and_then(|v| v.parse().ok()),
        }
    }

    /// A step where an interrupt stops the repair.
    pub(super) fn step(&mut self, what: &str) -> Result<()> {
        self.mark(what);
        pause_at(self.n);
        interrupted()
    }

    /// A step past which the work is done (an interrupt no longer stops it there).
    pub(super) fn mark(&mut self, what: &str) {
        self.n += 1;
        if self.fail_at == Some(self.n) {
            eprintln!(
                "recoverfs repair: injected failure at step {}: {what}",
                self.n
            );
            // An abrupt stop, like a kill: no destructors, no cleanup.
            // SAFETY: _exit never returns and touches no Rust state.
            unsafe { libc::_exit(EXIT_INJECTED) };
        }
    }
}

/// Without the `fault-injection` feature: steps are safe points for an interrupt.
#[cfg(not(feature = "fault-injection"))]
pub(super) struct Steps;

#[cfg(not(feature = "fault-injection"))]
impl Steps {
    pub(super) fn new() -> Self {
        Steps
    }

    /// A step where an interrupt stops the repair.
    #[inline(always)]
    pub(super) fn step(&mut self, _what: &str) -> Result<()> {
        interrupted()
    }

    /// A step past which the work is done (an interrupt no longer stops it there).
    #[inline(always)]
    pub(super) fn mark(&mut self, _what: &str) {}
}
