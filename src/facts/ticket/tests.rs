//! Tests of finding the ticket number: the patterns, the order of the parts searched, the
//! containers opened (attached mail, `.eml` under another type, TNEF) and quoted text.
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
    format!("From: a@example.in\r\nTo: bid.ra@gem.gov.in\r\nSubject: {subject}\r\n\r\n{body}\r\n")
}

#[test]
fn shipped_rules_use_these_patterns() {
    let text = include_str!("../../../rules/gem.toml");
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

/// Encodes `body` as a whole mail in one of the forms senders use.
fn in_form(form: &str, body: &str) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(body.as_bytes());
    match form {
        "plain" => format!(
            "From: a@example.in\r\nSubject: help\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n"
        ),
        "base64" => format!(
            "From: a@example.in\r\nSubject: help\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n"
        ),
        "html" => format!(
            "From: a@example.in\r\nSubject: help\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            base64::engine::general_purpose::STANDARD.encode(format!(
                "<html><body><p>Sir,</p><p>{body}</p></body></html>"
            ))
        ),
        "subject" => {
            format!("From: a@example.in\r\nSubject: =?utf-8?b?{b64}?=\r\n\r\nno number here\r\n")
        }
        _ => panic!("{form}"),
    }
}

#[test]
fn numbers_as_people_write_them_in_every_form() {
    for text in [
        "Ticket No:- 2024-1234567",
        "Ticket No.:- 2024-1234567",
        "Ticket No.- 2024-1234567",
        "Complaint No.:-2024-1234567",
        "Ticket № 2024-1234567",
        "Ticket Nr. 2024-1234567",
        "my ticket number is 2024-1234567",
        "ticket no. is 2024-1234567",
        "Ticket (2024-1234567)",
        "Ticket No: [2024-1234567]",
        "Grievance No. 2024-1234567",
        "Ticket No: 2024\u{2013}1234567",
        "Ticket No: 2024\u{2011}1234567",
        "Ticket No: 2024\u{2212}1234567",
        "Ticket No: 2024\u{FF0D}1234567",
        "Ticket No: ２０２４－１２３４５６７",
        "Ticket No: २०२४-१२३४५६७",
        "टिकट संख्या: 2024-1234567",
        "शिकायत संख्या २०२४-१२३४५६७ है",
        "टिकट नं. 2024-1234567",
        "टिकट नंबर 2024-1234567",
        "Ticket No: 2024-1234567Pending",
        "Ticket No: 2024-1234567, still open",
        "Ticket No: 2024-1234567.",
        "Ticket No: 2024-12\u{00AD}34567",
    ] {
        for form in ["plain", "base64", "html", "subject"] {
            let want = if form == "html" {
                TicketSource::Html
            } else if form == "subject" {
                TicketSource::Subject
            } else {
                TicketSource::Body
            };
            assert_eq!(
                find(&in_form(form, text)),
                Some(("2024-1234567".into(), want)),
                "{form}: {text}"
            );
        }
    }
}

#[test]
fn near_misses_stay_near_misses_after_normalisation() {
    for text in [
        "Ticket No: 2024\u{2013}12345678",
        "Ticket No: २०२४-१२३४५६७८",
        "Ticket No: 2024-1234567\u{2013}01",
        "Bid GEM/२०२४/B/1234567",
        "Ticket No: GEM/2024\u{2013}1234567",
        "amount Rs. 2024-1234567,50",
        "Ticket No: 2024-1234567/B",
        "ticketing 2024-1234567",
        "Call 1800\u{2013}419\u{2013}3436",
    ] {
        for form in ["plain", "html"] {
            assert_eq!(find(&in_form(form, text)), None, "{form}: {text}");
        }
    }
}

#[test]
fn html_cells_never_merge_into_the_number() {
    let html = "From: a@example.in\r\nSubject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/html\r\n\r\n<table><tr><td>Ticket No</td><td>2024-1234567</td><td>5</td></tr></table>\r\n";
    // Without cell boundaries this reads "Ticket No2024-12345675": no ticket, or a wrong one.
    assert_eq!(
        find(html),
        Some(("2024-1234567".into(), TicketSource::Html))
    );
    let html = "From: a@example.in\r\nSubject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/html\r\n\r\n<div>Ticket No: 2024-1234567</div><div>8 days pending</div>\r\n";
    assert_eq!(
        find(html),
        Some(("2024-1234567".into(), TicketSource::Html))
    );
}

#[test]
fn outlook_forward_separators_start_quoted_text() {
    for sep in [
        "________________________________\r\nFrom: GeM Helpdesk <helpdesk@gem.test>\r\nSent: Friday, 30 October 2026 16:45\r\n",
        "From: GeM Helpdesk <helpdesk@gem.test> Sent: Friday, 30 October 2026 16:45\r\n",
    ] {
        let body = format!(
            "Please see below.\r\n{sep}Subject: registered\r\n\r\nTicket No: 2024-7654321\r\n"
        );
        assert_eq!(
            find(&plain("Fw: registered", &body)),
            Some(("2024-7654321".into(), TicketSource::Quoted)),
            "{sep}"
        );
    }
}

