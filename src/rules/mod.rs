//! Compiled policy: what `rules/*.toml` says, with regexes built once and names resolved.
//! Loading and validating the files lives in `schema` and `compile`; nothing here does I/O
//! except `load`, which reads the files and hands the text to the pure compiler.

pub mod compile;
pub mod matrix;
pub mod phrases;
pub mod schema;

pub use compile::{Deployment, RulesError, compile, load};
pub use schema::Problem;

use std::collections::BTreeMap;

use regex::Regex;

/// Where in a mail a ticket number was found, in order of precedence (SPEC 3): the subject
/// wins over a header, a header over the body, the body over quoted or attached mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketSource {
    Subject,
    Header,
    Body,
    Html,
    Quoted,
    Attached,
}

impl TicketSource {
    pub const ALL: [TicketSource; 6] = [
        TicketSource::Subject,
        TicketSource::Header,
        TicketSource::Body,
        TicketSource::Html,
        TicketSource::Quoted,
        TicketSource::Attached,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TicketSource::Subject => "subject",
            TicketSource::Header => "header",
            TicketSource::Body => "body",
            TicketSource::Html => "html",
            TicketSource::Quoted => "quoted",
            TicketSource::Attached => "attached",
        }
    }

    pub fn parse(s: &str) -> Option<TicketSource> {
        TicketSource::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// One ticket regex and the parts of a mail where it counts. The ticket is the named group
/// `ticket` if the regex has one, else the whole match.
#[derive(Debug, Clone)]
pub struct TicketPattern {
    pub name: String,
    pub regex: Regex,
    pub sources: Vec<TicketSource>,
    /// Header names searched when `sources` contains `Header` (lower-case).
    pub headers: Vec<String>,
}

/// A desk's nature of issue, used to suggest the right desk for misrouted or broadcast mail.
#[derive(Debug, Clone)]
pub struct DeskProfile {
    pub name: String,
    /// Human text from the escalation matrix ("bids, reverse auctions").
    pub nature: String,
    /// Each match of a phrase adds its weight to the desk's score.
    pub phrases: Vec<(Regex, u32)>,
}

/// Limits applied to hostile input.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Mails larger than this are set aside (tagged, not parsed).
    pub max_mail_bytes: usize,
    /// At most this many bytes of decoded text per part are scanned for tickets.
    pub max_scan_bytes: usize,
    /// Containers (message/rfc822, an attached `.eml`, TNEF) nested deeper than this are
    /// not opened.
    pub max_depth: usize,
    /// At most this many MIME parts of one mail (all levels together) are searched; a mail
    /// built with a million parts costs no more than this many.
    pub max_parts: usize,
}

impl Limits {
    /// `max_mail_bytes` as IMAP's RFC822.SIZE counts (u32): larger mail is not downloaded.
    pub fn fetch_limit(&self) -> u32 {
        u32::try_from(self.max_mail_bytes).unwrap_or(u32::MAX)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_mail_bytes: 25 * 1024 * 1024,
            max_scan_bytes: 256 * 1024,
            max_depth: 4,
            max_parts: 1_000,
        }
    }
}

/// A condition on the facts; every field that is set must hold.
#[derive(Debug, Clone, Default)]
pub struct Condition {
    pub ticket: Option<bool>,
    pub ticket_source: Option<Vec<TicketSource>>,
    pub broadcast: Option<bool>,
    pub automatic: Option<bool>,
    pub own: Option<bool>,
    pub responsible: Option<bool>,
    pub misrouted: Option<bool>,
    pub oversized: Option<bool>,
    /// The sender already got `sender_answer_limit` answers within the window.
    pub flooding: Option<bool>,
    pub desk: Option<Vec<String>>,
    pub from: Option<Regex>,
    pub subject: Option<Regex>,
    pub text: Option<Regex>,
    /// The ticket registry's answer (issue #17).
    pub registry: Option<crate::registry::RegistryState>,
    pub ticket_known: Option<bool>,
    pub ticket_too_young: Option<bool>,
    pub ticket_state: Option<Vec<String>>,
    pub requester_matches: Option<bool>,
}

