//! Mails from fetch to done, the only place where the pure core meets I/O. A fetched batch
//! is parsed ([`parse_batch`], while the batch before it is decided), then read → planned →
//! written by [`decide_parsed`]: one read of everything its decisions
//! depend on (journal statuses, sightings, answers and replies per sender, the journaled
//! actions of mails a crash left decided), one pure [`crate::plan::plan_batch`], one
//! transaction for the journal and the outbox. The IMAP actions of one or more batches are
//! then carried out and the mails marked done by [`file()`]. Every step is idempotent or
//! journaled, so that a kill -9 at any point neither repeats a completed action nor loses a
//! pending one. Metrics, logs and wake-ups stay here; decisions and mail are the core's; the
//! late-broadcast correction of mail already filed is `pipeline/late.rs`'s.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crate::action::Action;
use crate::clock::unix_now;
use crate::config::Desk;
use crate::decide::Decision;
use crate::facts::{self, Facts, MailError};
use crate::imap::{DeskSession, FetchedMail, ImapError};
use crate::plan::{Desks, KnownState, NewMail};
use crate::shared::Shared;
use crate::store::{MailKey, MailStatus, NewDecision, StoreError};

pub use crate::plan::Policy;
pub use late::tag_late_broadcasts;

mod late;

/// Keyword set on a mail that could not be parsed at all (it is left where it is).
pub const UNREADABLE: &str = "$Unreadable";

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

/// A fetched batch and the memory reserved for it ([`crate::budget`]), held until it is
/// decided and written.
#[derive(Debug)]
pub struct Batch {
    /// The mails, ascending by UID.
    pub mails: Vec<FetchedMail>,
    /// Given back when the batch is dropped.
    pub reserved: crate::budget::Reserved,
}

/// The IMAP part of a decision, for one mail.
#[derive(Debug)]
pub struct Plan {
    key: MailKey,
    actions: Vec<Action>,
    /// Set aside (journaled as failed): its tag is stored, but it is not marked done.
    failed: bool,
}

impl Plan {
    /// A mail decided before a crash, from its journaled actions: they are redone as
    /// journaled (all idempotent); its outgoing mail is already in the outbox. The one
    /// place where journaled actions become a plan again.
    fn recovered(key: MailKey, actions: Vec<Action>) -> Plan {
        Plan {
            key,
            actions,
            failed: false,
        }
    }

    /// A mail that could not be read: set aside, tagged, and flagged too (an officer has to
    /// read it; \Flagged shows in every client, keywords do not).
    fn unreadable(key: MailKey) -> Plan {
        Plan {
            key,
            actions: vec![
                Action::Tag(UNREADABLE.into()),
                Action::Tag("\\Flagged".into()),
            ],
            failed: true,
        }
    }
}

/// A fetched batch read against the journal and parsed, ready for [`decide_parsed`]: the
/// mails (ascending by UID) with their memory reservation, the policy they were parsed
/// under (decided under the same one, even across a reload), what the journal already
/// holds of them, and each new mail's facts (`None`: journaled already).
#[derive(Debug)]
pub struct ParsedBatch {
    mails: Vec<FetchedMail>,
    reserved: crate::budget::Reserved,
    policy: Arc<Policy>,
    statuses: std::collections::HashMap<u32, MailStatus>,
    extracted: Vec<Option<Result<Facts, MailError>>>,
    parse_time: std::time::Duration,
}

impl ParsedBatch {
    /// The batch's mails, ascending by UID.
    pub fn mails(&self) -> &[FetchedMail] {
        &self.mails
    }
}

/// Decides fetched mails of one desk and journals the decisions: [`parse_batch`], then
/// [`decide_parsed`].
pub async fn decide_batch(
    shared: &Shared,
    desk: &Desk,
    uidvalidity: u32,
    batch: Batch,
) -> Result<Vec<Plan>, PipelineError> {
    let parsed = parse_batch(shared, desk, uidvalidity, batch).await?;
    decide_parsed(shared, desk, uidvalidity, parsed).await
}

