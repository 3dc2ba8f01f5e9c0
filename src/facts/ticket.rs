//! Finding the CRM ticket number in a mail (SPEC 3): which parts of the mail are searched,
//! in which order, and with which patterns. Decoding is mail-parser's; the patterns and
//! where they apply come from the rules.

use mail_parser::{Message, MessagePart, PartType};

use crate::facts::{Ticket, truncate};
use crate::rules::{Limits, TicketPattern, TicketSource};

/// The shipped GeM patterns (also in rules/gem.toml; tests keep the two in step).
/// `YYYY-NNNNNNN` anywhere in the subject, not glued to other digits, letters, `/`, `-`
/// or a decimal point (bid numbers, order numbers, amounts).
pub const GEM_SUBJECT_PATTERN: &str =
    r"(?:^|[^0-9A-Za-z/_.-])(?P<ticket>20[0-9]{2}-[0-9]{7})(?:[^0-9A-Za-z/_.-]|\.(?:[^0-9]|$)|$)";
/// Elsewhere only right after a label: Ticket No / No. / ID / Number / # / Ticket, CRM
/// Ticket, Complaint No, with optional punctuation.
pub const GEM_LABELLED_PATTERN: &str = r"(?i)(?:^|[^a-z0-9])(?:crm\s+)?(?:ticket|complaint)\s*(?:no\.?|number|num|id|#)?\s*[:.#-]?\s*(?P<ticket>20[0-9]{2}-[0-9]{7})(?:[^0-9a-z/_.-]|\.(?:[^0-9]|$)|$)";

/// The ticket number of `msg`, by the precedence of [`TicketSource`]: the first source (in
/// that order) where any applicable pattern matches wins; within a source, the first match.
pub fn find_ticket(
    msg: &Message<'_>,
    patterns: &[TicketPattern],
    limits: &Limits,
) -> Option<Ticket> {
    let texts = Texts::of(msg, limits);
    for source in TicketSource::ALL {
        for p in patterns.iter().filter(|p| p.sources.contains(&source)) {
            let found = match source {
                TicketSource::Header => p
                    .headers
                    .iter()
                    .filter_map(|h| header(msg, h))
                    .find_map(|t| first_match(p, truncate(&t, limits.max_scan_bytes))),
                _ => texts
                    .of_source(source)
                    .iter()
                    .find_map(|t| first_match(p, t)),
            };
            if let Some(number) = found {
                return Some(Ticket {
                    number,
                    source,
                    pattern: p.name.clone(),
                });
            }
        }
    }
    None
}

fn first_match(p: &TicketPattern, text: &str) -> Option<String> {
    let caps = p.regex.captures(text)?;
    let m = caps.name("ticket").or_else(|| caps.get(0))?;
    Some(m.as_str().to_string())
}

fn header(msg: &Message<'_>, name: &str) -> Option<String> {
    msg.headers()
        .iter()
        .find(|h| h.name.as_str().eq_ignore_ascii_case(name))
        .and_then(|h| match &h.value {
            mail_parser::HeaderValue::Text(t) => Some(t.to_string()),
            mail_parser::HeaderValue::TextList(l) => Some(l.join(" ")),
            _ => msg.header_raw(name).map(str::to_string),
        })
}

/// The texts of a mail, split by source.
#[derive(Debug, Default)]
struct Texts {
    subject: Vec<String>,
    body: Vec<String>,
    html: Vec<String>,
    quoted: Vec<String>,
    attached: Vec<String>,
}

impl Texts {
    fn of(msg: &Message<'_>, limits: &Limits) -> Texts {
        let mut t = Texts::default();
        t.subject.extend(msg.subject().map(str::to_string));
        let mut html_seen = Vec::new();
        for &i in &msg.text_body {
            match msg.parts.get(i as usize).map(|p| &p.body) {
                Some(PartType::Text(text)) => {
                    t.split_into(truncate(text, limits.max_scan_bytes), false)
                }
                Some(PartType::Html(html)) => {
                    html_seen.push(i);
                    t.split_into(
                        &mail_parser::decoders::html::html_to_text(truncate(
                            html,
                            limits.max_scan_bytes,
                        )),
                        true,
                    );
                }
                _ => {}
            }
        }
        for &i in &msg.html_body {
            if html_seen.contains(&i) {
                continue;
            }
            if let Some(PartType::Html(html)) = msg.parts.get(i as usize).map(|p| &p.body) {
                t.split_into(
                    &mail_parser::decoders::html::html_to_text(truncate(
                        html,
                        limits.max_scan_bytes,
                    )),
                    true,
                );
            }
        }
        t.attached_from(msg, limits, 1);
        t
    }

