//! Recognising automatic mail (SPEC 3): RFC 3834 auto-replies, out-of-office notes,
//! bounces and DSNs, feedback reports, mailing-list and bulk mail. Such mail is never
//! answered or redirected. Only evidence of a machine counts: a header that *asks* others
//! not to auto-reply (`X-Auto-Response-Suppress`, set by Exchange on ordinary mail) is not
//! evidence, and neither is a person's text that mentions "out of office" in passing.
//! Ticket numbers and desks are elsewhere (`ticket`, `suggest`).

use mail_parser::{Message, MimeHeaders};

/// Why `msg` is automatic (the evidence, e.g. "Auto-Submitted: auto-replied", shown by
/// `classify`), or `None` for mail a person wrote. Checked in this order: structured
/// headers (values compared without RFC 5322 comments and folding, case-insensitively),
/// report parts (RFC 3464/8098 multipart/report), the sender (null or robot addresses), the
/// subject (after gateway tags and reply prefixes), and the body's opening sentence.
pub fn automatic_reason(msg: &Message<'_>) -> Option<String> {
    automatic_reason_with_body(msg, || super::text::first_body(msg))
}

/// [`automatic_reason`] with the first text body of `msg` ([`super::text::first_body`])
/// from the caller, who has it already; asked for only when no header says it.
pub fn automatic_reason_with_body<'b>(
    msg: &Message<'_>,
    body: impl FnOnce() -> Option<std::borrow::Cow<'b, str>>,
) -> Option<String> {
    header_evidence(msg)
        .or_else(|| report_evidence(msg))
        .or_else(|| sender_evidence(msg))
        .or_else(|| subject_evidence(msg))
        .or_else(|| body_evidence(&body()?))
}

/// The raw values of every header named `name` (any case), unfolded, RFC 5322 comments
/// removed, trimmed.
fn structured<'a>(msg: &'a Message<'_>, name: &'a str) -> impl Iterator<Item = String> + 'a {
    msg.headers()
        .iter()
        .filter(move |h| h.name.as_str().eq_ignore_ascii_case(name))
        .map(|h| {
            let raw = msg
                .raw_message()
                .get(h.offset_start as usize..h.offset_end as usize)
                .unwrap_or_default();
            without_comments(&String::from_utf8_lossy(raw))
        })
}

/// `value` unfolded, without RFC 5322 comments (nested, with quoted pairs), whitespace runs
/// made one space, trimmed. Quoted strings are kept as they are.
pub fn without_comments(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut depth = 0usize;
    let mut quoted = false;
    let mut escaped = false;
    for c in value.chars() {
        if escaped {
            escaped = false;
            if depth == 0 {
                out.push(c);
            }
            continue;
        }
        match c {
            '\\' if quoted || depth > 0 => {
                escaped = true;
                if depth == 0 {
                    out.push(c);
                }
            }
            '"' if depth == 0 => {
                quoted = !quoted;
                out.push(c);
            }
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => depth -= 1,
            _ if depth > 0 => {}
            c if c.is_whitespace() => {
                if !out.ends_with(' ') {
                    out.push(' ');
                }
            }
            c => out.push(c),
        }
    }
    out.trim().to_string()
}

fn header_evidence(msg: &Message<'_>) -> Option<String> {
    // The names present, read once: most of those looked for one by one below are absent.
    let present: Vec<&str> = msg.headers().iter().map(|h| h.name.as_str()).collect();
    let has = |name: &str| present.iter().any(|p| p.eq_ignore_ascii_case(name));
    for v in structured(msg, "Auto-Submitted") {
        let token = v
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if token != "no" && !token.is_empty() {
            return Some(format!("Auto-Submitted: {token}"));
        }
    }
    for v in structured(msg, "Precedence") {
        let v = v.to_ascii_lowercase();
        if ["bulk", "list", "junk", "auto_reply", "auto-reply"].contains(&v.as_str()) {
            return Some(format!("Precedence: {v}"));
        }
    }
    // Headers whose presence is the evidence (a value of "no" or "false" says otherwise).
    for name in [
        "X-Autoreply",
        "X-Autorespond",
        "X-Auto-Reply",
        "X-Autoresponder",
        "X-Failed-Recipients",
        "X-Mailer-Daemon",
        "List-Id",
        "List-Unsubscribe",
        "List-Post",
        "List-Subscribe",
        "Mailing-List",
        "X-MLServer",
        "X-ML-Name",
        "X-Loop-Detect",
        "Feedback-Type",
    ] {
        if has(name)
            && let Some(v) = structured(msg, name).next()
        {
            let l = v.to_ascii_lowercase();
            if !matches!(l.as_str(), "no" | "false" | "0") {
                return Some(format!("{name} header"));
            }
        }
    }
    for v in structured(msg, "Return-Path") {
        let addr = v.trim_matches(['<', '>', ' ']).to_ascii_lowercase();
        if addr.is_empty() {
            return Some("null return path".into());
        }
        if is_robot(&addr) {
            return Some(format!("Return-Path {addr}"));
        }
    }
    None
}

