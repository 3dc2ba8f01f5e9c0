//! Rules text → [`Rules`]: every section checked on its own so that all problems are
//! reported at once, regexes built once with size limits, actions and template names resolved.
//! Pure apart from [`load`], which only reads the files. The subject templates' length check
//! is `compile/subject.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use regex::{Regex, RegexBuilder};

use super::schema::{
    OneOrMany, Problem, RawDeskProfile, RawRule, RawRulesFile, RawSettings, RawTemplate,
    RawTicketPattern, Source,
};
use super::{
    Condition, DeskProfile, Limits, Matrix, Rule, Rules, Template, TicketPattern, TicketSource,
};
use crate::action::{Action, Target};

mod subject;
#[cfg(test)]
mod tests;

pub use subject::SUBJECT_PREFIX_LIMIT;
use subject::subject_prefix_too_long;

/// Compiled regexes may not grow beyond this (hostile or careless patterns).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Problems found in rules files; `Display` lists them one per line.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct RulesError(pub Vec<Problem>);

/// What the rules may refer to in the deployment (config.toml), for cross-file checks.
#[derive(Debug, Clone, Default)]
pub struct Deployment {
    /// Desk names, in config order.
    pub desks: Vec<String>,
}

/// Reads and compiles the rules files.
pub fn load(paths: &[PathBuf], deployment: &Deployment) -> Result<Rules, RulesError> {
    let mut texts = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        match super::schema::read_file(path) {
            Ok(text) => texts.push((path.clone(), text)),
            Err(p) => problems.push(p),
        }
    }
    if texts.is_empty() && !problems.is_empty() {
        // Nothing to compile: the unreadable files are the whole story (each named).
        return Err(RulesError(problems));
    }
    let compiled = compile(&texts, deployment);
    match compiled {
        Ok(rules) if problems.is_empty() => Ok(rules),
        Ok(_) => Err(RulesError(problems)),
        Err(RulesError(mut more)) => {
            problems.append(&mut more);
            Err(RulesError(problems))
        }
    }
}

/// Compiles rules from `(path, text)` pairs. Files are read in order: settings of a later file
/// override earlier ones, patterns, desks, rules and templates accumulate.
pub fn compile(files: &[(PathBuf, String)], deployment: &Deployment) -> Result<Rules, RulesError> {
    let mut b = Builder::default();
    for (path, text) in files {
        let src = Source { path, text };
        b.file(&src, deployment);
    }
    b.finish(files.iter().map(|(p, _)| p.clone()).collect(), deployment)
}

#[derive(Default)]
struct Builder {
    problems: Vec<Problem>,
    settings: Option<RawSettings>,
    patterns: Vec<TicketPattern>,
    desks: Vec<DeskProfile>,
    rules: Vec<(Rule, Problem)>,
    templates: BTreeMap<String, Template>,
    matrix: Option<super::matrix::CheckedMatrix>,
}

