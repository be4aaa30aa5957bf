//! Queue monitoring: [`parse`] folds `postqueue -j` output (pure, fuzzed);
//! [`monitor`] runs it periodically.

pub mod monitor;
pub mod parse;
