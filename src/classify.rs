//! `ticketgate classify`: the pure core applied to .eml files, touching no server. The same
//! [`Classification`] is what the golden-file tests compare, so both share one serializer.

use std::path::Path;

use serde::Serialize;

use crate::action::{Action, Target};
use crate::decide::{Known, decide};
use crate::facts::{Directory, Facts, extract};
use crate::plan::{Desks, KnownState, NewMail, Policy, plan_batch, target_address};
use crate::rules::Rules;

/// The facts, matched rules and actions for one file (SPEC 6).
#[derive(Debug, Clone, Serialize)]
pub struct Classification {
    pub file: String,
    pub desk: Option<String>,
    pub message_id: Option<String>,
    pub from: Option<String>,
    pub subject: Option<String>,
    pub ticket: Option<String>,
    pub ticket_source: Option<String>,
    pub broadcast: bool,
    pub broadcast_by: Option<&'static str>,
    pub addressed_desks: Vec<String>,
    pub automatic: bool,
    pub automatic_reason: Option<String>,
    pub own: bool,
    pub suggested_desk: Option<String>,
    pub responsible_desk: Option<String>,
    pub misrouted: bool,
    pub oversized: bool,
    pub rules: Vec<String>,
    pub actions: Vec<String>,
    pub suppressed: Vec<String>,
    /// The ticket registry's facts (`registry`, `ticket_known`, ...), only when a registry
    /// is configured (issue #17).
    #[serde(flatten)]
    pub registry: Option<crate::registry::TicketFacts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What `classify` knows besides the mail and the rules: the ticket registry (read from its
/// CSV export, offline) and the time ticket ages are counted to.
#[derive(Debug, Clone, Copy, Default)]
pub struct Offline<'a> {
    pub registry: Option<&'a crate::registry::csv::CsvRegistry>,
    /// Unix seconds.
    pub now: i64,
}

impl Offline<'_> {
    /// `facts` with the registry's answer for their ticket, when there is a registry.
    fn apply(&self, facts: Facts, rules: &Rules) -> Facts {
        let Some(registry) = self.registry else {
            return facts;
        };
        let numbers: Vec<&str> = facts.ticket.iter().map(|t| t.number.as_str()).collect();
        let answers = registry.lookup(&numbers);
        facts.with_registry(Some(&answers), self.now, &rules.matrix)
    }
}

impl Classification {
    fn error(file: &str, desk: Option<&str>, error: String) -> Classification {
        Classification {
            file: file.to_string(),
            desk: desk.map(str::to_string),
            message_id: None,
            from: None,
            subject: None,
            ticket: None,
            ticket_source: None,
            broadcast: false,
            broadcast_by: None,
            addressed_desks: Vec::new(),
            automatic: false,
            automatic_reason: None,
            own: false,
            suggested_desk: None,
            responsible_desk: None,
            misrouted: false,
            oversized: false,
            rules: Vec::new(),
            actions: Vec::new(),
            suppressed: Vec::new(),
            registry: None,
            error: Some(error),
        }
    }

    /// Two-line human summary, for classify without `--json`.
    pub fn summary(&self) -> String {
        if let Some(e) = &self.error {
            return format!("{}: error: {e}\n", self.file);
        }
        let ticket = match (&self.ticket, &self.ticket_source) {
            (Some(t), Some(s)) => format!("ticket {t} ({s})"),
            _ => "no ticket".into(),
        };
        let mut flags = Vec::new();
        if self.broadcast {
            flags.push("broadcast".to_string());
        }
        if let Some(r) = &self.automatic_reason {
            flags.push(format!("automatic ({r})"));
        }
        if self.own {
            flags.push("own".into());
        }
        if self.misrouted {
            flags.push(format!(
                "misrouted (suggested {})",
                self.suggested_desk.as_deref().unwrap_or("?")
            ));
        }
        if let Some(r) = &self.registry {
            let mut said = format!("registry {}", r.registry.as_str());
            if let Some(age) = r.ticket_age_hours {
                said.push_str(&format!(", {age} h old"));
            }
            if let Some(state) = &r.ticket_state {
                said.push_str(&format!(", {state}"));
            }
            match r.requester_matches {
                Some(true) => said.push_str(", from its requester"),
                Some(false) => said.push_str(", not from its requester"),
                None => {}
            }
            flags.push(said);
        }
        format!(
            "{}: desk {}: {}{}{}\n  rules: {}\n  actions: {}\n",
            self.file,
            self.desk.as_deref().unwrap_or("-"),
            ticket,
            if flags.is_empty() { "" } else { ", " },
            flags.join(", "),
            if self.rules.is_empty() {
                "-".into()
            } else {
                self.rules.join(", ")
            },
            if self.actions.is_empty() {
                "-".into()
            } else {
                self.actions.join(" ")
            },
        )
    }
}