impl Builder {
    fn file(&mut self, src: &Source<'_>, deployment: &Deployment) {
        let raw: RawRulesFile = match src.parse() {
            Ok(r) => r,
            Err(p) => {
                self.problems.push(p);
                return;
            }
        };
        if let Some(m) = raw.matrix {
            let start = m.span().start;
            match src
                .section::<super::matrix::RawMatrix>(m, "[matrix]")
                .map_err(|p| vec![p])
                .and_then(|m| super::matrix::check(src, start, m))
            {
                Ok(m) => self.matrix = Some(m),
                Err(mut p) => self.problems.append(&mut p),
            }
        }
        if let Some(s) = raw.settings {
            let start = s.span().start;
            match src.section::<RawSettings>(s, "[settings]") {
                Ok(s) => {
                    if s.broadcast_threshold < 2 {
                        self.problems.push(src.problem_at_key(
                            start,
                            "broadcast_threshold",
                            "broadcast_threshold must be at least 2 (a mail to one desk is not a broadcast)",
                        ));
                    }
                    for a in s.contacts.iter().chain(&s.own_addresses) {
                        if !looks_like_address(a) {
                            self.problems.push(src.problem_at_key(
                                start,
                                if s.contacts.contains(a) {
                                    "contacts"
                                } else {
                                    "own_addresses"
                                },
                                format!("`{a}` is not a mail address (expected local@domain)"),
                            ));
                        }
                    }
                    if s.subaddress_delimiter
                        .chars()
                        .any(|c| c.is_alphanumeric() || c == '@' || c.is_whitespace())
                    {
                        self.problems.push(src.problem_at_key(
                            start,
                            "subaddress_delimiter",
                            "subaddress_delimiter must be punctuation such as \"+\" or \"-\" (the mail server's recipient_delimiter), or \"\" for none",
                        ));
                    }
                    if s.retention_days == 0 || s.retention_days > 100 * 366 {
                        self.problems.push(src.problem_at_key(
                            start,
                            "retention_days",
                            "retention_days must be between 1 and 36600 (days finished mails are kept in the state database)",
                        ));
                    }
                    if let Err(e) = crate::clock::time_zone(&s.time_zone) {
                        self.problems
                            .push(src.problem_at_key(start, "time_zone", e));
                    }
                    for (key, keyword) in [
                        ("broadcast_keyword", &s.broadcast_keyword),
                        ("flood_keyword", &s.flood_keyword),
                    ] {
                        if let Err(e) = Action::parse(&format!("tag:{keyword}")) {
                            self.problems.push(src.problem_at_key(start, key, e));
                        }
                    }
                    self.settings = Some(s);
                }
                Err(p) => self.problems.push(p),
            }
        }
        for raw in raw.ticket_pattern {
            let start = raw.span().start;
            let Ok(p) = src
                .section::<RawTicketPattern>(raw, "[[ticket_pattern]]")
                .map_err(|p| self.problems.push(p))
            else {
                continue;
            };
            let regex = build_regex(&p.regex).map_err(|e| {
                self.problems.push(src.problem_at_key(
                    start,
                    "regex",
                    format!("ticket pattern `{}`: {e}", p.name),
                ))
            });
            let mut sources = Vec::new();
            for s in &p.sources {
                match TicketSource::parse(s) {
                    Some(t) => sources.push(t),
                    None => self.problems.push(src.problem_at_key(
                        start,
                        "sources",
                        format!(
                            "unknown ticket source `{s}`; expected one of subject, header, body, html, quoted, attached"
                        ),
                    )),
                }
            }
            if sources.is_empty() {
                let with_headers = !p.headers.is_empty();
                sources = TicketSource::ALL
                    .into_iter()
                    .filter(|s| with_headers || *s != TicketSource::Header)
                    .collect();
            }
            if sources.contains(&TicketSource::Header) && p.headers.is_empty() {
                self.problems.push(src.problem_at_key(
                    start,
                    "sources",
                    "source `header` needs `headers = [\"X-Ticket\", ...]`, the header names to search",
                ));
            }
            let Ok(regex) = regex else { continue };
            self.patterns.push(TicketPattern {
                name: p.name,
                regex,
                sources,
                headers: p.headers.iter().map(|h| h.to_ascii_lowercase()).collect(),
            });
        }
        for (name, raw) in raw.desk {
            let start = raw.span().start;
            let Ok(d) = src
                .section::<RawDeskProfile>(raw, &format!("[desk.{name}]"))
                .map_err(|p| self.problems.push(p))
            else {
                continue;
            };
            if !deployment.desks.is_empty() && !deployment.desks.contains(&name) {
                self.problems.push(src.problem_at(
                    start,
                    format!(
                        "[desk.{name}]: no desk `{name}` in config.toml; expected one of {}",
                        deployment.desks.join(", ")
                    ),
                ));
            }
            let mut phrases = Vec::new();
            for (text, weight) in d.phrases {
                match build_regex(&format!("(?i){text}")) {
                    Ok(r) => phrases.push((r, weight)),
                    Err(e) => self.problems.push(src.problem_at_key(
                        start,
                        "phrases",
                        format!("[desk.{name}] phrase `{text}`: {e}"),
                    )),
                }
            }
            self.desks.push(DeskProfile {
                name,
                nature: d.nature,
                phrases,
            });
        }
        for raw in raw.rule {
            let start = raw.span().start;
            let Ok(r) = src
                .section::<RawRule>(raw, "[[rule]]")
                .map_err(|p| self.problems.push(p))
            else {
                continue;
            };
            let at = src.problem_at_key(start, "actions", String::new());
            match self.rule(src, start, r, deployment) {
                Some(rule) => self.rules.push((rule, at)),
                None => continue,
            }
        }
        for (name, raw) in raw.template {
            let start = raw.span().start;
            match src.section::<RawTemplate>(raw, &format!("[template.{name}]")) {
                Ok(t) => {
                    for (key, text) in [("subject", &t.subject), ("body", &t.body)] {
                        for (_, p) in crate::compose::placeholders(text) {
                            if !crate::compose::PLACEHOLDERS.contains(&p) {
                                self.problems.push(src.problem_at_key(
                                    start,
                                    key,
                                    format!(
                                        "[template.{name}] {key}: unknown placeholder `{{{p}}}`; known: {}",
                                        crate::compose::PLACEHOLDERS.join(", ")
                                    ),
                                ));
                            }
                        }
                    }
                    if let Some(problem) = subject_prefix_too_long(&t.subject, deployment) {
                        self.problems.push(src.problem_at_key(
                            start,
                            "subject",
                            format!("[template.{name}] subject: {problem}"),
                        ));
                    }
                    self.templates.insert(
                        name,
                        Template {
                            subject: t.subject,
                            body: t.body,
                        },
                    );
                }
                Err(p) => self.problems.push(p),
            }
        }
    }

