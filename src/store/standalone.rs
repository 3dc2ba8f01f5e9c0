//! Reads and writes of the supervisors' digest (issue #17): outgoing mail that belongs to
//! no desk mail, queued once per id; the desk clocks stopped within a period. Composing
//! the digest is `digest`'s.

use super::record::NewOutgoing;
use super::{Store, StoreError, get, query_error};

/// A desk clock stopped within a period, for "answered in time".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoppedClock {
    pub desk: String,
    pub stopped_at: i64,
    pub due: i64,
}

impl Store {
    /// Queues `out` unless a mail with its id was ever queued (sent, failed or waiting):
    /// how a digest goes out exactly once per day, whichever process or restart asks.
    /// Returns whether it was queued now. `now`: Unix seconds.
    pub async fn queue_once(&self, out: &NewOutgoing, now: i64) -> Result<bool, StoreError> {
        let op = "queue a digest";
        let recipients =
            serde_json::to_string(&out.recipients).map_err(|e| StoreError::Corrupt {
                what: "outgoing recipients",
                value: e.to_string(),
            })?;
        let added = sqlx::query(
            "INSERT INTO outbox (id, desk, envelope_from, recipients, body, body_base64, \
             status, attempts, next_attempt_at, last_error, created_at, finished_at, \
             mail_desk, mail_uidvalidity, mail_uid) \
             VALUES ($1, $2, $3, $4, $5, '', 'pending', 0, $6, NULL, $6, NULL, $2, 0, 0) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&out.id)
        .bind(&out.desk)
        .bind(&out.envelope_from)
        .bind(recipients)
        .bind(out.bytes.as_slice())
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(query_error(op))?
        .rows_affected();
        Ok(added == 1)
    }

    /// Desk clocks stopped in `[from, to)` (Unix seconds).
    pub async fn clocks_stopped_between(
        &self,
        from: i64,
        to: i64,
    ) -> Result<Vec<StoppedClock>, StoreError> {
        let op = "read the stopped desk clocks";
        let rows = sqlx::query(
            "SELECT desk, stopped_at, due FROM desk_clock \
             WHERE status = 'stopped' AND stopped_at >= $1 AND stopped_at < $2",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await
        .map_err(query_error(op))?;
        rows.iter()
            .map(|r| {
                Ok(StoppedClock {
                    desk: get(r, "desk", op)?,
                    stopped_at: get(r, "stopped_at", op)?,
                    due: get(r, "due", op)?,
                })
            })
            .collect()
    }
}
