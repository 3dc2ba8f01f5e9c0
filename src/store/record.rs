//! Writing the mail journal: decisions (with their planned actions, reply claims and
//! outgoing mail, in one transaction), completion, setting mail aside. Reading it is in
//! `journal`; queuing the outgoing mail itself in `outbox`.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use sqlx::AnyConnection;

pub use super::decision::{NewDecision, NewOutgoing, ReplyClaim};
use super::journal::{MailStatus, queued_by};
use super::outbox::record_outgoing;
use super::progress::advance;
use super::{
    MailKey, ROWS_PER_INSERT, SQLITE, Store, StoreError, actions, get_key, get_u32, positional,
    query_error, row_marks, truncate,
};

/// What [`Store::record_decisions`] did with one decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// False when the mail was already journaled: nothing was changed.
    pub first_time: bool,
    /// Outbox ids this mail's decision queued, sorted. Missing are ids that another mail
    /// queued first and replies whose claim was refused.
    pub queued: Vec<String>,
}

impl Store {
    /// Records the decisions of a whole fetch batch in ONE transaction (one commit instead
    /// of one per mail): for each, the journal row, its planned actions, reply claims and
    /// outbox rows. All are recorded before any of their side effects, or none is. Results
    /// in the order of `decisions`. Idempotent: for a mail already journaled nothing changes
    /// and the ids it queued before are returned (the same mail twice in one call is
    /// journaled once).
    ///
    /// An outgoing mail with a [`ReplyClaim`] is queued only if no reply went to that sender
    /// for that rule within the period, and the claim is taken in the same statement, so of
    /// two desks deciding on copies at the same moment only one replies. Claims are taken in
    /// (sender, rule) order and outbox rows inserted in id order, so concurrent decisions lock
    /// rows in the same order and cannot deadlock each other.
    ///
    /// The outgoing mails' bodies are moved into the database: `decisions` keep everything
    /// else, with empty bodies (a large redirect is then not held twice while SQLite copies
    /// it: issue #13).
    pub async fn record_decisions(
        &self,
        decisions: &mut [NewDecision],
    ) -> Result<Vec<Recorded>, StoreError> {
        let op = "record a decision";
        let mut out = Vec::with_capacity(decisions.len());
        if decisions.is_empty() {
            return Ok(out);
        }
        let mut tx = self.pool.begin().await.map_err(query_error(op))?;
        let mut inserted: HashSet<MailKey> = HashSet::new();
        for chunk in decisions.chunks(ROWS_PER_INSERT) {
            inserted.extend(insert_journal_rows(&mut tx, chunk).await?);
        }
        // The first decision of each new mail (its journal row, with its actions, is the
        // one inserted: a mail twice in one call is journaled once).
        let mut planned: HashSet<&MailKey> = HashSet::new();
        let first: Vec<&NewDecision> = decisions
            .iter()
            .filter(|d| inserted.contains(&d.key) && planned.insert(&d.key))
            .collect();
        let clocks: Vec<_> = first
            .iter()
            .filter_map(|d| Some((*d, d.clock.as_ref()?)))
            .collect();
        super::clocks::start_or_join_all(&mut tx, &clocks).await?;
        for d in decisions.iter_mut() {
            // Removed once seen: the same mail twice in one call is journaled once.
            out.push(if inserted.remove(&d.key) {
                Recorded {
                    first_time: true,
                    queued: record_outgoing(&mut tx, d).await?,
                }
            } else {
                Recorded {
                    first_time: false,
                    queued: queued_by(&mut *tx, &d.key).await?,
                }
            });
        }
        tx.commit().await.map_err(query_error(op))?;
        Ok(out)
    }