/// The first half of deciding a batch: one query for what the journal already holds of its
/// mails, then the facts of each new one, parsed on a blocking thread (the CPU-heavy part).
/// Pure of the decisions of other batches, so the desk parses a batch while it decides the
/// one before (issue #16): the known state a decision depends on (sightings, answers,
/// clocks) is read by [`decide_parsed`].
pub async fn parse_batch(
    shared: &Shared,
    desk: &Desk,
    uidvalidity: u32,
    batch: Batch,
) -> Result<ParsedBatch, PipelineError> {
    let Batch { mails, reserved } = batch;
    crate::crash::point("fetched");
    let started = std::time::Instant::now();
    let policy = shared.policy();
    let uids: Vec<u32> = mails.iter().map(|m| m.uid).collect();
    let statuses = shared
        .store
        .journal_statuses(&desk.name, uidvalidity, &uids)
        .await?;
    // On a blocking thread, so that the desk's task can go on with IMAP (the next batch's
    // fetch) and the previous batch's decisions meanwhile.
    let new: Vec<bool> = uids.iter().map(|u| !statuses.contains_key(u)).collect();
    // The batch is parsed in parts on as many blocking threads as the machine has cores
    // (at most 4): the desk's own work leaves them free otherwise (issue #16).
    let parts = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let per_part = mails.len().div_ceil(parts).max(1);
    let mut items = mails.into_iter().zip(new).peekable();
    let mut tasks = Vec::with_capacity(parts);
    while items.peek().is_some() {
        let part: Vec<(FetchedMail, bool)> = items.by_ref().take(per_part).collect();
        let policy = Arc::clone(&policy);
        let desk = desk.name.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            part.into_iter()
                .map(|(m, new)| {
                    let facts = new.then(|| match &m.raw {
                        Some(raw) => facts::extract(raw, &desk, &policy.dir, &policy.rules),
                        None => Ok(Facts::oversized(&desk, m.size as usize)),
                    });
                    (m, facts)
                })
                .collect::<Vec<_>>()
        }));
    }
    let mut mails = Vec::with_capacity(uids.len());
    let mut extracted = Vec::with_capacity(uids.len());
    for task in tasks {
        for (m, facts) in task.await? {
            mails.push(m);
            extracted.push(facts);
        }
    }
    Ok(ParsedBatch {
        mails,
        reserved,
        policy,
        statuses,
        extracted,
        parse_time: started.elapsed(),
    })
}

