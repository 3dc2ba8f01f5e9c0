//! Recognising automatic mail (SPEC 3): RFC 3834 auto-replies, out-of-office notes,
//! bounces and DSNs, mailing-list and bulk mail. Such mail is never answered or redirected.

use mail_parser::{Message, MimeHeaders, PartType};

/// Why `msg` is automatic (the evidence, e.g. "Auto-Submitted: auto-replied"), or `None`
/// for mail a person wrote.
pub fn automatic_reason(msg: &Message<'_>) -> Option<String> {
    let header = |name: &str| -> Option<String> {
        msg.headers()
            .iter()
            .find(|h| h.name.as_str().eq_ignore_ascii_case(name))
            .map(|h| {
                msg.raw_message()
                    .get(h.offset_start as usize..h.offset_end as usize)
                    .map(|b| String::from_utf8_lossy(b).trim().to_string())
                    .unwrap_or_default()
            })
    };
    if let Some(v) = header("Auto-Submitted") {
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
    if let Some(v) = header("Precedence") {
        let v = v.to_ascii_lowercase();
        if ["bulk", "list", "junk", "auto_reply", "auto-reply"].contains(&v.as_str()) {
            return Some(format!("Precedence: {v}"));
        }
    }
    for name in [
        "List-Id",
        "List-Unsubscribe",
        "List-Post",
        "X-Autoreply",
        "X-Autorespond",
        "X-Auto-Reply",
        "X-Failed-Recipients",
        "X-Mailer-Daemon",
    ] {
        if header(name).is_some() {
            return Some(format!("{name} header"));
        }
    }
    if let Some(v) = header("X-Auto-Response-Suppress") {
        let l = v.to_ascii_lowercase();
        if l.contains("all") || l.contains("oof") || l.contains("autoreply") {
            return Some(format!("X-Auto-Response-Suppress: {v}"));
        }
    }
    if header("Return-Path").is_some_and(|v| v.replace(' ', "") == "<>") {
        return Some("null return path".into());
    }
    let report = msg.parts.iter().any(|p| {
        p.content_type().is_some_and(|ct| {
            let (t, s) = (
                ct.ctype().to_ascii_lowercase(),
                ct.subtype().unwrap_or_default().to_ascii_lowercase(),
            );
            (t == "multipart" && s == "report")
                || (t == "message" && (s == "delivery-status" || s == "disposition-notification"))
        })
    });
    if report {
        return Some("delivery or disposition report".into());
    }
    let from = msg
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let local = from.split('@').next().unwrap_or_default();
    const ROBOTS: [&str; 10] = [
        "mailer-daemon",
        "postmaster",
        "no-reply",
        "noreply",
        "do-not-reply",
        "donotreply",
        "do_not_reply",
        "no_reply",
        "bounce",
        "bounces",
    ];
    if ROBOTS.contains(&local) || local.starts_with("bounce") {
        return Some(format!("sender {from}"));
    }
    let subject = msg
        .subject()
        .unwrap_or_default()
        .trim_start()
        .to_ascii_lowercase();
    for prefix in [
        "automatic reply:",
        "auto reply:",
        "autoreply:",
        "auto-reply:",
        "out of office:",
        "out of office reply",
    ] {
        if subject.starts_with(prefix) {
            return Some(format!("subject \"{prefix}\""));
        }
    }
    // A bounce without the usual headers: a body part carrying a returned message.
    let bounced = msg
        .parts
        .iter()
        .any(|p| matches!(p.body, PartType::Message(_)))
        && (subject.contains("undeliver")
            || subject.contains("delivery status")
            || subject.contains("returned mail")
            || subject.contains("delivery failure"));
    bounced.then(|| "bounce (subject and returned message)".to_string())
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
            ("Precedence: bulk\r\n", "Precedence: bulk"),
            ("List-Id: <x.lists.example.in>\r\n", "List-Id header"),
            ("X-Autoreply: yes\r\n", "X-Autoreply header"),
            (
                "X-Auto-Response-Suppress: All\r\n",
                "X-Auto-Response-Suppress: All",
            ),
            ("Return-Path: <>\r\n", "null return path"),
        ] {
            let raw = format!("From: a@example.in\r\nSubject: hi\r\n{headers}\r\nbody\r\n");
            assert_eq!(reason(&raw).as_deref(), Some(want), "{headers}");
        }
        assert!(
            reason("From: MAILER-DAEMON@mx.example.in\r\nSubject: failure\r\n\r\nx\r\n").is_some()
        );
        assert!(reason("From: noreply@example.in\r\nSubject: news\r\n\r\nx\r\n").is_some());
        assert!(
            reason("From: a@example.in\r\nSubject: Automatic reply: help\r\n\r\nx\r\n").is_some()
        );
        assert!(reason("From: a@b.in\r\nSubject: x\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--b--\r\n").is_some());
    }

    #[test]
    fn a_persons_mail_is_not_automatic() {
        assert_eq!(
            reason(
                "From: Ramesh <ramesh@example.in>\r\nTo: bid.ra@gem.gov.in\r\nSubject: Re: bid\r\nAuto-Submitted: no\r\n\r\nhello\r\n"
            ),
            None
        );
    }
}
