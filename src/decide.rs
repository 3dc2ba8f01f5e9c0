//! The decision: ordered rules applied to facts give the actions to take, as data (SPEC 4).
//! Pure: what a reply ledger or other state says comes in through [`Known`].

use std::collections::BTreeSet;

use crate::action::{Action, Target};
use crate::facts::Facts;
use crate::rules::{Condition, Rules};

/// State the decision depends on, read by the shell before deciding.
#[derive(Debug, Clone, Default)]
pub struct Known {
    /// Rules whose reply already went to this sender within the rule's period.
    pub replied_recently: BTreeSet<String>,
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
        if !holds(&rule.when, facts) {
            continue;
        }
        d.rules.push(rule.name.clone());
        for action in &rule.actions {
            if let Some(why) = forbidden(action, facts, &rule.name, known) {
                if !d.suppressed.iter().any(|(a, _)| a == action) {
                    d.suppressed.push((action.clone(), why));
                }
                continue;
            }
            if !d.actions.iter().any(|(a, _)| a == action) {
                d.actions.push((action.clone(), rule.name.clone()));
            }
        }
        if rule.stop {
            break;
        }
    }
    // Tags before the move, so that a filed mail carries its keywords; the move last.
    d.actions.sort_by_key(|(a, _)| matches!(a, Action::File(_)));
    let files: Vec<usize> =
        d.actions.iter().enumerate().filter(|(_, (a, _))| matches!(a, Action::File(_))).map(|(i, _)| i).collect();
    if files.len() > 1 {
        // A mail can be in one folder only: the first rule's folder wins.
        for i in files.into_iter().skip(1).rev() {
            let (a, _) = d.actions.remove(i);
            d.suppressed.push((a, "mail was already filed by an earlier rule"));
        }
    }
    d
}

/// Why an action must not run for these facts, if it must not. No mail loops, ever.
fn forbidden(action: &Action, facts: &Facts, rule: &str, known: &Known) -> Option<&'static str> {
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
        Action::Reply(_) if known.replied_recently.contains(rule) => {
            Some("this sender already got this reply within the rule's period")
        }
        Action::Forward(Target::SuggestedDesk) | Action::Redirect(Target::SuggestedDesk) => match &facts.suggested_desk {
            None => Some("no desk is suggested for this mail"),
            Some(s) if *s == facts.desk => Some("the suggested desk is this desk"),
            Some(_) => None,
        },
        Action::Forward(Target::Desk(d)) | Action::Redirect(Target::Desk(d)) if *d == facts.desk => {
            Some("the target desk is this desk")
        }
        _ => None,
    }
}

fn holds(c: &Condition, f: &Facts) -> bool {
    let eq = |want: Option<bool>, have: bool| want.is_none_or(|w| w == have);
    eq(c.ticket, f.ticket.is_some())
        && c.ticket_source.as_ref().is_none_or(|s| f.ticket.as_ref().is_some_and(|t| s.contains(&t.source)))
        && eq(c.broadcast, f.broadcast)
        && eq(c.automatic, f.automatic)
        && eq(c.own, f.own)
        && eq(c.responsible, f.responsible)
        && eq(c.misrouted, f.misrouted)
        && eq(c.oversized, f.oversized)
        && c.desk.as_ref().is_none_or(|d| d.contains(&f.desk))
        && c.from.as_ref().is_none_or(|r| f.from.as_deref().is_some_and(|a| r.is_match(a)))
        && c.subject.as_ref().is_none_or(|r| r.is_match(&f.subject))
        && c.text.as_ref().is_none_or(|r| r.is_match(&f.text))
}
