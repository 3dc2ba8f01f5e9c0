//! Unit tests of the batch plan on the shipped GeM rules: no server, no store; the known
//! state is given as the store would have read it. This file holds the fixtures and the
//! tests of redirects and replies; where mail goes is tested in `tests/routing.rs`.

use std::path::Path;

use super::*;
use crate::config::Secret;
use crate::facts::extract;
use crate::rules::{Deployment, compile::compile_str};

mod routing;

const NOW: i64 = 1_750_000_000;
const HOUR: i64 = 3600;

const DESKS: [(&str, &str); 7] = [
    ("buyer-registration", "buyer.registration@gem.gov.in"),
    ("seller-registration", "seller.registration@gem.gov.in"),
    ("product-upload", "upload.product@gem.gov.in"),
    ("direct-purchase", "direct.purchase@gem.gov.in"),
    ("bid-ra", "bid.ra@gem.gov.in"),
    ("order-process", "order.process@gem.gov.in"),
    ("payment-process", "payment.process@gem.gov.in"),
];
const HELPDESK: &str = "helpdesk-gem@gov.in";
const ADVISORY: &str = "broadcast-advisory";

fn policy() -> Policy {
    let text = include_str!("../../rules/gem.toml");
    let deployment = Deployment {
        desks: DESKS.iter().map(|(n, _)| n.to_string()).collect(),
    };
    let rules = compile_str(Path::new("rules/gem.toml"), text, &deployment)
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = Directory {
        desks: DESKS
            .iter()
            .map(|(n, a)| (n.to_string(), a.to_string()))
            .collect(),
        helpdesk: HELPDESK.into(),
        helpdesk_phone: "1800-419-3436".into(),
        subaddress_delimiter: "+".into(),
        ..Directory::default()
    };
    Policy { rules, dir }
}

fn desks() -> Vec<Desk> {
    DESKS
        .iter()
        .map(|(name, address)| Desk {
            name: name.to_string(),
            address: address.to_string(),
            display_name: Some(format!("GeM {name}")),
            login: name.to_string(),
            password: Secret::new("secret"),
            password_file: None,
            mailbox: "INBOX".into(),
        })
        .collect()
}

fn raw(from: &str, to: &str, subject: &str, id: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: Mon, 2 Nov 2026 10:00:00 +0530\r\n\
         Message-ID: <{id}@example.in>\r\n\r\nPlease look into it.\r\n"
    )
    .into_bytes()
}

/// Addressed to every desk: a broadcast by its headers.
fn to_all() -> String {
    DESKS.iter().map(|(_, a)| *a).collect::<Vec<_>>().join(", ")
}

fn new_mail<'m>(p: &Policy, raw: &'m [u8], desk: &str, uid: u32) -> NewMail<'m> {
    NewMail {
        key: MailKey {
            desk: desk.into(),
            uidvalidity: 1,
            uid,
        },
        facts: extract(raw, desk, &p.dir, &p.rules).unwrap_or_else(|e| panic!("{e}")),
        holders: vec![desk.to_string()],
        raw,
    }
}

fn plan(p: &Policy, desk: &str, mails: Vec<NewMail<'_>>, known: &KnownState) -> Vec<Planned> {
    let all = desks();
    let deciding = all
        .iter()
        .find(|d| d.name == desk)
        .unwrap_or_else(|| panic!("desk {desk}"));
    let desks = Desks {
        deciding,
        all: &all,
    };
    plan_batch(mails, p, desks, known, NOW, &mut || 7)
}

fn actions(p: &Planned) -> Vec<String> {
    p.record.actions.iter().map(ToString::to_string).collect()
}

/// Subject and decoded text of a composed mail.
fn text(out: &NewOutgoing) -> String {
    let m = mail_parser::MessageParser::default()
        .parse(&out.bytes)
        .unwrap_or_else(|| panic!("cannot parse {}", out.id));
    format!(
        "{}\n{}",
        m.subject().unwrap_or_default(),
        m.body_text(0).unwrap_or_default()
    )
}