    /// Marks mails done in ONE transaction: each is marked done and each desk's progress
    /// advanced to its highest UID among them. Every mail must have been journaled; if one
    /// was not, nothing changes ([`StoreError::Unknown`] names it). Marking a mail done again
    /// is a no-op (its first finishing time stays).
    pub async fn complete_mails(&self, keys: &[MailKey], now: i64) -> Result<(), StoreError> {
        let op = "mark a mail done";
        if keys.is_empty() {
            return Ok(());
        }
        let mut by_mailbox: BTreeMap<(&str, u32), BTreeSet<u32>> = BTreeMap::new();
        for key in keys {
            by_mailbox
                .entry((&key.desk, key.uidvalidity))
                .or_default()
                .insert(key.uid);
        }
        let mut tx = self.pool.begin().await.map_err(query_error(op))?;
        let mut highest: Vec<(&str, u32, u32)> = Vec::new();
        for (&(desk, uidvalidity), uids) in &by_mailbox {
            let uids: Vec<u32> = uids.iter().copied().collect();
            for chunk in uids.chunks(ROWS_PER_INSERT) {
                let marks = row_marks(5, 1, chunk.len());
                let update = format!(
                    "UPDATE journal SET status = 'done', finished_at = $1 \
                     WHERE desk = $2 AND uidvalidity = $3 AND status <> $4 AND uid IN {marks}"
                );
                let update = self.sql(update);
                let mut q = sqlx::query(&update)
                    .bind(now)
                    .bind(desk)
                    .bind(i64::from(uidvalidity))
                    .bind(MailStatus::Done.as_str());
                for uid in chunk {
                    q = q.bind(i64::from(*uid));
                }
                let changed = q.execute(&mut *tx).await.map_err(query_error(op))?;
                if changed.rows_affected() < chunk.len() as u64 {
                    // Some were done already (a no-op), or were never journaled (an error).
                    let select = format!(
                        "SELECT uid FROM journal WHERE desk = $1 AND uidvalidity = $2 \
                         AND uid IN {}",
                        row_marks(3, 1, chunk.len())
                    );
                    let select = self.sql(select);
                    let mut q = sqlx::query(&select).bind(desk).bind(i64::from(uidvalidity));
                    for uid in chunk {
                        q = q.bind(i64::from(*uid));
                    }
                    let rows = q.fetch_all(&mut *tx).await.map_err(query_error(op))?;
                    let known: HashSet<u32> = rows
                        .iter()
                        .map(|r| get_u32(r, "uid", op))
                        .collect::<Result<_, _>>()?;
                    if let Some(uid) = chunk.iter().find(|u| !known.contains(u)) {
                        let key = MailKey {
                            desk: desk.to_string(),
                            uidvalidity,
                            uid: *uid,
                        };
                        return Err(StoreError::Unknown {
                            op,
                            what: format!("mail {key}"),
                        });
                    }
                }
            }
            if let Some(&last) = uids.last() {
                highest.push((desk, uidvalidity, last));
            }
        }
        for (desk, uidvalidity, uid) in highest {
            advance(&mut *tx, desk, uidvalidity, uid)
                .await
                .map_err(query_error(op))?;
        }
        tx.commit().await.map_err(query_error(op))
    }

    /// Sets the mail aside after an error: journaled as failed (created if it was never
    /// decided), counted in the report, not retried. A mail already done stays done.
    /// The desk's progress is left alone: it moves past the mail with the rest of its
    /// group ([`crate::pipeline::file`]), so that mail decided before it in the same group
    /// is still redone after a crash.
    pub async fn fail_mail(&self, key: &MailKey, error: &str, now: i64) -> Result<(), StoreError> {
        let op = "set a mail aside";
        sqlx::query(
            "INSERT INTO journal (desk, uidvalidity, uid, status, group_key, message_id, sender, \
             subject, ticket, ticket_source, broadcast, automatic, redirected, rule, error, \
             decided_at, finished_at) \
             VALUES ($1, $2, $3, 'failed', '', NULL, NULL, '', NULL, NULL, 0, 0, 0, NULL, $4, $5, $5) \
             ON CONFLICT (desk, uidvalidity, uid) DO UPDATE \
             SET status = 'failed', error = excluded.error, finished_at = excluded.finished_at \
             WHERE journal.status <> 'done'",
        )
        .bind(&key.desk)
        .bind(i64::from(key.uidvalidity))
        .bind(i64::from(key.uid))
        .bind(truncate(error))
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(query_error(op))
        .map(drop)
    }
}

/// Journals decisions (status decided, with their planned actions) in one statement; returns
/// the keys that were new.
async fn insert_journal_rows(
    tx: &mut AnyConnection,
    decisions: &[NewDecision],
) -> Result<Vec<MailKey>, StoreError> {
    let op = "record a decision";
    let sql = format!(
        "INSERT INTO journal (desk, uidvalidity, uid, status, group_key, message_id, sender, \
         subject, ticket, ticket_source, broadcast, automatic, redirected, rule, decided_at, \
         actions) \
         VALUES {} ON CONFLICT (desk, uidvalidity, uid) DO NOTHING \
         RETURNING desk, uidvalidity, uid",
        row_marks(1, decisions.len(), 16)
    );
    let planned = decisions
        .iter()
        .map(|d| actions::encode_all(&d.actions))
        .collect::<Result<Vec<_>, _>>()?;
    let sql = positional(tx.backend_name() == SQLITE, sql);
    let mut q = sqlx::query(&sql);
    for (d, planned) in decisions.iter().zip(&planned) {
        q = q
            .bind(&d.key.desk)
            .bind(i64::from(d.key.uidvalidity))
            .bind(i64::from(d.key.uid))
            .bind(MailStatus::Decided.as_str())
            .bind(&d.group_key)
            .bind(d.message_id.as_deref())
            .bind(d.sender.as_deref())
            .bind(&d.subject)
            .bind(d.ticket.as_deref())
            .bind(d.ticket_source.as_deref())
            .bind(i64::from(d.broadcast))
            .bind(i64::from(d.automatic))
            .bind(i64::from(d.redirected))
            .bind(d.rule.as_deref())
            .bind(d.now)
            .bind(planned.as_str());
    }
    let rows = q.fetch_all(&mut *tx).await.map_err(query_error(op))?;
    rows.iter().map(|row| get_key(row, op)).collect()
}
