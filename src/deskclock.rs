//! The desk's clock (issue #17; seed 000: "the desk has 48 hours to resolve"): which open
//! clocks an officer has answered, and which fell due unanswered and are now overdue — a
//! pure [`review`] of what the shell observed on the server, and the shell's [`check`]
//! that observes (flags of the clocks' mails, the Sent and done folders), tags overdue mail
//! `$Overdue` and `\Flagged`, and writes the changes, a page of open clocks at a time (one
//! transaction a page). Starting a clock is a decision (the rules' `clock` action, in
//! `plan`).

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher as _;
use std::sync::atomic::Ordering::Relaxed;

use crate::config::Desk;
use crate::imap::{DeskSession, bare_message_id};
use crate::pipeline::PipelineError;
use crate::shared::Shared;
use crate::store::{ClockChange, ClockRow, OpenClock, StopReason};

/// Keyword of mail whose clock ran out unanswered.
pub const OVERDUE: &str = "$Overdue";

/// What the shell saw of a desk's open clocks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// The desk mailbox's UIDVALIDITY now: mails recorded under another are not looked at.
    pub uidvalidity: u32,
    /// The clocks' mails still in the desk mailbox, by UID: whether each is `\Answered`.
    pub answered: HashMap<u32, bool>,
    /// Bare Message-IDs that a mail in the Sent folder replies to.
    pub replied: HashSet<String>,
    /// Bare Message-IDs found in the done folder.
    pub done: HashSet<String>,
}

/// The changes to make at `now` (Unix seconds), and the mails to tag overdue (UIDs in the
/// desk mailbox).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Review {
    pub changes: Vec<ClockChange>,
    pub tag_overdue: Vec<u32>,
    /// The earliest due time of a clock still running and not overdue: when to look again.
    pub next_due: Option<i64>,
}

/// Reviews `clocks`: a clock stops when one of its mails is `\Answered`, replied to from
/// the Sent folder, or in the done folder (in that order of reasons); a running clock past
/// its due time becomes overdue once, and its mails still in the mailbox are tagged.
pub fn review(clocks: &[OpenClock], seen: &Observed, now: i64) -> Review {
    let mut r = Review::default();
    for c in clocks {
        let ids: Vec<&str> = c
            .mails
            .iter()
            .filter_map(|m| m.message_id.as_deref().map(bare_message_id))
            .collect();
        let here: Vec<u32> = c
            .mails
            .iter()
            .filter(|m| m.uidvalidity == seen.uidvalidity && seen.answered.contains_key(&m.uid))
            .map(|m| m.uid)
            .collect();
        let answered = here.iter().any(|u| seen.answered.get(u) == Some(&true));
        let reason = if answered {
            Some(StopReason::Answered)
        } else if ids.iter().any(|i| seen.replied.contains(*i)) {
            Some(StopReason::Sent)
        } else if ids.iter().any(|i| seen.done.contains(*i)) {
            Some(StopReason::DoneFolder)
        } else {
            None
        };
        if let Some(reason) = reason {
            r.changes.push(ClockChange::Stop {
                ticket: c.clock.ticket.clone(),
                started: c.clock.started,
                at: now,
                reason,
            });
            continue;
        }
        if c.clock.overdue_at.is_some() {
            continue;
        }
        if now >= c.clock.due {
            r.changes.push(ClockChange::Overdue {
                ticket: c.clock.ticket.clone(),
                started: c.clock.started,
                at: now,
            });
            r.tag_overdue.extend(here);
        } else {
            r.next_due = Some(r.next_due.map_or(c.clock.due, |d: i64| d.min(c.clock.due)));
        }
    }
    r.tag_overdue.sort_unstable();
    r.tag_overdue.dedup();
    r
}

/// How many open clocks the review holds at a time: it reads a desk's open clocks in
/// pages of this many, oldest first, and looks each page up on the server before the next.
/// All 30,383 open clocks of a 50,000-mail backlog at once took the daemon's peak RSS from
/// 32 to 44 MB (issue #16), about 350 bytes a clock: a page holds under 1 MB.
pub const CLOCKS_PER_PAGE: u32 = 2_000;

/// What the review's pages add up to.
#[derive(Debug, Default)]
struct Tally {
    /// Clocks still running after the review.
    running: u64,
    /// Of those, the ones past their limit (overdue now or before).
    overdue: u64,
    /// The earliest due time of a clock still running and not overdue.
    next_due: Option<i64>,
}

