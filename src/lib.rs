//! ticketgate watches the IMAP inboxes of escalation desks and acts on every new mail as the
//! desks' rules say: it finds the CRM ticket number, redirects mail without one to the
//! helpdesk with the sender in Cc, flags mail broadcast to many desks, and tags and files mail
//! so that officers keep working in their ordinary mail clients.
//!
//! # Layout
//! The pure core takes a mail and known state and returns a decision; the shell does the I/O.
//! - [`config`]: config.toml → validated [`config::Config`] (servers, desks, secrets, database);
//!   [`template`] names the production template's placeholders left to fill in.
//! - [`rules`]: rules/*.toml → compiled [`rules::Rules`]; [`problem`]: located errors.
//! - [`facts`]: (message, rules, known state) → [`facts::Facts`] (ticket, broadcast, automatic…).
//! - [`decide`]: (facts, rules) → [`decide::Decision`], an ordered list of [`action::Action`]s.
//! - [`plan`]: a batch's (facts, rules, known state, now) → decisions, journal records and
//!   outgoing mail; what `run` journals and `classify --show-mail` shows.
//! - [`compose`]: outgoing mail as bytes (redirect with the original attached, replies).
//! - [`classify`]: the core applied to files: what `ticketgate classify` prints.
//! - [`store`]: SQLite/PostgreSQL state: desk progress, journal, outbox, reply ledger, reports.
//! - [`imap`]: one desk session: TLS, login, catch-up, IDLE or polling, flags and moves.
//! - [`outbox`]: drains the durable outbox through a [`outbox::Transport`], retrying
//!   transient failures with backoff; [`smtp`] is the real transport (lettre).
//! - [`pipeline`]: a batch from fetch to done (read → plan → write), journaled so that kill -9
//!   is safe.
//! - [`supervisor`]: starts the desk watchers and the outbox task; signals, reload, systemd
//!   notification. [`watcher`]: one desk's connect, catch-up, wait and reconnect, with its
//!   typed [`watcher::DeskError`]. [`shared`]: the state they share ([`shared::Policy`]).
//! - [`clock`]: the wall clock and the calendar (one implementation, jiff).
//! - [`logging`]: where log records go; [`journald`] speaks journald's native protocol.
//! - [`report`]: `ticketgate report`'s table, CSV and JSON; [`check`]: `check --connect`.
//! - [`metrics`]: counters and gauges, the Prometheus `/metrics` and `/health` endpoint;
//!   [`process`] adds the standard process metrics and build info.
//! - [`registry`]: the helpdesk's ticket registry (a CSV export, a PostgreSQL query or an
//!   HTTP JSON lookup, and tickets learned from acknowledgements) and the facts from it;
//!   [`acklearn`]: the task that reads the helpdesk's acknowledgements, never changing them.
//! - [`secret`]: passwords and tokens of config.toml: never printed, read from a file, the
//!   environment or a systemd credential.
//! - [`deskclock`]: the desk's clock: answered, or overdue and tagged `$Overdue`.
//! - [`digest`]: the supervisors' daily digest per desk group (text and HTML).
//! - [`worktime`]: hours of the matrix's 48-hour limits, plain or on a working calendar.
//! - [`docs`]: the man pages and shell completions generated from the command line.
#![forbid(unsafe_code)]

pub mod acklearn;
pub mod action;
pub mod budget;
pub mod check;
pub mod classify;
pub mod clock;
pub mod compose;
pub mod config;
pub mod crash;
pub mod decide;
pub mod deskclock;
pub mod digest;
pub mod docs;
pub mod facts;
pub mod imap;
pub mod journald;
pub mod logging;
pub mod metrics;
pub mod outbox;
pub mod pipeline;
pub mod plan;
pub mod problem;
pub mod process;
pub mod registry;
pub mod report;
pub mod rules;
pub mod secret;
pub mod shared;
pub mod smtp;
pub mod store;
pub mod supervisor;
pub mod template;
pub mod tls;
pub mod watcher;
pub mod worktime;

/// Test-only: the GeM desk fixture shared with the integration tests, benches and fuzz.
#[cfg(test)]
#[path = "../tests/support/gem.rs"]
pub(crate) mod test_gem;
/// Test-only: visible skips (fail under CI, `SKIPPED:` otherwise), shared with tests/.
#[cfg(test)]
#[path = "../tests/support/skip.rs"]
pub(crate) mod test_skip;