/// Classifies one file. Never panics; unreadable, oversized or unparsable input yields an
/// `error` and no actions (oversized mail gets the rules' oversized actions).
pub fn classify_file(
    path: &Path,
    desk: Option<&str>,
    dir: &Directory,
    rules: &Rules,
    offline: Offline<'_>,
) -> Classification {
    let file = path.display().to_string();
    let size = match std::fs::metadata(path) {
        Ok(m) if m.is_file() => m.len(),
        Ok(_) => return Classification::error(&file, desk, "not a regular file".into()),
        Err(e) => return Classification::error(&file, desk, format!("cannot read: {e}")),
    };
    if usize::try_from(size).map_or(true, |s| s > rules.limits.max_mail_bytes) {
        let desk = desk
            .map(str::to_string)
            .or_else(|| dir.desks.first().map(|(n, _)| n.clone()))
            .unwrap_or_default();
        let facts = Facts::oversized(&desk, usize::try_from(size).unwrap_or(usize::MAX));
        return from_facts(&file, &facts, dir, rules, offline.registry.is_some());
    }
    match std::fs::read(path) {
        Ok(raw) => match facts_in(&raw, desk, dir, rules) {
            Ok(facts) => {
                let facts = offline.apply(facts, rules);
                from_facts(&file, &facts, dir, rules, offline.registry.is_some())
            }
            Err(e) => Classification::error(&file, desk, e.to_string()),
        },
        Err(e) => Classification::error(&file, desk, format!("cannot read: {e}")),
    }
}

/// Classifies raw mail bytes as if they were in `desk`'s mailbox (default: the first desk
/// the mail is addressed to, else the first desk of the config), without a registry.
pub fn classify_bytes(
    file: &str,
    raw: &[u8],
    desk: Option<&str>,
    dir: &Directory,
    rules: &Rules,
) -> Classification {
    match facts_in(raw, desk, dir, rules) {
        Ok(facts) => from_facts(file, &facts, dir, rules, false),
        Err(e) => Classification::error(file, desk, e.to_string()),
    }
}

/// The facts of `raw` as if it were in `desk`'s mailbox (default: the first desk the mail is
/// addressed to, else the first desk of the config).
fn facts_in(
    raw: &[u8],
    desk: Option<&str>,
    dir: &Directory,
    rules: &Rules,
) -> Result<Facts, crate::facts::MailError> {
    let first = dir
        .desks
        .first()
        .map(|(n, _)| n.as_str())
        .unwrap_or_default();
    let facts = extract(raw, desk.unwrap_or(first), dir, rules)?;
    Ok(match (desk, facts.addressed_desks.first().cloned()) {
        (None, Some(d)) if d != facts.desk => {
            // Seen from the first desk it was sent to: only the desk-dependent facts change.
            let mut f = facts;
            f.desk = d.clone();
            f.with_copies(&[d], dir, rules)
        }
        _ => facts,
    })
}

/// The mail `run` would send for `raw` (redirects, forwards, replies), planned by the same
/// [`crate::plan::plan_batch`] as `run`, as the only mail of its batch with nothing known
/// from the state database but the registry's answer, at `offline.now`, from the desks of
/// config.toml. Empty when
/// nothing would be sent or the mail cannot be read.
pub fn outgoing_mail(
    raw: &[u8],
    desk: Option<&str>,
    policy: &Policy,
    desks: &[crate::config::Desk],
    offline: Offline<'_>,
) -> Vec<crate::store::NewOutgoing> {
    let Ok(facts) = facts_in(raw, desk, &policy.dir, &policy.rules) else {
        return Vec::new();
    };
    let now = offline.now;
    let known = KnownState {
        tickets: offline.registry.map(|r| {
            r.lookup(
                &facts
                    .ticket
                    .iter()
                    .map(|t| t.number.as_str())
                    .collect::<Vec<_>>(),
            )
        }),
        ..KnownState::default()
    };
    let Some(deciding) = desks.iter().find(|d| d.name == facts.desk) else {
        return Vec::new();
    };
    let mail = NewMail {
        key: crate::store::MailKey {
            desk: facts.desk.clone(),
            uidvalidity: 0,
            uid: 0,
        },
        holders: vec![facts.desk.clone()],
        facts,
        raw,
    };
    let desks = Desks {
        deciding,
        all: desks,
    };
    plan_batch(
        vec![mail],
        policy,
        desks,
        &known,
        now,
        &mut crate::compose::random_seed,
    )
    .into_iter()
    .flat_map(|p| p.record.outbox)
    .collect()
}