    /// Own text goes to body (or html), quoted text of earlier mails to quoted.
    fn split_into(&mut self, text: &str, html: bool) {
        let (own, quoted) = split_quoted(text);
        if html {
            self.html.push(own)
        } else {
            self.body.push(own)
        }
        if !quoted.is_empty() {
            self.quoted.push(quoted);
        }
    }

    fn attached_from(&mut self, msg: &Message<'_>, limits: &Limits, depth: usize) {
        if depth > limits.max_depth {
            return;
        }
        for part in msg.parts.iter() {
            if let PartType::Message(inner) = &part.body {
                self.attached.extend(inner.subject().map(str::to_string));
                for (i, p) in inner.parts.iter().enumerate() {
                    if let Some(text) = part_text(p, limits)
                        && (inner.text_body.contains(&(i as u32))
                            || inner.html_body.contains(&(i as u32)))
                    {
                        self.attached.push(text);
                    }
                }
                self.attached_from(inner, limits, depth + 1);
            }
        }
    }

    fn of_source(&self, s: TicketSource) -> &[String] {
        match s {
            TicketSource::Subject => &self.subject,
            TicketSource::Body => &self.body,
            TicketSource::Html => &self.html,
            TicketSource::Quoted => &self.quoted,
            TicketSource::Attached => &self.attached,
            TicketSource::Header => &[],
        }
    }
}

fn part_text(p: &MessagePart<'_>, limits: &Limits) -> Option<String> {
    match &p.body {
        PartType::Text(t) => Some(truncate(t, limits.max_scan_bytes).to_string()),
        PartType::Html(h) => Some(mail_parser::decoders::html::html_to_text(truncate(
            h,
            limits.max_scan_bytes,
        ))),
        _ => None,
    }
}

/// Splits a text body into the writer's own text and the quoted or forwarded text of
/// earlier mails: `>` lines, and everything after an attribution ("On ... wrote:"), an
/// "Original Message" or "Forwarded message" separator or an Outlook "From:/Sent:" block.
pub fn split_quoted(text: &str) -> (String, String) {
    let mut own = String::new();
    let mut quoted = String::new();
    let mut in_quote = false;
    let mut prev_blank = true;
    for line in text.lines() {
        let t = line.trim();
        if !in_quote && starts_quote_block(t, prev_blank) {
            in_quote = true;
        }
        if in_quote || t.starts_with('>') {
            quoted.push_str(line.trim_start_matches(['>', ' ']));
            quoted.push('\n');
        } else {
            own.push_str(line);
            own.push('\n');
        }
        prev_blank = t.is_empty();
    }
    (own, quoted)
}

