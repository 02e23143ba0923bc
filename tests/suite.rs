//! The integration tests, one binary: each file below is a module of it, so
//! `tests/common` (fixtures, the guarded mount, snapshots) is compiled once.
//!
//! Run one file's tests with a filter on its module name, e.g.
//! `cargo test --release --features fault-injection --test suite regressions::`.

mod common;

mod bench_data;
mod big_segment;
mod cli;
mod damage;
mod fixtures;
mod integrity;
mod map;
mod metrics;
mod mount;
mod passthrough;
mod power_loss;
mod regressions;
mod repair;
mod replica;
mod report_golden;
mod salvage;
mod salvage_model;
mod scan_model;
mod view;
mod writable;
