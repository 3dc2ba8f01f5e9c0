//! One desk's watcher: connect, catch up (a batch at a time, filed in groups; mail by mail
//! after repeated refusals), wait with IDLE or polling, reconnect with backoff; and the
//! typed error of a failed session ([`DeskError`]). What to do with each mail is
//! `pipeline`'s; starting and stopping watchers is `supervisor`'s. The error types are in
//! `watcher/error.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::unix_now;
use crate::config::Desk;
use crate::imap::{DeskSession, Endpoint, ImapError, Wake};
use crate::pipeline;
use crate::pipeline::Batch;
use crate::shared::Shared;

mod error;
mod filer;

use error::At;
pub use error::{DeskCause, DeskError, DeskOp};

/// During a catch-up, mail is decided a batch (`[imap] batch_size`) at a time but filed in
/// groups: each UID STORE and UID MOVE costs the server time in proportion to the
/// mailbox's size, so few large commands beat many small ones. A group is `[imap]
/// file_group` mails (2,000), or a tenth of the mailbox when that is more, so that a
/// catch-up's filing cost grows linearly with the backlog, not with its square. A group
/// holds only UIDs and actions, not mail.
fn file_group(configured: usize, exists: u32) -> usize {
    configured.max(exists as usize / 10)
}

/// Reconnect delay after `failures` consecutive failures: 1 s doubling to 5 min, ±25 % jitter.
fn reconnect_delay(failures: u32) -> Duration {
    let base = Duration::from_secs(1)
        .saturating_mul(2u32.saturating_pow(failures.min(9)))
        .min(Duration::from_secs(300));
    base.mul_f64(0.75 + fastrand::f64() * 0.5)
}