fn report_evidence(msg: &Message<'_>) -> Option<String> {
    let report = msg.parts.iter().any(|p| {
        p.content_type().is_some_and(|ct| {
            let (t, s) = (
                ct.ctype().to_ascii_lowercase(),
                ct.subtype().unwrap_or_default().to_ascii_lowercase(),
            );
            (t == "multipart" && s == "report")
                || (t == "message"
                    && (s == "delivery-status"
                        || s == "disposition-notification"
                        || s == "feedback-report"))
        })
    });
    report.then(|| "delivery, disposition or feedback report".to_string())
}

/// A sender with no address (`From: MAILER-DAEMON <>`) or a robot's address.
fn sender_evidence(msg: &Message<'_>) -> Option<String> {
    for raw in structured(msg, "From") {
        let r = raw.replace(' ', "");
        if r.ends_with("<>") || r.is_empty() {
            return Some("sender without an address".into());
        }
    }
    let from = msg
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    is_robot(&from).then(|| format!("sender {from}"))
}

/// Whether `address` (lower-case) belongs to a mail system rather than a person: its local
/// part, without `-`, `_` and `.`, names a mailer daemon, postmaster, no-reply or bounce
/// robot, or an MTA's mail service (`E500_SMTP_Mail_Service`).
fn is_robot(address: &str) -> bool {
    let local = address.rsplit_once('@').map_or(address, |(l, _)| l);
    let l: String = local
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | '.'))
        .collect();
    l.contains("mailerdaemon")
        || l.contains("postmaster")
        || l.starts_with("noreply")
        || l.starts_with("donotreply")
        || l.starts_with("bounce")
        || l.ends_with("smtpmailservice")
        || l == "mailerdeamon"
        || l == "mdaemon"
        || l == "mailadmin"
}

/// Gateway tags (`[EXTERNAL]`, `[SPAM?]`, `*EXTERNAL*`) and reply or forward prefixes
/// (`Re:`, `AW:`, `SV:`, `VS:`, `Fwd:`, `回复:` …) taken off the front of a subject, in any
/// order and number. Lower-cased.
pub fn subject_core(subject: &str) -> String {
    const PREFIXES: [&str; 18] = [
        "re", "fw", "fwd", "aw", "wg", "sv", "vs", "antw", "doorst", "tr", "rif", "réf", "ref",
        "odp", "res", "enc", "r", "i",
    ];
    let mut s = subject.trim().to_lowercase();
    loop {
        let before = s.len();
        for (open, close) in [('[', ']'), ('*', '*'), ('(', ')')] {
            if let Some(rest) = s.strip_prefix(open)
                && let Some(end) = rest.find(close)
                && end <= 40
            {
                s = rest[end + close.len_utf8()..].trim_start().to_string();
            }
        }
        if let Some(colon) = s.find([':', '：']) {
            let head = s[..colon].trim();
            // `Re[2]:` and `RE(3):` count like `Re:`.
            let head = head.split(['[', '(']).next().unwrap_or_default().trim();
            if PREFIXES.contains(&head) || ["回复", "答复", "转发", "転送"].contains(&head)
            {
                let skip = s[colon..].chars().next().map_or(1, char::len_utf8);
                s = s[colon + skip..].trim_start().to_string();
            }
        }
        if s.len() == before {
            return s;
        }
    }
}

