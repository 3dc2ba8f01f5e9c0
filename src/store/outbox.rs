//! The outbox (durable queue of outgoing mail) and the reply ledger: queuing a decision's
//! mail with its reply claims, reading what is due, recording how sending went. Bodies are
//! stored as bytes (`body`, migration 0003); rows queued by releases before 0.3 keep theirs
//! base64-encoded in `body_base64`, read when `body` is NULL. Sending is in `smtp`.

use std::collections::HashSet;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::TryStreamExt as _;
use sqlx::AnyConnection;
use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::decision::{NewDecision, NewOutgoing, ReplyClaim};
use super::{MailKey, Store, StoreError, get, get_u32, get_u64, query_error, truncate};
use crate::budget::{MailMemory, Reserved};

/// Outgoing mail due for an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    pub id: String,
    pub desk: String,
    pub envelope_from: String,
    pub recipients: Vec<String>,
    /// The whole mail, as queued.
    pub bytes: Vec<u8>,
    /// Attempts made so far.
    pub attempts: u32,
}

/// Where an outgoing mail stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxStatus {
    Pending,
    /// Handed to the SMTP server; the body is no longer kept.
    Sent,
    /// Given up (permanent error); kept with its body for inspection.
    Failed,
}

impl OutboxStatus {
    fn parse(text: &str) -> Result<OutboxStatus, StoreError> {
        match text {
            "pending" => Ok(OutboxStatus::Pending),
            "sent" => Ok(OutboxStatus::Sent),
            "failed" => Ok(OutboxStatus::Failed),
            other => Err(StoreError::Corrupt {
                what: "outbox status",
                value: other.to_owned(),
            }),
        }
    }
}

/// An outbox row without its body, for reports and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRecord {
    pub id: String,
    pub desk: String,
    pub status: OutboxStatus,
    pub attempts: u32,
    /// Unix seconds, as the other times.
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    /// The mail whose decision queued it.
    pub mail: MailKey,
}

impl Store {
    /// True when a reply went to `sender` (case-insensitive) for `rule` strictly after
    /// `since`. With `since = now - period` this is exactly when a [`ReplyClaim`] would be
    /// refused.
    pub async fn replied_since(
        &self,
        sender: &str,
        rule: &str,
        since: i64,
    ) -> Result<bool, StoreError> {
        let op = "read the reply ledger";
        let last: Option<i64> =
            sqlx::query("SELECT replied_at FROM reply_ledger WHERE sender = $1 AND rule = $2")
                .bind(sender.to_lowercase())
                .bind(rule)
                .fetch_optional(&self.pool)
                .await
                .map_err(query_error(op))?
                .map(|r| get(&r, "replied_at", op))
                .transpose()?;
        Ok(last.is_some_and(|at| at > since))
    }

