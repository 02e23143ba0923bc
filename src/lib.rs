//! recoverfs: shows a damaged Takhin log directory as it would look after a correct recovery.
//!
//! Layers, imports pointing down only: `cli` (the command line) → `view`
//! (the mounted tree, and its fuser adapter), `repair` (the view written
//! out), `dump` → `engine` (reads, judges and plans; never writes). See the
//! README's "Architecture" section.

pub mod cli;
pub mod dump;
pub mod engine;
pub mod repair;
pub mod version;
pub mod view;