fn replied(p: &Planned) -> bool {
    p.record.outbox.iter().any(|o| o.reply_claim.is_some())
}

#[test]
fn a_mail_without_ticket_is_redirected_from_its_desk_with_the_sender_in_cc() {
    let p = policy();
    let mail = raw("a@example.in", "bid.ra@gem.gov.in", "help", "m1");
    let planned = plan(
        &p,
        "bid-ra",
        vec![new_mail(&p, &mail, "bid-ra", 5)],
        &Default::default(),
    );
    let [one] = planned.as_slice() else {
        panic!("{planned:?}")
    };
    assert_eq!(
        actions(one),
        [
            "redirect:helpdesk",
            "tag:$NoTicket",
            "tag:$Redirected",
            "file:Redirected"
        ]
    );
    assert_eq!(
        imap_actions(&one.decision),
        [
            Action::Tag("$NoTicket".into()),
            Action::Tag("$Redirected".into()),
            Action::File("Redirected".into())
        ]
    );
    let r = &one.record;
    assert_eq!(
        (r.key.uid, r.redirected, r.rule.as_deref()),
        (5, true, Some("no-ticket"))
    );
    assert_eq!((r.sender.as_deref(), r.now), (Some("a@example.in"), NOW));
    let [out] = r.outbox.as_slice() else {
        panic!("{:?}", r.outbox)
    };
    assert_eq!(out.id, format!("redirect:{}:{HELPDESK}", r.group_key));
    assert_eq!(
        (out.desk.as_str(), out.envelope_from.as_str()),
        ("bid-ra", "bid.ra@gem.gov.in")
    );
    assert_eq!(out.recipients, [HELPDESK, "a@example.in"]);
    assert!(out.reply_claim.is_none());
    let text = text(out);
    assert!(text.contains("[No CRM ticket] help"), "{text}");
    assert!(text.contains("GeM bid-ra"), "desk_name filled in: {text}");
}

#[test]
fn the_same_mail_yields_the_same_outbox_ids_and_message_id_wherever_it_is_decided() {
    let p = policy();
    let mail = raw("a@example.in", "bid.ra@gem.gov.in", "help", "m1");
    let first = plan(
        &p,
        "bid-ra",
        vec![new_mail(&p, &mail, "bid-ra", 5)],
        &Default::default(),
    );
    let mut again = new_mail(&p, &mail, "bid-ra", 9);
    again.key.uidvalidity = 2;
    let second = plan(&p, "bid-ra", vec![again], &Default::default());
    let ids = |v: &[Planned]| -> Vec<String> {
        v.iter()
            .flat_map(|p| p.record.outbox.iter().map(|o| o.id.clone()))
            .collect()
    };
    assert_eq!(ids(&first), ids(&second));
    assert!(!ids(&first).is_empty());
    assert_eq!(
        first[0].record.outbox[0].bytes,
        second[0].record.outbox[0].bytes
    );
}

