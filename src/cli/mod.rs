//! Offline subcommands: `crd` and `render`. Thin shells over the render core.

pub mod crd;
pub mod render;