fn starts_quote_block(t: &str, prev_blank: bool) -> bool {
    let l = t.to_ascii_lowercase();
    (l.starts_with("on ") && l.ends_with("wrote:"))
        || (l.contains("original message") && l.starts_with('-'))
        || (l.contains("forwarded message") && l.starts_with('-'))
        || l.starts_with("begin forwarded message")
        || (prev_blank && l.starts_with("from:") && l.contains('@'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::MessageParser;
    use regex::Regex;

    fn gem() -> Vec<TicketPattern> {
        let ok = |s: &str| Regex::new(s).unwrap_or_else(|e| panic!("{e}"));
        vec![
            TicketPattern {
                name: "subject".into(),
                regex: ok(GEM_SUBJECT_PATTERN),
                sources: vec![TicketSource::Subject],
                headers: vec![],
            },
            TicketPattern {
                name: "labelled".into(),
                regex: ok(GEM_LABELLED_PATTERN),
                sources: vec![
                    TicketSource::Subject,
                    TicketSource::Body,
                    TicketSource::Html,
                    TicketSource::Quoted,
                    TicketSource::Attached,
                ],
                headers: vec![],
            },
        ]
    }

    fn find(raw: &str) -> Option<(String, TicketSource)> {
        let msg = MessageParser::default()
            .parse(raw.as_bytes())
            .unwrap_or_else(|| panic!("parse"));
        find_ticket(&msg, &gem(), &Limits::default()).map(|t| (t.number, t.source))
    }

    fn plain(subject: &str, body: &str) -> String {
        format!(
            "From: a@example.in\r\nTo: bid.ra@gem.gov.in\r\nSubject: {subject}\r\n\r\n{body}\r\n"
        )
    }

    #[test]
    fn shipped_rules_use_these_patterns() {
        let text = include_str!("../../rules/gem.toml");
        assert!(text.contains(&format!("regex = '{GEM_SUBJECT_PATTERN}'")));
        assert!(text.contains(&format!("regex = '{GEM_LABELLED_PATTERN}'")));
    }

    #[test]
    fn labels_in_the_body() {
        for body in [
            "Ticket No: 2024-1234567",
            "Ticket No.: 2024-1234567",
            "Ticket No:2024-1234567",
            "TICKET NO: 2024-1234567",
            "ticket no: 2024-1234567",
            "Ticket No : 2024-1234567",
            "Ticket ID 2024-1234567",
            "Ticket Number - 2024-1234567",
            "ticket #2024-1234567",
            "Ticket 2024-1234567 is still open",
            "CRM Ticket ID - 2024-1234567",
            "my complaint no. 2024-1234567.",
            "(Ticket No: 2024-1234567)",
        ] {
            assert_eq!(
                find(&plain("help", body)),
                Some(("2024-1234567".into(), TicketSource::Body)),
                "{body}"
            );
        }
    }

    #[test]
    fn near_misses_are_not_tickets() {
        for text in [
            "Call 1800-419-3436 or 1800-102-3436",
            "Bid GEM/2024/B/1234567 is stuck",
            "Order GEMC-511687712345678",
            "order 2024-12345678",
            "ref 12024-1234567",
            "ref 2024-12345",
            "on 2024-01-15 or 15-01-2024",
            "amount Rs. 2024-1234567.50",
            "Ticket No: will be shared",
            "I raised a ticket yesterday",
            "my number 2024-1234567 without label",
            "Ticket No: GEM/2024-1234567",
        ] {
            assert_eq!(find(&plain("help", text)), None, "body: {text}");
            if !text.contains("without label") {
                assert_eq!(
                    find(&plain(text, "no number here")),
                    None,
                    "subject: {text}"
                );
            }
        }
    }

    #[test]
    fn subject_counts_without_label_and_wins_over_the_body() {
        assert_eq!(
            find(&plain(
                "Re: 2024-7654321 pending",
                "Ticket No: 2024-1234567"
            )),
            Some(("2024-7654321".into(), TicketSource::Subject))
        );
        assert_eq!(
            find(&plain("=?utf-8?b?VGlja2V0IDIwMjQtMTIzNDU2Nw==?=", "x")),
            Some(("2024-1234567".into(), TicketSource::Subject))
        );
    }

    #[test]
    fn body_wins_over_quoted_text() {
        let body = "Still waiting. Ticket No: 2025-1111111\r\n\r\nOn Mon, 1 Jan 2026 Helpdesk wrote:\r\n> Your Ticket No: 2024-2222222";
        assert_eq!(
            find(&plain("Re: help", body)),
            Some(("2025-1111111".into(), TicketSource::Body))
        );
        let body = "Still waiting.\r\n\r\nOn Mon, 1 Jan 2026 Helpdesk wrote:\r\n> Your Ticket No: 2024-2222222";
        assert_eq!(
            find(&plain("Re: help", body)),
            Some(("2024-2222222".into(), TicketSource::Quoted))
        );
        let body = "See below\r\n\r\n---------- Forwarded message ---------\r\nFrom: helpdesk-gem@gov.in\r\nTicket No: 2024-3333333 registered";
        assert_eq!(
            find(&plain("Fwd: ack", body)),
            Some(("2024-3333333".into(), TicketSource::Quoted))
        );
    }

    #[test]
    fn html_only_base64_and_attached_mail() {
        let html = "From: a@example.in\r\nSubject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Ticket&nbsp;No: <b>2024-1234567</b></p>\r\n";
        assert_eq!(
            find(html),
            Some(("2024-1234567".into(), TicketSource::Html))
        );
        let b64 = "From: a@example.in\r\nSubject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\nVGlja2V0IE5vOiAyMDI0LTEyMzQ1Njc=\r\n";
        assert_eq!(find(b64), Some(("2024-1234567".into(), TicketSource::Body)));
        let fwd = "From: a@example.in\r\nSubject: Fwd: acknowledgement\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nplease see attached\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nFrom: helpdesk-gem@gov.in\r\nSubject: Complaint registered\r\n\r\nYour Ticket No: 2024-4444444\r\n--b--\r\n";
        assert_eq!(
            find(fwd),
            Some(("2024-4444444".into(), TicketSource::Attached))
        );
    }

    #[test]
    fn header_patterns_apply_to_named_headers() {
        let mut p = gem();
        p.push(TicketPattern {
            name: "hdr".into(),
            regex: Regex::new(r"(?P<ticket>20[0-9]{2}-[0-9]{7})").unwrap_or_else(|e| panic!("{e}")),
            sources: vec![TicketSource::Header],
            headers: vec!["x-crm-ticket".into()],
        });
        let raw = "From: a@example.in\r\nSubject: hi\r\nX-CRM-Ticket: 2024-5555555\r\n\r\nTicket No: 2024-1234567\r\n";
        let msg = MessageParser::default()
            .parse(raw.as_bytes())
            .unwrap_or_else(|| panic!("parse"));
        let t = find_ticket(&msg, &p, &Limits::default());
        assert_eq!(
            t.map(|t| (t.number, t.source)),
            Some(("2024-5555555".into(), TicketSource::Header))
        );
    }
}
