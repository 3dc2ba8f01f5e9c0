//! Facts about one mail (SPEC 3), computed purely from the parsed message, the rules and the
//! state known before it (`Known`). No I/O here: the pipeline reads `Known` from the store.

pub mod automatic;
pub mod suggest;
pub mod text;
pub mod ticket;
pub mod tnef;

use crate::rules::TicketSource;

/// A CRM ticket number and where it was found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Ticket {
    pub number: String,
    pub source: TicketSource,
    /// Name of the pattern that matched.
    pub pattern: String,
}

use std::borrow::Cow;

use mail_parser::{Address, HeaderName, Message, MessageParser};
use sha2::{Digest, Sha256};

use crate::rules::Rules;

/// Who is who in the deployment: desks (in config order), the helpdesk and other own
/// addresses. Built from config.toml and the rules; pure data.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    /// The helpdesk's name, phone numbers and web address for templates (config
    /// `[helpdesk]`), empty when not set.
    pub helpdesk_name: String,
    pub helpdesk_phone: String,
    pub helpdesk_web: String,
    /// (name, address) of each desk, addresses lower-case.
    pub desks: Vec<(String, String)>,
    pub helpdesk: String,
    /// Addresses whose mail is our own besides desks and helpdesk.
    pub own: Vec<String>,
    /// Contact-list addresses besides the desks (count towards broadcast).
    pub contacts: Vec<String>,
    /// Characters that start a subaddress (`bid.ra+urgent@`), from the rules; empty: none.
    pub subaddress_delimiter: String,
}

impl Directory {
    pub fn new(config: &crate::config::Config, rules: &Rules) -> Directory {
        Directory {
            desks: config
                .desks
                .iter()
                .map(|d| (d.name.clone(), d.address.clone()))
                .collect(),
            helpdesk: config.helpdesk.clone(),
            helpdesk_name: config.helpdesk_name.clone().unwrap_or_default(),
            helpdesk_phone: config.helpdesk_phone.clone().unwrap_or_default(),
            helpdesk_web: config.helpdesk_web.clone().unwrap_or_default(),
            own: rules.own_addresses.clone(),
            contacts: rules.contacts.clone(),
            subaddress_delimiter: rules.subaddress_delimiter.clone(),
        }
    }

    /// `address` lower-case and without its subaddress (RFC 5233): `Bid.RA+urgent@gem.test`
    /// is `bid.ra@gem.test`. Addresses are compared in this form.
    pub fn canonical(&self, address: &str) -> String {
        let a = address.trim().to_lowercase();
        if self.subaddress_delimiter.is_empty() {
            return a;
        }
        match a.rsplit_once('@') {
            Some((local, domain)) => {
                let base = local
                    .split(|c| self.subaddress_delimiter.contains(c))
                    .next()
                    .unwrap_or(local);
                // A local part that is all tag (`+x@`) is left as it is, and so is one
                // without a tag (no copy).
                if base.is_empty() || base.len() == local.len() {
                    a.clone()
                } else {
                    format!("{base}@{domain}")
                }
            }
            None => a,
        }
    }

    pub fn desk_address(&self, name: &str) -> Option<&str> {
        self.desks
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a.as_str())
    }

    /// Whether `address` is a desk's, the helpdesk's or another own address; `desks` are
    /// the desks' addresses in canonical form, in config order.
    fn is_own(&self, address: &str, desks: &[String]) -> bool {
        let c = self.canonical(address);
        desks.contains(&c)
            || self.canonical(&self.helpdesk) == c
            || self.own.iter().any(|a| self.canonical(a) == c)
    }
}

/// Header that marks mail sent by ticketgate; its presence makes mail `own`. Defined by
/// `compose`, which writes it (so that `compose` needs nothing of `facts`).
pub use crate::compose::MARKER_HEADER;