/// The second half: decides a parsed batch's new mails and journals the decisions; returns
/// the IMAP part of each (to be carried out by [`file()`], possibly together with later
/// batches').
///
/// The state database is read and written per batch, not per mail or rule: one query for
/// what is already journaled ([`parse_batch`]; one or two more for the actions of mails a
/// crash left decided: [`crate::store::Store::journaled_actions`]), one transaction for the
/// sightings, one query each for the answers and the last replies of the batch's senders,
/// one transaction for all decisions with their
/// outgoing mail (committed before any IMAP action runs). A mail that cannot be read is set
/// aside on its own. A kill -9 anywhere still leaves each mail either undecided (decided
/// again) or decided with its actions outstanding (redone by the next run, all idempotent:
/// the desk's progress only passes a mail once it is filed).
pub async fn decide_parsed(
    shared: &Shared,
    desk: &Desk,
    uidvalidity: u32,
    parsed: ParsedBatch,
) -> Result<Vec<Plan>, PipelineError> {
    // Held to the end: the bodies, then the redirects composed from them.
    let ParsedBatch {
        mails,
        reserved: _reserved,
        policy,
        statuses,
        extracted,
        parse_time,
    } = parsed;
    let started = std::time::Instant::now();
    let recovered: Vec<u32> = statuses
        .iter()
        .filter(|(_, s)| **s == MailStatus::Decided)
        .map(|(uid, _)| *uid)
        .collect();
    let mut journaled = if recovered.is_empty() {
        BTreeMap::new()
    } else {
        shared
            .store
            .journaled_actions(&desk.name, uidvalidity, &recovered)
            .await?
    };
    let mut plans = Vec::with_capacity(mails.len());
    let mut pending = Vec::with_capacity(mails.len());
    let now = unix_now();
    for (mail, facts) in mails.iter().zip(extracted) {
        let key = MailKey {
            desk: desk.name.clone(),
            uidvalidity,
            uid: mail.uid,
        };
        if statuses.get(&mail.uid) == Some(&MailStatus::Decided) {
            match journaled.remove(&mail.uid).unwrap_or(Ok(Vec::new())) {
                Ok(actions) => plans.push(Plan::recovered(key, actions)),
                Err(e) => {
                    // Never guessed or dropped: set aside and tagged as unreadable mail is.
                    tracing::error!(desk = %desk.name, uid = key.uid, record = %e.record, error = %e, "journaled action unreadable: mail set aside");
                    shared.metrics.journal_unreadable.fetch_add(1, Relaxed);
                    shared.store.fail_mail(&key, &e.to_string(), now).await?;
                    plans.push(Plan::unreadable(key));
                }
            }
            continue;
        }
        let Some(facts) = facts else { continue };
        shared.metrics.desk(&desk.name).seen.fetch_add(1, Relaxed);
        if mail.raw.is_none() {
            tracing::warn!(
                desk = %desk.name,
                uid = key.uid,
                size = mail.size,
                limit = policy.rules.limits.max_mail_bytes,
                "mail larger than max_mail_mb: not downloaded, set aside by the oversized rule"
            );
        }
        match facts {
            Ok(facts) => pending.push(NewMail {
                key,
                facts,
                holders: Vec::new(),
                raw: mail.raw.as_deref().unwrap_or_default(),
            }),
            Err(e) => {
                tracing::warn!(desk = %desk.name, uid = key.uid, error = %e, "mail set aside");
                shared.metrics.set_aside.fetch_add(1, Relaxed);
                shared.store.fail_mail(&key, &e.to_string(), now).await?;
                plans.push(Plan::unreadable(key));
            }
        }
    }
    let count = mails.len();
    if !pending.is_empty() {
        let planned = plan_new(shared, &policy, desk, pending, now).await?;
        // The bodies are not needed any more: only the mail composed from them is written,
        // so a large redirect is not held twice while the database copies it (issue #13).
        drop(mails);
        plans.extend(write_new(shared, desk, planned).await?);
    }
    tracing::debug!(
        desk = %desk.name,
        mails = count,
        parse_ms = ms(parse_time),
        decide_ms = ms(started.elapsed()),
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

/// What the plan of `mails` depends on, read in a bounded number of queries: the sightings
/// (recorded first, then counted: see [`crate::store::Store::sight_all`]) fill each mail's
/// `holders`; the answers and last replies of all the batch's senders make the known state.
async fn read_known(
    shared: &Shared,
    policy: &Policy,
    mails: &mut [NewMail<'_>],
    now: i64,
) -> Result<KnownState, PipelineError> {
    let rules = &policy.rules;
    let sightings: Vec<(&str, &MailKey)> = mails
        .iter()
        .filter(|m| !m.facts.oversized)
        .map(|m| (m.facts.group_key.as_str(), &m.key))
        .collect();
    let holders = shared
        .store
        .sight_all(&sightings, now, rules.broadcast_window_secs as i64)
        .await?;
    for (m, h) in mails.iter_mut().filter(|m| !m.facts.oversized).zip(holders) {
        m.holders = h;
    }
    let mut known = KnownState {
        tickets: registry_answers(shared, mails).await?,
        ..KnownState::default()
    };
    let senders = crate::plan::senders(mails.iter().map(|m| &m.facts));
    if senders.is_empty() {
        return Ok(known);
    }
    if rules.sender_answer_limit > 0 {
        let since = crate::plan::answer_window_start(rules, now);
        known.answers = shared.store.answers_since_all(&senders, since).await?;
    }
    if crate::plan::replies(rules) {
        known.last_reply = shared.store.last_replies(&senders).await?;
    }
    Ok(known)
}

/// The ticket registry's answers for the tickets of `mails` (`None` without a registry):
/// a CSV export is read again first if it changed, off the async runtime; a database or
/// HTTP service is asked within its timeout. What happened is logged when it is news
/// (loaded, failing, answering again), never per mail; a source that cannot answer makes
/// the batch's lookups `Unavailable`, it never fails the batch.
async fn registry_answers(
    shared: &Shared,
    mails: &[NewMail<'_>],
) -> Result<Option<crate::registry::Answers>, PipelineError> {
    let Some(registry) = &shared.registry else {
        return Ok(None);
    };
    let numbers: Vec<String> = mails
        .iter()
        .filter_map(|m| m.facts.ticket.as_ref().map(|t| t.number.clone()))
        .collect();
    Ok(Some(registry.answers(numbers).await))
}

/// Decides the batch's new mails: reads what their decisions depend on, then plans them
/// (decisions and outgoing mail), with no write yet.
async fn plan_new(
    shared: &Shared,
    policy: &Policy,
    desk: &Desk,
    mut mails: Vec<NewMail<'_>>,
    now: i64,
) -> Result<Vec<crate::plan::Planned>, PipelineError> {
    let known = read_known(shared, policy, &mut mails, now).await?;
    let desks = Desks {
        deciding: desk,
        all: &shared.config.desks,
    };
    let planned = crate::plan::plan_batch(
        mails,
        policy,
        desks,
        &known,
        now,
        &mut crate::compose::random_seed,
    );
    crate::crash::point("decided");
    Ok(planned)
}

/// Journals all planned decisions with their outgoing mail in one transaction; then
/// counts, logs and wakes the outbox.
async fn write_new(
    shared: &Shared,
    desk: &Desk,
    planned: Vec<crate::plan::Planned>,
) -> Result<Vec<Plan>, PipelineError> {
    let (mut records, decided): (Vec<_>, Vec<_>) = planned
        .into_iter()
        .map(|p| (p.record, (p.facts, p.decision)))
        .unzip();
    let recorded = shared.store.record_decisions(&mut records).await?;
    crate::crash::point("journaled");
    let mut plans = Vec::with_capacity(records.len());
    let mut queued_any = false;
    let mut late_broadcast = false;
    for ((record, (facts, decision)), rec) in records.into_iter().zip(decided).zip(recorded) {
        log_decided(shared, desk, &record, &facts, &decision, rec.queued.len());
        queued_any |= !rec.queued.is_empty();
        // Copies in other desks may have been handled before this one revealed the broadcast.
        late_broadcast |= facts.broadcast && facts.copies_seen > 1;
        plans.push(Plan {
            actions: crate::plan::imap_actions(&decision),
            key: record.key,
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

/// The log line and the counters of one journaled decision.
fn log_decided(
    shared: &Shared,
    desk: &Desk,
    record: &NewDecision,
    facts: &Facts,
    decision: &Decision,
    queued: usize,
) {
    tracing::info!(
        desk = %desk.name,
        uid = record.key.uid,
        message_id = facts.message_id.as_deref().unwrap_or("-"),
        ticket = facts.ticket.as_ref().map_or("-", |t| t.number.as_str()),
        broadcast = facts.broadcast,
        automatic = facts.automatic,
        rules = %decision.rules.join(","),
        actions = %record.actions.iter().map(ToString::to_string).collect::<Vec<_>>().join(" "),
        queued,
        "decided"
    );
    for (a, why) in &decision.suppressed {
        tracing::debug!(desk = %desk.name, uid = record.key.uid, action = %a, reason = why, "action suppressed");
    }
    for a in decision.actions() {
        shared.metrics.count_action(&desk.name, a.kind(), 1);
    }
    if facts.broadcast {
        shared.metrics.broadcasts.fetch_add(1, Relaxed);
    }
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