    /// Pending outgoing mail whose next attempt is due, oldest first, at most `limit` mails
    /// and, beyond the first, at most `max_bytes` of stored bodies in all: large mails are
    /// read one at a time (issue #13). Rows are turned into items one by one as they arrive,
    /// so a body is held twice (row and item) only while it is converted.
    ///
    /// Mails whose id is in `skip` (being sent, or sent with the result not yet written)
    /// are passed over; they count neither against `limit` nor against `max_bytes`.
    ///
    /// Before the bodies are read, their bytes times [`crate::budget::SEND_COPIES`] are
    /// reserved in `memory`; the caller holds the reservation until the mails are sent.
    /// Without `wait_for_memory`, `None` when they do not fit in the budget now or others
    /// already wait for it.
    pub async fn outbox_due(
        &self,
        now: i64,
        limit: u32,
        max_bytes: u64,
        memory: &MailMemory,
        skip: &HashSet<String>,
        wait_for_memory: bool,
    ) -> Result<Option<(Vec<OutboxItem>, Reserved)>, StoreError> {
        let op = "read the outbox";
        // Which mails first, by their sizes only (no body is held in a sort); then the
        // chosen mails' bodies. A legacy base64 body counts as the bytes it decodes to.
        let sizes = sqlx::query(
            "SELECT id, CAST(COALESCE(LENGTH(body), LENGTH(body_base64) / 4 * 3) AS BIGINT) \
             AS size FROM outbox WHERE status = 'pending' AND next_attempt_at <= $1 \
             ORDER BY next_attempt_at, created_at, id LIMIT $2",
        )
        .bind(now)
        .bind(i64::from(limit).saturating_add(i64::try_from(skip.len()).unwrap_or(i64::MAX)))
        .fetch_all(&self.pool)
        .await
        .map_err(query_error(op))?;
        let mut ids: Vec<String> = Vec::new();
        let mut total = 0u64;
        for r in &sizes {
            let id: String = get(r, "id", op)?;
            if skip.contains(&id) {
                continue;
            }
            if ids.len() >= limit as usize {
                break;
            }
            let size = u64::try_from(get::<i64>(r, "size", op)?).unwrap_or(0);
            if !ids.is_empty() && total.saturating_add(size) > max_bytes {
                break;
            }
            total = total.saturating_add(size);
            ids.push(id);
        }
        if ids.is_empty() {
            return Ok(Some((Vec::new(), Reserved::none())));
        }
        let bytes = total.saturating_mul(crate::budget::SEND_COPIES);
        let reserved = if wait_for_memory {
            memory.reserve(bytes).await
        } else {
            let Some(reserved) = memory.try_reserve(bytes) else {
                return Ok(None);
            };
            reserved
        };
        let placeholders: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT id, desk, envelope_from, recipients, body, \
             CASE WHEN body IS NULL THEN body_base64 ELSE '' END AS body_base64, attempts \
             FROM outbox WHERE id IN ({}) ORDER BY next_attempt_at, created_at, id",
            placeholders.join(", ")
        );
        let sql = self.sql(sql);
        let mut q = sqlx::query(&sql);
        for id in &ids {
            q = q.bind(id);
        }
        let mut rows = q.fetch(&self.pool);
        let mut items = Vec::with_capacity(ids.len());
        while let Some(row) = rows.try_next().await.map_err(query_error(op))? {
            items.push(outbox_item(&row, op)?);
        }
        Ok(Some((items, reserved)))
    }

    /// Writes what became of several send attempts (each a mail id and its
    /// [`SendResult`]) at `now`, in ONE transaction: all or none. The outbox's lanes finish
    /// sends while results are being written, and theirs go together into the next
    /// transaction (a group commit): a drain
    /// costs a commit, with `synchronous=FULL` an fsync, per few mails instead of per mail
    /// (issue #16). Each change applies only to a pending row: repeating one after the row
    /// left `pending` is a no-op; an unknown id is an error, and then nothing is written.
    pub async fn outbox_results(
        &self,
        results: &[(String, SendResult)],
        now: i64,
    ) -> Result<(), StoreError> {
        if results.is_empty() {
            return Ok(());
        }
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(query_error("record send results"))?;
        for (id, result) in results {
            let (op, sql, time, error) = match result {
                SendResult::Sent { refused } => (
                    "mark outgoing mail sent",
                    "UPDATE outbox SET status = 'sent', attempts = attempts + 1, finished_at = $2, \
                     body = NULL, body_base64 = '', last_error = $3 WHERE id = $1 AND status = 'pending'",
                    now,
                    refused.as_deref(),
                ),
                SendResult::Retry { at, error } => (
                    "reschedule outgoing mail",
                    "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $2, last_error = $3 \
                     WHERE id = $1 AND status = 'pending'",
                    *at,
                    Some(error.as_str()),
                ),
                SendResult::Failed(error) => (
                    "give up on outgoing mail",
                    "UPDATE outbox SET status = 'failed', attempts = attempts + 1, finished_at = $2, \
                     last_error = $3 WHERE id = $1 AND status = 'pending'",
                    now,
                    Some(error.as_str()),
                ),
            };
            outbox_update(&mut tx, op, id, sql, time, error).await?;
        }
        tx.commit()
            .await
            .map_err(query_error("record send results"))
    }

    /// Outgoing mail waiting to be sent: how many, and when the oldest was queued (Unix
    /// seconds; `None` when none waits). One query, for the outbox task's gauges.
    pub async fn outbox_waiting(&self) -> Result<(u64, Option<i64>), StoreError> {
        let op = "count the outbox";
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(created_at) AS t FROM outbox WHERE status = 'pending'",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(query_error(op))?;
        let oldest = row
            .try_get::<Option<i64>, _>("t")
            .map_err(query_error(op))?;
        Ok((get_u64(&row, "n", op)?, oldest))
    }

    /// Every outbox row, without bodies, oldest first.
    pub async fn outbox_all(&self) -> Result<Vec<OutboxRecord>, StoreError> {
        let op = "list the outbox";
        sqlx::query(
            "SELECT id, desk, status, attempts, next_attempt_at, last_error, created_at, \
             finished_at, mail_desk, mail_uidvalidity, mail_uid FROM outbox \
             ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(query_error(op))?
        .iter()
        .map(|r| {
            let status: String = get(r, "status", op)?;
            Ok(OutboxRecord {
                id: get(r, "id", op)?,
                desk: get(r, "desk", op)?,
                status: OutboxStatus::parse(&status)?,
                attempts: get_u32(r, "attempts", op)?,
                next_attempt_at: get(r, "next_attempt_at", op)?,
                last_error: get(r, "last_error", op)?,
                created_at: get(r, "created_at", op)?,
                finished_at: get(r, "finished_at", op)?,
                mail: MailKey {
                    desk: get(r, "mail_desk", op)?,
                    uidvalidity: get_u32(r, "mail_uidvalidity", op)?,
                    uid: get_u32(r, "mail_uid", op)?,
                },
            })
        })
        .collect()
    }
}