    fn rule(
        &mut self,
        src: &Source<'_>,
        start: usize,
        r: RawRule,
        deployment: &Deployment,
    ) -> Option<Rule> {
        let before = self.problems.len();
        let name = r.name.clone();
        let regex_of =
            |key: &str, text: Option<String>, problems: &mut Vec<Problem>| -> Option<Regex> {
                let text = text?;
                match build_regex(&text) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        problems.push(src.problem_at_key(
                            start,
                            key,
                            format!("rule `{name}`, when.{key}: {e}"),
                        ));
                        None
                    }
                }
            };
        let w = r.when;
        let from = regex_of("from", w.from, &mut self.problems);
        let subject = regex_of("subject", w.subject, &mut self.problems);
        let text = regex_of("text", w.text, &mut self.problems);
        let ticket_source = w.ticket_source.map(OneOrMany::into_vec).map(|v| {
            v.iter()
                .filter_map(|s| {
                    let t = TicketSource::parse(s);
                    if t.is_none() {
                        self.problems.push(src.problem_at_key(
                            start,
                            "when",
                            format!("rule `{}`: unknown ticket_source `{s}`", r.name),
                        ));
                    }
                    t
                })
                .collect::<Vec<_>>()
        });
        let registry = w.registry.as_deref().and_then(|name| {
            let state = crate::registry::RegistryState::parse(name);
            if state.is_none() {
                self.problems.push(src.problem_at_key(
                    start,
                    "when",
                    format!(
                        "rule `{}`: unknown registry state `{name}`; expected off, known, unknown or unavailable",
                        r.name
                    ),
                ));
            }
            state
        });
        let desk = w.desk.map(OneOrMany::into_vec);
        for d in desk.iter().flatten() {
            if !deployment.desks.is_empty() && !deployment.desks.contains(d) {
                self.problems.push(src.problem_at_key(
                    start,
                    "when",
                    format!(
                        "rule `{}`: no desk `{d}` in config.toml; expected one of {}",
                        r.name,
                        deployment.desks.join(", ")
                    ),
                ));
            }
        }
        let mut actions = Vec::new();
        for a in &r.actions {
            match Action::parse(a) {
                Ok(action) => {
                    if let Action::Redirect(Target::Desk(d)) | Action::Forward(Target::Desk(d)) =
                        &action
                        && !deployment.desks.is_empty()
                        && !deployment.desks.contains(d)
                    {
                        self.problems.push(src.problem_at_key(
                                start,
                                "actions",
                                format!("rule `{}`: action `{a}`: no desk `{d}` in config.toml; expected helpdesk, suggested, an address or one of {}", r.name, deployment.desks.join(", ")),
                            ));
                    }
                    actions.push(action);
                }
                Err(e) => self.problems.push(src.problem_at_key(
                    start,
                    "actions",
                    format!("rule `{}`: {e}", r.name),
                )),
            }
        }
        if self.problems.len() > before {
            return None;
        }
        Some(Rule {
            name: r.name,
            when: Condition {
                ticket: w.ticket,
                ticket_source,
                broadcast: w.broadcast,
                automatic: w.automatic,
                own: w.own,
                responsible: w.responsible,
                misrouted: w.misrouted,
                oversized: w.oversized,
                flooding: w.flooding,
                desk,
                from,
                subject,
                text,
                registry,
                ticket_known: w.ticket_known,
                ticket_too_young: w.ticket_too_young,
                ticket_state: w.ticket_state.map(OneOrMany::into_vec),
                requester_matches: w.requester_matches,
            },
            actions,
            stop: r.stop,
            reply_period_secs: r.reply_period_hours.unwrap_or(0) * 3600,
            template: r.template,
        })
    }

    fn finish(
        mut self,
        files: Vec<PathBuf>,
        _deployment: &Deployment,
    ) -> Result<Rules, RulesError> {
        let settings = self.settings.take().unwrap_or_default();
        // Checked when the settings were read; UTC only if that failed (then an error was
        // reported and these rules are not used).
        let time_zone =
            crate::clock::time_zone(&settings.time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
        let matrix = self.matrix.take().unwrap_or_default();
        let mut names = BTreeSet::new();
        for (rule, at) in &self.rules {
            if !names.insert(rule.name.clone()) {
                self.problems.push(Problem {
                    message: format!(
                        "rule name `{}` is used twice; names must be unique",
                        rule.name
                    ),
                    ..at.clone()
                });
            }
            for a in &rule.actions {
                let needed = rule.template_of(a);
                if let Some(t) = needed
                    && !self.templates.contains_key(t)
                {
                    self.problems.push(Problem {
                            message: format!(
                                "rule `{}`: action `{a}` needs a template `[template.{t}]` with subject and body; none is defined",
                                rule.name
                            ),
                            ..at.clone()
                        });
                }
            }
        }
        if let Some((t, at)) = &matrix.overdue_notice
            && !self.templates.contains_key(t)
        {
            self.problems.push(Problem {
                message: format!(
                    "[matrix] overdue_notice: no template `[template.{t}]` with subject and body"
                ),
                ..at.clone()
            });
        }
        if self.patterns.is_empty() && self.problems.is_empty() {
            self.problems.push(Problem {
                file: files.first().cloned().unwrap_or_default(),
                line: 1,
                column: 1,
                message:
                    "no [[ticket_pattern]] defined: ticketgate cannot find tickets without one"
                        .into(),
            });
        }
        if !self.problems.is_empty() {
            return Err(RulesError(self.problems));
        }
        let default_period = settings.reply_period_hours * 3600;
        let rules: Vec<_> = self
            .rules
            .into_iter()
            .map(|(mut r, _)| {
                if r.reply_period_secs == 0 {
                    r.reply_period_secs = default_period;
                }
                r
            })
            .collect();
        let longest_reply_period = rules.iter().map(|r| r.reply_period_secs).max().unwrap_or(0);
        let max_mail_bytes =
            usize::try_from(settings.max_mail_mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX);
        Ok(Rules {
            ticket_patterns: self.patterns,
            phrase_index: super::phrases::PhraseIndex::new(&self.desks),
            desks: self.desks,
            broadcast_threshold: settings.broadcast_threshold,
            broadcast_window_secs: settings.broadcast_window_minutes * 60,
            broadcast_keyword: settings.broadcast_keyword.clone(),
            contacts: settings
                .contacts
                .iter()
                .map(|a| a.to_ascii_lowercase())
                .collect(),
            own_addresses: settings
                .own_addresses
                .iter()
                .map(|a| a.to_ascii_lowercase())
                .collect(),
            subaddress_delimiter: settings.subaddress_delimiter.clone(),
            // Checked when the settings were read; UTC only if that failed (then an error
            // was reported and these rules are not used).
            time_zone: time_zone.clone(),
            matrix: Matrix {
                helpdesk_hours: matrix.helpdesk_hours,
                desk_secs: matrix.desk_secs,
                calendar: matrix.calendar(&time_zone),
                sent_folder: matrix.sent_folder.clone(),
                done_folder: matrix.done_folder.clone(),
                overdue_notice: matrix.overdue_notice.clone().map(|(t, _)| t),
            },
            rules,
            templates: self.templates,
            limits: Limits {
                max_mail_bytes,
                ..Limits::default()
            },
            sender_answer_limit: settings.sender_answer_limit,
            sender_answer_window_secs: settings.sender_answer_window_hours * 3600,
            flood_keyword: settings.flood_keyword.clone(),
            // Never shorter than what the sender answer limit counts in the journal, nor than
            // a rule's reply period, which the reply ledger's rows answer for.
            retention_secs: (settings.retention_days * 86_400)
                .max(settings.sender_answer_window_hours * 3600)
                .max(longest_reply_period),
            files,
        })
    }
}

fn build_regex(text: &str) -> Result<Regex, String> {
    RegexBuilder::new(text)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            format!(
                "invalid regex: {}",
                e.to_string().lines().last().unwrap_or("invalid").trim()
            )
        })
}

pub(crate) fn looks_like_address(a: &str) -> bool {
    match a.split_once('@') {
        Some((l, d)) => {
            !l.is_empty()
                && d.contains('.')
                && !a
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || "<>,;\"".contains(c))
        }
        None => false,
    }
}

/// Compiles rules for tests and tools from text alone.
pub fn compile_str(path: &Path, text: &str, deployment: &Deployment) -> Result<Rules, RulesError> {
    compile(&[(path.to_path_buf(), text.to_string())], deployment)
}
