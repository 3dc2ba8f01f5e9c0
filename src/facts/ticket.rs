//! Finding the CRM ticket number in a mail (SPEC 3): which parts of the mail are searched,
//! in which order, and with which patterns. Containers are opened here (message/rfc822, an
//! attached `.eml` under another content type, TNEF); decoding is mail-parser's, text
//! normalisation and HTML conversion `text`'s, the TNEF format `tnef`'s; the patterns and
//! where they apply come from the rules. The tests are in `ticket/tests.rs`.

use mail_parser::{Message, MessagePart, MimeHeaders, PartType};

use crate::facts::{Ticket, text, tnef, truncate};
use crate::rules::{Limits, TicketPattern, TicketSource};

/// The shipped GeM patterns (also in rules/gem.toml; tests keep the two in step).
/// `YYYY-NNNNNNN` anywhere in the subject, not glued to other digits, letters, `/`, `-`
/// or `.` before it, nor to digits, `/`, `_` or a digit after `.`, `,` or `-` (bid numbers,
/// order numbers, amounts); letters may follow (`2024-2468024Pending`).
pub const GEM_SUBJECT_PATTERN: &str =
    r"(?:^|[^0-9A-Za-z/_.-])(?P<ticket>20[0-9]{2}-[0-9]{7})(?:[^0-9/_.,-]|[.,-](?:[^0-9]|$)|$)";
/// Elsewhere only right after a label: Ticket / Complaint / Grievance (or the Hindi टिकट,
/// शिकायत) with No, No., Nr., № (normalised to No), Number, Num, ID, #, संख्या, नंबर, नं.,
/// क्रमांक; then "is", any of `: . # -` (`No:-`, `No.:-`), and an opening bracket.
pub const GEM_LABELLED_PATTERN: &str = r"(?i)(?:^|[^a-z0-9])(?:crm\s+)?(?:ticket|complaint|grievance|टिकट|शिकायत)\s*(?:number|num|no|nr|id|#|संख्या|नंबर|नं|क्रमांक)?\.?\s*(?:is\s+)?[:.#-]*\s*[(\[]?\s*(?P<ticket>20[0-9]{2}-[0-9]{7})(?:[^0-9/_.,-]|[.,-](?:[^0-9]|$)|$)";

/// The ticket number of `msg`, by the precedence of [`TicketSource`]: the first source (in
/// that order) where any applicable pattern matches wins; within a source, the first match.
/// Every text is normalised first ([`text::normalize`]).
pub fn find_ticket(
    msg: &Message<'_>,
    patterns: &[TicketPattern],
    limits: &Limits,
) -> Option<Ticket> {
    find_ticket_with(msg, patterns, limits, None)
}