/// What became of a send attempt, to be written to the outbox
/// ([`Store::outbox_results`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendResult {
    /// Accepted by the SMTP server, for every recipient or for some: not sent again. Its
    /// body is dropped; the row stays.
    Sent {
        /// Which recipients were refused for good and why, kept as the row's error for
        /// `ticketgate report`.
        refused: Option<String>,
    },
    /// Given up (a permanent failure, or too many temporary ones), with the reason: not
    /// tried again, but kept with its body and error, visible in [`Store::outbox_all`].
    Failed(String),
    /// A temporary failure: the attempt counted, the error kept, tried again at Unix time
    /// `at`.
    Retry {
        /// Unix seconds of the next attempt.
        at: i64,
        /// The reason of this failure.
        error: String,
    },
}

/// Runs one of the outbox state changes (`sql`, binding the id, `time` and `error`) on
/// `conn`; it applies only to a pending row: repeating one after the row left `pending` is
/// a no-op; an unknown id is an error.
async fn outbox_update(
    conn: &mut AnyConnection,
    op: &'static str,
    id: &str,
    sql: &'static str,
    time: i64,
    error: Option<&str>,
) -> Result<(), StoreError> {
    let changed = sqlx::query(sql)
        .bind(id)
        .bind(time)
        .bind(error.map(truncate))
        .execute(&mut *conn)
        .await
        .map_err(query_error(op))?
        .rows_affected();
    if changed == 0 {
        let exists = sqlx::query("SELECT id FROM outbox WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(query_error(op))?
            .is_some();
        if !exists {
            return Err(StoreError::Unknown {
                op,
                what: format!("outgoing mail {id:?}"),
            });
        }
    }
    Ok(())
}

/// One row of [`Store::outbox_due`]'s body query as an item.
fn outbox_item(r: &AnyRow, op: &'static str) -> Result<OutboxItem, StoreError> {
    let recipients: String = get(r, "recipients", op)?;
    let bytes = match get::<Option<Vec<u8>>>(r, "body", op)? {
        Some(bytes) => bytes,
        None => {
            let legacy: String = get(r, "body_base64", op)?;
            BASE64.decode(&legacy).map_err(|e| StoreError::Corrupt {
                what: "outbox mail body",
                value: e.to_string(),
            })?
        }
    };
    Ok(OutboxItem {
        id: get(r, "id", op)?,
        desk: get(r, "desk", op)?,
        envelope_from: get(r, "envelope_from", op)?,
        recipients: serde_json::from_str(&recipients).map_err(|_| StoreError::Corrupt {
            what: "outbox recipients",
            value: recipients.clone(),
        })?,
        bytes,
        attempts: get_u32(r, "attempts", op)?,
    })
}

/// Takes the reply claims and queues the outgoing mail of a newly journaled decision, inside
/// [`Store::record_decisions`]' transaction; returns the outbox ids it queued, sorted. The
/// body is moved into the statement (no copy of it is made on this side; `d`'s outgoing
/// bodies are left empty).
pub(super) async fn record_outgoing(
    tx: &mut AnyConnection,
    d: &mut NewDecision,
) -> Result<Vec<String>, StoreError> {
    let op = "record a decision";
    if d.outbox.is_empty() {
        return Ok(Vec::new());
    }
    let mut claims: Vec<(String, &ReplyClaim, &NewOutgoing)> = d
        .outbox
        .iter()
        .filter_map(|out| {
            let claim = out.reply_claim.as_ref()?;
            Some((claim.sender.to_lowercase(), claim, out))
        })
        .collect();
    claims.sort_by(|a, b| (&a.0, &a.1.rule, &a.2.id).cmp(&(&b.0, &b.1.rule, &b.2.id)));
    let mut refused: HashSet<String> = HashSet::new();
    for (sender, claim, out) in &claims {
        let taken = sqlx::query(
            "INSERT INTO reply_ledger (sender, rule, replied_at, outbox_id) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (sender, rule) DO UPDATE \
             SET replied_at = excluded.replied_at, outbox_id = excluded.outbox_id \
             WHERE reply_ledger.replied_at <= $5",
        )
        .bind(sender)
        .bind(&claim.rule)
        .bind(d.now)
        .bind(&out.id)
        .bind(d.now.saturating_sub(claim.period_secs))
        .execute(&mut *tx)
        .await
        .map_err(query_error(op))?
        .rows_affected();
        if taken == 0 {
            refused.insert(out.id.clone());
        }
    }

    let (now, key) = (d.now, &d.key);
    let mut outgoing: Vec<&mut NewOutgoing> = d
        .outbox
        .iter_mut()
        .filter(|out| !refused.contains(&out.id))
        .collect();
    outgoing.sort_by(|a, b| a.id.cmp(&b.id));
    let mut queued = Vec::new();
    for out in outgoing {
        let bytes = std::mem::take(&mut out.bytes);
        if insert_row(&mut *tx, out, bytes, now, key).await? {
            queued.push(out.id.clone());
        }
    }
    Ok(queued)
}

/// Inserts `out` with the body `bytes` (moved into the statement: sqlx copies a borrowed
/// one) as a pending outbox row for the mail `of` (whose decision queued it), unless a row
/// with its id exists; returns whether it was inserted. `now`: Unix seconds.
pub(super) async fn insert_row<'e, E>(
    executor: E,
    out: &NewOutgoing,
    bytes: Vec<u8>,
    now: i64,
    of: &MailKey,
) -> Result<bool, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let op = "queue outgoing mail";
    let recipients = serde_json::to_string(&out.recipients).map_err(|e| StoreError::Corrupt {
        what: "outgoing recipients",
        value: e.to_string(),
    })?;
    let added = sqlx::query(
        "INSERT INTO outbox (id, desk, envelope_from, recipients, body, body_base64, \
         status, attempts, next_attempt_at, last_error, created_at, finished_at, \
         mail_desk, mail_uidvalidity, mail_uid) \
         VALUES ($1, $2, $3, $4, $5, '', 'pending', 0, $6, NULL, $6, NULL, $7, $8, $9) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&out.id)
    .bind(&out.desk)
    .bind(&out.envelope_from)
    .bind(recipients)
    .bind(bytes)
    .bind(now)
    .bind(&of.desk)
    .bind(i64::from(of.uidvalidity))
    .bind(i64::from(of.uid))
    .execute(executor)
    .await
    .map_err(query_error(op))?
    .rows_affected();
    Ok(added == 1)
}
