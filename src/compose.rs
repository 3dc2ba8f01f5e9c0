//! Outgoing mail as bytes (SPEC 4), pure: the redirect or forward (a note from a template,
//! the original attached unchanged as message/rfc822, threaded, marked Auto-Submitted and
//! as ticketgate's own) and the plain reply. lettre's builder does the header encoding;
//! everything that came from a mail is sanitized first, so nothing can add a header.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use lettre::Address;
use lettre::message::header::{ContentTransferEncoding, ContentType, HeaderName, HeaderValue};
use lettre::message::{Body, Mailbox, Message, MultiPart, MultiPartKind, SinglePart};
use mail_parser::MessageParser;

/// Longest line (octets, without CRLF) allowed by RFC 5322 §2.1.1.
const MAX_LINE: usize = 998;
/// References kept from the original (the newest ones).
const MAX_REFERENCES: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Redirect,
    Forward,
    Reply,
}

/// What to send; the caller renders subject and body from templates.
#[derive(Debug, Clone)]
pub struct OutgoingSpec<'a> {
    pub kind: Kind,
    pub from: &'a str,
    pub from_name: Option<&'a str>,
    pub to: &'a str,
    pub cc: Option<&'a str>,
    pub subject: &'a str,
    pub body: &'a str,
    pub original: &'a [u8],
    /// Without angle brackets; the caller derives it from the outbox id so it is stable.
    pub message_id: &'a str,
    pub date_unix: i64,
    /// Value of the `X-Ticketgate` header (the desk), which marks the mail as our own.
    pub marker: &'a str,
    /// Where the MIME boundary starts: random in production ([`random_seed`]), so a sender
    /// cannot predict it; fixed in tests. Whatever the seed, the boundary never occurs in
    /// the note or the original (RFC 2046 section 5.1.1).
    pub boundary_seed: u64,
}

/// 64 unpredictable bits for [`OutgoingSpec::boundary_seed`]: std's per-process random
/// SipHash keys (from the OS's random source) over a counter.
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::hash::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

/// A composed mail and its envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub envelope_from: String,
    pub recipients: Vec<String>,
    pub bytes: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("cannot use `{0}` as a mail address")]
    Address(String),
    #[error("cannot build the mail: {0}")]
    Build(String),
}

/// Every placeholder a template may use (README, "rules reference"); `check` refuses others,
/// so a typo such as `{responsable_desk}` never reaches a citizen verbatim.
pub const PLACEHOLDERS: [&str; 21] = [
    "desk",
    "desk_name",
    "desk_address",
    "helpdesk",
    "helpdesk_name",
    "helpdesk_phone",
    "helpdesk_web",
    "sender",
    "subject",
    "message_id",
    "date",
    "ticket",
    "ticket_created",
    "ticket_ready",
    "helpdesk_hours",
    "responsible_desk",
    "responsible_address",
    "responsible_nature",
    "suggested_desk",
    "suggested_address",
    "suggested_nature",
];

/// A piece of a template, as [`pieces`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'t> {
    /// Literal text (`{{` and `}}` already stand for one brace).
    Text(&'t str),
    /// A `{name}` placeholder starting at byte `at` of the template.
    Placeholder { at: usize, name: &'t str },
}

/// The template read once, left to right, into literal text and `{name}` placeholders (a
/// name is ASCII letters, digits, `_` and `-`); `{{` and `}}` are literal braces, any other
/// brace is text. [`render`] and [`placeholders`] both read templates through this.
pub fn pieces(template: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let (mut text, mut at) = (0, 0);
    while let Some(i) = template[at..].find(['{', '}']) {
        let i = at + i;
        let tail = &template[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push(Piece::Text(&template[text..=i]));
            (text, at) = (i + 2, i + 2);
            continue;
        }
        if tail.starts_with('{')
            && let Some(end) = tail.find('}')
        {
            let name = &tail[1..end];
            if !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                if text < i {
                    out.push(Piece::Text(&template[text..i]));
                }
                out.push(Piece::Placeholder { at: i, name });
                (text, at) = (i + end + 1, i + end + 1);
                continue;
            }
        }
        at = i + 1;
    }
    if text < template.len() {
        out.push(Piece::Text(&template[text..]));
    }
    out
}

/// The `{name}` placeholders of `template` as [`render`] reads them (`{{` and `}}` are
/// literal braces): (byte offset of the `{`, name).
pub fn placeholders(template: &str) -> Vec<(usize, &str)> {
    pieces(template)
        .into_iter()
        .filter_map(|p| match p {
            Piece::Placeholder { at, name } => Some((at, name)),
            Piece::Text(_) => None,
        })
        .collect()
}