/// Everything the rules can look at, for one mail in one desk's mailbox.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Facts {
    pub desk: String,
    pub message_id: Option<String>,
    /// Identifies the same mail across desk mailboxes: a hash of its sender, date, subject
    /// and body, which copies delivered to several desks share even when Message-ID is
    /// missing or rewritten.
    pub group_key: String,
    pub from: Option<String>,
    /// Address that gets copies and replies: Reply-To over From.
    pub sender: Option<String>,
    pub subject: String,
    pub ticket: Option<Ticket>,
    /// Desks whose addresses are in To/Cc, in config order.
    pub addressed_desks: Vec<String>,
    /// Contact-list addresses in To/Cc (desks and extra contacts).
    pub addressed_contacts: usize,
    /// Desks whose mailbox holds this mail (from the store), at least this desk.
    pub copies_seen: usize,
    pub broadcast: bool,
    pub broadcast_by: Option<&'static str>,
    pub automatic: bool,
    pub automatic_reason: Option<String>,
    pub own: bool,
    pub suggested_desk: Option<String>,
    /// For a broadcast, the desk whose copy is acted on; the others are duplicates.
    pub responsible_desk: Option<String>,
    pub responsible: bool,
    pub misrouted: bool,
    pub oversized: bool,
    /// What the ticket registry says about the ticket (issue #17); set by the shell after its
    /// lookup ([`Facts::with_registry`]), off until then.
    #[serde(flatten)]
    pub registry: crate::registry::TicketFacts,
    /// Subject and decoded body text, bounded and normalised, for `when.text` conditions;
    /// empty when no rule has one ([`Rules::reads_text`]).
    #[serde(skip)]
    pub text: String,
}

/// A mail that cannot be parsed at all.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot parse mail: {0}")]
pub struct MailError(pub String);

/// mail-parser's parser as ticketgate uses it: every header parsed as
/// `MessageParser::default()` parses it (mail-parser 0.11, `parse_headers`), except
/// `Received`, which no fact, rule or composed mail reads as a structure: it stays in the
/// mail (`header_raw`, the redirect's attachment) unparsed. Its parse was 3.4 % of
/// `cargo bench --bench classify`'s profile.
pub fn parser() -> &'static MessageParser {
    static PARSER: std::sync::LazyLock<MessageParser> = std::sync::LazyLock::new(|| {
        use HeaderName as H;
        // mail-parser's own groups (MIME, dates, addresses, message ids), then the other
        // headers its default parses.
        let mut p = MessageParser::new()
            .with_mime_headers()
            .with_date_headers()
            .with_address_headers()
            .with_message_ids()
            .header_text(H::Subject)
            .header_text(H::Comments)
            .header_id(H::ReturnPath)
            .header_comma_separated(H::Keywords)
            .header_comma_separated(H::ContentLanguage);
        for h in [
            H::ListArchive,
            H::ListHelp,
            H::ListId,
            H::ListOwner,
            H::ListPost,
            H::ListSubscribe,
            H::ListUnsubscribe,
        ] {
            p = p.header_address(h);
        }
        p.ignore_header(H::Received)
    });
    &PARSER
}

/// Facts from the mail's content alone, as if no other desk held a copy; the shell then
/// calls [`Facts::with_copies`] with what the store knows.
pub fn extract(raw: &[u8], desk: &str, dir: &Directory, rules: &Rules) -> Result<Facts, MailError> {
    if raw.len() > rules.limits.max_mail_bytes {
        return Ok(Facts::oversized(desk, raw.len()));
    }
    if raw.is_empty() {
        return Err(MailError("empty file".into()));
    }
    let msg = parser().parse(raw).filter(is_mail).ok_or_else(|| {
        MailError("no mail header (From, Sender, To, Cc, Subject, Date or Message-ID)".into())
    })?;
    Ok(extract_parsed(&msg, desk, dir, rules))
}

/// A parse result is a mail when it has at least one of the headers every mail carries;
/// bare MIME entities and binary junk are not.
fn is_mail(m: &Message<'_>) -> bool {
    m.headers().iter().any(|h| {
        matches!(
            h.name,
            HeaderName::From
                | HeaderName::Sender
                | HeaderName::To
                | HeaderName::Cc
                | HeaderName::Subject
                | HeaderName::Date
                | HeaderName::MessageId
        )
    })
}

