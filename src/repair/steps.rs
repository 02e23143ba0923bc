//! The numbered steps of a repair; with the `fault-injection` feature (tests only), an abrupt stop at one of them.
//!
//! A step is a point where a crash must leave something a rerun can finish. The
//! integration tests kill a repair at every step in turn to prove it; in a build
//! without the feature (the default, and every release) a step is nothing at all.

/// Exit code when an injected failure stops the process.
#[cfg(feature = "fault-injection")]
pub const EXIT_INJECTED: i32 = 86;
/// `RECOVERFS_TEST_FAIL_AT=N` makes a repair exit abruptly (no cleanup, no
/// destructors) when it reaches step N, to prove a rerun recovers.
#[cfg(feature = "fault-injection")]
pub const FAIL_AT_ENV: &str = "RECOVERFS_TEST_FAIL_AT";

/// Counts the steps of a repair, and stops the process at the one a test asks for.
#[cfg(feature = "fault-injection")]
pub(super) struct Steps {
    n: u64,
    fail_at: Option<u64>,
}

#[cfg(feature = "fault-injection")]
impl Steps {
    pub(super) fn new() -> Self {
        Steps {
            n: 0,
            fail_at: std::env::var(FAIL_AT_ENV).ok().and_then(|v| v.parse().ok()),
        }
    }

    pub(super) fn step(&mut self, what: &str) {
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

/// Without the `fault-injection` feature: steps are only names in the source.
#[cfg(not(feature = "fault-injection"))]
pub(super) struct Steps;

#[cfg(not(feature = "fault-injection"))]
impl Steps {
    pub(super) fn new() -> Self {
        Steps
    }

    #[inline(always)]
    pub(super) fn step(&mut self, _what: &str) {}
}
