//! On-disk formats recoverfs understands; each format lives in its own module.

pub mod takhin;
