//! The source watcher's queue overflowing on a real mount. A test binary of its own: it lowers a system-wide inotify limit for the moment its daemon starts, and cargo runs test binaries one at a time.
//!
//! The mount is owned by a [`Mounted`] guard that unmounts it even on panic, and the
//! limit by a guard that restores it even on panic.

mod common;

use common::mount::Mounted;
use common::*;
use std::fs;
use std::time::{Duration, Instant};

const LIMIT: &str = "/proc/sys/fs/inotify/max_queued_events";

/// Puts the inotify queue limit back, even on panic.
struct Restore(String);

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = fs::write(LIMIT, &self.0);
    }
}

/// A daemon whose watcher can queue no event gets every change as a queue
/// overflow (`IN_Q_OVERFLOW`): it must say so and drop what the kernel caches, so
/// the change is seen, as it is for a change it sees.
#[test]
fn a_watch_queue_that_overflows_is_logged_and_the_change_seen() {
    let Ok(old) = fs::read_to_string(LIMIT) else {
        cannot_test(&format!("no {LIMIT}"));
        return;
    };
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().join("t/partition-0");
    let mut w = write_segment(&dir, 0, 30, 50);
    write_segment(&dir, 30, 5, 50); // segment 0 is sealed: its name and attributes are kept
    let m = {
        if let Err(e) = fs::write(LIMIT, "0") {
            cannot_test(&format!("cannot set {LIMIT} ({e})"));
            return;
        }
        let _restore = Restore(old.trim().to_string());
        // The daemon's watcher exists once the mount is live; the limit is read then.
        Mounted::new(src.path(), &[])
    };
    assert_eq!(
        fs::read_to_string(LIMIT).unwrap(),
        old,
        "the limit is put back"
    );
    let shown = m.path().join("t/partition-0/00000000000000000000.log");
    // Looking it up lists (and so watches) its directory.
    assert_eq!(fs::metadata(&shown).unwrap().len(), w.log.len() as u64);
    append_late(&mut w, &dir, 10, 5, 33);
    // Eventually (the watcher is asynchronous); the deadline only bounds a hang.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !m.log().contains("the source watcher lost events") {
        assert!(
            Instant::now() < deadline,
            "no overflow logged:\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    wait_for_size(&shown, w.log.len());
    assert_eq!(fs::read(&shown).unwrap(), w.log);
}