/// Looks at `desk`'s open clocks on the server (its mailbox selected, `uidvalidity` its
/// UIDVALIDITY) and acts on the [`review`] of each page of them ([`CLOCKS_PER_PAGE`]):
/// overdue mail tagged, changes written; then sets the clock gauges. The Sent and done
/// folders are searched once, before the first page, for all open clocks. Leaves the desk
/// mailbox selected. Returns when to look again (the next due time), `None` when no clock
/// runs.
///
/// # Errors
/// IMAP or store errors, as the watcher handles every desk error. The pages reviewed
/// before the error keep their changes; the next review goes over the rest.
pub async fn check(
    session: &mut DeskSession,
    shared: &Shared,
    desk: &Desk,
    uidvalidity: u32,
    now: i64,
) -> Result<Option<i64>, PipelineError> {
    let store = &shared.store;
    let mut tally = Tally::default();
    let mut seen = Observed {
        uidvalidity,
        ..Observed::default()
    };
    // Before the first page is read, so that the search does not add to a page's memory.
    look_elsewhere(session, shared, desk, now, &mut seen).await?;
    let (mut page, mut next) = store
        .open_clocks_page(&desk.name, None, CLOCKS_PER_PAGE)
        .await?;
    while !page.is_empty() {
        check_page(session, shared, desk, now, &page, &mut seen, &mut tally).await?;
        // The page is let go before the next is read.
        page = Vec::new();
        if let Some(after) = next.take() {
            (page, next) = store
                .open_clocks_page(&desk.name, Some(&after), CLOCKS_PER_PAGE)
                .await?;
        }
    }
    let gauges = shared.metrics.desk(&desk.name);
    gauges.clocks_open.store(tally.running, Relaxed);
    gauges.clocks_overdue.store(tally.overdue, Relaxed);
    Ok(tally.next_due)
}

/// Fills `seen.replied` and `seen.done`: the Message-IDs of open clocks' mails that a mail
/// in the Sent folder replies to, or that are in the done folder. Which mails of those
/// folders are read: [`crate::imap::reply_search`] (in full, since a day before the
/// oldest open clock started, on the connection's first review, hourly and when a clock
/// falls due now; otherwise what came since the last search). Once per review, for every page:
/// searching the folders per page made the desk mailbox be selected again per page, which
/// costs the server a look at the whole mailbox (a 50,000-mail review took 1.1 s instead
/// of 0.2 s). What is held for all open clocks meanwhile is a hash of each Message-ID (8
/// bytes); the folders' IDs whose hash matches are kept as text, and the review compares
/// those texts: a hash that matches by chance costs a little memory, never a wrong stop.
async fn look_elsewhere(
    session: &mut DeskSession,
    shared: &Shared,
    desk: &Desk,
    now: i64,
    seen: &mut Observed,
) -> Result<(), PipelineError> {
    let policy = shared.policy();
    let matrix = &policy.rules.matrix;
    // (the folder's name on the server, whether it is the Sent folder)
    let mut folders = Vec::new();
    for (folder, sent) in [(&matrix.sent_folder, true), (&matrix.done_folder, false)] {
        let Some(folder) = folder else { continue };
        if let Some(name) = session.existing_folder(folder).await? {
            folders.push((name, sent));
        }
    }
    let store = &shared.store;
    if folders.is_empty() {
        return Ok(());
    }
    let Some(oldest) = store.oldest_open_clock(&desk.name).await? else {
        return Ok(());
    };
    // In full when a clock is to be marked overdue, so that an answer the searches since
    // the last full one could not see stops it instead.
    let full = store.a_clock_falls_due(&desk.name, now).await?;
    // A key of this process's own, so that no one can make IDs match on purpose (a match
    // only keeps a folder's ID as text for the review's exact comparison).
    let key = std::collections::hash_map::RandomState::new();
    let mut ids: HashSet<u64> = HashSet::new();
    store
        .each_open_clock_message_id(&desk.name, CLOCKS_PER_PAGE, |id| {
            ids.insert(key.hash_one(bare_message_id(id)));
        })
        .await?;
    if ids.is_empty() {
        return Ok(());
    }
    for (name, sent) in folders {
        let wanted = |id: &str| ids.contains(&key.hash_one(id));
        let (found, search) = session
            .message_ids_in(&name, wanted, oldest - 86_400, now, full)
            .await?;
        tracing::debug!(desk = %desk.name, folder = %name, full = search.full, search = %search.criteria, looked_at = search.looked_at, found = found.len(), "replies searched");
        if sent {
            seen.replied = found;
        } else {
            seen.done = found;
        }
    }
    session.select(&desk.mailbox).await?;
    Ok(())
}