/// Fills `{name}` placeholders from `vars`; unknown names stay as written; `{{` and `}}`
/// stand for literal braces.
pub fn render(template: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    for piece in pieces(template) {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Placeholder { name, .. } => match vars.get(name) {
                Some(v) => out.push_str(v),
                None => {
                    out.push('{');
                    out.push_str(name);
                    out.push('}');
                }
            },
        }
    }
    out
}

/// Header text from untrusted input: control characters (CR, LF, NUL, ...) become spaces,
/// runs of space collapse, length is bounded. No header can be smuggled in.
pub fn header_text(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    let mut space = false;
    for c in s.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if c == ' ' {
            if space {
                continue;
            }
            space = true;
        } else {
            space = false;
        }
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out.trim().to_string()
}

/// A message id safe to put in a header: printable ASCII without `<>`, spaces or controls.
fn msg_id(s: &str) -> Option<String> {
    let id: String = s
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_string();
    let ok = !id.is_empty()
        && id.len() <= 250
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>');
    ok.then(|| format!("<{id}>"))
}

fn address(a: &str) -> Result<Address, ComposeError> {
    a.trim()
        .parse::<Address>()
        .map_err(|_| ComposeError::Address(header_text(a, 200)))
}

/// Builds the mail. Errors only on unusable addresses; never panics on any original.
pub fn compose(spec: &OutgoingSpec<'_>) -> Result<Outgoing, ComposeError> {
    let from = address(spec.from)?;
    let to = address(spec.to)?;
    let cc = spec.cc.map(address).transpose()?;
    let name = spec
        .from_name
        .map(|n| header_text(n, 100))
        .filter(|n| !n.is_empty());
    let date = UNIX_EPOCH + Duration::from_secs(u64::try_from(spec.date_unix).unwrap_or(0));
    let mut b = Message::builder()
        .from(Mailbox::new(name, from.clone()))
        .to(Mailbox::new(None, to.clone()))
        .subject(header_text(spec.subject, 900))
        .date(date)
        .message_id(msg_id(spec.message_id));
    if let Some(cc) = &cc {
        b = b.cc(Mailbox::new(None, cc.clone()));
    }
    // Only the headers are needed (Message-ID, References): the body of a large mail is
    // not decoded again here.
    let original = MessageParser::default().parse_headers(spec.original);
    if let Some(orig) = &original
        && let Some(id) = orig.message_id().and_then(msg_id)
    {
        let mut refs: Vec<String> = orig
            .references()
            .as_text_list()
            .unwrap_or_default()
            .iter()
            .filter_map(|r| msg_id(r))
            .collect();
        refs.push(id.clone());
        let keep = refs.len().saturating_sub(MAX_REFERENCES);
        b = b.in_reply_to(id).references(refs[keep..].join(" "));
    }
    let raw = |name: &str, value: &str| -> Result<HeaderValue, ComposeError> {
        let n = HeaderName::new_from_ascii(name.to_string())
            .map_err(|e| ComposeError::Build(e.to_string()))?;
        Ok(HeaderValue::new(n, header_text(value, 200)))
    };
    b = b
        .raw_header(raw("Auto-Submitted", "auto-replied")?)
        .raw_header(raw("X-Auto-Response-Suppress", "All")?)
        .raw_header(raw(crate::facts::MARKER_HEADER, spec.marker)?);
    let note = SinglePart::builder()
        .header(ContentType::TEXT_PLAIN)
        .body(flow(spec.body));
    // The original is attached as it is (message/rfc822) by splicing it into the formatted
    // mail in place of a placeholder: lettre would copy a 25 MB original twice more.
    let mut splice: Option<String> = None;
    let message = match spec.kind {
        Kind::Reply => b.singlepart(note),
        Kind::Redirect | Kind::Forward => {
            let boundary = boundary(
                spec.boundary_seed,
                &[
                    spec.body.as_bytes(),
                    spec.original,
                    spec.subject.as_bytes(),
                    spec.from_name.unwrap_or_default().as_bytes(),
                ],
            );
            let part = match attachment(spec.original) {
                Attached::AsItIs(ct) => {
                    let placeholder = format!("{boundary}.original");
                    let part = SinglePart::builder()
                        .header(ct)
                        .body(Body::dangerous_pre_encoded(
                            placeholder.clone().into_bytes(),
                            if spec.original.is_ascii() {
                                ContentTransferEncoding::SevenBit
                            } else {
                                ContentTransferEncoding::EightBit
                            },
                        ));
                    splice = Some(placeholder);
                    part
                }
                Attached::Encoded(part) => part,
            };
            let mixed = MultiPart::builder()
                .kind(MultiPartKind::Mixed)
                .boundary(boundary)
                .singlepart(note)
                .singlepart(part);
            b.multipart(mixed)
        }
    }
    .map_err(|e| ComposeError::Build(e.to_string()))?;
    let mut bytes = message.formatted();
    drop(message);
    if let Some(placeholder) = splice {
        // The attachment is the last part: its placeholder is the last occurrence.
        let at = memchr::memmem::rfind(&bytes, placeholder.as_bytes())
            .ok_or_else(|| ComposeError::Build("placeholder of the original not found".into()))?;
        let mut whole = Vec::with_capacity(bytes.len() - placeholder.len() + spec.original.len());
        whole.extend_from_slice(&bytes[..at]);
        whole.extend_from_slice(spec.original);
        whole.extend_from_slice(&bytes[at + placeholder.len()..]);
        bytes = whole;
    }
    let mut recipients = vec![to.to_string()];
    if let Some(cc) = cc {
        let cc = cc.to_string();
        if !recipients.iter().any(|r| r.eq_ignore_ascii_case(&cc))
            && !cc.eq_ignore_ascii_case(from.as_ref())
        {
            recipients.push(cc);
        }
    }
    Ok(Outgoing {
        envelope_from: from.to_string(),
        recipients,
        bytes,
    })
}

