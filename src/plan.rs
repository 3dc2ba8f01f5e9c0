//! The plan of a fetched batch, pure: (the new mails' facts, rules, directory and desks, what
//! the state database knew before the batch, now) → each mail's decision, its journal record
//! and the outgoing mail to queue with it. Target resolution, template variables and the
//! composing of outgoing mail live here, so that `ticketgate classify --show-mail` shows
//! exactly what `run` sends. No I/O, no clock: reading the known state and writing the
//! records is [`crate::pipeline`]'s part; randomness (MIME boundaries) comes in as a function.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::action::{Action, Target};
use crate::compose::{self, Kind, OutgoingSpec};
use crate::config::Desk;
use crate::decide::{Decision, Known, decide};
use crate::facts::{Directory, Facts};
use crate::rules::Rules;
use crate::store::{MailKey, NewClock, NewDecision, NewOutgoing, ReplyClaim};

/// Rules and directory in force; swapped as a whole on reload.
#[derive(Debug)]
pub struct Policy {
    /// The compiled rules (rules/*.toml).
    pub rules: Rules,
    /// Desk and helpdesk addresses the rules refer to.
    pub dir: Directory,
}

/// What the state database said before the batch, read once for the whole batch by the
/// shell: the plan of every mail of the batch depends on nothing else that is stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownState {
    /// Answers per lower-cased sender since [`answer_window_start`]: mails redirected with
    /// the sender in Cc plus automatic replies (the rules' `sender_answer_limit`).
    pub answers: HashMap<String, u32>,
    /// When the last reply went out, Unix seconds, per (lower-cased sender, template).
    pub last_reply: HashMap<(String, String), i64>,
    /// The ticket registry's answers for the batch's tickets; `None`: no registry.
    pub tickets: Option<crate::registry::Answers>,
}

/// A new (never journaled) mail of the batch, with its facts as extracted.
#[derive(Debug, Clone)]
pub struct NewMail<'m> {
    pub key: MailKey,
    /// As [`crate::facts::extract`] returned them (or [`Facts::oversized`]); the copies
    /// seen elsewhere are applied by the plan from `holders`.
    pub facts: Facts,
    /// Desks seen holding this message within the broadcast window (sightings), with or
    /// without this one; ignored for oversized mail.
    pub holders: Vec<String>,
    /// The mail as fetched (attached to redirects and forwards); empty when not downloaded.
    pub raw: &'m [u8],
}

/// The desk deciding (whose mailbox the batch came from) and every desk of config.toml.
#[derive(Debug, Clone, Copy)]
pub struct Desks<'d> {
    pub deciding: &'d Desk,
    pub all: &'d [Desk],
}

/// The plan of one mail: what was decided, and the journal record to write (with the
/// outgoing mail to queue in the same transaction).
#[derive(Debug, Clone)]
pub struct Planned {
    /// The facts with the copies seen in other desks applied.
    pub facts: Facts,
    pub decision: Decision,
    pub record: NewDecision,
}

/// The part of a decision carried out on the IMAP server (keywords, flags, filing), in
/// order: sending is the outbox's part, recording the journal's.
pub fn imap_actions(decision: &Decision) -> Vec<Action> {
    decision
        .actions()
        .filter(|a| !a.sends_mail() && !matches!(a, Action::Record | Action::Clock))
        .cloned()
        .collect()
}

/// Where the window of the rules' `sender_answer_limit` starts at `now` (Unix seconds).
pub fn answer_window_start(rules: &Rules, now: i64) -> i64 {
    now - i64::try_from(rules.sender_answer_window_secs).unwrap_or(i64::MAX / 4)
}

/// The distinct lower-cased senders of `facts`, sorted: whom the known state is read for.
pub fn senders<'f>(facts: impl IntoIterator<Item = &'f Facts>) -> Vec<String> {
    let set: BTreeSet<String> = facts
        .into_iter()
        .filter_map(|f| f.sender.as_deref())
        .map(str::to_lowercase)
        .collect();
    set.into_iter().collect()
}

