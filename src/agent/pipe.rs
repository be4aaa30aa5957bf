//! Pipes the agent reads from Postfix (the mail log from the supervised
//! master, `postqueue -j` output): how big their kernel buffers are.
//!
//! A leaf both the supervisor and the log pipeline use, so neither has to
//! import the other. It must never read or write a pipe itself.

/// Pipe buffer asked for on the pipes the agent reads from Postfix (the
/// mail log, `postqueue -j`): the default 64 KiB fills in well under a
/// millisecond of a burst, and then the writer waits until the agent is
/// scheduled again, which on a busy node can be many milliseconds.
pub const PIPE_BUFFER: usize = 1 << 20;

/// Grow a pipe's buffer to [`PIPE_BUFFER`] (Linux `F_SETPIPE_SZ`). Best
/// effort: a smaller system limit (`fs.pipe-max-size`) leaves it as it was.
pub fn grow_pipe(pipe: impl std::os::fd::AsFd) {
    if let Err(e) = rustix::pipe::fcntl_setpipe_size(pipe, PIPE_BUFFER) {
        tracing::debug!(error = %e, "pipe buffer left at its default size");
    }
}
