//! Outgoing mail as bytes (SPEC 4), pure: the redirect or forward (a note from a template,
//! the original attached unchanged as message/rfc822, threaded, marked Auto-Submitted and
//! as ticketgate's own) and the plain reply. lettre's builder does the header encoding;
//! everything that came from a mail is sanitized first, so nothing can add a header.
//!
//! This file holds the outgoing mail's description and its assembly ([`compose`]); templates
//! and placeholders are in `compose/render.rs`, header sanitising in `compose/headers.rs`, the
//! attached original and the boundary in `compose/attach.rs`, the tests in `compose/tests.rs`.

mod attach;
mod headers;
mod render;
#[cfg(test)]
mod tests;

use attach::{Attached, attachment, boundary};
pub use headers::header_text;
use headers::{address, msg_id};
pub use render::{PLACEHOLDERS, Piece, flow, pieces, placeholders, render};

use std::time::{Duration, UNIX_EPOCH};

use lettre::message::header::{ContentTransferEncoding, ContentType, HeaderName, HeaderValue};
use lettre::message::{Body, Mailbox, Message, MultiPart, MultiPartKind, SinglePart};
use mail_parser::MessageParser;

/// Header that marks mail sent by ticketgate; `facts` reads it to tell the desk's own mail
/// (`Facts::own`). Re-exported as `facts::MARKER_HEADER`.
pub const MARKER_HEADER: &str = "X-Ticketgate";
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
        .raw_header(raw(MARKER_HEADER, spec.marker)?);
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