/// The note's text as a phone shows it well: the lines of each paragraph (paragraphs are
/// separated by blank lines) joined into one line, so that every client wraps it to its own
/// width, instead of a template's 72-90 column lines breaking again in the middle of a
/// phone's narrower screen (issue #15). A line that starts with white space, a list mark
/// (`-`, `*`, `•`) or a number followed by `.` or `)` keeps its own line. Long lines are
/// the transfer encoding's business (lettre chooses quoted-printable or base64).
pub fn flow(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_paragraph = false;
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            if in_paragraph {
                out.push('\n');
            }
            out.push('\n');
            in_paragraph = false;
            continue;
        }
        if in_paragraph && !starts_own_line(line) {
            out.push(' ');
        } else if in_paragraph {
            out.push('\n');
        }
        out.push_str(line);
        in_paragraph = true;
    }
    if in_paragraph {
        out.push('\n');
    }
    out
}

/// A line that [`flow`] never joins to the one before: indented, or a list item.
fn starts_own_line(line: &str) -> bool {
    if line.starts_with(char::is_whitespace) || line.starts_with(['-', '*', '•']) {
        return true;
    }
    let digits = line.chars().take_while(char::is_ascii_digit).count();
    digits > 0 && line[digits..].starts_with(['.', ')'])
}

/// How the original is attached.
enum Attached {
    /// As message/rfc822, byte for byte: the caller puts the bytes in (its content type).
    AsItIs(ContentType),
    /// As application/octet-stream in base64 (the whole part).
    Encoded(SinglePart),
}

/// The original as message/rfc822, byte for byte (RFC 2046 §5.2.1 allows only 7bit or
/// 8bit there). A mail that is not valid as such (NUL, bare CR or LF, over-long lines) is
/// attached as application/octet-stream in base64 instead, which also keeps every byte.
fn attachment(original: &[u8]) -> Attached {
    let mut line = 0usize;
    let mut valid = !original.is_empty();
    let mut prev = 0u8;
    for (i, &b) in original.iter().enumerate() {
        match b {
            0 => valid = false,
            b'\n' if prev != b'\r' => valid = false,
            b'\r' if original.get(i + 1) != Some(&b'\n') => valid = false,
            b'\n' => line = 0,
            b'\r' => {}
            _ => {
                line += 1;
                if line > MAX_LINE {
                    valid = false;
                }
            }
        }
        if !valid {
            break;
        }
        prev = b;
    }
    if valid {
        Attached::AsItIs(ContentType::parse("message/rfc822").unwrap_or(ContentType::TEXT_PLAIN))
    } else {
        let ct = ContentType::parse("application/octet-stream; name=\"original.eml\"")
            .unwrap_or(ContentType::TEXT_PLAIN);
        Attached::Encoded(
            SinglePart::builder()
                .header(ct)
                .header(lettre::message::header::ContentDisposition::attachment(
                    "original.eml",
                ))
                .body(
                    Body::new_with_encoding(original.to_vec(), ContentTransferEncoding::Base64)
                        .unwrap_or_else(Body::new),
                ),
        )
    }
}

