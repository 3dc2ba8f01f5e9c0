//! What a decision brings to be recorded: the journal row's fields, the outgoing mail to
//! queue with it, a reply's claim on the ledger and the desk clock to start or join. Plain
//! data, shared by `record` (which writes the decision), `outbox` and `clocks` (which write
//! their parts in the same transaction) without them importing each other.
//!
//! Not here: writing any of it (`record.rs`, `outbox.rs`, `clocks.rs`).

use crate::action::Action;

use super::MailKey;

/// A mail's decision, as recorded by [`super::Store::record_decisions`] before any side effect.
#[derive(Debug, Clone)]
pub struct NewDecision {
    pub key: MailKey,
    pub message_id: Option<String>,
    /// The mail's [`crate::facts::Facts::group_key`] (a hash of sender, Date, subject and
    /// body): the copies of one message on several desks share it.
    pub group_key: String,
    pub sender: Option<String>,
    pub subject: String,
    pub ticket: Option<String>,
    pub ticket_source: Option<String>,
    pub broadcast: bool,
    pub automatic: bool,
    pub redirected: bool,
    /// The rule that matched.
    pub rule: Option<String>,
    /// Planned actions in order, as [`super::JournalEntry::actions`] gives them back.
    pub actions: Vec<Action>,
    pub outbox: Vec<NewOutgoing>,
    /// The desk's clock to start or join on the mail's ticket (the `clock` action).
    pub clock: Option<NewClock>,
    /// Unix seconds.
    pub now: i64,
}

/// Outgoing mail to queue with a decision.
#[derive(Debug, Clone)]
pub struct NewOutgoing {
    /// Stable dedupe key chosen by the caller: a second row with the same id is never queued
    /// (that is how copies of a broadcast on several desks yield one redirect).
    pub id: String,
    pub desk: String,
    pub envelope_from: String,
    pub recipients: Vec<String>,
    /// The whole mail as sent (stored as bytes, not copied into another form).
    pub bytes: Vec<u8>,
    /// For replies: queue this mail only if the ledger allows a reply now, and take the claim.
    pub reply_claim: Option<ReplyClaim>,
}

/// "At most one reply to this sender for this rule per period" (like Sieve vacation `:days`).
#[derive(Debug, Clone)]
pub struct ReplyClaim {
    /// Compared case-insensitively (stored lower-cased).
    pub sender: String,
    pub rule: String,
    pub period_secs: i64,
}

/// A clock to start (or join) with a decision: the mail's ticket and when the desk's limit
/// falls due if this mail starts it (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewClock {
    pub ticket: String,
    pub due: i64,
}
