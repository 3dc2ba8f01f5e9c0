//! Unit tests of the batch plan on where mail goes: broadcasts and their advisory, redirect
//! and forward targets, placeholders, senders, and the ticket registry's answer (issue #17).
//! The fixtures (rules, desks, mails) are in `plan/tests.rs`.

use super::*;
#[test]
fn the_broadcast_advisory_is_sent_from_the_responsible_desk() {
    let p = policy();
    let mail = raw(
        "a@example.in",
        &to_all(),
        "payment not received for invoice Ticket 2024-1234567",
        "m1",
    );
    let planned = plan(
        &p,
        "bid-ra",
        vec![new_mail(&p, &mail, "bid-ra", 1)],
        &Default::default(),
    );
    let one = &planned[0];
    assert!(one.facts.broadcast);
    assert_eq!(
        one.facts.responsible_desk.as_deref(),
        Some("payment-process")
    );
    assert_eq!(one.record.rule.as_deref(), Some("broadcast-duplicate"));
    let [out] = one.record.outbox.as_slice() else {
        panic!("{:?}", one.record.outbox)
    };
    assert_eq!(out.desk, "payment-process");
    assert_eq!(out.envelope_from, "payment.process@gem.gov.in");
    assert_eq!(out.recipients, ["a@example.in"]);
    let claim = out.reply_claim.as_ref().unwrap_or_else(|| panic!("claim"));
    assert_eq!(
        (claim.rule.as_str(), claim.period_secs),
        (ADVISORY, 168 * HOUR)
    );
    assert_eq!(
        out.id,
        format!("reply:{ADVISORY}:a@example.in:{}", one.record.group_key)
    );
    let text = text(out);
    assert!(
        text.contains("payment-process desk (payment.process@gem.gov.in)"),
        "{text}"
    );
    assert!(text.contains("1800-419-3436"), "{text}");
}

#[test]
fn copies_seen_in_other_desks_make_a_broadcast_and_oversized_mail_ignores_them() {
    let p = policy();
    let mail = raw(
        "a@example.in",
        "bid.ra@gem.gov.in",
        "bid Ticket 2024-1234567",
        "m1",
    );
    let mut m = new_mail(&p, &mail, "bid-ra", 1);
    m.holders = vec!["order-process".into(), "payment-process".into()];
    let planned = plan(&p, "bid-ra", vec![m], &Default::default());
    assert!(planned[0].facts.broadcast && planned[0].record.broadcast);
    assert_eq!(planned[0].facts.copies_seen, 3);

    let big = NewMail {
        key: MailKey {
            desk: "bid-ra".into(),
            uidvalidity: 1,
            uid: 2,
        },
        facts: Facts::oversized("bid-ra", 30 << 20),
        holders: DESKS.iter().map(|(n, _)| n.to_string()).collect(),
        raw: &[],
    };
    let planned = plan(&p, "bid-ra", vec![big], &Default::default());
    let one = &planned[0];
    assert!(!one.facts.broadcast);
    assert_eq!(one.facts.copies_seen, 1);
    assert_eq!(actions(one), ["tag:$Oversized", "tag:\\Flagged"]);
    assert_eq!(one.record.rule.as_deref(), Some("oversized"));
    assert_eq!(
        one.record.group_key,
        format!("oversized:bid-ra:{}", 30 << 20)
    );
    assert!(one.record.outbox.is_empty());
    assert_eq!(imap_actions(&one.decision).len(), 2);
}