#[test]
fn attached_mail_under_other_content_types() {
    let inner = "From: GeM Helpdesk <helpdesk@gem.test>\r\nSubject: Your complaint has been registered\r\nDate: Fri, 30 Oct 2026 16:45:00 +0530\r\n\r\nTicket No: 2024-7654321\r\n";
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(inner);
    for (ct, disposition) in [
        (
            "application/octet-stream; name=\"ack.eml\"",
            "attachment; filename=\"ack.eml\"",
        ),
        ("application/octet-stream", "attachment"),
        (
            "text/plain; name=\"ack.txt\"",
            "attachment; filename=\"ack.txt\"",
        ),
    ] {
        let raw = format!(
            "From: a@example.in\r\nSubject: Fw: ack\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b\r\nContent-Type: {ct}\r\nContent-Disposition: {disposition}\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--b--\r\n"
        );
        let got = find(&raw);
        // A text/plain attachment is read as a body part by mail-parser: either way the
        // number is found, never lost.
        assert!(
            matches!(&got, Some((n, TicketSource::Attached | TicketSource::Body)) if n == "2024-7654321"),
            "{ct}: {got:?}"
        );
    }
    // A binary attachment that is not a mail is not parsed as one.
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("%PDF-1.4\r\n{inner}"));
    let raw = format!(
        "From: a@example.in\r\nSubject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--b--\r\n"
    );
    assert_eq!(find(&raw), None);
}

#[test]
fn many_parts_cost_at_most_the_part_limit() {
    let mut raw = String::from(
        "From: a@example.in\r\nSubject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n",
    );
    for _ in 0..5_000 {
        raw.push_str("--b\r\nContent-Type: application/octet-stream\r\n\r\nFrom: x\r\n");
    }
    raw.push_str("--b\r\nContent-Type: message/rfc822\r\n\r\nFrom: h@gem.test\r\nSubject: s\r\n\r\nTicket No: 2024-1234567\r\n--b--\r\n");
    let msg = MessageParser::default()
        .parse(raw.as_bytes())
        .unwrap_or_else(|| panic!("parse"));
    let limits = Limits {
        max_parts: 100,
        ..Limits::default()
    };
    // The attached mail lies beyond the first 100 parts: not searched.
    assert_eq!(find_ticket(&msg, &gem(), &limits), None);
    assert!(
        find_ticket(
            &msg,
            &gem(),
            &Limits {
                max_parts: 10_000,
                ..Limits::default()
            }
        )
        .is_some()
    );
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

/// A TNEF stream (MS-OXTNEF 2.1) whose only text is `attBody`.
fn tnef_with_body(body: &str) -> Vec<u8> {
    let mut v = vec![0x78, 0x9F, 0x3E, 0x22, 0x01, 0x00];
    let mut data = body.as_bytes().to_vec();
    data.push(0);
    v.push(1);
    v.extend_from_slice(&0x0002_800C_u32.to_le_bytes());
    v.extend_from_slice(&(data.len() as u32).to_le_bytes());
    v.extend_from_slice(&data);
    let sum = data.iter().fold(0u16, |s, &b| s.wrapping_add(u16::from(b)));
    v.extend_from_slice(&sum.to_le_bytes());
    v
}

/// The HTML alternative is converted only when the plain body holds no ticket (issue #16);
/// its texts still rank where they did when it was read first: after the plain body's,
/// before a TNEF body's.
#[test]
fn html_alternative_texts_rank_between_the_plain_body_and_tnef() {
    use base64::Engine as _;
    let tnef = base64::engine::general_purpose::STANDARD.encode(tnef_with_body(
        "See below\r\n\r\nOn Mon, 1 Jan 2026 Helpdesk wrote:\r\n> Ticket No: 2024-3333333",
    ));
    let mail = |plain: &str, html: &str| {
        format!(
            "From: a@example.in\r\nSubject: help\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=m\r\n\r\n--m\r\n\
             Content-Type: multipart/alternative; boundary=a\r\n\r\n--a\r\n\
             Content-Type: text/plain\r\n\r\n{plain}\r\n--a\r\n\
             Content-Type: text/html\r\n\r\n{html}\r\n--a--\r\n--m\r\n\
             Content-Type: application/ms-tnef\r\nContent-Transfer-Encoding: base64\r\n\r\n\
             {tnef}\r\n--m--\r\n"
        )
    };
    let quoting = |n: &str| {
        format!(
            "<p>See below</p><blockquote>On Mon, 1 Jan 2026 Helpdesk wrote:<br>&gt; Ticket No: {n}</blockquote>"
        )
    };
    // Quoted in the plain body, quoted in the HTML, quoted in the TNEF: the plain body's.
    assert_eq!(
        find(&mail(
            "See below\r\n\r\nOn Mon, 1 Jan 2026 Helpdesk wrote:\r\n> Ticket No: 2024-1111111",
            &quoting("2024-2222222")
        )),
        Some(("2024-1111111".into(), TicketSource::Quoted))
    );
    // Nothing in the plain body: the HTML alternative's quoted number before the TNEF's.
    assert_eq!(
        find(&mail("See below", &quoting("2024-2222222"))),
        Some(("2024-2222222".into(), TicketSource::Quoted))
    );
    assert_eq!(
        find(&mail("See below", "<p>See below</p>")),
        Some(("2024-3333333".into(), TicketSource::Quoted))
    );
    // A number in the HTML's own text ranks as HTML, before any quoted text.
    assert_eq!(
        find(&mail(
            "See below\r\n\r\nOn Mon, 1 Jan 2026 Helpdesk wrote:\r\n> Ticket No: 2024-1111111",
            "<p>Ticket No: 2024-2222222</p>"
        )),
        Some(("2024-2222222".into(), TicketSource::Html))
    );
}
