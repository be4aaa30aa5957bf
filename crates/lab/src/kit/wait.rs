//! The one poll/wait helper of the tests: [`wait_for`] polls a closure
//! until it yields a value and panics, naming what it waited for, when the
//! time is up. Built on [`crate::process::poll`] (the lab's own waits return
//! that error instead of panicking). Never sleeps a fixed time in place of
//! a condition.

use std::time::Duration;

/// How often a condition is polled.
pub const EVERY: Duration = Duration::from_millis(200);

/// Poll `f` until it returns `Some`, or panic after `timeout` naming `what`.
#[track_caller]
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let caller = std::panic::Location::caller();
    crate::process::poll(what, timeout, EVERY, || Ok(f())).unwrap_or_else(|e| panic!("{caller}: {e}"))
}

/// Poll `f` until it holds, or panic after `timeout` naming `what`.
#[track_caller]
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    wait_for(what, timeout, || f().then_some(()))
}

/// Like [`wait_for`], with `diagnose()` (cluster state, logs) in the panic
/// message: what a reader needs when the wait times out.
#[track_caller]
pub fn wait_for_or<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
    diagnose: impl FnOnce() -> String,
) -> T {
    let caller = std::panic::Location::caller();
    match crate::process::poll(what, timeout, EVERY, || Ok(f())) {
        Ok(v) => v,
        Err(e) => panic!("{caller}: {e}\n{}", diagnose()),
    }
}
