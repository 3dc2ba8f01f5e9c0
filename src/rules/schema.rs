//! Serde mirror of the rules files (`[settings]`, `[[ticket_pattern]]`, desk profiles, rules,
//! templates). Shared by `rules::compile` and `rules::matrix`.
//!
//! Not here: located problems and reading files ([`crate::problem`], re-exported here for
//! the older paths), what the values mean (`rules::compile`).

use serde::Deserialize;
use toml::Spanned;

pub use crate::problem::{Problem, Source, read_file};

/// `[[ticket_pattern]]` in a rules file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTicketPattern {
    pub name: String,
    pub regex: String,
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default)]
    pub headers: Vec<String>,
}

/// `[settings]` in a rules file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSettings {
    #[serde(default = "default_threshold")]
    pub broadcast_threshold: usize,
    #[serde(default = "default_window")]
    pub broadcast_window_minutes: u64,
    #[serde(default = "default_reply_period")]
    pub reply_period_hours: u64,
    #[serde(default = "default_max_mail_mb")]
    pub max_mail_mb: u64,
    #[serde(default)]
    pub contacts: Vec<String>,
    #[serde(default)]
    pub own_addresses: Vec<String>,
    /// IANA time zone of the organisation (`Asia/Kolkata`): report days and template dates.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// Characters that start a subaddress in a local part (`bid.ra+urgent@`: Postfix's
    /// `recipient_delimiter`, Dovecot's `recipient_delimiter`); empty: no subaddresses.
    #[serde(default = "default_subaddress_delimiter")]
    pub subaddress_delimiter: String,
    /// Keyword added to copies found to be a broadcast only after they were handled.
    #[serde(default = "default_broadcast_keyword")]
    pub broadcast_keyword: String,
    /// At most this many mails (redirects with the sender in Cc, replies) go to one sender
    /// within `sender_answer_window_hours`; 0: no limit.
    #[serde(default = "default_sender_answer_limit")]
    pub sender_answer_limit: u32,
    #[serde(default = "default_sender_answer_window")]
    pub sender_answer_window_hours: u64,
    /// Keyword on mail whose answers were withheld by that limit.
    #[serde(default = "default_flood_keyword")]
    pub flood_keyword: String,
    /// Days the state database keeps finished mails (journal), finished outgoing mail,
    /// stopped desk clocks and the reply ledger's replies (at least the longest reply
    /// period and `sender_answer_window_hours`).
    #[serde(default = "default_retention_days")]
    pub retention_days: u64,
}

fn default_retention_days() -> u64 {
    400
}

fn default_sender_answer_limit() -> u32 {
    10
}
fn default_sender_answer_window() -> u64 {
    24
}
fn default_flood_keyword() -> String {
    "$Flood".into()
}

fn default_broadcast_keyword() -> String {
    "$Broadcast".into()
}

fn default_time_zone() -> String {
    "UTC".into()
}

fn default_subaddress_delimiter() -> String {
    "+".into()
}

fn default_threshold() -> usize {
    3
}
fn default_window() -> u64 {
    120
}
fn default_reply_period() -> u64 {
    168
}
fn default_max_mail_mb() -> u64 {
    25
}

impl Default for RawSettings {
    fn default() -> Self {
        RawSettings {
            broadcast_threshold: default_threshold(),
            broadcast_window_minutes: default_window(),
            reply_period_hours: default_reply_period(),
            max_mail_mb: default_max_mail_mb(),
            contacts: Vec::new(),
            own_addresses: Vec::new(),
            time_zone: default_time_zone(),
            subaddress_delimiter: default_subaddress_delimiter(),
            broadcast_keyword: default_broadcast_keyword(),
            sender_answer_limit: default_sender_answer_limit(),
            sender_answer_window_hours: default_sender_answer_window(),
            flood_keyword: default_flood_keyword(),
            retention_days: default_retention_days(),
        }
    }
}

/// `[desk.NAME]` in a rules file: the nature of issue.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeskProfile {
    #[serde(default)]
    pub nature: String,
    #[serde(default)]
    pub phrases: Vec<(String, u32)>,
}

/// `when = { ... }` of a rule.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCondition {
    pub ticket: Option<bool>,
    pub ticket_source: Option<OneOrMany>,
    pub broadcast: Option<bool>,
    pub automatic: Option<bool>,
    pub own: Option<bool>,
    pub responsible: Option<bool>,
    pub misrouted: Option<bool>,
    pub oversized: Option<bool>,
    pub flooding: Option<bool>,
    pub desk: Option<OneOrMany>,
    pub from: Option<String>,
    pub subject: Option<String>,
    pub text: Option<String>,
    /// The ticket registry's answer: "off", "known", "unknown" or "unavailable" (issue #17).
    pub registry: Option<String>,
    pub ticket_known: Option<bool>,
    /// The ticket is known and younger than `[matrix] helpdesk_hours` (seed 000: a desk
    /// takes a ticket up only after 48 hours unresolved at the helpdesk).
    pub ticket_too_young: Option<bool>,
    /// The registry's states, any of them (case-insensitive).
    pub ticket_state: Option<OneOrMany>,
    pub requester_matches: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// `[[rule]]` in a rules file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: String,
    #[serde(default)]
    pub when: RawCondition,
    #[serde(default)]
    pub actions: Vec<String>,
    #[serde(default)]
    pub stop: bool,
    pub reply_period_hours: Option<u64>,
    /// The template of this rule's redirects and forwards (default: `redirect`, `forward`).
    pub template: Option<String>,
}

/// `[template.NAME]` in a rules file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTemplate {
    pub subject: String,
    pub body: String,
}

/// A rules file with each section kept raw (and located) until it is checked on its own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRulesFile {
    pub settings: Option<Spanned<toml::Value>>,
    /// `[matrix]`: the escalation matrix's time limits and calendar (`rules::matrix`).
    pub matrix: Option<Spanned<toml::Value>>,
    #[serde(default)]
    pub ticket_pattern: Vec<Spanned<toml::Value>>,
    #[serde(default)]
    pub desk: std::collections::BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    pub rule: Vec<Spanned<toml::Value>>,
    #[serde(default)]
    pub template: std::collections::BTreeMap<String, Spanned<toml::Value>>,
}
