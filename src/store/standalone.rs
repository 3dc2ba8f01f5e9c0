//! Reads and writes of the supervisors' digest (issue #17): outgoing mail that belongs to
//! no desk mail, queued once per id; the desk clocks stopped within a period. Composing
//! the digest is `digest`'s.

use super::record::NewOutgoing;
use super::{MailKey, Store, StoreError, get, query_error};

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
        // Tied to no desk mail: the sending desk with UIDVALIDITY and UID 0.
        let none = MailKey {
            desk: out.desk.clone(),
            uidvalidity: 0,
            uid: 0,
        };
        super::outbox::insert_row(&self.pool, out, out.bytes.clone(), now, &none).await
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
