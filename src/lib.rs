//! The `sendfleet` library behind the binary: the operator shell, the
//! instance agent, DNS checks and the offline CLI commands. The pure core
//! (API types, validation, rendering) lives in the `sendfleet-render` crate
//! and is re-exported as [`core`].
#![forbid(unsafe_code)]

pub use sendfleet_render as core;

pub mod agent;
pub mod cli;
pub mod dns;
pub mod operator;
