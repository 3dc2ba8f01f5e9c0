//! Tests of composing outgoing mail: headers from hostile input, threading, the attached
//! original byte for byte, boundaries, templates and flowing text.
use std::collections::BTreeMap;

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
