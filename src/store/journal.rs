//! Reading the mail journal: one mail's entry, the statuses of a fetch batch, copies that
//! turned out to be a broadcast, answers per sender. Writing it (decisions, completion,
//! setting aside) is in `record`; the action records' format in `actions`.

use std::collections::{HashMap, HashSet};

use sqlx::Executor;

use crate::action::Action;

use super::actions::{self, UnreadableAction};
use super::{MailKey, Store, StoreError, get, get_bool, get_u32, get_u64, query_error};

/// Where a journaled mail stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailStatus {
    /// Decision recorded; some actions may still be outstanding.
    Decided,
    /// All actions carried out.
    Done,
    /// Set aside after an error; counted in the report, not retried.
    Failed,
}

impl MailStatus {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            MailStatus::Decided => "decided",
            MailStatus::Done => "done",
            MailStatus::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Result<MailStatus, StoreError> {
        match text {
            "decided" => Ok(MailStatus::Decided),
            "done" => Ok(MailStatus::Done),
            "failed" => Ok(MailStatus::Failed),
            other => Err(StoreError::Corrupt {
                what: "journal status",
                value: other.to_owned(),
            }),
        }
    }
}

/// A journaled mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    pub key: MailKey,
    pub status: MailStatus,
    /// Empty when the mail was set aside before it was decided.
    pub group_key: String,
    pub message_id: Option<String>,
    pub sender: Option<String>,
    pub subject: String,
    pub ticket: Option<String>,
    pub ticket_source: Option<String>,
    pub broadcast: bool,
    pub automatic: bool,
    pub redirected: bool,
    pub rule: Option<String>,
    /// Planned actions in order, or the first record that cannot be read (then none is
    /// given: acting on part of a decision would be a guess).
    pub actions: Result<Vec<Action>, UnreadableAction>,
    /// Outbox ids queued by this mail's decision, sorted.
    pub queued: Vec<String>,
    pub error: Option<String>,
    pub decided_at: i64,
    pub finished_at: Option<i64>,
}

impl Store {
    /// The journal entry of one mail, if it was decided or set aside.
    pub async fn journal(&self, key: &MailKey) -> Result<Option<JournalEntry>, StoreError> {
        let op = "read the journal";
        let Some(row) = sqlx::query(
            "SELECT status, group_key, message_id, sender, subject, ticket, ticket_source, \
             broadcast, automatic, redirected, rule, error, decided_at, finished_at, actions \
             FROM journal WHERE desk = $1 AND uidvalidity = $2 AND uid = $3",
        )
        .bind(&key.desk)
        .bind(i64::from(key.uidvalidity))
        .bind(i64::from(key.uid))
        .fetch_optional(&self.pool)
        .await
        .map_err(query_error(op))?
        else {
            return Ok(None);
        };
        let actions = match get::<Option<String>>(&row, "actions", op)? {
            Some(record) => actions::decode_all(key, &record),
            // Journaled before release 0.7: one journal_action row per action.
            None => self
                .action_rows(&key.desk, key.uidvalidity, &[key.uid])
                .await?
                .remove(&key.uid)
                .unwrap_or(Ok(Vec::new())),
        };
        let queued = queued_by(&self.pool, key).await?;
        let status: String = get(&row, "status", op)?;
        Ok(Some(JournalEntry {
            key: key.clone(),
            status: MailStatus::parse(&status)?,
            group_key: get(&row, "group_key", op)?,
            message_id: get(&row, "message_id", op)?,
            sender: get(&row, "sender", op)?,
            subject: get(&row, "subject", op)?,
            ticket: get(&row, "ticket", op)?,
            ticket_source: get(&row, "ticket_source", op)?,
            broadcast: get_bool(&row, "broadcast", op)?,
            automatic: get_bool(&row, "automatic", op)?,
            redirected: get_bool(&row, "redirected", op)?,
            rule: get(&row, "rule", op)?,
            actions,
            queued,
            error: get(&row, "error", op)?,
            decided_at: get(&row, "decided_at", op)?,
            finished_at: get(&row, "finished_at", op)?,
        }))
    }