/// One page of [`check`]: `clocks`, open when the page was read; `seen` holds what
/// [`look_elsewhere`] found, and gets the page's `\Answered` flags.
async fn check_page(
    session: &mut DeskSession,
    shared: &Shared,
    desk: &Desk,
    now: i64,
    clocks: &[OpenClock],
    seen: &mut Observed,
    tally: &mut Tally,
) -> Result<(), PipelineError> {
    let policy = shared.policy();
    let matrix = &policy.rules.matrix;
    let uids: Vec<u32> = clocks
        .iter()
        .flat_map(|c| &c.mails)
        .filter(|m| m.uidvalidity == seen.uidvalidity)
        .map(|m| m.uid)
        .collect();
    seen.answered = session.answered_of(&uids).await?;
    drop(uids);
    let r = review(clocks, seen, now);
    if !r.tag_overdue.is_empty() {
        session
            .add_flags(
                &r.tag_overdue,
                &[OVERDUE.to_string(), "\\Flagged".to_string()],
            )
            .await?;
    }
    shared.store.update_clocks(&desk.name, &r.changes).await?;
    if let Some(template) = &matrix.overdue_notice {
        let mut queued = false;
        for change in &r.changes {
            let ClockChange::Overdue {
                ticket, started, ..
            } = change
            else {
                continue;
            };
            let Some(clock) = clocks
                .iter()
                .find(|c| c.clock.ticket == *ticket && c.clock.started == *started)
            else {
                continue;
            };
            if let Some(out) = notice(&policy, desk, &clock.clock, template, now) {
                // Once per clock, whoever queues it (the id), across restarts.
                queued |= shared.store.queue_once(&out, now).await?;
            }
        }
        if queued {
            shared.outbox_wake.notify_one();
        }
    }
    for change in &r.changes {
        match change {
            ClockChange::Stop {
                ticket,
                started,
                reason,
                ..
            } => {
                let late = clocks
                    .iter()
                    .find(|c| c.clock.ticket == *ticket && c.clock.started == *started)
                    .is_some_and(|c| now > c.clock.due);
                tracing::info!(desk = %desk.name, %ticket, reason = %reason.as_str(), late, "desk clock stopped");
            }
            ClockChange::Overdue { ticket, .. } => {
                tracing::warn!(desk = %desk.name, %ticket, "desk clock ran out: mail tagged $Overdue and flagged");
            }
        }
    }
    // What runs on after this review, and which of it is past its limit (overdue now or
    // before: the review marks a clock overdue exactly when `now >= due`).
    let stopped: HashSet<(&str, i64)> = r
        .changes
        .iter()
        .filter_map(|c| match c {
            ClockChange::Stop {
                ticket, started, ..
            } => Some((ticket.as_str(), *started)),
            ClockChange::Overdue { .. } => None,
        })
        .collect();
    let running: Vec<&OpenClock> = clocks
        .iter()
        .filter(|c| !stopped.contains(&(c.clock.ticket.as_str(), c.clock.started)))
        .collect();
    tally.running += running.len() as u64;
    tally.overdue += running
        .iter()
        .filter(|c| c.clock.overdue_at.is_some() || now >= c.clock.due)
        .count() as u64;
    tally.next_due = tally.next_due.into_iter().chain(r.next_due).min();
    Ok(())
}

