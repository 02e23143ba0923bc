//! recoverfs: shows a damaged Takhin log directory as it would look after a correct recovery.
//!
//! The engine (`format`, `scan`, `log_dir`, `report`) computes a plan and never
//! writes; the front ends print it (`check`, `dump`), serve it (`mount`) or
//! write it out (`repair`).

pub mod cli;
pub mod demo;
pub mod dump;
pub mod format;
pub mod fuse;
pub mod log_dir;
pub mod mount;
pub mod plan;
pub mod repair;
pub mod report;
pub mod scan;
pub mod source;
pub mod synth;
pub mod view;
pub mod watch;