/// True when some rule may reply: only then does the plan need the reply ledger.
pub fn replies(rules: &Rules) -> bool {
    rules
        .rules
        .iter()
        .any(|r| r.actions.iter().any(|a| matches!(a, Action::Reply(_))))
}

/// What this batch has decided so far, per lower-cased sender: a later mail of the same
/// sender sees it as it would have seen it journaled.
#[derive(Debug, Default)]
struct Carry {
    /// (sender, template) of the replies decided.
    replying: BTreeSet<(String, String)>,
    /// Answers decided (replies, redirects with the sender in Cc).
    answers: BTreeMap<String, u32>,
}

/// Plans the new mails of one batch, in order. `boundary_seed` gives the seed of each
/// composed mail's MIME boundary ([`compose::random_seed`] in production).
pub fn plan_batch(
    mails: Vec<NewMail<'_>>,
    policy: &Policy,
    desks: Desks<'_>,
    known: &KnownState,
    now: i64,
    boundary_seed: &mut dyn FnMut() -> u64,
) -> Vec<Planned> {
    let rules = &policy.rules;
    let mut carry = Carry::default();
    let mut out = Vec::with_capacity(mails.len());
    for mail in mails {
        let holders = if mail.facts.oversized {
            vec![mail.facts.desk.clone()]
        } else {
            mail.holders
        };
        let facts = mail
            .facts
            .with_copies(&holders, &policy.dir, rules)
            .with_registry(known.tickets.as_ref(), now, &rules.matrix);
        let decision = decide(&facts, rules, &known_for(&facts, rules, known, &carry, now));
        if let Some(sender) = &facts.sender {
            let lower = sender.to_lowercase();
            for a in decision.actions() {
                match a {
                    Action::Reply(template) => {
                        carry.replying.insert((lower.clone(), template.clone()));
                        *carry.answers.entry(lower.clone()).or_insert(0) += 1;
                    }
                    Action::Redirect(_) => *carry.answers.entry(lower.clone()).or_insert(0) += 1,
                    _ => {}
                }
            }
        }
        let outbox = outgoing(
            &facts,
            &decision,
            policy,
            desks,
            mail.raw,
            now,
            boundary_seed,
        );
        let actions: Vec<Action> = decision.actions().cloned().collect();
        let record = NewDecision {
            key: mail.key,
            message_id: facts.message_id.clone(),
            group_key: facts.group_key.clone(),
            sender: facts.sender.clone(),
            subject: facts.subject.clone(),
            ticket: facts.ticket.as_ref().map(|t| t.number.clone()),
            ticket_source: facts.ticket.as_ref().map(|t| t.source.as_str().to_string()),
            broadcast: facts.broadcast,
            automatic: facts.automatic,
            redirected: decision.actions().any(|a| matches!(a, Action::Redirect(_))),
            rule: decision.rules.last().cloned(),
            clock: decision
                .actions()
                .any(|a| *a == Action::Clock)
                .then_some(facts.ticket.as_ref())
                .flatten()
                .map(|t| NewClock {
                    ticket: t.number.clone(),
                    due: rules.matrix.calendar.due(now, rules.matrix.desk_secs),
                }),
            actions,
            outbox,
            now,
        };
        out.push(Planned {
            facts,
            decision,
            record,
        });
    }
    out
}

/// The state one mail's decision depends on: the stored state plus this batch's earlier
/// decisions for the same sender.
fn known_for(facts: &Facts, rules: &Rules, known: &KnownState, carry: &Carry, now: i64) -> Known {
    let mut k = Known::default();
    let Some(sender) = &facts.sender else {
        return k;
    };
    let lower = sender.to_lowercase();
    if rules.sender_answer_limit > 0 {
        k.answers_to_sender = known
            .answers
            .get(&lower)
            .copied()
            .unwrap_or(0)
            .saturating_add(carry.answers.get(&lower).copied().unwrap_or(0));
    }
    for rule in &rules.rules {
        for a in &rule.actions {
            let Action::Reply(template) = a else { continue };
            if k.replied_recently.contains(template) {
                continue;
            }
            let since = now - i64::try_from(rule.reply_period_secs).unwrap_or(i64::MAX / 4);
            let pair = (lower.clone(), template.clone());
            if carry.replying.contains(&pair)
                || known.last_reply.get(&pair).is_some_and(|at| *at > since)
            {
                k.replied_recently.insert(template.clone());
            }
        }
    }
    k
}