pub fn extract_parsed(msg: &Message<'_>, desk: &str, dir: &Directory, rules: &Rules) -> Facts {
    let subject = without_nul(&text::subject(msg).unwrap_or_default());
    let from = first_address(msg.from());
    let sender = first_address(msg.reply_to()).or_else(|| from.clone());
    // The first text body, converted from HTML once for the ticket search, the automatic
    // facts, the desk suggestion and `when.text`.
    let first_body = text::first_body(msg);
    let first_html = match &first_body {
        Some(Cow::Owned(converted)) => Some(converted.as_str()),
        _ => None,
    };
    let ticket = ticket::find_ticket_with(msg, &rules.ticket_patterns, &rules.limits, first_html);
    let automatic_reason =
        automatic::automatic_reason_with_body(msg, || first_body.as_deref().map(Cow::Borrowed));
    let desk_addresses: Vec<String> = dir.desks.iter().map(|(_, a)| dir.canonical(a)).collect();
    let own = msg.header_raw(MARKER_HEADER).is_some()
        || from
            .as_deref()
            .is_some_and(|f| dir.is_own(f, &desk_addresses));

    // Every To and Cc header counts (a mail may carry several), each address without its
    // subaddress.
    let mut recipients: Vec<String> = Vec::new();
    for h in msg.headers() {
        if !matches!(h.name, HeaderName::To | HeaderName::Cc) {
            continue;
        }
        let Some(list) = h.value.as_address() else {
            continue;
        };
        for addr in list.iter() {
            if let Some(s) = addr.address() {
                let s = dir.canonical(s);
                if !recipients.contains(&s) {
                    recipients.push(s);
                }
            }
        }
    }
    let addressed_desks: Vec<String> = dir
        .desks
        .iter()
        .zip(&desk_addresses)
        .filter(|(_, a)| recipients.contains(a))
        .map(|((n, _), _)| n.clone())
        .collect();
    let addressed_contacts = addressed_desks.len()
        + dir
            .contacts
            .iter()
            .filter(|c| recipients.contains(&dir.canonical(c)))
            .count();

    let body = truncate(
        first_body.as_deref().unwrap_or_default(),
        rules.limits.max_scan_bytes,
    );
    let suggested_desk = suggest::suggest_desk(&subject, body, &rules.desks, &rules.phrase_index);
    // Only `when.text` conditions read this normalised copy of the subject and body: with
    // none in the rules (the GeM rules have none) it is not built.
    let text = if rules.reads_text() {
        let mut text = text::normalize(&subject).into_owned();
        text.push('\n');
        text.push_str(&text::normalize(body));
        text
    } else {
        String::new()
    };

    let mut facts = Facts {
        desk: desk.to_string(),
        message_id: msg.message_id().map(without_nul),
        group_key: group_key(msg, from.as_deref(), &subject),
        from,
        sender,
        subject,
        ticket,
        addressed_desks,
        addressed_contacts,
        copies_seen: 1,
        broadcast: false,
        broadcast_by: None,
        automatic: automatic_reason.is_some(),
        automatic_reason,
        own,
        suggested_desk,
        responsible_desk: None,
        responsible: true,
        misrouted: false,
        oversized: false,
        registry: crate::registry::TicketFacts::OFF,
        text,
    };
    facts.settle(&[desk.to_string()], dir, rules);
    facts
}

impl Facts {
    /// Facts of a mail too large to read: only its size is known.
    pub fn oversized(desk: &str, size: usize) -> Facts {
        Facts {
            desk: desk.to_string(),
            message_id: None,
            group_key: format!("oversized:{desk}:{size}"),
            from: None,
            sender: None,
            subject: String::new(),
            ticket: None,
            addressed_desks: Vec::new(),
            addressed_contacts: 0,
            copies_seen: 1,
            broadcast: false,
            broadcast_by: None,
            automatic: false,
            automatic_reason: None,
            own: false,
            suggested_desk: None,
            responsible_desk: None,
            responsible: true,
            misrouted: false,
            oversized: true,
            registry: crate::registry::TicketFacts::OFF,
            text: String::new(),
        }
    }

    /// Sets the registry facts from its answers for the batch (`None`: no registry),
    /// ages counted on the matrix's calendar up to `now` (Unix seconds).
    pub fn with_registry(
        mut self,
        answers: Option<&crate::registry::Answers>,
        now: i64,
        matrix: &crate::rules::Matrix,
    ) -> Facts {
        let senders: Vec<&str> = self
            .from
            .iter()
            .chain(self.sender.iter())
            .map(String::as_str)
            .collect();
        self.registry = crate::registry::ticket_facts(
            self.ticket.as_ref().map(|t| t.number.as_str()),
            answers,
            &senders,
            now,
            (&matrix.calendar, matrix.helpdesk_hours),
        );
        self
    }

    /// Updates the cross-mailbox facts from the desks known to hold a copy of this mail.
    pub fn with_copies(mut self, holders: &[String], dir: &Directory, rules: &Rules) -> Facts {
        self.settle(holders, dir, rules);
        self
    }

    fn settle(&mut self, holders: &[String], dir: &Directory, rules: &Rules) {
        let mut holding: Vec<&String> = holders.iter().collect();
        if !holding.contains(&&self.desk) {
            holding.push(&self.desk);
        }
        self.copies_seen = holding.len();
        let by_headers = self.addressed_contacts >= rules.broadcast_threshold;
        let by_copies = self.copies_seen >= rules.broadcast_threshold;
        self.broadcast = !self.oversized && (by_headers || by_copies);
        self.broadcast_by = match (by_headers, by_copies) {
            _ if !self.broadcast => None,
            (true, _) => Some("headers"),
            (false, _) => Some("copies"),
        };
        self.responsible_desk = if self.broadcast {
            Some(self.pick_responsible(&holding, dir))
        } else {
            None
        };
        self.responsible = self
            .responsible_desk
            .as_ref()
            .is_none_or(|d| *d == self.desk);
        self.misrouted = !self.broadcast
            && !self.automatic
            && !self.own
            && self
                .suggested_desk
                .as_ref()
                .is_some_and(|s| *s != self.desk && dir.desk_address(s).is_some());
    }