    /// How far each of `uids` (one desk mailbox) got, for those journaled: one query for a
    /// whole fetch batch instead of one [`Store::journal`] per mail.
    pub async fn journal_statuses(
        &self,
        desk: &str,
        uidvalidity: u32,
        uids: &[u32],
    ) -> Result<HashMap<u32, MailStatus>, StoreError> {
        let op = "read the journal";
        let mut out = HashMap::new();
        let (Some(first), Some(last)) = (uids.iter().min(), uids.iter().max()) else {
            return Ok(out);
        };
        let rows = sqlx::query(
            "SELECT uid, status FROM journal \
             WHERE desk = $1 AND uidvalidity = $2 AND uid >= $3 AND uid <= $4",
        )
        .bind(desk)
        .bind(i64::from(uidvalidity))
        .bind(i64::from(*first))
        .bind(i64::from(*last))
        .fetch_all(&self.pool)
        .await
        .map_err(query_error(op))?;
        let wanted: HashSet<u32> = uids.iter().copied().collect();
        for row in rows {
            let uid = get_u32(&row, "uid", op)?;
            if wanted.contains(&uid) {
                let status: String = get(&row, "status", op)?;
                out.insert(uid, MailStatus::parse(&status)?);
            }
        }
        Ok(out)
    }

    /// Mails of `desk` decided since `since` as not broadcast whose copies have since been
    /// seen in at least `threshold` desks (copies delivered in Bcc are only recognised as a
    /// broadcast once enough of them arrived): the earlier copies still need the keyword.
    pub async fn late_broadcasts(
        &self,
        desk: &str,
        since: i64,
        threshold: usize,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        let op = "find copies that turned out to be a broadcast";
        let rows = sqlx::query(
            "SELECT j.uidvalidity, j.uid FROM journal j WHERE j.desk = $1 AND j.broadcast = 0 \
             AND j.decided_at >= $2 AND j.status <> 'failed' \
             AND (SELECT COUNT(DISTINCT s.desk) FROM sighting s WHERE s.group_key = j.group_key AND s.seen_at >= $2) >= $3",
        )
        .bind(desk)
        .bind(since)
        .bind(i64::try_from(threshold).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(query_error(op))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let key = MailKey {
                desk: desk.to_owned(),
                uidvalidity: get_u32(&row, "uidvalidity", op)?,
                uid: get_u32(&row, "uid", op)?,
            };
            if let Some(e) = self.journal(&key).await? {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Records that a mail was found to be part of a broadcast (and tagged so).
    pub async fn mark_broadcast(&self, key: &MailKey) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE journal SET broadcast = 1 WHERE desk = $1 AND uidvalidity = $2 AND uid = $3",
        )
        .bind(&key.desk)
        .bind(i64::from(key.uidvalidity))
        .bind(i64::from(key.uid))
        .execute(&self.pool)
        .await
        .map_err(query_error("mark a mail as broadcast"))?;
        Ok(())
    }

    /// How many answers `sender` got since `since`: mails redirected with the sender in Cc
    /// (journaled as redirected) and automatic replies (the reply ledger), for the rules'
    /// `sender_answer_limit`. Case-insensitive on the address.
    pub async fn answers_since(&self, sender: &str, since: i64) -> Result<u32, StoreError> {
        let op = "count the answers to a sender";
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM journal \
                     WHERE lower(sender) = $1 AND decided_at >= $2 AND redirected = 1) \
                  + (SELECT COUNT(*) FROM reply_ledger WHERE sender = $1 AND replied_at >= $2) AS n",
        )
        .bind(sender.to_lowercase())
        .bind(since)
        .fetch_one(&self.pool)
        .await
        .map_err(query_error(op))?;
        Ok(u32::try_from(get_u64(&row, "n", op)?).unwrap_or(u32::MAX))
    }
}

/// The outbox ids a mail's decision queued, sorted. Usable inside a transaction.
pub(super) async fn queued_by<'e, E>(executor: E, key: &MailKey) -> Result<Vec<String>, StoreError>
where
    E: Executor<'e, Database = sqlx::Any>,
{
    let op = "read the outbox";
    sqlx::query(
        "SELECT id FROM outbox WHERE mail_desk = $1 AND mail_uidvalidity = $2 AND mail_uid = $3 \
         ORDER BY id",
    )
    .bind(&key.desk)
    .bind(i64::from(key.uidvalidity))
    .bind(i64::from(key.uid))
    .fetch_all(executor)
    .await
    .map_err(query_error(op))?
    .iter()
    .map(|r| get(r, "id", op))
    .collect()
}
