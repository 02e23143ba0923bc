//! The engine: reads the source, finds each segment's valid prefix, decides the policy's view and reports it; never writes, knows nothing of FUSE, clap or the terminal.
//!
//! Layers, lowest first (a module imports only those above it in this list):
//! `format` → `scan` → `salvage` → `index` → `source` → `layout` → `segment` → `policy`
//! → `report` → `render` → `metrics` → `map` → `page` → `analysis` → `replica` → `plan`; `synth` writes test and benchmark trees with `format`.

pub mod analysis;
pub mod baseline;
pub mod format;
pub mod index;
pub mod integrity;
pub mod layout;
pub mod map;
pub mod metrics;
pub mod page;
pub mod plan;
pub mod policy;
pub mod render;
pub mod replica;
pub mod report;
pub mod salvage;
pub mod scan;
pub mod segment;
pub mod source;
pub mod stream;
pub mod synth;