/// A multipart boundary from `seed` that occurs in none of `parts`: a sender who plants a
/// `--boundary` line in their mail cannot make it a part of the desk's note (issue #13).
fn boundary(seed: u64, parts: &[&[u8]]) -> String {
    let mut n = seed;
    loop {
        let b = format!("=_tg_{n:016x}");
        if !parts
            .iter()
            .any(|p| memchr::memmem::find(p, b.as_bytes()).is_some())
        {
            return b;
        }
        // Another candidate (a 64-bit LCG step: every value comes up once per period).
        n = n
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::{MessageParser, PartType};

    #[test]
    fn a_paragraph_becomes_one_line_and_lists_keep_theirs() {
        let t = "Dear Helpdesk,\n\nThe mail attached below reached the desk\nwithout a ticket.  \nPlease:\n- register it\n- tell the user\n2) reply\n   indented\n\n\nThanks";
        assert_eq!(
            flow(t),
            "Dear Helpdesk,\n\nThe mail attached below reached the desk without a ticket. Please:\n- register it\n- tell the user\n2) reply\n   indented\n\n\nThanks\n"
        );
        assert_eq!(flow(""), "");
        assert_eq!(
            flow("2024 was a year\nof mail"),
            "2024 was a year of mail\n"
        );
    }

    fn spec<'a>(original: &'a [u8], subject: &'a str, cc: Option<&'a str>) -> OutgoingSpec<'a> {
        OutgoingSpec {
            kind: Kind::Redirect,
            from: "bid.ra@gem.gov.in",
            from_name: Some("GeM Bid/RA"),
            to: "helpdesk-gem@gov.in",
            cc,
            subject,
            body: "Please register a ticket.\n",
            original,
            message_id: "abc.ticketgate@gem.gov.in",
            date_unix: 1_790_000_000,
            marker: "bid-ra",
            boundary_seed: 7,
        }
    }

    const ORIGINAL: &[u8] = b"From: Ramesh <ramesh@example.in>\r\nTo: bid.ra@gem.gov.in\r\nSubject: help\r\nMessage-ID: <o1@example.in>\r\nReferences: <r0@example.in>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nHello\r\n--b1\r\nContent-Type: application/pdf; name=a.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b1--\r\n";

    #[test]
    fn redirect_carries_the_original_unchanged_and_threads_it() {
        let out = compose(&spec(
            ORIGINAL,
            "[No CRM ticket] help",
            Some("ramesh@example.in"),
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.recipients, ["helpdesk-gem@gov.in", "ramesh@example.in"]);
        assert_eq!(out.envelope_from, "bid.ra@gem.gov.in");
        let m = MessageParser::default()
            .parse(&out.bytes)
            .unwrap_or_else(|| panic!("parse"));
        assert_eq!(m.subject(), Some("[No CRM ticket] help"));
        assert_eq!(m.in_reply_to().as_text(), Some("o1@example.in"));
        assert_eq!(m.references().as_text_list().map(|v| v.len()), Some(2));
        assert_eq!(
            m.header_raw("Auto-Submitted").map(str::trim),
            Some("auto-replied")
        );
        assert_eq!(m.header_raw("X-Ticketgate").map(str::trim), Some("bid-ra"));
        let attached = m
            .parts
            .iter()
            .find(|p| matches!(p.body, PartType::Message(_)))
            .unwrap_or_else(|| panic!("no rfc822 part"));
        let bytes = &out.bytes[attached.offset_body as usize..attached.offset_end as usize];
        assert_eq!(bytes, ORIGINAL);
    }

    #[test]
    fn nothing_from_the_mail_can_add_a_header_or_recipient() {
        for subject in [
            "x\r\nBcc: evil@x.test",
            "x\nTo: evil@x.test",
            "x\rCc: evil@x.test",
        ] {
            let out = compose(&spec(ORIGINAL, subject, None)).unwrap_or_else(|e| panic!("{e}"));
            let m = MessageParser::default()
                .parse(&out.bytes)
                .unwrap_or_else(|| panic!("parse"));
            assert!(m.bcc().is_none() && m.cc().is_none());
            assert_eq!(m.to().map(|t| t.iter().count()), Some(1));
            assert_eq!(out.recipients, ["helpdesk-gem@gov.in"]);
        }
        assert!(compose(&spec(ORIGINAL, "s", Some("a@b.c\r\nBcc: evil@x.test"))).is_err());
        assert!(compose(&spec(ORIGINAL, "s", Some("a@b.c, evil@x.test"))).is_err());
    }

    /// The attack of issue #13: a sender who knows how the boundary is made plants
    /// `--boundary` lines (with an HTML part) in their mail. The helpdesk must see exactly
    /// the desk's note and the original, whatever the seed.
    #[test]
    fn a_planted_boundary_cannot_add_a_part_to_the_note() {
        for seed in [7u64, 0, u64::MAX] {
            let planted = boundary(seed, &[]);
            let original = format!(
                "From: a@example.in\r\nTo: bid.ra@gem.gov.in\r\nSubject: x\r\nX-Pad: --{planted}\r\n\r\nhello\r\n--{planted}\r\nContent-Type: text/html\r\n\r\n<b>The desk verified this user: reset account X</b>\r\n--{planted}--\r\n"
            );
            let mut s = spec(original.as_bytes(), "s", None);
            s.boundary_seed = seed;
            let out = compose(&s).unwrap_or_else(|e| panic!("{e}"));
            let m = MessageParser::default()
                .parse(&out.bytes)
                .unwrap_or_else(|| panic!("parse"));
            let PartType::Multipart(top) = &m.parts[0].body else {
                panic!("multipart")
            };
            assert_eq!(top.len(), 2, "note and original only");
            assert!(matches!(m.parts[top[0] as usize].body, PartType::Text(_)));
            assert!(matches!(
                m.parts[top[1] as usize].body,
                PartType::Message(_)
            ));
            assert!(!m.parts.iter().any(|p| matches!(p.body, PartType::Html(_))));
            let attached = &m.parts[top[1] as usize];
            assert_eq!(
                &out.bytes[attached.offset_body as usize..attached.offset_end as usize],
                original.as_bytes()
            );
        }
    }

    #[test]
    fn boundaries_differ_from_mail_to_mail() {
        assert_ne!(random_seed(), random_seed());
        let a = compose(&OutgoingSpec {
            boundary_seed: random_seed(),
            ..spec(ORIGINAL, "s", None)
        });
        let b = compose(&OutgoingSpec {
            boundary_seed: random_seed(),
            ..spec(ORIGINAL, "s", None)
        });
        assert_ne!(a.map(|o| o.bytes).ok(), b.map(|o| o.bytes).ok());
    }

    #[test]
    fn an_original_with_bare_line_feeds_is_kept_byte_for_byte_in_base64() {
        let original = b"From: a@b.c\nSubject: lf only\n\nbody\n";
        let out = compose(&spec(original, "s", None)).unwrap_or_else(|e| panic!("{e}"));
        let m = MessageParser::default()
            .parse(&out.bytes)
            .unwrap_or_else(|| panic!("parse"));
        let part = m
            .attachments()
            .next()
            .unwrap_or_else(|| panic!("attachment"));
        assert_eq!(part.contents(), original);
    }

    #[test]
    fn render_fills_known_placeholders_only() {
        let mut v = BTreeMap::new();
        v.insert("desk".to_string(), "bid-ra".to_string());
        assert_eq!(
            render("to {desk} {unknown} {{desk}} }", &v),
            "to bid-ra {unknown} {desk} }"
        );
    }

    #[test]
    fn render_and_placeholders_read_braces_alike() {
        let mut v = BTreeMap::new();
        v.insert("a".to_string(), "X".to_string());
        for (t, want) in [
            ("{a}}", "X}"),
            ("{{a}", "{a}"),
            ("{x y} {a", "{x y} {a"),
            ("}{a}{", "}X{"),
            ("{}{a}", "{}X"),
            ("é{a}é", "éXé"),
        ] {
            assert_eq!(render(t, &v), want, "{t}");
        }
        assert_eq!(placeholders("{a}}{{b}{c}"), [(0, "a"), (8, "c")]);
    }

    #[test]
    fn placeholders_are_found_as_render_reads_them() {
        let t = "Dear {sender}, {{not}} {responsable_desk} {x y} {";
        assert_eq!(placeholders(t), [(5, "sender"), (23, "responsable_desk")]);
    }

    #[test]
    fn header_text_removes_controls() {
        assert_eq!(header_text("a\r\nBcc: x\u{0}y", 100), "a Bcc: x y");
    }
}