/// One ordered rule: when the condition holds, its actions are added; `stop` ends evaluation.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub when: Condition,
    pub actions: Vec<crate::action::Action>,
    pub stop: bool,
    /// Minimum time between two replies of this rule to one sender.
    pub reply_period_secs: u64,
    /// The template of this rule's redirects and forwards; `None`: `redirect`, `forward`.
    pub template: Option<String>,
}

impl Rule {
    /// The template `action` of this rule is sent with: a reply's own, a redirect's or a
    /// forward's from the rule's `template` or by its kind. `None` for other actions.
    pub fn template_of<'a>(&'a self, action: &'a crate::action::Action) -> Option<&'a str> {
        use crate::action::Action;
        match action {
            Action::Reply(t) => Some(t),
            Action::Redirect(_) => Some(self.template.as_deref().unwrap_or("redirect")),
            Action::Forward(_) => Some(self.template.as_deref().unwrap_or("forward")),
            _ => None,
        }
    }
}

/// The escalation matrix's time limits (seed 000), counted on `calendar`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matrix {
    /// Hours a ticket spends at the helpdesk before a desk takes it up (48).
    pub helpdesk_hours: u64,
    /// Seconds a desk has to answer a ticket mail (48 hours).
    pub desk_secs: i64,
    pub calendar: crate::worktime::Calendar,
    /// The desks' Sent folder and done folder, where the clock looks for an answer.
    pub sent_folder: Option<String>,
    pub done_folder: Option<String>,
    /// The template sent to the user once when a clock runs out; `None`: no notice.
    pub overdue_notice: Option<String>,
}

/// A message template: `{name}` placeholders are filled from the facts (see `compose`).
#[derive(Debug, Clone)]
pub struct Template {
    pub subject: String,
    pub body: String,
}

/// The whole compiled policy. Immutable; shared as `Arc<Rules>` and swapped on reload.
#[derive(Debug, Clone)]
pub struct Rules {
    pub ticket_patterns: Vec<TicketPattern>,
    pub desks: Vec<DeskProfile>,
    /// The literals of `desks`' phrases, to find in one pass which can match a text.
    pub phrase_index: phrases::PhraseIndex,
    /// Broadcast when addressed or seen at >= this many contact-list addresses / desks.
    pub broadcast_threshold: usize,
    /// Copies of one mail in several desks count together within this window.
    pub broadcast_window_secs: u64,
    /// Added to earlier copies when later ones reveal a broadcast (Bcc to many desks).
    pub broadcast_keyword: String,
    /// Extra contact-list addresses (lower-case) besides the desks of config.toml.
    pub contacts: Vec<String>,
    /// Extra own addresses (lower-case) besides helpdesk and desks: their mail is never answered.
    pub own_addresses: Vec<String>,
    /// Characters that start a subaddress (RFC 5233): `desk+tag@domain` is the desk's
    /// address. Empty: none.
    pub subaddress_delimiter: String,
    /// The organisation's time zone: report days and the `{date}` of templates.
    pub time_zone: jiff::tz::TimeZone,
    /// The escalation matrix's limits and their calendar (`[matrix]`, issue #17).
    pub matrix: Matrix,
    pub rules: Vec<Rule>,
    pub templates: BTreeMap<String, Template>,
    pub limits: Limits,
    /// At most this many answers (redirects Cc'ing the sender, replies) per sender within
    /// `sender_answer_window_secs`; 0: no limit.
    pub sender_answer_limit: u32,
    pub sender_answer_window_secs: u64,
    /// Tagged on mail whose answers that limit withheld.
    pub flood_keyword: String,
    /// Finished mails (journal), finished outgoing mail, stopped desk clocks and the reply
    /// ledger's replies older than this are removed from the state database
    /// (`retention_days`; at least `sender_answer_window_secs` and every rule's
    /// `reply_period_secs`).
    pub retention_secs: u64,
    /// Files the rules were read from, for messages.
    pub files: Vec<std::path::PathBuf>,
}

impl Rules {
    /// Whether a rule has a `when.text` condition, the only reader of [`Facts::text`]
    /// (which is not built otherwise).
    ///
    /// [`Facts::text`]: crate::facts::Facts::text
    pub fn reads_text(&self) -> bool {
        self.rules.iter().any(|r| r.when.text.is_some())
    }
}
