//! The mail-log pipeline: [`parse`] (bytes -> typed line, pure, fuzzed),
//! [`classify`] (response text -> category), [`join`] (per-queue-id state ->
//! per-recipient outcomes), [`pipeline`] (the task reading Postfix's log
//! stream, counting and re-emitting it redacted).

pub mod classify;
pub mod join;
pub mod parse;
pub mod pipeline;
