//! Tickets learned from the helpdesk's acknowledgement mails (issue #17, the registry's
//! `acknowledgements` source) and how far each acknowledgement folder has been read
//! (UIDVALIDITY and last UID). Reading the folder and recognising an acknowledgement are
//! `acklearn`'s; turning a learned ticket into a registry answer is `registry`'s.

use std::collections::HashMap;

use super::{Store, StoreError, get, query_error, row_marks};

/// Ticket numbers per lookup query (bind parameters stay far below the backends' limits).
const LOOKUP_KEYS: usize = 200;

/// One ticket as an acknowledgement told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnedTicket {
    /// The normalised ticket number (`registry::ticket_key`).
    pub ticket: String,
    /// When the helpdesk registered it (Unix seconds).
    pub created: i64,
    /// The address the helpdesk acknowledged (its To), if any.
    pub requester: Option<String>,
}

impl Store {
    /// The folder's UIDVALIDITY and the highest UID learned from, if it was read before.
    pub async fn ack_progress(&self, folder: &str) -> Result<Option<(u32, u32)>, StoreError> {
        self.progress(
            "SELECT uidvalidity, last_uid FROM ack_progress WHERE folder = $1",
            folder,
            "read acknowledgement progress",
        )
        .await
    }

    /// Records `tickets` (an already known ticket keeps the earliest creation time and that
    /// acknowledgement's requester) and that `folder` (at `uidvalidity`) has been read up to
    /// `last_uid`, in one transaction: a crash never loses a ticket below the stored UID.
    /// `now`: Unix seconds, kept as when each was learned.
    pub async fn learn_tickets(
        &self,
        folder: &str,
        (uidvalidity, last_uid): (u32, u32),
        tickets: &[LearnedTicket],
        now: i64,
    ) -> Result<(), StoreError> {
        let op = "record learned tickets";
        let mut tx = self.pool.begin().await.map_err(query_error(op))?;
        for t in tickets {
            // One row per statement: two acknowledgements of one ticket in a batch would
            // otherwise meet in one INSERT, which PostgreSQL refuses.
            sqlx::query(
                "INSERT INTO ack_ticket (ticket, created, requester, learned_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (ticket) DO UPDATE SET \
                 created = excluded.created, requester = excluded.requester, \
                 learned_at = excluded.learned_at \
                 WHERE excluded.created < ack_ticket.created",
            )
            .bind(&t.ticket)
            .bind(t.created)
            .bind(t.requester.as_deref())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(query_error(op))?;
        }
        sqlx::query(
            "INSERT INTO ack_progress (folder, uidvalidity, last_uid) VALUES ($1, $2, $3) \
             ON CONFLICT (folder) DO UPDATE SET uidvalidity = excluded.uidvalidity, \
             last_uid = excluded.last_uid",
        )
        .bind(folder)
        .bind(i64::from(uidvalidity))
        .bind(i64::from(last_uid))
        .execute(&mut *tx)
        .await
        .map_err(query_error(op))?;
        tx.commit().await.map_err(query_error(op))
    }

    /// The learned tickets among `tickets` (normalised numbers), keyed by number; one query
    /// per 200 numbers.
    pub async fn learned_tickets(
        &self,
        tickets: &[String],
    ) -> Result<HashMap<String, LearnedTicket>, StoreError> {
        let op = "read learned tickets";
        let mut out = HashMap::new();
        for chunk in tickets.chunks(LOOKUP_KEYS) {
            let sql = format!(
                "SELECT ticket, created, requester FROM ack_ticket WHERE ticket IN {}",
                row_marks(1, 1, chunk.len())
            );
            let sql = self.sql(sql);
            let mut q = sqlx::query(&sql);
            for t in chunk {
                q = q.bind(t);
            }
            for row in q.fetch_all(&self.pool).await.map_err(query_error(op))? {
                let t = LearnedTicket {
                    ticket: get(&row, "ticket", op)?,
                    created: get(&row, "created", op)?,
                    requester: get(&row, "requester", op)?,
                };
                out.insert(t.ticket.clone(), t);
            }
        }
        Ok(out)
    }
}
