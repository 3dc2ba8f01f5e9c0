//! Visible skips: a test that cannot run here (no PostgreSQL, no ../shared corpus, a tool
//! missing) calls [`skip`], which fails it under CI and otherwise prints `SKIPPED: <why>`
//! where `cargo test` shows it, never a silent `ok`; and [`ran_on`], the marker line that
//! scripts/test counts to say what ran on PostgreSQL. Std only: included by the integration
//! tests (tests/support), the unit tests (src/lib.rs, `cfg(test)`) and tests/golden.rs.
#![allow(dead_code, reason = "each includer uses part of it")]

use std::io::Write as _;

/// True under CI: `CI` set to anything but empty, `0` or `false` (CI services set `true`).
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"))
}

/// The test cannot run for `why` (say what is missing and how to provide it). Under CI it
/// panics, so the test fails; otherwise it writes `SKIPPED: <why>` to stderr and the caller
/// returns. The line goes to the process's stderr directly, past libtest's capture of
/// `eprintln!`, so that it shows in `cargo test`'s output of a passing test too.
#[track_caller]
#[allow(clippy::panic, reason = "a test that CI cannot run must fail there")]
pub fn skip(why: &str) {
    if ci() {
        panic!("SKIPPED under CI, which must run this test: {why}");
    }
    let line = format!("\nSKIPPED: {why}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Marks that `test` really ran on `backend` (e.g. "postgresql"): one line
/// `ticketgate-test-ran-on <backend>: <test>` on stderr, past libtest's capture; scripts/test
/// counts these lines. The line goes out in one write: `writeln!` writes each piece of the
/// format on its own, and libtest's `... ok` lines on stdout, in the same pipe under
/// scripts/test, split a marker once (21 counted of 22 that ran).
pub fn ran_on(backend: &str, test: &str) {
    let line = format!("\nticketgate-test-ran-on {backend}: {test}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}