#[test]
fn a_reply_is_withheld_within_its_period_and_sent_once_it_is_over() {
    let p = policy();
    let period = i64::try_from(
        p.rules
            .rules
            .iter()
            .find(|r| r.name == "broadcast")
            .map_or(0, |r| r.reply_period_secs),
    )
    .unwrap_or(0);
    assert_eq!(period, 168 * HOUR, "the shipped reply_period_hours");
    let mail = raw(
        "a@example.in",
        &to_all(),
        "bid issue Ticket 2024-1234567",
        "m1",
    );
    let known = |at: i64| KnownState {
        last_reply: [(("a@example.in".to_string(), ADVISORY.to_string()), at)].into(),
        ..KnownState::default()
    };
    // Replied one second less than a period ago: withheld.
    let within = plan(
        &p,
        "bid-ra",
        vec![new_mail(&p, &mail, "bid-ra", 1)],
        &known(NOW - period + 1),
    );
    assert!(!replied(&within[0]), "{:?}", within[0].record.actions);
    assert!(
        !actions(&within[0])
            .iter()
            .any(|a| a == "reply:broadcast-advisory")
    );
    assert!(
        within[0]
            .decision
            .suppressed
            .iter()
            .any(|(a, _)| *a == Action::Reply(ADVISORY.into()))
    );
    // Exactly a period ago: the ledger would accept the claim, so it is sent.
    let over = plan(
        &p,
        "bid-ra",
        vec![new_mail(&p, &mail, "bid-ra", 1)],
        &known(NOW - period),
    );
    assert!(replied(&over[0]), "{:?}", over[0].record.actions);
    // Another sender's reply, or another template's, does not count.
    let other = KnownState {
        last_reply: [
            (("b@example.in".to_string(), ADVISORY.to_string()), NOW),
            (("a@example.in".to_string(), "other".to_string()), NOW),
        ]
        .into(),
        ..KnownState::default()
    };
    assert!(replied(
        &plan(&p, "bid-ra", vec![new_mail(&p, &mail, "bid-ra", 1)], &other)[0]
    ));
}

#[test]
fn a_later_mail_of_the_same_sender_in_the_batch_sees_the_earlier_reply() {
    let p = policy();
    let first = raw(
        "a@example.in",
        &to_all(),
        "bid issue Ticket 2024-1234567",
        "m1",
    );
    let second = raw("A@Example.in", &to_all(), "again Ticket 2024-1234568", "m2");
    let other = raw(
        "b@example.in",
        &to_all(),
        "bid issue Ticket 2024-1234569",
        "m3",
    );
    let mails = vec![
        new_mail(&p, &first, "bid-ra", 1),
        new_mail(&p, &second, "bid-ra", 2),
        new_mail(&p, &other, "bid-ra", 3),
    ];
    let planned = plan(&p, "bid-ra", mails, &Default::default());
    let got: Vec<bool> = planned.iter().map(replied).collect();
    assert_eq!(got, [true, false, true]);
}

#[test]
fn the_sender_answer_limit_counts_the_stored_answers_and_this_batchs() {
    let p = policy();
    assert_eq!(p.rules.sender_answer_limit, 10);
    let mails: Vec<Vec<u8>> = (0..3)
        .map(|i| {
            raw(
                "a@example.in",
                "bid.ra@gem.gov.in",
                "help",
                &format!("m{i}"),
            )
        })
        .collect();
    let other = raw("b@example.in", "bid.ra@gem.gov.in", "help", "mb");
    let mut batch: Vec<NewMail<'_>> = mails
        .iter()
        .enumerate()
        .map(|(i, m)| new_mail(&p, m, "bid-ra", i as u32 + 1))
        .collect();
    batch.push(new_mail(&p, &other, "bid-ra", 9));
    let known = KnownState {
        answers: [
            ("a@example.in".to_string(), 8),
            ("b@example.in".to_string(), 9),
        ]
        .into(),
        ..KnownState::default()
    };
    let planned = plan(&p, "bid-ra", batch, &known);
    let redirected: Vec<bool> = planned.iter().map(|p| p.record.redirected).collect();
    // a: 8 stored + 1 + 1 reach the limit at the third; b: 9 stored, its first is the 10th.
    assert_eq!(redirected, [true, true, false, true]);
    assert_eq!(
        actions(&planned[2]),
        ["tag:$NoTicket", "tag:$Flood", "tag:\\Flagged"]
    );
    assert!(planned[2].record.outbox.is_empty());
    // With the limit switched off, nothing is counted.
    let mut off = policy();
    off.rules.sender_answer_limit = 0;
    let flood = KnownState {
        answers: [("a@example.in".to_string(), 1000)].into(),
        ..KnownState::default()
    };
    let planned = plan(
        &off,
        "bid-ra",
        vec![new_mail(&off, &mails[0], "bid-ra", 1)],
        &flood,
    );
    assert!(planned[0].record.redirected);
}