#[test]
fn redirect_and_forward_targets_resolve_to_addresses_or_send_nothing() {
    let mut p = policy();
    for rule in &mut p.rules.rules {
        if rule.name == "no-ticket" {
            rule.actions[0] = Action::Redirect(Target::Desk("order-process".into()));
            rule.actions
                .push(Action::Forward(Target::Address("triage@gem.gov.in".into())));
            rule.actions.push(Action::Forward(Target::SuggestedDesk));
        }
    }
    let mail = raw(
        "a@example.in",
        "bid.ra@gem.gov.in",
        "payment not received",
        "m1",
    );
    let planned = plan(
        &p,
        "bid-ra",
        vec![new_mail(&p, &mail, "bid-ra", 1)],
        &Default::default(),
    );
    let one = &planned[0];
    assert_eq!(one.facts.suggested_desk.as_deref(), Some("payment-process"));
    let sent: Vec<(&str, &[String])> = one
        .record
        .outbox
        .iter()
        .map(|o| {
            (
                o.id.split(':').next().unwrap_or(""),
                o.recipients.as_slice(),
            )
        })
        .collect();
    assert_eq!(
        sent,
        [
            (
                "redirect",
                &[
                    "order.process@gem.gov.in".to_string(),
                    "a@example.in".to_string()
                ][..]
            ),
            ("forward", &["triage@gem.gov.in".to_string()][..]),
            ("forward", &["payment.process@gem.gov.in".to_string()][..]),
        ]
    );

    let f = &one.facts;
    let t = |t: Target| target_address(&t, f, &p.dir);
    assert_eq!(t(Target::Helpdesk).as_deref(), Some(HELPDESK));
    assert_eq!(t(Target::Desk("nowhere".into())), None);
    let mut none = f.clone();
    none.suggested_desk = None;
    assert_eq!(target_address(&Target::SuggestedDesk, &none, &p.dir), None);
    // A target that resolves to nothing queues nothing, and the rest still goes out.
    let mut unknown = policy();
    for rule in &mut unknown.rules.rules {
        if rule.name == "no-ticket" {
            rule.actions[0] = Action::Redirect(Target::Desk("nowhere".into()));
        }
    }
    let planned = plan(
        &unknown,
        "bid-ra",
        vec![new_mail(&unknown, &mail, "bid-ra", 1)],
        &Default::default(),
    );
    assert!(planned[0].record.outbox.is_empty());
    assert!(planned[0].record.redirected, "journaled as decided");
}

#[test]
fn every_placeholder_has_a_value() {
    let p = policy();
    let mail = raw("a@example.in", "bid.ra@gem.gov.in", "help", "m1");
    let facts = new_mail(&p, &mail, "bid-ra", 1).facts;
    let vars = template_vars(&facts, &p, &desks()[4], NOW);
    let names: Vec<&str> = vars.keys().map(String::as_str).collect();
    let mut want = compose::PLACEHOLDERS.to_vec();
    want.sort_unstable();
    assert_eq!(names, want);
    assert_eq!(
        vars["responsible_desk"], "bid-ra",
        "a mail's own desk when no broadcast"
    );
    assert_eq!(vars["date"], "2025-06-15");
}

#[test]
fn the_batchs_senders_are_lower_cased_once_each() {
    let p = policy();
    let a = raw("A@Example.in", "bid.ra@gem.gov.in", "x", "m1");
    let b = raw("a@example.in", "bid.ra@gem.gov.in", "y", "m2");
    let facts = [
        new_mail(&p, &a, "bid-ra", 1).facts,
        new_mail(&p, &b, "bid-ra", 2).facts,
        Facts::oversized("bid-ra", 1),
    ];
    assert_eq!(senders(&facts), ["a@example.in"]);
    assert!(replies(&p.rules));
    assert_eq!(answer_window_start(&p.rules, NOW), NOW - 24 * HOUR);
}