/// The level-3 notice of an overdue `clock` to its sender, from the desk, rendered from
/// `template` with the clock's placeholders (`desk`, `desk_name`, `desk_address`,
/// `helpdesk`, `sender`, `subject`, `ticket`, `date` and the helpdesk's name, phone and
/// web address); `None` without a sender or template, or when it cannot be composed.
fn notice(
    policy: &crate::shared::Policy,
    desk: &Desk,
    clock: &ClockRow,
    template: &str,
    now: i64,
) -> Option<crate::store::NewOutgoing> {
    let sender = clock.sender.as_deref()?;
    let t = policy.rules.templates.get(template)?;
    let mut vars = crate::plan::desk_vars(policy, desk, now);
    vars.extend([
        ("sender".to_string(), sender.to_string()),
        ("subject".to_string(), clock.subject.clone()),
        ("ticket".to_string(), clock.ticket.clone()),
    ]);
    let id = format!(
        "overdue-notice:{}:{}:{}",
        desk.name, clock.ticket, clock.started
    );
    let message_id = format!(
        "overdue.{}.{}@{}",
        clock.started,
        clock
            .ticket
            .replace(|c: char| !c.is_ascii_alphanumeric(), "-"),
        desk.address.rsplit('@').next().unwrap_or("localhost")
    );
    let (subject, body) = (
        crate::compose::render(&t.subject, &vars),
        crate::compose::render(&t.body, &vars),
    );
    let spec = crate::compose::OutgoingSpec {
        kind: crate::compose::Kind::Reply,
        from: &desk.address,
        from_name: desk.display_name.as_deref(),
        to: sender,
        cc: None,
        subject: &subject,
        body: &body,
        original: b"",
        message_id: &message_id,
        date_unix: now,
        marker: &desk.name,
        boundary_seed: crate::compose::random_seed(),
    };
    let o = crate::compose::compose(&spec).ok()?;
    Some(crate::store::NewOutgoing {
        id,
        desk: desk.name.clone(),
        envelope_from: o.envelope_from,
        recipients: o.recipients,
        bytes: o.bytes,
        reply_claim: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ClockMail;

    fn clock(ticket: &str, due: i64, uids: &[u32]) -> OpenClock {
        OpenClock {
            clock: ClockRow {
                desk: "bid-ra".into(),
                ticket: ticket.into(),
                started: 100,
                due,
                sender: Some("meena@rites.co.in".into()),
                subject: format!("Ticket No:- {ticket}"),
                overdue_at: None,
            },
            mails: uids
                .iter()
                .map(|u| ClockMail {
                    uidvalidity: 7,
                    uid: *u,
                    message_id: Some(format!("<m{u}@rites.co.in>")),
                })
                .collect(),
        }
    }

    fn seen(flags: &[(u32, &[&str])]) -> Observed {
        Observed {
            uidvalidity: 7,
            answered: flags
                .iter()
                .map(|(u, f)| (*u, f.contains(&"\\Answered")))
                .collect(),
            ..Observed::default()
        }
    }

    #[test]
    fn an_answered_mail_stops_its_clock_before_or_after_the_limit() {
        let clocks = [clock("2026-1", 1_000, &[1, 2])];
        let r = review(
            &clocks,
            &seen(&[(1, &[]), (2, &["\\Answered", "\\Seen"])]),
            500,
        );
        assert_eq!(
            r.changes,
            [ClockChange::Stop {
                ticket: "2026-1".into(),
                started: 100,
                at: 500,
                reason: StopReason::Answered
            }]
        );
        assert!(r.tag_overdue.is_empty());
        assert_eq!(r.next_due, None);
        // Answered late: stopped all the same, never tagged.
        let r = review(&clocks, &seen(&[(2, &["\\Answered"])]), 5_000);
        assert!(matches!(r.changes[..], [ClockChange::Stop { .. }]));
        assert!(r.tag_overdue.is_empty());
    }

    #[test]
    fn a_clock_past_its_limit_is_overdue_once_and_its_mails_tagged() {
        let mut clocks = vec![
            clock("2026-1", 1_000, &[1, 3]),
            clock("2026-2", 2_000, &[2]),
        ];
        let r = review(
            &clocks,
            &seen(&[(1, &["\\Seen"]), (2, &[]), (3, &[])]),
            1_000,
        );
        assert_eq!(
            r.changes,
            [ClockChange::Overdue {
                ticket: "2026-1".into(),
                started: 100,
                at: 1_000
            }]
        );
        assert_eq!(r.tag_overdue, [1, 3]);
        assert_eq!(r.next_due, Some(2_000));
        clocks[0].clock.overdue_at = Some(1_000);
        let r = review(&clocks, &seen(&[(1, &[]), (2, &[]), (3, &[])]), 1_500);
        assert!(r.changes.is_empty(), "{r:?}");
        assert_eq!(r.next_due, Some(2_000));
    }

    #[test]
    fn a_reply_in_sent_or_a_mail_in_the_done_folder_stops_it() {
        let clocks = [clock("2026-1", 1_000, &[1]), clock("2026-2", 1_000, &[2])];
        let mut s = seen(&[]);
        s.replied.insert("m1@rites.co.in".into());
        s.done.insert("m2@rites.co.in".into());
        let r = review(&clocks, &s, 2_000);
        let reasons: Vec<StopReason> = r
            .changes
            .iter()
            .filter_map(|c| match c {
                ClockChange::Stop { reason, .. } => Some(*reason),
                ClockChange::Overdue { .. } => None,
            })
            .collect();
        assert_eq!(reasons, [StopReason::Sent, StopReason::DoneFolder]);
    }

    #[test]
    fn mails_of_another_uidvalidity_or_gone_are_not_tagged() {
        let mut c = clock("2026-1", 1_000, &[1, 2]);
        c.mails[0].uidvalidity = 6;
        let r = review(&[c], &seen(&[(1, &[]), (2, &[])]), 1_000);
        assert_eq!(r.tag_overdue, [2]);
        let r = review(&[clock("2026-1", 1_000, &[1])], &seen(&[]), 1_000);
        assert!(matches!(r.changes[..], [ClockChange::Overdue { .. }]));
        assert!(r.tag_overdue.is_empty(), "moved away: nothing to tag here");
    }
}