/// The mail to queue for the decision's send actions. Ids are dedupe keys: the same mail in
/// several desks, or decided again after a UIDVALIDITY change, yields the same ids, so the
/// outbox holds it once. A reply about a broadcast (the advisory) is sent by the desk it
/// names as responsible, whichever copy queued it (issue #15). An action whose target or
/// template is unknown, or whose mail cannot be composed, queues nothing.
pub fn outgoing(
    facts: &Facts,
    decision: &Decision,
    policy: &Policy,
    desks: Desks<'_>,
    raw: &[u8],
    now: i64,
    boundary_seed: &mut dyn FnMut() -> u64,
) -> Vec<NewOutgoing> {
    let mut out = Vec::new();
    let rules = &policy.rules;
    for (action, rule_name) in &decision.actions {
        let rule = rules.rules.iter().find(|r| r.name == *rule_name);
        let (kind, to, template, id, claim) = match action {
            Action::Redirect(t) | Action::Forward(t) => {
                let Some(to) = target_address(t, facts, &policy.dir) else {
                    continue;
                };
                let (kind, name) = if matches!(action, Action::Redirect(_)) {
                    (Kind::Redirect, "redirect")
                } else {
                    (Kind::Forward, "forward")
                };
                let id = format!("{name}:{}:{to}", facts.group_key);
                let template = rule
                    .and_then(|r| r.template_of(action))
                    .unwrap_or(name)
                    .to_string();
                (kind, to, template, id, None)
            }
            Action::Reply(template) => {
                let Some(sender) = facts.sender.clone() else {
                    continue;
                };
                let period = rule.map_or(0, |r| r.reply_period_secs);
                // One ledger entry per template: the same advisory asked for by two rules
                // (a broadcast's acting copy and its duplicates) goes out once.
                let claim = ReplyClaim {
                    sender: sender.clone(),
                    rule: template.clone(),
                    period_secs: i64::try_from(period).unwrap_or(i64::MAX / 4),
                };
                let id = format!("reply:{template}:{sender}:{}", facts.group_key);
                (Kind::Reply, sender, template.clone(), id, Some(claim))
            }
            _ => continue,
        };
        let Some(t) = rules.templates.get(&template) else {
            continue;
        };
        let desk = match (kind, &facts.responsible_desk) {
            (Kind::Reply, Some(r)) => desks
                .all
                .iter()
                .find(|d| d.name == *r)
                .unwrap_or(desks.deciding),
            _ => desks.deciding,
        };
        let vars = template_vars(facts, policy, desk, now);
        let subject = compose::render(&t.subject, &vars);
        let body = compose::render(&t.body, &vars);
        let message_id = format!("{}@{}", short_hash(&id), domain_of(&desk.address));
        let cc = match kind {
            Kind::Redirect => facts
                .sender
                .as_deref()
                .filter(|s| !s.eq_ignore_ascii_case(&to)),
            _ => None,
        };
        let spec = OutgoingSpec {
            kind,
            from: &desk.address,
            from_name: desk.display_name.as_deref(),
            to: &to,
            cc,
            subject: &subject,
            body: &body,
            original: raw,
            message_id: &message_id,
            date_unix: now,
            marker: &desk.name,
            boundary_seed: boundary_seed(),
        };
        match compose::compose(&spec) {
            Ok(o) => out.push(NewOutgoing {
                id,
                desk: desk.name.clone(),
                envelope_from: o.envelope_from,
                recipients: o.recipients,
                bytes: o.bytes,
                reply_claim: claim,
            }),
            Err(e) => {
                tracing::warn!(desk = %desk.name, action = %action, error = %e, "cannot compose; not sent")
            }
        }
    }
    out
}

