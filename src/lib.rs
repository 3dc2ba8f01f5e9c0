//! ticketgate watches the IMAP inboxes of escalation desks and acts on every new mail as the
//! desks' rules say: it finds the CRM ticket number, redirects mail without one to the
//! helpdesk with the sender in Cc, flags mail broadcast to many desks, and tags and files mail
//! so that officers keep working in their ordinary mail clients.
//!
//! # Layout
//! The pure core takes a mail and known state and returns a decision; the shell does the I/O.
//! - [`config`]: config.toml → validated [`config::Config`] (servers, desks, secrets, database);
//!   [`template`] names the production template's placeholders left to fill in.
//! - [`rules`]: rules/*.toml → compiled [`rules::Rules`]; located errors.
//! - [`facts`]: (message, rules, known state) → [`facts::Facts`] (ticket, broadcast, automatic…).
//! - [`decide`]: (facts, rules) → [`decide::Decision`], an ordered list of [`action::Action`]s.
//! - [`compose`]: outgoing mail as bytes (redirect with the original attached, replies).
//! - [`classify`]: the core applied to files: what `ticketgate classify` prints.
//! - [`store`]: SQLite/PostgreSQL state: desk progress, journal, outbox, reply ledger, reports.
//! - [`imap`]: one desk session: TLS, login, catch-up, IDLE or polling, flags and moves.
//! - [`smtp`]: drains the durable outbox through lettre, retrying transient failures.
//! - [`pipeline`]: one mail from fetch to done, journaled so that kill -9 is safe.
//! - [`daemon`]: desk watchers, the outbox task, signals, reload, systemd notification;
//!   [`journal`] sends its log records to journald with their fields.
//! - [`metrics`]: counters and gauges, the Prometheus `/metrics` and `/health` endpoint;
//!   [`process`] adds the standard process metrics and build info.
//! - [`docs`]: the man pages and shell completions generated from the command line.
#![forbid(unsafe_code)]

pub mod action;
pub mod classify;
pub mod clock;
pub mod compose;
pub mod config;
pub mod crash;
pub mod daemon;
pub mod decide;
pub mod docs;
pub mod facts;
pub mod imap;
pub mod journal;
pub mod metrics;
pub mod pipeline;
pub mod process;
pub mod rules;
pub mod smtp;
pub mod store;
pub mod template;
pub mod tls;

/// Test-only: the GeM desk fixture shared with the integration tests, benches and fuzz.
#[cfg(test)]
#[path = "../tests/support/gem.rs"]
pub(crate) mod test_gem;
/// Test-only: visible skips (fail under CI, `SKIPPED:` otherwise), shared with tests/.
#[cfg(test)]
#[path = "../tests/support/skip.rs"]
pub(crate) mod test_skip;
