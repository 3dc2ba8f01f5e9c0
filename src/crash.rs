//! Crash points for the fault-tolerance tests (`tests/faults.rs`): with
//! `TICKETGATE_CRASH_AT=<phase>:<n>` in the environment, the process kills itself with
//! SIGKILL the `n`-th time it reaches `phase`, so that a test can aim a kill -9 at a precise
//! step of handling a mail. Without the variable (always, in production) a crash point is a
//! single load of a cached `None`.
//!
//! Phases, in the order a mail meets them:
//! - `fetched`: a batch was fetched, nothing decided yet;
//! - `decided`: a mail was decided, its decision not yet journaled;
//! - `journaled`: the decision and its outgoing mail are in the database, no IMAP action yet;
//! - `flagged`: keywords were stored (`UID STORE`), the mail not yet filed;
//! - `moved`: the mail was filed (`UID MOVE`), not yet marked done;
//! - `done`: the batch is marked done, the desk's progress not yet advanced;
//! - `sent`: the SMTP server accepted an outgoing mail, the outbox not yet told (the one
//!   window where a kill repeats a send, see README).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable that arms a crash point.
pub const ENV: &str = "TICKETGATE_CRASH_AT";

static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
static REACHED: AtomicU64 = AtomicU64::new(0);

fn armed() -> Option<&'static (String, u64)> {
    ARMED
        .get_or_init(|| {
            let spec = std::env::var(ENV).ok()?;
            let (phase, n) = spec.split_once(':')?;
            Some((phase.to_string(), n.parse().ok()?))
        })
        .as_ref()
}

/// Marks that `phase` is reached; dies by SIGKILL if the armed crash point is this one.
pub fn point(phase: &str) {
    let Some((armed_phase, n)) = armed() else {
        return;
    };
    if armed_phase != phase || REACHED.fetch_add(1, Ordering::SeqCst) + 1 != *n {
        return;
    }
    tracing::warn!(
        phase,
        n,
        "crash point reached: killing this process with SIGKILL"
    );
    let pid = std::process::id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status();
    // `kill` is missing: the next best thing to SIGKILL (no destructor, no flush).
    std::process::abort();
}