/// Subject openings of auto-replies (RFC 3834 3.1.5 `Auto:` and what clients write in
/// common languages). Each must be followed by the end, punctuation or a space.
const AUTO_REPLY_SUBJECTS: [&str; 22] = [
    "auto:",
    "automatic reply",
    "automated reply",
    "auto reply",
    "auto-reply",
    "autoreply",
    "auto response",
    "auto-response",
    "autoresponse",
    "abwesenheitsnotiz",
    "automatische antwort",
    "réponse automatique",
    "respuesta automática",
    "risposta automatica",
    "automatisch antwoord",
    "resposta automática",
    "autosvar",
    "automaattinen vastaus",
    "odpowiedź automatyczna",
    "स्वचालित उत्तर",
    "自动回复",
    "自動応答",
];

/// Bounce and feedback-report subjects of common MTAs (Postfix, Exim, Sendmail, qmail,
/// Exchange, Domino, Hotmail JMRP).
const BOUNCE_SUBJECTS: [&str; 22] = [
    "mail delivery failed",
    "mail delivery failure",
    "mail delivery system",
    "delivery status notification",
    "delivery failure",
    "delivery failed",
    "delivery has failed",
    "delivery notification: delivery has failed",
    "returned mail",
    "undeliverable:",
    "undeliverable mail",
    "undeliverable message",
    "undelivered mail",
    "mail could not be delivered",
    "message could not be delivered",
    "message not delivered",
    "failure notice",
    "non-delivery",
    "nondeliverable",
    "warning: could not send message",
    "delayed mail",
    "complaint about message from",
];

fn subject_evidence(msg: &Message<'_>) -> Option<String> {
    let core = subject_core(msg.subject().unwrap_or_default());
    for p in AUTO_REPLY_SUBJECTS {
        if starts_with_phrase(&core, p) {
            return Some(format!("subject \"{p}\""));
        }
    }
    // "Out of office" / "Out of the office" as the subject's head: `Out of Office: …`,
    // `Out of the office until 5 Dec`, not `Out of office hours support`.
    for p in ["out of office", "out of the office"] {
        if let Some(rest) = core.strip_prefix(p) {
            let rest = rest.trim_start();
            let follows = [
                "",
                "reply",
                "re:",
                "until",
                "till",
                "from",
                "on",
                "notice",
                "autoreply",
            ];
            if rest.is_empty()
                || rest.starts_with([':', '-', '–', '(', '/', ',', '|'])
                || follows
                    .iter()
                    .any(|f| !f.is_empty() && starts_with_phrase(rest, f))
            {
                return Some(format!("subject \"{p}\""));
            }
        }
    }
    for p in BOUNCE_SUBJECTS {
        if starts_with_phrase(&core, p) {
            return Some(format!("bounce subject \"{p}\""));
        }
    }
    None
}

/// `text` starts with `phrase`, and the phrase ends at a word boundary.
fn starts_with_phrase(text: &str, phrase: &str) -> bool {
    text.strip_prefix(phrase).is_some_and(|rest| {
        phrase.ends_with(':') || rest.chars().next().is_none_or(|c| !c.is_alphanumeric())
    })
}

/// Openings of an auto-reply's body: what a client writes when the user sets no subject.
const AUTO_REPLY_OPENINGS: [&str; 12] = [
    "this is an automatic reply",
    "this is an automated reply",
    "this is an auto-reply",
    "this is an autoreply",
    "this is an automatic response",
    "this is an automated response",
    "this is an automatically generated",
    "this is an auto-generated",
    "this message was automatically generated",
    "this is an automated message",
    "this is an automatic message",
    "यह एक स्वचालित",
];

