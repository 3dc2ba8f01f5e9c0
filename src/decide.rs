//! The decision: ordered rules applied to facts give the actions to take, as data (SPEC 4).
//! Pure: what a reply ledger or other state says comes in through [`Known`].

use std::collections::BTreeSet;

use crate::action::{Action, Target};
use crate::facts::Facts;
use crate::rules::{Condition, Rules};

/// State the decision depends on, read by the shell before deciding.
#[derive(Debug, Clone, Default)]
pub struct Known {
    /// Reply templates that already went to this sender within their rule's period.
    pub replied_recently: BTreeSet<String>,
    /// Mails queued to this sender (redirects with it in Cc, replies) within the rules'
    /// `sender_answer_window`.
    pub answers_to_sender: u32,
}

/// What to do with one mail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Names of the rules that matched, in order.
    pub rules: Vec<String>,
    /// Actions in execution order, without duplicates; each with the rule that asked for it.
    pub actions: Vec<(Action, String)>,
    /// Actions a rule asked for that were dropped, and why.
    pub suppressed: Vec<(Action, &'static str)>,
}

impl Decision {
    pub fn actions(&self) -> impl Iterator<Item = &Action> {
        self.actions.iter().map(|(a, _)| a)
    }
}

pub fn decide(facts: &Facts, rules: &Rules, known: &Known) -> Decision {
    let mut d = Decision::default();
    for rule in &rules.rules {
        if !holds(&rule.when, facts, flooding(rules, known)) {
            continue;
        }
        d.rules.push(rule.name.clone());
        for action in &rule.actions {
            if let Some(why) = forbidden(action, facts, rules, known) {
                if !d.suppressed.iter().any(|(a, _)| a == action) {
                    d.suppressed.push((action.clone(), why));
                }
                continue;
            }
            let action = match action {
                Action::Tag(k) if k.contains(crate::action::SUGGESTED_DESK) => {
                    match &facts.suggested_desk {
                        Some(s) => Action::Tag(k.replace(crate::action::SUGGESTED_DESK, s)),
                        None => continue,
                    }
                }
                other => other.clone(),
            };
            if !d.actions.iter().any(|(a, _)| *a == action) {
                d.actions.push((action, rule.name.clone()));
            }
        }
        if rule.stop {
            break;
        }
    }
    if d.suppressed.iter().any(|(_, why)| *why == FLOOD) {
        let flood = Action::Tag(rules.flood_keyword.clone());
        if !d.actions.iter().any(|(a, _)| *a == flood) {
            d.actions.push((flood, "sender_answer_limit".to_string()));
        }
    }
    // Tags before the move, so that a filed mail carries its keywords; the move last.
    d.actions.sort_by_key(|(a, _)| matches!(a, Action::File(_)));
    let files: Vec<usize> = d
        .actions
        .iter()
        .enumerate()
        .filter(|(_, (a, _))| matches!(a, Action::File(_)))
        .map(|(i, _)| i)
        .collect();
    if files.len() > 1 {
        // A mail can be in one folder only: the first rule's folder wins.
        for i in files.into_iter().skip(1).rev() {
            let (a, _) = d.actions.remove(i);
            d.suppressed
                .push((a, "mail was already filed by an earlier rule"));
        }
    }
    d
}

/// Why a mail to the sender is withheld: a sender flooding a desk gets a bounded number of
/// answers.
pub const FLOOD: &str = "this sender reached sender_answer_limit within its window";