/// The address a redirect or forward goes to; `None` when the target names no known desk
/// (or the mail has no suggested desk).
pub fn target_address(t: &Target, facts: &Facts, dir: &Directory) -> Option<String> {
    match t {
        Target::Helpdesk => Some(dir.helpdesk.clone()),
        Target::Desk(d) => dir.desk_address(d).map(str::to_string),
        Target::SuggestedDesk => facts
            .suggested_desk
            .as_deref()
            .and_then(|d| dir.desk_address(d))
            .map(str::to_string),
        Target::Address(a) => Some(a.clone()),
    }
}

/// The values of every template placeholder ([`compose::PLACEHOLDERS`]) for a mail sent by
/// `desk` about `facts` at `now` (the `{date}` is the day in the rules' time zone).
pub fn template_vars(
    facts: &Facts,
    policy: &Policy,
    desk: &Desk,
    now: i64,
) -> BTreeMap<String, String> {
    let nature = |name: Option<&String>| {
        name.and_then(|n| policy.rules.desks.iter().find(|d| d.name == *n))
            .map(|d| d.nature.clone())
            .unwrap_or_default()
    };
    let address = |name: Option<&String>| {
        name.and_then(|n| policy.dir.desk_address(n))
            .unwrap_or_default()
            .to_string()
    };
    let responsible = facts.responsible_desk.as_ref().unwrap_or(&facts.desk);
    let ticket = facts.ticket.as_ref().map(|t| t.number.clone());
    let zone = &policy.rules.time_zone;
    let matrix = &policy.rules.matrix;
    let created = facts.registry.ticket_created;
    let ready = created.map(|c| {
        matrix.calendar.due(
            c,
            i64::try_from(matrix.helpdesk_hours.saturating_mul(3_600)).unwrap_or(i64::MAX),
        )
    });
    let mut vars = desk_vars(policy, desk, now);
    let pairs = [
        ("sender", facts.sender.clone().unwrap_or_default()),
        ("subject", facts.subject.clone()),
        ("message_id", facts.message_id.clone().unwrap_or_default()),
        ("ticket", ticket.unwrap_or_default()),
        (
            "ticket_created",
            created.map_or_else(String::new, |t| crate::clock::local_minute(t, zone)),
        ),
        (
            "ticket_ready",
            ready.map_or_else(String::new, |t| crate::clock::local_minute(t, zone)),
        ),
        ("helpdesk_hours", matrix.helpdesk_hours.to_string()),
        ("responsible_desk", responsible.clone()),
        ("responsible_address", address(Some(responsible))),
        ("responsible_nature", nature(Some(responsible))),
        (
            "suggested_desk",
            facts.suggested_desk.clone().unwrap_or_default(),
        ),
        ("suggested_address", address(facts.suggested_desk.as_ref())),
        ("suggested_nature", nature(facts.suggested_desk.as_ref())),
    ];
    vars.extend(pairs.into_iter().map(|(k, v)| (k.to_string(), v)));
    vars
}

/// The placeholders that depend on no mail: the sending desk (`desk`, `desk_name`,
/// `desk_address`), the helpdesk (`helpdesk`, `helpdesk_name`, `helpdesk_phone`,
/// `helpdesk_web`) and `{date}` (the day of `now` in the rules' time zone). Shared by
/// [`template_vars`] and the desk clock's overdue notice.
pub fn desk_vars(policy: &Policy, desk: &Desk, now: i64) -> BTreeMap<String, String> {
    let dir = &policy.dir;
    [
        ("desk", desk.name.clone()),
        (
            "desk_name",
            desk.display_name
                .clone()
                .unwrap_or_else(|| desk.name.clone()),
        ),
        ("desk_address", desk.address.clone()),
        ("helpdesk", dir.helpdesk.clone()),
        ("helpdesk_name", dir.helpdesk_name.clone()),
        ("helpdesk_phone", dir.helpdesk_phone.clone()),
        ("helpdesk_web", dir.helpdesk_web.clone()),
        (
            "date",
            crate::clock::local_day(now, &policy.rules.time_zone),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn short_hash(s: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(s.as_bytes());
    d.iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        + ".ticketgate"
}

fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("localhost", |(_, d)| d)
}

#[cfg(test)]
mod tests;