/// The body opens (its first sentence) by saying it is an automatic reply or that the
/// writer is out of the office.
fn body_evidence(body: &str) -> Option<String> {
    let start = body.trim_start();
    let first: String = start.chars().take(300).collect::<String>().to_lowercase();
    let first = first.replace(['\r', '\n'], " ");
    // The first two sentences: "Thank you for your email. I am out of the office …".
    for sentence in first.split(['.', '!']).take(2) {
        let opening = sentence.trim();
        let opening = [
            "hello,",
            "hi,",
            "dear sender,",
            "dear sir/madam,",
            "dear sir,",
        ]
        .iter()
        .find_map(|g| opening.strip_prefix(g))
        .unwrap_or(opening)
        .trim();
        for p in AUTO_REPLY_OPENINGS {
            if opening.starts_with(p) {
                return Some(format!("body opens \"{p}\""));
            }
        }
        for p in [
            "i am out of office",
            "i am out of the office",
            "i'm out of the office",
            "i'm out of office",
            "i am currently out of the office",
            "i am currently out of office",
            "i will be out of the office",
            "i will be out of office",
            "i am away from the office",
        ] {
            if opening.starts_with(p) && !opening.contains('?') {
                return Some(format!("body opens \"{p}\""));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::MessageParser;

    fn reason(raw: &str) -> Option<String> {
        let msg = MessageParser::default()
            .parse(raw.as_bytes())
            .unwrap_or_else(|| panic!("parse"));
        automatic_reason(&msg)
    }

    fn mail(headers: &str, subject: &str, body: &str) -> String {
        format!(
            "From: Ramesh Kumar <ramesh@example.in>\r\nTo: bid.ra@gem.gov.in\r\nSubject: {subject}\r\n{headers}\r\n{body}\r\n"
        )
    }

    #[test]
    fn markers_make_mail_automatic() {
        for (headers, want) in [
            (
                "Auto-Submitted: auto-replied\r\n",
                "Auto-Submitted: auto-replied",
            ),
            (
                "Auto-Submitted: auto-generated; foo\r\n",
                "Auto-Submitted: auto-generated",
            ),
            (
                "Auto-Submitted: (sent by a robot) Auto-Replied\r\n",
                "Auto-Submitted: auto-replied",
            ),
            (
                "Auto-Submitted:\r\n auto-notified\r\n",
                "Auto-Submitted: auto-notified",
            ),
            ("Precedence: bulk\r\n", "Precedence: bulk"),
            ("Precedence: Bulk (newsletter)\r\n", "Precedence: bulk"),
            ("List-Id: <x.lists.example.in>\r\n", "List-Id header"),
            ("X-Autoreply: yes\r\n", "X-Autoreply header"),
            ("X-MLServer: fml [fml 4.0.3]\r\n", "X-MLServer header"),
            ("Return-Path: <>\r\n", "null return path"),
            ("Return-Path: < >\r\n", "null return path"),
            (
                "Return-Path: <MAILER-DAEMON@mx.example.in>\r\n",
                "Return-Path mailer-daemon@mx.example.in",
            ),
        ] {
            let raw = mail(headers, "hi", "body");
            assert_eq!(reason(&raw).as_deref(), Some(want), "{headers}");
        }
        assert!(reason("From: a@b.in\r\nSubject: x\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--b--\r\n").is_some());
    }

    #[test]
    fn robot_senders_in_their_variants() {
        for from in [
            "MAILER-DAEMON@mx.example.in",
            "Mail Delivery System <Mailer-Daemon@mx.example.in>",
            "postmaster@example.in",
            "post_master@vtext.example.com",
            "E500_SMTP_Mail_Service@mail.example.jp",
            "noreply@example.in",
            "no-reply@example.in",
            "do_not_reply@example.in",
            "bounces+123@mailer.example.in",
            "MAILER-DAEMON <>",
            "<>",
        ] {
            let raw =
                format!("From: {from}\r\nTo: bid.ra@gem.gov.in\r\nSubject: hello\r\n\r\nx\r\n");
            assert!(reason(&raw).is_some(), "{from}");
        }
        for from in [
            "Ramesh <ramesh@example.in>",
            "postmistress.rao@example.in",
            "bounty@example.in",
        ] {
            let raw =
                format!("From: {from}\r\nTo: bid.ra@gem.gov.in\r\nSubject: hello\r\n\r\nx\r\n");
            assert_eq!(reason(&raw), None, "{from}");
        }
    }

    #[test]
    fn requests_and_negations_are_a_person() {
        for headers in [
            "Auto-Submitted: no\r\n",
            "Auto-Submitted: No (typed by hand)\r\n",
            "Auto-Submitted: (comment) no\r\n",
            "Auto-Submitted:\r\n no\r\n",
            "X-Auto-Response-Suppress: All\r\n",
            "X-Auto-Response-Suppress: DR, RN, NRN, OOF, AutoReply\r\n",
            "X-Autoreply: no\r\n",
            "Precedence: first-class\r\n",
            "Return-Path: <ramesh@example.in>\r\n",
        ] {
            assert_eq!(
                reason(&mail(headers, "Re: bid", "hello")),
                None,
                "{headers}"
            );
        }
    }

    #[test]
    fn headerless_auto_reply_subjects() {
        for subject in [
            "Automatic reply: Your bid query",
            "[EXTERNAL] Automatic reply: Your bid query",
            "[SPAM?] [EXTERNAL] Auto: [No CRM ticket] bid",
            "Auto: [No CRM ticket] Bid document upload issue",
            "AW: Abwesenheitsnotiz: Rechnung",
            "Out of Office: [No CRM ticket] Bid document upload issue",
            "Out of the office until 16 November",
            "OUT OF OFFICE",
            "Out of office - Suresh",
            "Autoreply: payment",
            "Réponse automatique : facture",
            "स्वचालित उत्तर: भुगतान",
            "RE: Undeliverable: [No CRM ticket] invoice",
            "Mail delivery failed: returning message to sender",
            "Fwd: Returned mail: see transcript for details",
            "failure notice",
            "Undelivered Mail Returned to Sender",
            "Delivery Status Notification (Failure)",
            "Mail could not be delivered",
            "complaint about message from 192.0.2.222",
        ] {
            assert!(reason(&mail("", subject, "hello")).is_some(), "{subject}");
        }
    }

    #[test]
    fn mentions_in_passing_are_a_person() {
        for (subject, body) in [
            ("Out of office hours support needed", "Please call back."),
            ("Re: payment while I was out of office", "Still pending."),
            (
                "Undeliverable goods returned by consignee",
                "Order rejected.",
            ),
            ("Order shows undeliverable", "Ticket No: 2024-1234567"),
            ("Returned goods refund", "The order was returned."),
            ("Auto parts catalogue rejected", "Please check."),
            (
                "Automatic replies from your desk",
                "I keep getting automatic replies.",
            ),
            (
                "Payment",
                "I was out of the office last week, is my payment done?",
            ),
            (
                "Payment",
                "Dear Sir, your automatic reply said to write again.",
            ),
            ("Help", "Is this an automatic reply? Nobody answers."),
            ("Mail delivery to helpdesk failed?", "I wrote twice."),
        ] {
            assert_eq!(reason(&mail("", subject, body)), None, "{subject} / {body}");
        }
    }

    #[test]
    fn body_openings_of_auto_replies() {
        for body in [
            "This is an automatic reply. I am away until Monday.",
            "Hello,\r\n\r\nThis is an automated response to your message.",
            "I am out of the office until 16 November with no access to mail.",
            "I am currently out of office and will reply on my return.",
            "Thank you for your email. I am out of the office until Monday.",
        ] {
            assert!(reason(&mail("", "Re: your bid", body)).is_some(), "{body}");
        }
    }

    #[test]
    fn comments_and_folding_are_removed() {
        assert_eq!(without_comments("no (typed (by) hand)"), "no");
        assert_eq!(
            without_comments("(x) auto-replied\r\n ; a=b"),
            "auto-replied ; a=b"
        );
        assert_eq!(without_comments("\"a (b)\" c"), "\"a (b)\" c");
        assert_eq!(without_comments("no (\\) still comment)"), "no");
    }

    #[test]
    fn subject_core_takes_tags_and_prefixes_off() {
        assert_eq!(subject_core("[EXTERNAL] RE: Fwd: AW: hello"), "hello");
        assert_eq!(subject_core("SV: VS: hei"), "hei");
        assert_eq!(subject_core("Re[2]: x"), "x");
        assert_eq!(subject_core("回复：付款"), "付款");
        assert_eq!(subject_core("Report: RA"), "report: ra");
    }
}
