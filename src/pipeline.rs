//! Mails from fetch to done: each fetched batch is parsed → facts → decided → journaled
//! (with outgoing mail queued in the same transaction) by [`decide_batch`]; the IMAP
//! actions of one or more batches are then carried out and the mails marked done by
//! [`file`]. The only place where the pure core meets I/O. Every step is idempotent or journaled, so that a kill -9 at any
//! point neither repeats a completed action nor loses a pending one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::action::{Action, Target};
use crate::compose::{self, Kind, OutgoingSpec};
use crate::config::Desk;
use crate::daemon::{Shared, unix_now};
use crate::decide::{Decision, Known, decide};
use crate::facts::{self, Directory, Facts};
use crate::imap::{DeskSession, FetchedMail, ImapError};
use crate::rules::Rules;
use crate::store::{MailKey, MailStatus, NewDecision, NewOutgoing, ReplyClaim, StoreError};

/// Keyword set on a mail that could not be parsed at all (it is left where it is).
pub const UNREADABLE: &str = "$Unreadable";

/// Rules and directory in force; swapped as a whole on reload.
#[derive(Debug)]
pub struct Policy {
    pub rules: Rules,
    pub dir: Directory,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Imap(#[from] ImapError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the mail parsing thread ended early")]
    Worker(#[from] tokio::task::JoinError),
}

impl PipelineError {
    /// The IMAP error behind this one, if any.
    pub fn imap(&self) -> Option<&ImapError> {
        match self {
            PipelineError::Imap(e) => Some(e),
            _ => None,
        }
    }
}

/// The IMAP part of a decision, for one mail.
#[derive(Debug)]
pub struct Plan {
    key: MailKey,
    actions: Vec<Action>,
    /// Set aside (journaled as failed): its tag is stored, but it is not marked done.
    failed: bool,
}

/// A mail of the batch on its way to a decision.
struct Pending<'m> {
    key: MailKey,
    mail: &'m FetchedMail,
    facts: Facts,
}

/// Decides fetched mails of one desk and journals the decisions; returns the IMAP part of
/// each (to be carried out by [`file`], possibly together with later batches').
///
/// The state database is written per batch, not per mail: one query for what is already
/// journaled, one transaction for the sightings, one for all decisions with their outgoing
/// mail (committed before any IMAP action runs). A kill -9 anywhere still leaves each mail
/// either undecided (decided again) or decided with its actions outstanding (redone by the
/// next run, all idempotent: the desk's progress only passes a mail once it is filed).
pub async fn decide_batch(
    shared: &Shared,
    desk: &Desk,
    uidvalidity: u32,
    mails: Vec<FetchedMail>,
) -> Result<Vec<Plan>, PipelineError> {
    crate::crash::point("fetched");
    let started = std::time::Instant::now();
    let policy = shared.policy();
    let rules = &policy.rules;
    let uids: Vec<u32> = mails.iter().map(|m| m.uid).collect();
    let statuses = shared
        .store
        .journal_statuses(&desk.name, uidvalidity, &uids)
        .await?;
    // Parsing is the CPU-heavy part: on a blocking thread, so that the desk's task can go on
    // with IMAP (the next batch's fetch) meanwhile.
    let new: Vec<bool> = mails
        .iter()
        .map(|m| !statuses.contains_key(&m.uid))
        .collect();
    let (mails, mut extracted) = {
        let policy = Arc::clone(&policy);
        let desk = desk.name.clone();
        tokio::task::spawn_blocking(move || {
            let facts: Vec<_> = mails
                .iter()
                .zip(new)
                .map(|(m, new)| match (&m.raw, new) {
                    (Some(raw), true) => {
                        Some(facts::extract(raw, &desk, &policy.dir, &policy.rules))
                    }
                    _ => None,
                })
                .collect();
            (mails, facts)
        })
        .await?
    };
    let mut plans = Vec::with_capacity(mails.len());
    let mut pending = Vec::with_capacity(mails.len());
    let now = unix_now();
    for (i, mail) in mails.iter().enumerate() {
        let key = MailKey {
            desk: desk.name.clone(),
            uidvalidity,
            uid: mail.uid,
        };
        match statuses.get(&mail.uid) {
            Some(MailStatus::Decided) => {
                // Decided before a crash: redo the IMAP actions (all idempotent); its outgoing
                // mail is already in the outbox.
                let Some(j) = shared.store.journal(&key).await? else {
                    continue;
                };
                match j.actions {
                    Ok(actions) => plans.push(Plan {
                        key,
                        actions,
                        failed: false,
                    }),
                    Err(e) => {
                        // Never guessed or dropped: set aside and tagged as unreadable mail is.
                        tracing::error!(desk = %desk.name, uid = key.uid, record = %e.record, error = %e, "journaled action unreadable: mail set aside");
                        shared
                            .metrics
                            .journal_unreadable
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        shared.store.fail_mail(&key, &e.to_string(), now).await?;
                        plans.push(Plan {
                            key,
                            actions: vec![
                                Action::Tag(UNREADABLE.into()),
                                Action::Tag("\\Flagged".into()),
                            ],
                            failed: true,
                        });
                    }
                }
            }
            Some(_) => continue,
            None => {
                shared
                    .metrics
                    .desk(&desk.name)
                    .seen
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let facts = match &mail.raw {
                    None => {
                        tracing::warn!(
                            desk = %desk.name,
                            uid = key.uid,
                            size = mail.size,
                            limit = rules.limits.max_mail_bytes,
                            "mail larger than max_mail_mb: not downloaded, set aside by the oversized rule"
                        );
                        Ok(Facts::oversized(&desk.name, mail.size as usize))
                    }
                    Some(raw) => match extracted[i].take() {
                        Some(facts) => facts,
                        None => {
                            // Parsing stays off the runtime's worker (issue #13).
                            let (raw, name, policy) =
                                (raw.clone(), desk.name.clone(), Arc::clone(&policy));
                            tokio::task::spawn_blocking(move || {
                                facts::extract(&raw, &name, &policy.dir, &policy.rules)
                            })
                            .await?
                        }
                    },
                };
                match facts {
                    Ok(facts) => pending.push(Pending { key, mail, facts }),
                    Err(e) => {
                        tracing::warn!(desk = %desk.name, uid = key.uid, error = %e, "mail set aside");
                        shared
                            .metrics
                            .set_aside
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        shared.store.fail_mail(&key, &e.to_string(), now).await?;
                        plans.push(Plan {
                            key,
                            // Flagged too: an officer has to read it (\Flagged shows in
                            // every client, keywords do not).
                            actions: vec![
                                Action::Tag(UNREADABLE.into()),
                                Action::Tag("\\Flagged".into()),
                            ],
                            failed: true,
                        });
                    }
                }
            }
        }
    }
    let parsed = started.elapsed();
    let decided = decide_all(shared, &policy, desk, pending, now).await?;
    plans.extend(decided);
    tracing::debug!(
        desk = %desk.name,
        mails = mails.len(),
        parse_ms = ms(parsed),
        decide_ms = ms(started.elapsed() - parsed),
        "batch decided"
    );
    Ok(plans)
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Carries out the IMAP part of decided mails (keywords, then filing; grouped into as few
/// commands as possible), marks them done and moves the desk's progress to `up_to` (the
/// highest UID decided). Mails set aside are only tagged and never marked done.
pub async fn file(
    session: &mut DeskSession,
    shared: &Shared,
    desk: &Desk,
    uidvalidity: u32,
    plans: &[Plan],
    up_to: u32,
) -> Result<(), PipelineError> {
    let started = std::time::Instant::now();
    execute(session, plans).await?;
    let acted = started.elapsed();
    let done: Vec<MailKey> = plans
        .iter()
        .filter(|p| !p.failed)
        .map(|p| p.key.clone())
        .collect();
    shared.store.complete_mails(&done, unix_now()).await?;
    crate::crash::point("done");
    shared.store.advance(&desk.name, uidvalidity, up_to).await?;
    tracing::debug!(
        desk = %desk.name,
        mails = plans.len(),
        imap_ms = ms(acted),
        done_ms = ms(started.elapsed() - acted),
        "mails filed"
    );
    Ok(())
}

/// Decides the batch's new mails and journals all decisions with their outgoing mail in one
/// transaction.
async fn decide_all(
    shared: &Shared,
    policy: &Policy,
    desk: &Desk,
    pending: Vec<Pending<'_>>,
    now: i64,
) -> Result<Vec<Plan>, PipelineError> {
    let rules = &policy.rules;
    let sightings: Vec<(&str, &MailKey)> = pending
        .iter()
        .filter(|p| !p.facts.oversized)
        .map(|p| (p.facts.group_key.as_str(), &p.key))
        .collect();
    let mut holders = shared
        .store
        .sight_all(&sightings, now, rules.broadcast_window_secs as i64)
        .await?
        .into_iter();
    // Replies this batch decides on, so that a later mail of the same sender in the batch
    // sees them as it would have seen them journaled (sender lower-cased, template).
    let mut replying: BTreeSet<(String, String)> = BTreeSet::new();
    // Answers per sender (lower-cased): from the journal once per batch, plus this batch's.
    let mut answers: BTreeMap<String, u32> = BTreeMap::new();
    let answer_window = i64::try_from(rules.sender_answer_window_secs).unwrap_or(i64::MAX / 4);
    let mut records = Vec::with_capacity(pending.len());
    let mut decisions = Vec::with_capacity(pending.len());
    for p in pending {
        let holding = if p.facts.oversized {
            vec![desk.name.clone()]
        } else {
            holders.next().unwrap_or_else(|| vec![desk.name.clone()])
        };
        let facts = p.facts.with_copies(&holding, &policy.dir, rules);
        let mut known = Known::default();
        if let Some(sender) = &facts.sender {
            let lower = sender.to_lowercase();
            if rules.sender_answer_limit > 0 {
                known.answers_to_sender = match answers.get(&lower) {
                    Some(n) => *n,
                    None => {
                        let n = shared
                            .store
                            .answers_since(sender, now - answer_window)
                            .await?;
                        answers.insert(lower.clone(), n);
                        n
                    }
                };
            }
            for rule in &rules.rules {
                for a in &rule.actions {
                    if let Action::Reply(template) = a {
                        if known.replied_recently.contains(template) {
                            continue;
                        }
                        let since =
                            now - i64::try_from(rule.reply_period_secs).unwrap_or(i64::MAX / 4);
                        if replying.contains(&(lower.clone(), template.clone()))
                            || shared.store.replied_since(sender, template, since).await?
                        {
                            known.replied_recently.insert(template.clone());
                        }
                    }
                }
            }
        }
        let decision = decide(&facts, rules, &known);
        if let Some(sender) = &facts.sender {
            let lower = sender.to_lowercase();
            for a in decision.actions() {
                match a {
                    Action::Reply(template) => {
                        replying.insert((lower.clone(), template.clone()));
                        *answers.entry(lower.clone()).or_insert(0) += 1;
                    }
                    Action::Redirect(_) => *answers.entry(lower.clone()).or_insert(0) += 1,
                    _ => {}
                }
            }
        }
        let outbox = outgoing(
            &facts,
            &decision,
            policy,
            (desk, &shared.config.desks),
            p.mail.raw.as_deref().unwrap_or_default(),
            now,
        );
        let actions: Vec<Action> = decision.actions().cloned().collect();
        records.push(NewDecision {
            key: p.key,
            message_id: facts.message_id.clone(),
            group_key: facts.group_key.clone(),
            sender: facts.sender.clone(),
            subject: facts.subject.clone(),
            ticket: facts.ticket.as_ref().map(|t| t.number.clone()),
            ticket_source: facts.ticket.as_ref().map(|t| t.source.as_str().to_string()),
            broadcast: facts.broadcast,
            automatic: facts.automatic,
            redirected: actions.iter().any(|a| matches!(a, Action::Redirect(_))),
            rule: decision.rules.last().cloned(),
            actions: actions.clone(),
            outbox,
            now,
        });
        decisions.push((facts, decision, actions));
    }
    crate::crash::point("decided");
    let recorded = shared.store.record_decisions(&records).await?;
    crate::crash::point("journaled");
    let mut plans = Vec::with_capacity(records.len());
    let mut queued_any = false;
    let mut late_broadcast = false;
    for ((record, (facts, decision, actions)), rec) in
        records.into_iter().zip(decisions).zip(recorded)
    {
        let key = record.key;
        tracing::info!(
            desk = %desk.name,
            uid = key.uid,
            message_id = facts.message_id.as_deref().unwrap_or("-"),
            ticket = facts.ticket.as_ref().map_or("-", |t| t.number.as_str()),
            broadcast = facts.broadcast,
            automatic = facts.automatic,
            rules = %decision.rules.join(","),
            actions = %actions_text(&record.actions).join(" "),
            queued = rec.queued.len(),
            "decided"
        );
        for (a, why) in &decision.suppressed {
            tracing::debug!(desk = %desk.name, uid = key.uid, action = %a, reason = why, "action suppressed");
        }
        for a in &actions {
            shared.metrics.count_action(&desk.name, a.kind(), 1);
        }
        if facts.broadcast {
            shared
                .metrics
                .broadcasts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        queued_any |= !rec.queued.is_empty();
        // Copies in other desks may have been handled before this one revealed the broadcast.
        late_broadcast |= facts.broadcast && facts.copies_seen > 1;
        let imap_actions = actions
            .into_iter()
            .filter(|a| !a.sends_mail() && *a != Action::Record)
            .collect();
        plans.push(Plan {
            key,
            actions: imap_actions,
            failed: false,
        });
    }
    if queued_any {
        shared.outbox_wake.notify_one();
    }
    if late_broadcast {
        shared.recheck.notify_waiters();
    }
    Ok(plans)
}

fn actions_text(actions: &[Action]) -> Vec<String> {
    actions.iter().map(ToString::to_string).collect()
}

/// The mail to queue for the decision's send actions. Ids are dedupe keys: the same mail in
/// several desks, or decided again after a UIDVALIDITY change, yields the same ids, so the
/// outbox holds it once. `(desk, desks)`: the desk deciding and every desk; a reply about a
/// broadcast (the advisory) is sent by the desk it names as responsible, whichever copy
/// queued it (issue #15).
pub fn outgoing(
    facts: &Facts,
    decision: &Decision,
    policy: &Policy,
    (deciding, desks): (&Desk, &[Desk]),
    raw: &[u8],
    now: i64,
) -> Vec<NewOutgoing> {
    let mut out = Vec::new();
    let dir = &policy.dir;
    let rules = &policy.rules;
    for (action, rule_name) in &decision.actions {
        let (kind, to, template, id, claim) = match action {
            Action::Redirect(t) | Action::Forward(t) => {
                let Some(to) = target_address(t, facts, dir) else {
                    continue;
                };
                let (kind, name) = if matches!(action, Action::Redirect(_)) {
                    (Kind::Redirect, "redirect")
                } else {
                    (Kind::Forward, "forward")
                };
                (
                    kind,
                    to.clone(),
                    name.to_string(),
                    format!("{name}:{}:{to}", facts.group_key),
                    None,
                )
            }
            Action::Reply(template) => {
                let Some(sender) = facts.sender.clone() else {
                    continue;
                };
                let period = rules
                    .rules
                    .iter()
                    .find(|r| r.name == *rule_name)
                    .map_or(0, |r| r.reply_period_secs);
                // One ledger entry per template: the same advisory asked for by two rules
                // (a broadcast's acting copy and its duplicates) goes out once.
                let claim = ReplyClaim {
                    sender: sender.clone(),
                    rule: template.clone(),
                    period_secs: i64::try_from(period).unwrap_or(i64::MAX / 4),
                };
                (
                    Kind::Reply,
                    sender.clone(),
                    template.clone(),
                    format!("reply:{template}:{sender}:{}", facts.group_key),
                    Some(claim),
                )
            }
            _ => continue,
        };
        let Some(t) = rules.templates.get(&template) else {
            continue;
        };
        let desk = match (kind, &facts.responsible_desk) {
            (Kind::Reply, Some(r)) => desks.iter().find(|d| d.name == *r).unwrap_or(deciding),
            _ => deciding,
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
            boundary_seed: compose::random_seed(),
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

fn target_address(t: &Target, facts: &Facts, dir: &Directory) -> Option<String> {
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

fn template_vars(
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
    let mut v = BTreeMap::new();
    let mut put = |k: &str, val: String| {
        v.insert(k.to_string(), val);
    };
    put("desk", desk.name.clone());
    put(
        "desk_name",
        desk.display_name
            .clone()
            .unwrap_or_else(|| desk.name.clone()),
    );
    put("desk_address", desk.address.clone());
    put("helpdesk", policy.dir.helpdesk.clone());
    put("helpdesk_name", policy.dir.helpdesk_name.clone());
    put("helpdesk_phone", policy.dir.helpdesk_phone.clone());
    put("helpdesk_web", policy.dir.helpdesk_web.clone());
    put("sender", facts.sender.clone().unwrap_or_default());
    put("subject", facts.subject.clone());
    put("message_id", facts.message_id.clone().unwrap_or_default());
    put(
        "date",
        crate::clock::local_day(now, &policy.rules.time_zone),
    );
    put(
        "ticket",
        facts
            .ticket
            .as_ref()
            .map(|t| t.number.clone())
            .unwrap_or_default(),
    );
    let responsible = facts.responsible_desk.as_ref().or(Some(&facts.desk));
    put("responsible_desk", responsible.cloned().unwrap_or_default());
    put("responsible_address", address(responsible));
    put("responsible_nature", nature(responsible));
    put(
        "suggested_desk",
        facts.suggested_desk.clone().unwrap_or_default(),
    );
    put("suggested_address", address(facts.suggested_desk.as_ref()));
    put("suggested_nature", nature(facts.suggested_desk.as_ref()));
    v
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

/// Carries out the IMAP actions of a batch with as few commands as possible: one
/// `UID STORE` per distinct keyword set, one `UID MOVE` per folder, moves last.
async fn execute(session: &mut DeskSession, plans: &[Plan]) -> Result<(), ImapError> {
    let mut by_flags: BTreeMap<Vec<String>, Vec<u32>> = BTreeMap::new();
    let mut by_folder: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for plan in plans {
        let mut flags = BTreeSet::new();
        for a in &plan.actions {
            match a {
                Action::Tag(k) => {
                    flags.insert(k.clone());
                }
                Action::MarkSeen => {
                    flags.insert("\\Seen".to_string());
                }
                Action::File(f) => by_folder.entry(f.clone()).or_default().push(plan.key.uid),
                _ => {}
            }
        }
        if !flags.is_empty() {
            by_flags
                .entry(flags.into_iter().collect())
                .or_default()
                .push(plan.key.uid);
        }
    }
    let started = std::time::Instant::now();
    for (flags, uids) in &by_flags {
        session.add_flags(uids, flags).await?;
        crate::crash::point("flagged");
    }
    let flagged = started.elapsed();
    for (folder, uids) in &by_folder {
        session.ensure_folder(folder).await?;
        session.move_to(uids, folder).await?;
        crate::crash::point("moved");
    }
    tracing::trace!(
        stores = by_flags.len(),
        store_ms = ms(flagged),
        moves = by_folder.len(),
        move_ms = ms(started.elapsed() - flagged),
        "batch acted on"
    );
    Ok(())
}

/// Corrects the copies this desk handled before later copies elsewhere revealed a
/// broadcast (mail sent to many desks in Bcc arrives everywhere at once, or across a
/// restart): each is read again where it now is (the desk's mailbox or the folder a rule
/// filed it in) and gets the keywords and folder the rules give a broadcast copy, as if it
/// had been known from the start. Nothing is sent: the mail it queued, if any, is keyed by
/// the message and already counts as the broadcast's one redirect.
pub async fn tag_late_broadcasts(
    session: &mut DeskSession,
    shared: &Shared,
    desk: &Desk,
) -> Result<(), PipelineError> {
    let policy = shared.policy();
    let rules = &policy.rules;
    let since = unix_now() - i64::try_from(rules.broadcast_window_secs).unwrap_or(i64::MAX / 4);
    let late = shared
        .store
        .late_broadcasts(&desk.name, since, rules.broadcast_threshold)
        .await?;
    if late.is_empty() {
        return Ok(());
    }
    let max_bytes = rules.limits.fetch_limit();
    for entry in late {
        let folder = entry
            .actions
            .iter()
            .flatten()
            .filter_map(|a| match a {
                Action::File(folder) => Some(folder.as_str()),
                _ => None,
            })
            .next_back()
            .unwrap_or(&desk.mailbox)
            .to_string();
        let mut applied = Vec::new();
        if let Some(id) = &entry.message_id {
            // The folder as the server names it (under a namespace prefix, maybe).
            let on_server = if folder == desk.mailbox {
                Some(folder.clone())
            } else {
                session.existing_folder(&folder).await?
            };
            let selected = match on_server {
                Some(name) => session.select(&name).await.is_ok(),
                None => false,
            };
            if !selected {
                // The folder is gone (an officer deleted it): nothing left to correct.
                session.select(&desk.mailbox).await?;
                shared.store.mark_broadcast(&entry.key).await?;
                continue;
            }
            let uids = session.search_message_id(id).await?;
            let mails = session.fetch(&uids, max_bytes, u64::MAX).await?;
            let holders: Vec<String> = shared
                .store
                .sightings(&entry.group_key)
                .await?
                .into_iter()
                .map(|k| k.desk)
                .collect();
            for mail in &mails {
                let Some(raw) = &mail.raw else { continue };
                // Parsing runs on the blocking pool, never on the runtime's worker: a crafted
                // mail must not stall the other desks, the outbox or the watchdog (issue #13).
                let extracted = {
                    let (raw, name, policy) = (raw.clone(), desk.name.clone(), Arc::clone(&policy));
                    tokio::task::spawn_blocking(move || {
                        facts::extract(&raw, &name, &policy.dir, &policy.rules)
                    })
                    .await?
                };
                let Ok(facts) = extracted else {
                    continue;
                };
                let facts = facts.with_copies(&holders, &policy.dir, rules);
                // Replies and redirects were dealt with when the copy was first decided.
                let mut known = Known::default();
                known
                    .replied_recently
                    .extend(rules.templates.keys().cloned());
                let decision = decide(&facts, rules, &known);
                let mut flags: Vec<String> = decision
                    .actions()
                    .filter_map(|a| match a {
                        Action::Tag(k) => Some(k.clone()),
                        Action::MarkSeen => Some("\\Seen".to_string()),
                        _ => None,
                    })
                    .collect();
                if !flags.contains(&rules.broadcast_keyword) {
                    flags.push(rules.broadcast_keyword.clone());
                }
                session.add_flags(&[mail.uid], &flags).await?;
                applied.extend(flags.iter().map(|f| format!("tag:{f}")));
                let target = decision.actions().find_map(|a| match a {
                    Action::File(f) => Some(f.clone()),
                    _ => None,
                });
                if let Some(target) = target.filter(|t| *t != folder) {
                    session.ensure_folder(&target).await?;
                    session.move_to(&[mail.uid], &target).await?;
                    applied.push(format!("file:{target}"));
                }
            }
            session.select(&desk.mailbox).await?;
        }
        shared.store.mark_broadcast(&entry.key).await?;
        tracing::info!(
            desk = %desk.name,
            uid = entry.key.uid,
            message_id = entry.message_id.as_deref().unwrap_or("-"),
            folder = %folder,
            actions = %applied.join(" "),
            "copy found to be part of a broadcast after it was handled"
        );
    }
    Ok(())
}
