//! Serde mirror of the TOML files and the helpers that turn TOML errors into located
//! problems (file, line, column, what was expected). Shared by `config` and `rules::compile`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

/// One thing wrong in a config or rules file, with where it is and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// A file's text with the ability to turn byte offsets into line and column (1-based).
#[derive(Debug)]
pub struct Source<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

impl Source<'_> {
    pub fn problem_at(&self, offset: usize, message: impl Into<String>) -> Problem {
        let offset = offset.min(self.text.len());
        let before = self.text.get(..offset).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Problem {
            file: self.path.to_path_buf(),
            line,
            column,
            message: message.into(),
        }
    }

    /// Where `key = ...` is first written at or after `from` (the start of its table), so a
    /// problem with one field points at that field's line, not just the table's.
    pub fn key_offset(&self, from: usize, key: &str) -> usize {
        let rest = self.text.get(from..).unwrap_or("");
        let mut pos = from;
        for line in rest.split_inclusive('\n') {
            let t = line.trim_start();
            if let Some(after) = t.strip_prefix(key)
                && after.trim_start().starts_with('=')
            {
                return pos + (line.len() - t.len());
            }
            pos += line.len();
        }
        // Inside an inline table: `when = { ..., key = ... }`.
        for pat in [format!("{key} ="), format!("{key}=")] {
            if let Some(i) = rest.find(&pat) {
                return from + i;
            }
        }
        from
    }

    pub fn problem_at_key(&self, from: usize, key: &str, message: impl Into<String>) -> Problem {
        self.problem_at(self.key_offset(from, key), message)
    }

    /// Parses the whole file into `T`; a syntax or shape error becomes one located problem.
    pub fn parse<T: for<'de> Deserialize<'de>>(&self) -> Result<T, Problem> {
        toml::from_str(self.text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            self.problem_at(offset, e.message().trim().to_string())
        })
    }

    /// Deserializes one section that was kept as a raw value, so that every section's errors
    /// are reported, not only the first one's.
    pub fn section<T: for<'de> Deserialize<'de>>(
        &self,
        raw: Spanned<toml::Value>,
        what: &str,
    ) -> Result<T, Problem> {
        let start = raw.span().start;
        T::deserialize(raw.into_inner()).map_err(|e| {
            let msg = e.message().trim().to_string();
            // Point at the offending key when serde names it; else (a wrongly typed value)
            // parse the section's own lines again, which locates the value.
            let offset = named_field(&msg)
                .map(|k| self.key_offset(start, k))
                .or_else(|| self.value_offset::<T>(start))
                .unwrap_or(start);
            self.problem_at(offset, format!("in {what}: {msg}"))
        })
    }

    /// Where the value that `T` cannot take is, for a `[header]` section starting at
    /// `start`: its lines (up to the next header) parsed on their own. `None` for inline
    /// tables and when that parse finds no error.
    fn value_offset<T: for<'de> Deserialize<'de>>(&self, start: usize) -> Option<usize> {
        let rest = self.text.get(start..)?;
        if !rest.starts_with('[') {
            return None;
        }
        let body_start = start + rest.find('\n')? + 1;
        let body = self.text.get(body_start..)?;
        let mut end = body.len();
        let mut pos = 0;
        for line in body.split_inclusive('\n') {
            if line.trim_start().starts_with('[') {
                end = pos;
                break;
            }
            pos += line.len();
        }
        let err = toml::from_str::<T>(body.get(..end)?).err()?;
        err.span().map(|s| body_start + s.start)
    }
}

/// Extracts `x` from serde messages like "unknown field `x`, expected ..." or "missing field `x`".
fn named_field(msg: &str) -> Option<&str> {
    let rest = msg.split_once("field `")?.1;
    Some(rest.split_once('`')?.0)
}

pub fn read_file(path: &Path) -> Result<String, Problem> {
    std::fs::read_to_string(path).map_err(|e| Problem {
        file: path.to_path_buf(),
        line: 0,
        column: 0,
        message: if e.kind() == std::io::ErrorKind::PermissionDenied {
            // The packaged service runs as a dynamic user, not root.
            format!(
                "cannot read file: {e}; the service's user must be able to read it \
                 (config.toml and the rules hold no secrets: chmod 644 it)"
            )
        } else {
            format!("cannot read file: {e}")
        },
    })
}

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
    /// Days the state database keeps finished mails (journal) and finished outgoing mail.
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