/// [`find_ticket`], given the text of the mail's first body part when that part is HTML
/// (`text::first_body`, which the caller has already), so that it is not converted twice.
pub fn find_ticket_with(
    msg: &Message<'_>,
    patterns: &[TicketPattern],
    limits: &Limits,
    first_html: Option<&str>,
) -> Option<Ticket> {
    let mut texts = Texts::default();
    if let Some(s) = text::subject(msg) {
        texts.subject.push(text::normalize(&s).into_owned());
    }
    // The subject and headers come first: the body is read only when they hold no ticket,
    // and the HTML alternatives of the text body only when the body holds none either.
    let mut read_body = false;
    let mut read_alternatives = false;
    for source in TicketSource::ALL {
        if !read_body && !matches!(source, TicketSource::Subject | TicketSource::Header) {
            texts.body_of(msg, limits, first_html);
            read_body = true;
        }
        if !read_alternatives
            && matches!(source, TicketSource::Html | TicketSource::Quoted)
            && patterns.iter().any(|p| p.sources.contains(&source))
        {
            texts.alternatives_of(msg, limits);
            read_alternatives = true;
        }
        for p in patterns.iter().filter(|p| p.sources.contains(&source)) {
            let found = match source {
                TicketSource::Header => {
                    p.headers
                        .iter()
                        .filter_map(|h| header(msg, h))
                        .find_map(|t| {
                            first_match(p, &text::normalize(truncate(&t, limits.max_scan_bytes)))
                        })
                }
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

/// The normalised texts of a mail, split by source.
#[derive(Debug, Default)]
struct Texts {
    subject: Vec<String>,
    body: Vec<String>,
    html: Vec<String>,
    quoted: Vec<String>,
    attached: Vec<String>,
    /// MIME parts looked at so far, all levels (bounded by `Limits::max_parts`).
    parts_seen: usize,
    /// Where the HTML alternatives' texts go in `html` and `quoted` once they are read
    /// ([`Texts::alternatives_of`]): after the body parts' texts, before the containers'.
    alternatives_at: (usize, usize),
    /// The text body's HTML parts, already read by [`Texts::body_of`] (sorted).
    html_seen: Vec<u32>,
}

impl Texts {
    /// Everything but the subject and the HTML alternatives: the body parts, then the
    /// containers.
    fn body_of(&mut self, msg: &Message<'_>, limits: &Limits, first_html: Option<&str>) {
        let t = self;
        let mut html_seen = Vec::new();
        for (n, &i) in msg.text_body.iter().take(limits.max_parts).enumerate() {
            match msg.parts.get(i as usize).map(|p| &p.body) {
                Some(PartType::Text(body)) => {
                    t.split_into(truncate(body, limits.max_scan_bytes), false)
                }
                Some(PartType::Html(html)) => {
                    html_seen.push(i);
                    // The caller's text of the whole first part is this part's text when
                    // the part is not cut.
                    match first_html.filter(|_| n == 0 && html.len() <= limits.max_scan_bytes) {
                        Some(converted) => t.split_into(converted, true),
                        None => t.split_into(
                            &text::html_to_text(truncate(html, limits.max_scan_bytes)),
                            true,
                        ),
                    }
                }
                _ => {}
            }
        }
        html_seen.sort_unstable();
        t.html_seen = html_seen;
        t.alternatives_at = (t.html.len(), t.quoted.len());
        t.containers(msg, limits, 1, false);
    }

    /// The HTML alternatives of the text body (`multipart/alternative`'s HTML beside its
    /// plain text), put where [`Texts::body_of`] left room for them: converting HTML is the
    /// dearest step of the search (issue #16), and a ticket in the plain body makes it moot.
    fn alternatives_of(&mut self, msg: &Message<'_>, limits: &Limits) {
        let mut alternative = Texts::default();
        for &i in msg.html_body.iter().take(limits.max_parts) {
            if self.html_seen.binary_search(&i).is_ok() {
                continue;
            }
            if let Some(PartType::Html(html)) = msg.parts.get(i as usize).map(|p| &p.body) {
                alternative.split_into(
                    &text::html_to_text(truncate(html, limits.max_scan_bytes)),
                    true,
                );
            }
        }
        let (html_at, quoted_at) = self.alternatives_at;
        self.html.splice(html_at..html_at, alternative.html);
        self.quoted.splice(quoted_at..quoted_at, alternative.quoted);
    }

    /// Own text goes to body (or html), quoted text of earlier mails to quoted.
    fn split_into(&mut self, body: &str, html: bool) {
        let (own, quoted) = split_quoted(&text::normalize(body));
        if html {
            self.html.push(own)
        } else {
            self.body.push(own)
        }
        if !quoted.is_empty() {
            self.quoted.push(quoted);
        }
    }

    /// Opens the containers among the parts of `msg`: attached messages (message/rfc822,
    /// or an attachment whose content is a mail) count as attached; a TNEF part of the
    /// mail itself is its body (`inside` false), of an attached mail attached.
    fn containers(&mut self, msg: &Message<'_>, limits: &Limits, depth: usize, inside: bool) {
        if depth > limits.max_depth {
            return;
        }
        // Text parts that are not a body are attachments (a mail saved as .txt).
        let mut bodies: Vec<u32> = msg
            .text_body
            .iter()
            .chain(&msg.html_body)
            .copied()
            .collect();
        bodies.sort_unstable();
        for (i, part) in msg.parts.iter().enumerate() {
            self.parts_seen += 1;
            if self.parts_seen > limits.max_parts {
                return;
            }
            match &part.body {
                PartType::Message(inner) => self.attached_mail(inner, limits, depth),
                PartType::Binary(data) | PartType::InlineBinary(data) => {
                    if is_tnef(part) {
                        self.tnef(data, limits, depth, inside);
                    } else if let Some(inner) = attached_mail(part, data, limits) {
                        self.attached_mail(&inner, limits, depth);
                    }
                }
                PartType::Text(t)
                    if u32::try_from(i).is_ok_and(|i| bodies.binary_search(&i).is_err()) =>
                {
                    if let Some(inner) = attached_mail(part, t.as_bytes(), limits) {
                        self.attached_mail(&inner, limits, depth);
                    }
                }
                _ => {}
            }
        }
    }

    fn attached_mail(&mut self, inner: &Message<'_>, limits: &Limits, depth: usize) {
        if let Some(s) = text::subject(inner) {
            self.attached.push(text::normalize(&s).into_owned());
        }
        for &i in inner
            .text_body
            .iter()
            .chain(inner.html_body.iter())
            .take(limits.max_parts)
        {
            if let Some(p) = inner.parts.get(i as usize)
                && let Some(t) = part_text(p, limits)
            {
                self.attached.push(text::normalize(&t).into_owned());
            }
        }
        self.containers(inner, limits, depth + 1, true);
    }

    /// The texts of a TNEF blob (MS-OXTNEF): body, RTF body and HTML body; attachments
    /// inside that are mails are opened like attached mail.
    fn tnef(&mut self, data: &[u8], limits: &Limits, depth: usize, inside: bool) {
        let found = tnef::read(data, limits.max_scan_bytes, limits.max_parts);
        for body in found.body.iter().chain(found.rtf.iter()) {
            if inside {
                self.attached.push(text::normalize(body).into_owned());
            } else {
                self.split_into(body, false);
            }
        }
        for html in &found.html {
            let t = text::html_to_text(truncate(html, limits.max_scan_bytes));
            if inside {
                self.attached.push(text::normalize(&t).into_owned());
            } else {
                self.split_into(&t, true);
            }
        }
        if depth < limits.max_depth {
            for (_, bytes) in &found.attachments {
                if tnef::is_tnef(bytes) {
                    // An Outlook message attached inside (its own TNEF stream).
                    self.tnef(bytes, limits, depth + 1, true);
                } else if let Some(inner) = parse_mail(bytes) {
                    self.attached_mail(&inner, limits, depth + 1);
                }
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

/// `application/ms-tnef`, `application/vnd.ms-tnef`, or a file named `winmail.dat`.
fn is_tnef(part: &MessagePart<'_>) -> bool {
    let ct = part.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("application")
            && ct.subtype().is_some_and(|s| {
                s.eq_ignore_ascii_case("ms-tnef") || s.eq_ignore_ascii_case("vnd.ms-tnef")
            })
    });
    ct || part
        .attachment_name()
        .is_some_and(|n| n.trim().eq_ignore_ascii_case("winmail.dat"))
}

/// An attachment that is a mail under another content type: a file named `*.eml`, or
/// content that parses as a mail with a From and a Subject or Date header.
fn attached_mail<'x>(
    part: &MessagePart<'_>,
    data: &'x [u8],
    limits: &Limits,
) -> Option<Message<'x>> {
    if data.len() > limits.max_mail_bytes {
        return None;
    }
    let named = part
        .attachment_name()
        .is_some_and(|n| n.trim().to_ascii_lowercase().ends_with(".eml"));
    let textual = part.content_type().is_none_or(|ct| {
        let t = ct.ctype().to_ascii_lowercase();
        t == "application" || t == "text"
    });
    (named || (textual && looks_like_header(data))).then(|| parse_mail(data))?
}

/// The bytes open with a header field (`Name: value`), as a mail does.
fn looks_like_header(data: &[u8]) -> bool {
    let line = data.split(|&b| b == b'\n').next().unwrap_or_default();
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    colon > 0
        && colon < 77
        && line[..colon]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-')
}

/// `bytes` parsed as a mail, when it has the headers of one (From, and Subject or Date).
fn parse_mail(bytes: &[u8]) -> Option<Message<'_>> {
    let m = super::parser().parse(bytes)?;
    (m.from().is_some() && (m.subject().is_some() || m.date().is_some())).then_some(m)
}

fn part_text(p: &MessagePart<'_>, limits: &Limits) -> Option<String> {
    match &p.body {
        PartType::Text(t) => Some(truncate(t, limits.max_scan_bytes).to_string()),
        PartType::Html(h) => Some(text::html_to_text(truncate(h, limits.max_scan_bytes))),
        _ => None,
    }
}

/// Splits a text body into the writer's own text and the quoted or forwarded text of
/// earlier mails: `>` lines, and everything after an attribution ("On ... wrote:"), an
/// "Original Message" or "Forwarded message" separator, Outlook's inline-forward rule (a
/// line of underscores) or an Outlook "From:/Sent:" block.
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
    // Every opening below starts with one of these bytes: most lines are let go uncopied.
    if !t
        .bytes()
        .next()
        .is_some_and(|b| matches!(b.to_ascii_lowercase(), b'o' | b'-' | b'b' | b'f' | b'_'))
    {
        return false;
    }
    let l = t.to_ascii_lowercase();
    (l.starts_with("on ") && l.ends_with("wrote:"))
        || (l.contains("original message") && l.starts_with('-'))
        || (l.contains("forwarded message") && l.starts_with('-'))
        || l.starts_with("begin forwarded message")
        || (prev_blank && l.starts_with("from:") && l.contains('@'))
        || (l.len() >= 10 && l.bytes().all(|b| b == b'_'))
        || (l.starts_with("from:") && l.contains("sent:"))
}
#[cfg(test)]
mod tests;