/// `mail` as a person reads it: the envelope, From/To/Cc/Subject, the text of the note, and
/// what is attached.
pub fn show_mail(mail: &crate::store::NewOutgoing) -> String {
    use mail_parser::{MessageParser, MimeHeaders, PartType};
    let mut out = format!(
        "--- mail to send (desk {}): envelope from {} to {}\n",
        mail.desk,
        mail.envelope_from,
        mail.recipients.join(", ")
    );
    let Some(m) = MessageParser::default().parse(&mail.bytes) else {
        out.push_str("(cannot read the composed mail)\n");
        return out;
    };
    for name in ["From", "To", "Cc", "Subject", "Auto-Submitted"] {
        if let Some(v) = m.header_raw(name) {
            out.push_str(&format!("{name}: {}\n", v.trim()));
        }
    }
    out.push('\n');
    out.push_str(m.body_text(0).as_deref().unwrap_or_default().trim_end());
    out.push('\n');
    for p in m.parts.iter().skip(1) {
        match &p.body {
            PartType::Message(inner) => out.push_str(&format!(
                "[attached: the original mail, {} bytes, subject \"{}\"]\n",
                inner.raw_message().len(),
                inner.subject().unwrap_or_default()
            )),
            PartType::Binary(b) => out.push_str(&format!(
                "[attached: {} ({} bytes)]\n",
                p.attachment_name().unwrap_or("file"),
                b.len()
            )),
            _ => {}
        }
    }
    out
}

fn from_facts(
    file: &str,
    facts: &Facts,
    dir: &Directory,
    rules: &Rules,
    with_registry: bool,
) -> Classification {
    let decision = decide(facts, rules, &Known::default());
    Classification {
        file: file.to_string(),
        desk: Some(facts.desk.clone()),
        message_id: facts.message_id.clone(),
        from: facts.from.clone(),
        subject: (!facts.oversized).then(|| facts.subject.clone()),
        ticket: facts.ticket.as_ref().map(|t| t.number.clone()),
        ticket_source: facts.ticket.as_ref().map(|t| t.source.as_str().to_string()),
        broadcast: facts.broadcast,
        broadcast_by: facts.broadcast_by,
        addressed_desks: facts.addressed_desks.clone(),
        automatic: facts.automatic,
        automatic_reason: facts.automatic_reason.clone(),
        own: facts.own,
        suggested_desk: facts.suggested_desk.clone(),
        responsible_desk: facts.responsible_desk.clone(),
        misrouted: facts.misrouted,
        oversized: facts.oversized,
        rules: decision.rules.clone(),
        actions: decision.actions().map(|a| resolve(a, facts, dir)).collect(),
        suppressed: decision
            .suppressed
            .iter()
            .map(|(a, why)| format!("{a} ({why})"))
            .collect(),
        registry: with_registry.then(|| facts.registry.clone()),
        error: None,
    }
}

/// An action as `kind:argument` with targets resolved to addresses, e.g.
/// `redirect:helpdesk-gem@gov.in`.
pub fn resolve(action: &Action, facts: &Facts, dir: &Directory) -> String {
    let target = |t: &Target| -> String {
        target_address(t, facts, dir).unwrap_or_else(|| match t {
            Target::Desk(d) => d.clone(),
            _ => "suggested".to_string(),
        })
    };
    match action {
        Action::Redirect(t) => format!("redirect:{}", target(t)),
        Action::Forward(t) => format!("forward:{}", target(t)),
        other => other.to_string(),
    }
}