/// Why an action must not run for these facts, if it must not. No mail loops, ever.
fn forbidden(action: &Action, facts: &Facts, rules: &Rules, known: &Known) -> Option<&'static str> {
    if action.sends_mail() {
        if facts.automatic {
            return Some("automatic mail is never answered or redirected");
        }
        if facts.own {
            return Some("own mail is never answered or redirected");
        }
        if facts.oversized {
            return Some("oversized mail is set aside, not sent on");
        }
        if facts.sender.is_none() && matches!(action, Action::Reply(_) | Action::Redirect(_)) {
            return Some("the mail has no usable sender address");
        }
    }
    match action {
        Action::Reply(template) if known.replied_recently.contains(template) => {
            Some("this sender already got this reply within the rule's period")
        }
        Action::Reply(_) | Action::Redirect(_) if flooding(rules, known) => Some(FLOOD),
        Action::Forward(Target::SuggestedDesk) | Action::Redirect(Target::SuggestedDesk) => {
            match &facts.suggested_desk {
                None => Some("no desk is suggested for this mail"),
                Some(s) if *s == facts.desk => Some("the suggested desk is this desk"),
                Some(_) => None,
            }
        }
        Action::Forward(Target::Desk(d)) | Action::Redirect(Target::Desk(d))
            if *d == facts.desk =>
        {
            Some("the target desk is this desk")
        }
        _ => None,
    }
}

/// The sender already got as many answers as `sender_answer_limit` allows.
fn flooding(rules: &Rules, known: &Known) -> bool {
    rules.sender_answer_limit > 0 && known.answers_to_sender >= rules.sender_answer_limit
}

fn holds(c: &Condition, f: &Facts, flooding: bool) -> bool {
    let eq = |want: Option<bool>, have: bool| want.is_none_or(|w| w == have);
    eq(c.ticket, f.ticket.is_some())
        && c.ticket_source
            .as_ref()
            .is_none_or(|s| f.ticket.as_ref().is_some_and(|t| s.contains(&t.source)))
        && eq(c.broadcast, f.broadcast)
        && eq(c.automatic, f.automatic)
        && eq(c.own, f.own)
        && eq(c.responsible, f.responsible)
        && eq(c.misrouted, f.misrouted)
        && eq(c.oversized, f.oversized)
        && eq(c.flooding, flooding)
        && c.desk.as_ref().is_none_or(|d| d.contains(&f.desk))
        && c.from
            .as_ref()
            .is_none_or(|r| f.from.as_deref().is_some_and(|a| r.is_match(a)))
        && c.subject.as_ref().is_none_or(|r| r.is_match(&f.subject))
        && c.text.as_ref().is_none_or(|r| r.is_match(&f.text))
        && registry_holds(c, &f.registry)
}