    /// The desk whose copy of a broadcast is acted on: the suggested desk when it holds or
    /// was sent a copy; else the first addressed desk in config order; else the suggested
    /// desk; else the first holder in config order. Every copy computes the same answer.
    fn pick_responsible(&self, holding: &[&String], dir: &Directory) -> String {
        let has_copy = |d: &String| self.addressed_desks.contains(d) || holding.contains(&d);
        if let Some(s) = self.suggested_desk.as_ref().filter(|s| has_copy(s)) {
            return s.clone();
        }
        if let Some(first) = self.addressed_desks.first() {
            return first.clone();
        }
        if let Some(s) = &self.suggested_desk {
            return s.clone();
        }
        dir.desks
            .iter()
            .map(|(n, _)| n)
            .find(|n| holding.contains(n))
            .cloned()
            .unwrap_or_else(|| self.desk.clone())
    }
}

/// Header text without NUL characters (an encoded word may decode to one): PostgreSQL
/// refuses them in text columns, which would keep the mail from being journaled.
fn without_nul(text: &str) -> String {
    text.replace('\0', "")
}

fn first_address(a: Option<&Address<'_>>) -> Option<String> {
    let s = a?
        .iter()
        .find_map(|a| a.address())?
        .trim()
        .to_ascii_lowercase();
    crate::rules::compile::looks_like_address(&s).then_some(s)
}

/// [`Facts::group_key`]: the first 16 bytes, in hex, of the SHA-256 of the sender, the
/// Date header, the subject and the body's bytes other than CR and LF, each of the first
/// three followed by a line feed. Stored in state databases and part of outbox ids: a
/// change would make copies seen before and after an upgrade two messages.
fn group_key(msg: &Message<'_>, from: Option<&str>, subject: &str) -> String {
    let mut h = Sha256::new();
    h.update(from.unwrap_or_default().as_bytes());
    h.update(b"\n");
    h.update(msg.header_raw("Date").unwrap_or_default().trim().as_bytes());
    h.update(b"\n");
    h.update(subject.as_bytes());
    h.update(b"\n");
    let raw = msg.raw_message();
    let root = msg.root_part();
    let start = (root.offset_body as usize).min(raw.len());
    let end = (root.offset_end as usize).clamp(start, raw.len());
    // Line ends may be rewritten on the way to one desk and not another: the runs between
    // them are hashed (the same digest as hashing the other bytes one by one).
    let body = raw.get(start..end).unwrap_or_default();
    let mut from = 0;
    for eol in memchr::memchr2_iter(b'\r', b'\n', body) {
        h.update(&body[from..eol]);
        from = eol + 1;
    }
    h.update(&body[from..]);
    let digest = h.finalize();
    let mut key = String::with_capacity(64);
    for b in digest.iter().take(16) {
        key.push_str(&format!("{b:02x}"));
    }
    key
}

/// At most `max` bytes of `s`, cut on a char boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_group_key_hashes_the_body_without_line_ends() {
        let body = "line one\r\nline two\n\r\n\rlast";
        let raw = format!(
            "From: a@example.in\r\nDate: Mon, 1 Jan 2024 10:00:00 +0530\r\nSubject: s\r\n\r\n{body}"
        );
        let msg = MessageParser::default()
            .parse(raw.as_bytes())
            .unwrap_or_else(|| panic!("parse"));
        // The digest of sender, date, subject and the body's bytes other than CR and LF, as
        // it was computed byte by byte: keys already in a state database stay valid.
        let mut h = Sha256::new();
        h.update(b"a@example.in\nMon, 1 Jan 2024 10:00:00 +0530\ns\n");
        for b in body.bytes().filter(|b| *b != b'\r' && *b != b'\n') {
            h.update([b]);
        }
        let want: String = h.finalize()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(group_key(&msg, Some("a@example.in"), "s"), want);
        // Line ends rewritten on the way do not change it.
        let unix = raw.replace("\r\n", "\n");
        let msg = MessageParser::default()
            .parse(unix.as_bytes())
            .unwrap_or_else(|| panic!("parse"));
        assert_eq!(group_key(&msg, Some("a@example.in"), "s"), want);
    }
}