/// Issue #17 on the shipped GeM rules: what the ticket registry's answer does to a ticket
/// mail. Plain hours, [matrix] helpdesk_hours = 48.
#[test]
fn the_registry_sends_young_and_unknown_tickets_back_to_the_helpdesk() {
    use crate::registry::{Answers, Lookup, TicketRecord, ticket_key};
    let p = policy();
    let record = |hours_ago: i64, requester: &str| {
        Lookup::Known(TicketRecord {
            created: NOW - hours_ago * HOUR,
            requester: Some(requester.into()),
            state: Some("Open".into()),
        })
    };
    let mut answers = Answers::new();
    answers.insert(ticket_key("2026-1000001"), record(5, "meena@rites.co.in"));
    answers.insert(ticket_key("2026-1000002"), Lookup::Unknown);
    answers.insert(ticket_key("2026-1000003"), record(72, "someone@else.in"));
    answers.insert(ticket_key("2026-1000004"), record(72, "clerk@rites.co.in"));
    answers.insert(
        ticket_key("2026-1000005"),
        Lookup::Unavailable("cannot read /srv/tickets.csv".into()),
    );
    let from = "Meena <meena@rites.co.in>";
    let mails: Vec<Vec<u8>> = (1..=5)
        .map(|n| {
            raw(
                from,
                "bid.ra@gem.gov.in",
                &format!("Bid query, Ticket No:- 2026-100000{n}"),
                &format!("reg{n}"),
            )
        })
        .collect();
    let known = KnownState {
        tickets: Some(answers),
        ..KnownState::default()
    };
    let batch = mails
        .iter()
        .enumerate()
        .map(|(i, m)| new_mail(&p, m, "bid-ra", u32::try_from(i).unwrap_or(0) + 1))
        .collect();
    let planned = plan(&p, "bid-ra", batch, &known);
    let rules_of = |i: usize| planned[i].decision.rules.clone();
    // 5 hours old: back to the helpdesk, telling when the desk can take it up.
    assert_eq!(rules_of(0), ["ticket-too-early"]);
    assert!(actions(&planned[0]).contains(&"tag:$TooEarly".to_string()));
    let early = &planned[0].record.outbox;
    assert_eq!(early.len(), 1);
    assert_eq!(early[0].recipients, [HELPDESK, "meena@rites.co.in"]);
    let mail = mail_parser::MessageParser::default()
        .parse(&early[0].bytes)
        .unwrap_or_else(|| panic!("parse"));
    assert_eq!(
        mail.subject(),
        Some("[Ticket too early] Bid query, Ticket No:- 2026-1000001")
    );
    let text = mail.body_text(0).unwrap_or_default();
    // NOW is 2025-06-15 15:06:40 UTC; created 5 h before, ready 48 h after that, told in
    // the rules' time zone (GeM: Asia/Kolkata, +05:30).
    assert!(
        text.contains("registered on 2025-06-15 15:36 IST"),
        "{text}"
    );
    assert!(
        text.contains("come to the desk from 2025-06-17 15:36 IST"),
        "{text}"
    );
    // Unknown to the helpdesk: back to it.
    assert_eq!(rules_of(1), ["ticket-unknown"]);
    let unknown = String::from_utf8_lossy(&planned[1].record.outbox[0].bytes).into_owned();
    assert!(unknown.contains("Subject: [Ticket not found]"), "{unknown}");
    // Old enough, quoted by someone else: kept, tagged for the officer, nothing sent.
    assert_eq!(rules_of(2), ["ticket-not-requester", "ticket"]);
    assert!(planned[2].record.outbox.is_empty());
    // The requester's organisation (same domain): an ordinary ticket mail.
    assert_eq!(rules_of(3), ["ticket"]);
    // The registry unreadable: handled as without one, and tagged.
    assert_eq!(rules_of(4), ["registry-unavailable", "ticket"]);
    assert!(planned[4].record.outbox.is_empty());
    // Without a registry the same mails are ordinary ticket mail.
    let batch = mails
        .iter()
        .enumerate()
        .map(|(i, m)| new_mail(&p, m, "bid-ra", u32::try_from(i).unwrap_or(0) + 1))
        .collect();
    for planned in plan(&p, "bid-ra", batch, &KnownState::default()) {
        assert_eq!(planned.decision.rules, ["ticket"]);
    }
}