/// The registry conditions (issue #17): a condition on a value the registry did not give
/// (no registry, no ticket, unavailable) does not hold, except `registry` itself.
fn registry_holds(c: &Condition, r: &crate::registry::TicketFacts) -> bool {
    let opt = |want: Option<bool>, have: Option<bool>| want.is_none_or(|w| have == Some(w));
    c.registry.is_none_or(|s| s == r.registry)
        && opt(c.ticket_known, r.ticket_known)
        && opt(c.requester_matches, r.requester_matches)
        && opt(c.ticket_too_young, r.ticket_too_young)
        && c.ticket_state.as_ref().is_none_or(|states| {
            r.ticket_state
                .as_deref()
                .is_some_and(|s| states.iter().any(|w| w.eq_ignore_ascii_case(s)))
        })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::facts::{Directory, extract};
    use crate::rules::{Deployment, compile::compile_str};

    use crate::test_gem;

    fn gem() -> (Rules, Directory) {
        let text = include_str!("../rules/gem.toml");
        let deployment = Deployment {
            desks: test_gem::desk_names(),
        };
        let rules = compile_str(Path::new("rules/gem.toml"), text, &deployment)
            .unwrap_or_else(|e| panic!("{e}"));
        let dir = Directory {
            desks: test_gem::addresses(test_gem::DOMAIN),
            helpdesk: test_gem::HELPDESK.into(),
            own: Vec::new(),
            contacts: Vec::new(),
            subaddress_delimiter: "+".into(),
            ..Directory::default()
        };
        (rules, dir)
    }

    fn mail(headers: &str, body: &str) -> Vec<u8> {
        format!("{headers}Date: Mon, 2 Nov 2026 10:00:00 +0530\r\nMessage-ID: <m1@example.in>\r\n\r\n{body}\r\n").into_bytes()
    }

    fn actions(raw: &[u8], desk: &str, holders: &[&str], known: &Known) -> (Facts, Vec<String>) {
        let (rules, dir) = gem();
        let facts = extract(raw, desk, &dir, &rules).unwrap_or_else(|e| panic!("{e}"));
        let holders: Vec<String> = holders.iter().map(|s| s.to_string()).collect();
        let facts = facts.with_copies(&holders, &dir, &rules);
        let d = decide(&facts, &rules, known);
        (facts, d.actions().map(ToString::to_string).collect())
    }

    #[test]
    fn a_text_condition_reads_the_subject_and_the_body_as_normalised() {
        // The GeM rules with a first rule on the text, as rules/examples/marketplace.toml
        // has them: it tags and lets the other rules go on.
        let gem_text = include_str!("../rules/gem.toml");
        let first = gem_text
            .find("\n[[rule]]")
            .unwrap_or_else(|| panic!("no rule"))
            + 1;
        let text = format!(
            "{}[[rule]]\nname = \"cloudtail\"\nwhen = {{ text = '(?i)\\bcloud-tail\\b' }}\nactions = [\"tag:$Cloudtail\"]\n\n{}",
            &gem_text[..first],
            &gem_text[first..]
        );
        let deployment = Deployment {
            desks: test_gem::desk_names(),
        };
        let rules = compile_str(Path::new("text.toml"), &text, &deployment)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(rules.reads_text());
        let (gem_rules, dir) = gem();
        assert!(!gem_rules.reads_text());
        let head = "From: a@example.in\r\nTo: bid.ra@gem.gov.in\r\n";
        let html = "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n";
        for (headers, body, tagged) in [
            // In the body, its dash an en dash (normalised to "-"), in other letter case.
            (
                format!("{head}Subject: order\r\n"),
                "Sold by CLOUD\u{2013}TAIL",
                true,
            ),
            // In the subject only.
            (
                format!("{head}Subject: cloud-tail order\r\n"),
                "see subject",
                true,
            ),
            // In an HTML-only body, between tags.
            (
                format!("{head}Subject: order\r\n{html}"),
                "<p>Seller: <b>Cloud-Tail</b></p>",
                true,
            ),
            // Not a word of its own.
            (format!("{head}Subject: order\r\n"), "cloud-tails", false),
        ] {
            let raw = mail(&headers, body);
            let facts = extract(&raw, "bid-ra", &dir, &rules).unwrap_or_else(|e| panic!("{e}"));
            let actions: Vec<String> = decide(&facts, &rules, &Known::default())
                .actions()
                .map(ToString::to_string)
                .collect();
            assert_eq!(
                actions.iter().any(|a| a == "tag:$Cloudtail"),
                tagged,
                "{headers}{body}: {actions:?}"
            );
            // The other rules still decide: no ticket, so redirected.
            assert!(
                actions.iter().any(|a| a == "redirect:helpdesk"),
                "{actions:?}"
            );
            // Without a text condition in the rules, the text is not built.
            let facts = extract(&raw, "bid-ra", &dir, &gem_rules).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(facts.text, "");
        }
    }

    #[test]
    fn mail_without_ticket_is_redirected_to_the_helpdesk_and_filed() {
        let raw = mail(
            "From: a@example.in\r\nTo: bid.ra@gem.gov.in\r\nSubject: help\r\n",
            "please help",
        );
        let (_, a) = actions(&raw, "bid-ra", &[], &Known::default());
        assert_eq!(
            a,
            [
                "redirect:helpdesk",
                "tag:$NoTicket",
                "tag:$Redirected",
                "file:Redirected"
            ]
        );
    }

    #[test]
    fn subaddressed_and_repeated_headers_address_the_desks() {
        let known = Known::default();
        // Three desks, one with a subaddress and in other letter case, over two To headers.
        let raw = mail(
            "From: a@example.in\r\nTo: Bid.RA+urgent@gem.gov.in\r\nTo: order.process@gem.gov.in\r\nCc: payment.process+x@GEM.gov.in\r\nSubject: stuck\r\n",
            "everything is stuck",
        );
        let (facts, _) = actions(&raw, "bid-ra", &[], &known);
        assert_eq!(
            facts.addressed_desks,
            ["bid-ra", "order-process", "payment-process"]
        );
        assert!(facts.broadcast);
        // A desk writing from a subaddress, or the helpdesk in other letter case, is own mail.
        for from in ["order.process+escalation@gem.gov.in", "HelpDesk-GeM@Gov.IN"] {
            let raw = mail(
                &format!("From: {from}\r\nTo: bid.ra@gem.gov.in\r\nSubject: fwd\r\n"),
                "no ticket",
            );
            let (facts, a) = actions(&raw, "bid-ra", &[], &known);
            assert!(facts.own, "{from}");
            assert!(
                !a.iter().any(|a| a.starts_with("redirect")),
                "{from}: {a:?}"
            );
        }
        // With no delimiter configured, a subaddress is another address.
        let (rules, mut dir) = gem();
        dir.subaddress_delimiter = String::new();
        let raw = mail(
            "From: a@example.in\r\nTo: bid.ra+urgent@gem.gov.in\r\nSubject: x\r\n",
            "x",
        );
        let facts = extract(&raw, "bid-ra", &dir, &rules).unwrap_or_else(|e| panic!("{e}"));
        assert!(facts.addressed_desks.is_empty());
    }

    #[test]
    fn automatic_and_own_mail_never_sends_mail() {
        for headers in [
            "From: a@example.in\r\nTo: bid.ra@gem.gov.in\r\nSubject: Out of office\r\nAuto-Submitted: auto-replied\r\n",
            "From: helpdesk-gem@gov.in\r\nTo: bid.ra@gem.gov.in\r\nSubject: ack\r\n",
            "From: x@example.in\r\nTo: bid.ra@gem.gov.in\r\nSubject: fwd\r\nX-Ticketgate: bid-ra\r\n",
            "From: order.process@gem.gov.in\r\nTo: bid.ra@gem.gov.in, buyer.registration@gem.gov.in, upload.product@gem.gov.in\r\nSubject: all\r\n",
        ] {
            let raw = mail(headers, "no ticket here");
            let (rules, dir) = gem();
            let facts = extract(&raw, "bid-ra", &dir, &rules).unwrap_or_else(|e| panic!("{e}"));
            // Whatever the rules say, even a rule asking for a redirect of everything.
            let mut rules2 = rules.clone();
            for r in &mut rules2.rules {
                r.when = Condition::default();
                r.stop = false;
                r.actions.push(Action::Redirect(Target::Helpdesk));
                r.actions.push(Action::Reply("broadcast-advisory".into()));
            }
            let d = decide(&facts, &rules2, &Known::default());
            assert!(
                !d.actions().any(Action::sends_mail),
                "{headers}: {:?}",
                d.actions
            );
            assert!(!d.suppressed.is_empty());
            if facts.automatic {
                assert_eq!(
                    decide(&facts, &rules, &Known::default()).rules,
                    ["automatic"]
                );
            }
        }
    }

    #[test]
    fn ticket_in_subject_is_tagged_and_kept() {
        let raw = mail(
            "From: a@example.in\r\nTo: bid.ra@gem.gov.in\r\nSubject: Ticket 2024-1234567 still open\r\n",
            "see subject",
        );
        let (f, a) = actions(&raw, "bid-ra", &[], &Known::default());
        assert_eq!(
            f.ticket.as_ref().map(|t| t.number.as_str()),
            Some("2024-1234567")
        );
        assert_eq!(a, ["tag:$Ticket", "record", "clock"]);
    }

    #[test]
    fn header_broadcast_is_acted_on_by_one_desk_and_filed_elsewhere() {
        let to = test_gem::addresses(test_gem::DOMAIN)
            .into_iter()
            .map(|(_, a)| a)
            .collect::<Vec<_>>()
            .join(", ");
        let raw = mail(
            &format!(
                "From: a@example.in\r\nTo: {to}\r\nSubject: Reverse auction RA not opening\r\n"
            ),
            "The reverse auction for my bid does not open.",
        );
        let (f, a) = actions(&raw, "bid-ra", &[], &Known::default());
        assert!(f.broadcast);
        assert_eq!(f.responsible_desk.as_deref(), Some("bid-ra"));
        assert_eq!(
            a,
            [
                "tag:$Broadcast",
                "tag:\\Flagged",
                "reply:broadcast-advisory",
                "redirect:helpdesk",
                "tag:$NoTicket",
                "tag:$Redirected",
                "file:Redirected"
            ]
        );
        let (_, other) = actions(&raw, "order-process", &[], &Known::default());
        assert_eq!(
            other,
            [
                "tag:$Broadcast",
                "tag:$Duplicate",
                "reply:broadcast-advisory",
                "file:Broadcast"
            ]
        );
    }

    #[test]
    fn copies_in_three_desks_make_a_broadcast() {
        let raw = mail(
            "From: a@example.in\r\nTo: someone@example.in\r\nSubject: payment not received\r\n",
            "Payment for invoice not received, Ticket No: 2025-7654321",
        );
        let (f, _) = actions(
            &raw,
            "bid-ra",
            &["bid-ra", "order-process"],
            &Known::default(),
        );
        assert!(!f.broadcast, "two copies are below the threshold of 3");
        let (f, a) = actions(
            &raw,
            "bid-ra",
            &["bid-ra", "order-process", "payment-process"],
            &Known::default(),
        );
        assert!(f.broadcast);
        assert_eq!(f.broadcast_by, Some("copies"));
        assert_eq!(f.responsible_desk.as_deref(), Some("payment-process"));
        assert_eq!(
            a,
            [
                "tag:$Broadcast",
                "tag:$Duplicate",
                "reply:broadcast-advisory",
                "file:Broadcast"
            ]
        );
    }

    #[test]
    fn advisory_is_not_repeated_within_the_period() {
        let to = test_gem::addresses(test_gem::DOMAIN)
            .into_iter()
            .map(|(_, a)| a)
            .collect::<Vec<_>>()
            .join(", ");
        let raw = mail(
            &format!(
                "From: a@example.in\r\nTo: {to}\r\nSubject: bid issue Ticket 2024-1234567\r\n"
            ),
            "bid",
        );
        let mut known = Known::default();
        known.replied_recently.insert("broadcast-advisory".into());
        let (_, a) = actions(&raw, "bid-ra", &[], &known);
        assert_eq!(
            a,
            [
                "tag:$Broadcast",
                "tag:\\Flagged",
                "tag:$Ticket",
                "record",
                "clock"
            ]
        );
    }

    #[test]
    fn a_sender_over_the_answer_limit_gets_no_more_mail_and_the_mail_is_tagged() {
        let raw = mail(
            "From: a@example.in\r\nTo: bid.ra@gem.gov.in\r\nSubject: help\r\n",
            "please help",
        );
        let (rules, _) = gem();
        assert_eq!(rules.sender_answer_limit, 10, "the shipped default");
        let mut known = Known {
            answers_to_sender: 9,
            ..Known::default()
        };
        let (_, a) = actions(&raw, "bid-ra", &[], &known);
        assert!(a.contains(&"redirect:helpdesk".to_string()), "{a:?}");
        known.answers_to_sender = 10;
        let (_, a) = actions(&raw, "bid-ra", &[], &known);
        assert_eq!(
            a,
            ["tag:$NoTicket", "tag:$Flood", "tag:\\Flagged"],
            "the shipped flood rule: flagged for the officer"
        );
        // Without that rule the limit still holds, and the mail is tagged all the same.
        let (mut rules, dir) = gem();
        rules.rules.retain(|r| r.name != "no-ticket-flood");
        let facts = extract(&raw, "bid-ra", &dir, &rules).unwrap_or_else(|e| panic!("{e}"));
        let d = decide(&facts, &rules, &known);
        assert!(!d.actions().any(Action::sends_mail), "{:?}", d.actions);
        assert!(d.actions().any(|a| *a == Action::Tag("$Flood".into())));
        assert!(d.suppressed.iter().any(|(_, why)| *why == FLOOD));
        // 0 switches the limit off.
        rules.sender_answer_limit = 0;
        let facts = extract(&raw, "bid-ra", &dir, &rules).unwrap_or_else(|e| panic!("{e}"));
        let d = decide(&facts, &rules, &known);
        assert!(d.actions().any(Action::sends_mail), "{:?}", d.actions);
    }
}