/// Watches one desk until cancelled (or caught up, with `once`): connects, catches up,
/// waits (IDLE or polling) and reconnects with backoff after a failed session. Returns
/// false if it gave up (only with `once`, after repeated sessions that handled no mail).
pub async fn watch_desk(
    shared: Arc<Shared>,
    ep: Arc<Endpoint>,
    desk: Desk,
    cancel: CancellationToken,
    once: bool,
) -> bool {
    let mut trouble = Trouble::default();
    loop {
        match session(&shared, &ep, &desk, &cancel, once, &mut trouble).await {
            Ok(()) => {
                shared
                    .metrics
                    .desk(&desk.name)
                    .connected
                    .store(false, Ordering::Relaxed);
                return true;
            }
            Err(e) => {
                trouble.failures += 1;
                trouble.stalled += 1;
                if e.is_refusal() {
                    trouble.refusals += 1;
                }
                let failures = trouble.failures;
                let gauges = shared.metrics.desk(&desk.name);
                gauges.connected.store(false, Ordering::Relaxed);
                gauges.errors.fetch_add(1, Ordering::Relaxed);
                let delay = reconnect_delay(failures);
                tracing::warn!(desk = %desk.name, op = %e.op(), transient = e.is_transient(), error = %e.chain(), retry_in_ms = delay.as_millis() as u64, "desk session failed; reconnecting");
                if once && trouble.stalled >= ONCE_STALLED_SESSIONS {
                    tracing::error!(desk = %desk.name, "giving up on this desk for this run");
                    return false;
                }
                tokio::select! {
                    () = cancel.cancelled() => return true,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// A desk's consecutive failed sessions (counted from the last successful SELECT, for the
/// reconnect delay); those in a row that handled no mail at all (`stalled`); how many in a
/// row ended in a server refusal; and, in careful catch-ups, how many times each mail
/// (UIDVALIDITY, UID) was refused; and whether catch-ups may file on a second connection
/// to the desk (`second`).
#[derive(Debug, Default)]
struct Trouble {
    failures: u32,
    stalled: u32,
    refusals: u32,
    refused: HashMap<(u32, u32), u32>,
    second: filer::Second,
}

/// `run --once` gives up on a desk after this many failed sessions in a row that handled no
/// mail (a careful catch-up needs up to three in a row).
const ONCE_STALLED_SESSIONS: u32 = 5;

/// After this many sessions in a row ended in a refusal (NO/BAD to a fetch, store or move),
/// the next catch-up goes mail by mail and sets aside each mail the server refuses, so that
/// one mail it will not fetch or file cannot hold up the desk.
const REFUSALS_BEFORE_CAREFUL: u32 = 2;

/// Catch-up mail by mail (after repeated refusals): each mail is fetched, decided and
/// filed on its own. A mail the server refuses ends the session (retried after the usual
/// delay); refused again in a later session, it is journaled as failed with the server's
/// answer and left where it is. Returns the highest UID handled.
async fn careful_catch_up(
    s: &mut DeskSession,
    shared: &Shared,
    desk: &Desk,
    uidvalidity: u32,
    uids: &[u32],
    cancel: &CancellationToken,
    trouble: &mut Trouble,
) -> Result<u32, DeskError> {
    let max_bytes = shared.policy().rules.limits.fetch_limit();
    let mut last = 0;
    for &uid in uids {
        if cancel.is_cancelled() {
            break;
        }
        let handled = async {
            let (mails, _) = fetch_batch(s, shared, desk, &[uid], max_bytes, u64::MAX)
                .await
                .at(DeskOp::Fetch)?;
            let plans = pipeline::decide_batch(shared, desk, uidvalidity, mails)
                .await
                .at(DeskOp::Decide)?;
            pipeline::file(s, shared, desk, uidvalidity, &plans, uid)
                .await
                .at(DeskOp::File)?;
            Ok::<(), DeskError>(())
        }
        .await;
        match handled {
            Ok(()) => trouble.stalled = 0,
            Err(e) if e.is_refusal() => {
                let times = trouble.refused.entry((uidvalidity, uid)).or_insert(0);
                *times += 1;
                if *times < 2 {
                    tracing::warn!(desk = %desk.name, uid, error = %e.chain(), "the server refused this mail; trying it again after a pause");
                    return Err(e);
                }
                let error = e.chain();
                tracing::error!(desk = %desk.name, uid, error = %error, "the server keeps refusing this mail: set aside where it is (see `ticketgate report`)");
                shared.metrics.set_aside.fetch_add(1, Ordering::Relaxed);
                let key = crate::store::MailKey {
                    desk: desk.name.clone(),
                    uidvalidity,
                    uid,
                };
                shared
                    .store
                    .fail_mail(&key, &error, unix_now())
                    .await
                    .at(DeskOp::SetAside)?;
                shared
                    .store
                    .advance(&desk.name, uidvalidity, uid)
                    .await
                    .at(DeskOp::SetAside)?;
                trouble.stalled = 0;
            }
            Err(e) => return Err(e),
        }
        last = uid;
    }
    Ok(last)
}

/// Fetches one batch; returns it with its highest UID.
async fn fetch_batch(
    s: &mut DeskSession,
    shared: &Shared,
    desk: &Desk,
    chunk: &[u32],
    max_bytes: u32,
    budget: u64,
) -> Result<(Batch, u32), ImapError> {
    let started = std::time::Instant::now();
    let (mails, reserved) = s.fetch(chunk, max_bytes, budget, &shared.memory).await?;
    let bytes: u64 = mails
        .iter()
        .filter_map(|m| m.raw.as_ref())
        .map(|r| r.len() as u64)
        .sum();
    tracing::debug!(desk = %desk.name, mails = mails.len(), bytes, fetch_ms = started.elapsed().as_secs_f64() * 1000.0, "batch fetched");
    let highest = mails.last().map_or(0, |m| m.uid);
    Ok((Batch { mails, reserved }, highest))
}

/// What fetching a batch of one desk's mailbox needs beside the session: the desk, its
/// mailbox's UIDVALIDITY and the largest mail fetched whole (bytes,
/// `Limits::fetch_limit`).
struct Fetcher<'a> {
    shared: &'a Shared,
    desk: &'a Desk,
    uidvalidity: u32,
    max_bytes: u32,
}

impl Fetcher<'_> {
    /// [`fetch_batch`] of `chunk` (within `budget` bytes), then [`pipeline::parse_batch`]:
    /// the batch's mails read against the journal and parsed, with the highest UID fetched.
    async fn fetch_and_parse(
        &self,
        s: &mut DeskSession,
        chunk: &[u32],
        budget: u64,
    ) -> Result<(pipeline::ParsedBatch, u32), DeskError> {
        let (batch, highest) =
            fetch_batch(s, self.shared, self.desk, chunk, self.max_bytes, budget)
                .await
                .at(DeskOp::Fetch)?;
        let parsed = pipeline::parse_batch(self.shared, self.desk, self.uidvalidity, batch)
            .await
            .at(DeskOp::Decide)?;
        Ok((parsed, highest))
    }
}

/// One connection's life: returns Ok when cancelled (or caught up, with `once`).
async fn session(
    shared: &Shared,
    ep: &Endpoint,
    desk: &Desk,
    cancel: &CancellationToken,
    once: bool,
    trouble: &mut Trouble,
) -> Result<(), DeskError> {
    let mut s = DeskSession::connect(ep, &desk.login, desk.password.expose())
        .await
        .at(DeskOp::Connect)?;
    let state = s.select(&desk.mailbox).await.at(DeskOp::Select)?;
    trouble.failures = 0;
    trouble.second.new_session();
    let mut careful = trouble.refusals >= REFUSALS_BEFORE_CAREFUL;
    let gauges = shared.metrics.desk(&desk.name);
    gauges.connected.store(true, Ordering::Relaxed);
    let store = &shared.store;
    let mut last = match store.desk_progress(&desk.name).await.at(DeskOp::Progress)? {
        Some((v, last)) if v == state.uidvalidity => last,
        Some((v, _)) => {
            tracing::warn!(desk = %desk.name, old = v, new = state.uidvalidity, "UIDVALIDITY changed: the mailbox was recreated; rescanning it (sent mail is not repeated)");
            store
                .set_uidvalidity(&desk.name, state.uidvalidity)
                .await
                .at(DeskOp::Progress)?;
            0
        }
        None => {
            store
                .set_uidvalidity(&desk.name, state.uidvalidity)
                .await
                .at(DeskOp::Progress)?;
            0
        }
    };
    tracing::info!(desk = %desk.name, mailbox = %desk.mailbox, exists = state.exists, "watching");
    if !state.keywords {
        tracing::warn!(desk = %desk.name, mailbox = %desk.mailbox, "the server does not keep keywords (no \\* in PERMANENTFLAGS): mail is filed into folders and \\Flagged, without $Ticket, $NoTicket and the other keywords");
    }
    let max_bytes = shared.policy().rules.limits.fetch_limit();
    let batch = shared.config.imap.batch_size;
    // Without MOVE, filing is COPY + \Deleted + EXPUNGE: a crash before the EXPUNGE copies
    // the group again, so a group there is filed as soon as it reaches one batch (one batch,
    // or less than two when the byte limit cut batches short).
    let group = if s.capabilities().r#move {
        file_group(shared.config.imap.file_group, state.exists)
    } else {
        batch
    };
    // The second connection: the group filed on it while this one fetches on
    // (`watcher/filer.rs`).
    let mut filer = filer::Filer::default();
    loop {
        // Catch up on everything after the last mail done: fetched and decided a batch at a
        // time, filed (keywords, moves, done, progress) in groups (`file_group`) and when
        // caught up. The durable progress only passes filed mail, so a crash in between
        // redoes the filing of mail already decided (idempotent).
        let mut decided_up_to = last;
        let mut unfiled: Vec<pipeline::Plan> = Vec::new();
        loop {
            let uids = if cancel.is_cancelled() {
                Vec::new()
            } else {
                s.uids_from(decided_up_to.saturating_add(1))
                    .await
                    .at(DeskOp::Search)?
            };
            if careful && !uids.is_empty() {
                tracing::warn!(desk = %desk.name, mails = uids.len(), "the server refused commands repeatedly: handling this catch-up mail by mail");
                let handled = careful_catch_up(
                    &mut s,
                    shared,
                    desk,
                    state.uidvalidity,
                    &uids,
                    cancel,
                    trouble,
                )
                .await?;
                decided_up_to = decided_up_to.max(handled);
                last = decided_up_to;
                careful = false;
                continue;
            }
            // Each batch is decided while the next one is fetched and parsed (issue #16:
            // parsing on blocking threads beside the decisions' database work), and a full
            // group is filed while the batch after it is decided; the batch after that is
            // fetched once the connection is free again. A batch is
            // at most `batch_size` mails and, by bytes, at most one largest allowed mail (or
            // one mail): `pos` is where the next batch starts.
            let chunk_at = |pos: usize| {
                uids.get(pos..uids.len().min(pos + batch))
                    .filter(|c| !c.is_empty())
            };
            let mut pos = 0;
            // Bodies in memory, fetched and being decided, stay within one largest allowed
            // mail (`max_mail_mb`) and one more mail: the next batch is fetched alongside
            // only with what the current one leaves of that budget (issue #13).
            let budget = u64::from(max_bytes);
            let uidvalidity = state.uidvalidity;
            let fetcher = Fetcher {
                shared,
                desk,
                uidvalidity,
                max_bytes,
            };
            let mut fetched = match chunk_at(pos) {
                Some(chunk) => Some(fetcher.fetch_and_parse(&mut s, chunk, budget).await?),
                None => None,
            };
            // An error ends the session, but the group on the second connection is let
            // finish first (its filing and progress stand) and that connection logged out.
            let caught_up: Result<(), DeskError> = async {
                while let Some((parsed, highest)) = fetched.take() {
                    pos += parsed.mails().len();
                    let held: u64 = parsed
                        .mails()
                        .iter()
                        .filter_map(|m| m.raw.as_ref())
                        .map(|r| r.len() as u64)
                        .sum();
                    let alongside = budget.saturating_sub(held);
                    let following = chunk_at(pos).filter(|_| !cancel.is_cancelled());
                    // A large batch is decided first, and the next one fetched after it.
                    let deferred = following.filter(|_| alongside < budget / 2);
                    let next = following.filter(|_| alongside >= budget / 2);
                    let work = async {
                        tokio::join!(
                            pipeline::decide_parsed(shared, desk, uidvalidity, parsed),
                            async {
                                match next {
                                    Some(chunk) => fetcher
                                        .fetch_and_parse(&mut s, chunk, alongside)
                                        .await
                                        .map(Some),
                                    None => Ok(None),
                                }
                            }
                        )
                    };
                    let ((plans, next), ended) = filer.beside(work).await;
                    filer.settle(ended, &fetcher, &mut s, trouble, &mut last).await?;
                    unfiled.extend(plans.at(DeskOp::Decide)?);
                    decided_up_to = decided_up_to.max(highest);
                    fetched = match (next?, deferred) {
                        (Some(n), _) => Some(n),
                        (None, Some(chunk)) => {
                            let work = fetcher.fetch_and_parse(&mut s, chunk, budget);
                            let (next, ended) = filer.beside(work).await;
                            filer.settle(ended, &fetcher, &mut s, trouble, &mut last)
                                .await?;
                            Some(next?)
                        }
                        (None, None) => None,
                    };
                    if unfiled.len() < group {
                        continue;
                    }
                    // With more to decide, a full group goes to the server on the second
                    // connection (issue #16): this one fetches on meanwhile. One group at a
                    // time, in order, so progress passes only filed mail; the group before is
                    // settled first (and may find that there is no second connection).
                    let before = filer.ended().await;
                    filer.settle(before, &fetcher, &mut s, trouble, &mut last).await?;
                    if fetched.is_some() && s.capabilities().r#move && trouble.second.allowed() {
                        filer.start(
                            ep,
                            shared,
                            desk,
                            uidvalidity,
                            std::mem::take(&mut unfiled),
                            decided_up_to,
                        );
                        continue;
                    }
                    // A full group is filed while the batch fetched beside it is decided: the
                    // server files on the connection while the database takes the decisions
                    // (issue #16). Progress passes only the filed group.
                    let filing = std::mem::take(&mut unfiled);
                    let up_to = decided_up_to;
                    let beside = fetched.take();
                    pos += beside.as_ref().map_or(0, |(p, _)| p.mails().len());
                    let (filed, decided) = tokio::join!(
                        pipeline::file(&mut s, shared, desk, uidvalidity, &filing, up_to),
                        async {
                            match beside {
                                Some((parsed, highest)) => {
                                    pipeline::decide_parsed(shared, desk, uidvalidity, parsed)
                                        .await
                                        .map(|plans| Some((plans, highest)))
                                }
                                None => Ok(None),
                            }
                        }
                    );
                    if let (Err(_), Err(e)) = (&filed, &decided) {
                        // The filing's error ends the session; this one is only logged.
                        tracing::warn!(desk = %desk.name, error = %e, "deciding the batch beside the filing failed too");
                    }
                    filed.at(DeskOp::File)?;
                    trouble.stalled = 0;
                    last = up_to;
                    if let Some((plans, highest)) = decided.at(DeskOp::Decide)? {
                        unfiled.extend(plans);
                        decided_up_to = decided_up_to.max(highest);
                    }
                    // Without MOVE a group is filed as soon as it reaches one batch (see
                    // `group`): the batch decided beside is filed now, on its own.
                    if unfiled.len() >= group {
                        pipeline::file(&mut s, shared, desk, uidvalidity, &unfiled, decided_up_to)
                            .await
                            .at(DeskOp::File)?;
                        unfiled.clear();
                        last = decided_up_to;
                    }
                    fetched = match chunk_at(pos).filter(|_| !cancel.is_cancelled()) {
                        Some(chunk) => Some(fetcher.fetch_and_parse(&mut s, chunk, budget).await?),
                        None => None,
                    };
                }
                Ok(())
            }
            .await;
            if let Err(e) = caught_up {
                filer.close().await;
                return Err(e);
            }
            let before = filer.ended().await;
            filer
                .settle(before, &fetcher, &mut s, trouble, &mut last)
                .await?;
            if decided_up_to > last {
                pipeline::file(
                    &mut s,
                    shared,
                    desk,
                    state.uidvalidity,
                    &unfiled,
                    decided_up_to,
                )
                .await
                .at(DeskOp::File)?;
                trouble.stalled = 0;
                unfiled.clear();
                last = decided_up_to;
            }
            filer.close().await;
            if cancel.is_cancelled() {
                let _ = s.logout().await;
                return Ok(());
            }
            if uids.is_empty() {
                // Caught up: refusals before this one no longer count.
                trouble.refusals = 0;
                trouble.refused.clear();
                break;
            }
        }
        let started = std::time::Instant::now();
        pipeline::tag_late_broadcasts(&mut s, shared, desk)
            .await
            .at(DeskOp::LateBroadcasts)?;
        let late_ms = started.elapsed().as_secs_f64() * 1000.0;
        // The desk's clocks: after every round, and again when the next one falls due.
        let next_due = crate::deskclock::check(&mut s, shared, desk, state.uidvalidity, unix_now())
            .await
            .at(DeskOp::Clocks)?;
        tracing::debug!(desk = %desk.name, late_ms, clocks_ms = started.elapsed().as_secs_f64() * 1000.0 - late_ms, "round closed");
        gauges.last_sync.store(unix_now(), Ordering::Relaxed);
        if once {
            let _ = s.logout().await;
            return Ok(());
        }
        let until_due = next_due.map(|due| {
            std::time::Duration::from_secs(u64::try_from(due - unix_now()).unwrap_or(0).max(1))
        });
        let refresh = until_due.map_or(shared.config.imap.idle_refresh, |d| {
            d.min(shared.config.imap.idle_refresh)
        });
        let poll = until_due.map_or(shared.config.imap.poll_interval, |d| {
            d.min(shared.config.imap.poll_interval)
        });
        match s
            .wait(cancel, &shared.recheck, refresh, poll)
            .await
            .at(DeskOp::Wait)?
        {
            Wake::Cancelled => {
                let _ = s.logout().await;
                return Ok(());
            }
            Wake::Changed | Wake::Timeout => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::PipelineError;
    use crate::store::StoreError;

    fn refused() -> ImapError {
        ImapError::Protocol {
            op: "fetch mail",
            source: async_imap::error::Error::No("[SERVERBUG] cannot read".into()),
        }
    }

    #[test]
    fn refusals_are_told_apart_from_lost_connections() {
        let e = DeskError::new(DeskOp::Fetch, refused());
        assert!(e.is_refusal());
        assert_eq!(e.op(), DeskOp::Fetch);
        // Through the pipeline's error, as from decide_batch or file.
        let e = DeskError::new(DeskOp::File, PipelineError::Imap(refused()));
        assert!(e.is_refusal());
        assert!(matches!(e.cause(), DeskCause::Imap(_)));
        let lost = DeskError::new(DeskOp::Fetch, ImapError::Closed("fetch mail"));
        assert!(!lost.is_refusal());
        assert!(lost.is_transient());
        let config = DeskError::new(DeskOp::Connect, ImapError::PlainRefused("x".into()));
        assert!(!config.is_refusal());
        assert!(!config.is_transient());
        let gone = StoreError::Unknown {
            op: "advance",
            what: "desk".into(),
        };
        let store = DeskError::new(DeskOp::SetAside, gone);
        assert!(!store.is_refusal());
        assert!(!store.is_transient());
        // The log line shows the cause as before; the operation is a field.
        assert_eq!(
            DeskError::new(DeskOp::Fetch, ImapError::Closed("fetch mail")).to_string(),
            "cannot fetch mail: the server closed the connection"
        );
        // With every cause, as anyhow's `{:#}` showed it.
        let e = DeskError::new(
            DeskOp::Connect,
            ImapError::Login {
                login: "bid.ra".into(),
                reason: "no".into(),
            },
        );
        assert_eq!(e.chain(), format!("{:#}", anyhow::Error::new(e.cause)));
        let full = StoreError::Query {
            op: "record a sighting",
            source: sqlx::Error::Protocol("database or disk is full".into()),
        };
        assert_eq!(
            DeskError::new(DeskOp::Decide, PipelineError::Store(full)).chain(),
            "cannot record a sighting in the state database: encountered unexpected or invalid data: database or disk is full"
        );
    }

    #[test]
    fn groups_grow_with_the_mailbox_and_delays_are_bounded() {
        assert_eq!(file_group(2000, 100), 2000);
        assert_eq!(file_group(2000, 100_000), 10_000);
        for failures in 0..40 {
            let d = reconnect_delay(failures);
            assert!(d >= Duration::from_millis(750), "{d:?}");
            assert!(d <= Duration::from_secs(375), "{d:?}");
        }
    }
}
