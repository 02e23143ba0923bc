//! The numbered steps of a repair, and (tests only) an abrupt stop at one of them.

/// Exit code when an injected failure stops the process (tests only).
pub const EXIT_INJECTED: i32 = 86;
/// Test-only: `RECOVERFS_TEST_FAIL_AT=N` makes a repair exit abruptly
/// (no cleanup, no destructors) when it reaches step N, to prove a rerun recovers.
pub const FAIL_AT_ENV: &str = "RECOVERFS_TEST_FAIL_AT";

/// Counts the steps of a repair, and stops the process at the one a test asks for.
pub(super) struct Steps {
    n: u64,
    fail_at: Option<u64>,
}

impl Steps {
    pub(super) fn from_env() -> Self {
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
