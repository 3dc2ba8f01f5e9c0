//! Retention: what the store forgets, and the periodic task that makes it forget. Sightings
//! are kept as long as broadcast detection looks back (the rules' broadcast window);
//! finished mails (journal rows done or set aside, with their planned actions), finished
//! outgoing mail (sent or failed), the desks' stopped clocks with their mails, and the
//! reply ledger's record of who got which reply, for the rules' `retention_days` (never
//! shorter than a rule's reply period). Pending outgoing mail, mails not finished and open
//! clocks are never removed. Tickets learned from the helpdesk's
//! acknowledgements are kept: the folder is not read again, so a forgotten ticket would be
//! answered "unknown" (one small row per ticket, like the helpdesk's own export). The windows come from the rules (`daemon`).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Store, StoreError, query_error};

/// How long the store keeps what, in seconds before `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keep {
    /// Sightings: broadcast detection counts copies seen within this window.
    pub sightings_secs: u64,
    /// Finished journal rows with their actions, and sent or failed outbox rows.
    pub finished_secs: u64,
}

/// Rows removed by one [`Store::prune`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneCounts {
    pub sightings: u64,
    /// Journal rows (mails done or set aside).
    pub journal: u64,
    /// `journal_action` rows of those journal rows (mails journaled before release 0.7;
    /// later ones keep their actions in the journal row).
    pub actions: u64,
    /// Sent or failed outbox rows.
    pub outbox: u64,
    /// Desk clocks stopped before the retention period (`desk_clock` rows).
    pub clocks: u64,
    /// The mails of those clocks (`desk_clock_mail` rows).
    pub clock_mails: u64,
    /// Replies recorded in the reply ledger before the retention period (one row per sender
    /// and reply template, the last reply's time).
    pub replies: u64,
}

impl PruneCounts {
    /// All rows removed.
    pub fn total(&self) -> u64 {
        self.sightings
            + self.journal
            + self.actions
            + self.outbox
            + self.clocks
            + self.clock_mails
            + self.replies
    }
}

/// Finished journal rows older than `$1` that no pending outgoing mail belongs to; `{j}` is
/// the journal table's name or alias.
fn finished_journal(j: &str) -> String {
    format!(
        "{j}.status IN ('done', 'failed') AND COALESCE({j}.finished_at, {j}.decided_at) < $1 \
         AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.status = 'pending' \
         AND o.mail_desk = {j}.desk AND o.mail_uidvalidity = {j}.uidvalidity \
         AND o.mail_uid = {j}.uid)"
    )
}

impl Store {
    /// Removes what is older than `keep` says at `now` (Unix seconds): sightings outside the
    /// broadcast window; journal rows of mails done or set aside, with their planned actions,
    /// sent or failed outbox rows, desk clocks with their mails, finished (stopped) before
    /// the retention period, and replies recorded in the reply ledger before it. Never a
    /// pending outbox row, a mail still being decided, a finished mail whose outgoing mail is
    /// still pending, or an open clock, however old. One transaction for the journal,
    /// outbox, clocks and ledger; sightings apart.
    pub async fn prune(&self, now: i64, keep: Keep) -> Result<PruneCounts, StoreError> {
        let op = "remove old state";
        let before = |secs: u64| now.saturating_sub(i64::try_from(secs).unwrap_or(i64::MAX));
        let mut counts = PruneCounts {
            sightings: sqlx::query("DELETE FROM sighting WHERE seen_at < $1")
                .bind(before(keep.sightings_secs))
                .execute(&self.pool)
                .await
                .map_err(query_error(op))?
                .rows_affected(),
            ..PruneCounts::default()
        };
        let finished = before(keep.finished_secs);
        let mut tx = self.pool.begin().await.map_err(query_error(op))?;
        let actions = format!(
            "DELETE FROM journal_action WHERE EXISTS (SELECT 1 FROM journal j \
             WHERE j.desk = journal_action.desk AND j.uidvalidity = journal_action.uidvalidity \
             AND j.uid = journal_action.uid AND {})",
            finished_journal("j")
        );
        counts.actions = sqlx::query(&actions)
            .bind(finished)
            .execute(&mut *tx)
            .await
            .map_err(query_error(op))?
            .rows_affected();
        let journal = format!("DELETE FROM journal WHERE {}", finished_journal("journal"));
        counts.journal = sqlx::query(&journal)
            .bind(finished)
            .execute(&mut *tx)
            .await
            .map_err(query_error(op))?
            .rows_affected();
        counts.outbox = sqlx::query(
            "DELETE FROM outbox WHERE status IN ('sent', 'failed') AND finished_at < $1",
        )
        .bind(finished)
        .execute(&mut *tx)
        .await
        .map_err(query_error(op))?
        .rows_affected();
        // A clock's mails first, found through the clock's key.
        counts.clock_mails = sqlx::query(
            "DELETE FROM desk_clock_mail WHERE EXISTS (SELECT 1 FROM desk_clock c \
             WHERE c.desk = desk_clock_mail.desk AND c.ticket = desk_clock_mail.ticket \
             AND c.started = desk_clock_mail.started AND c.status = 'stopped' \
             AND c.stopped_at < $1)",
        )
        .bind(finished)
        .execute(&mut *tx)
        .await
        .map_err(query_error(op))?
        .rows_affected();
        counts.clocks =
            sqlx::query("DELETE FROM desk_clock WHERE status = 'stopped' AND stopped_at < $1")
                .bind(finished)
                .execute(&mut *tx)
                .await
                .map_err(query_error(op))?
                .rows_affected();
        // The rules keep retention at least as long as their longest reply period: a reply
        // forgotten here may be sent again to the same sender.
        counts.replies = sqlx::query("DELETE FROM reply_ledger WHERE replied_at < $1")
            .bind(finished)
            .execute(&mut *tx)
            .await
            .map_err(query_error(op))?
            .rows_affected();
        tx.commit().await.map_err(query_error(op))?;
        Ok(counts)
    }
}

/// Prunes at once and then every `every` until `stop`, with the windows `keep` gives at
/// that moment (the rules may be reloaded meanwhile). Counts are logged at info when rows
/// were removed; an error is logged and the next round tries again.
pub async fn prune_periodically<F>(store: Store, every: Duration, keep: F, stop: CancellationToken)
where
    F: Fn() -> Keep + Send,
{
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        match store.prune(now, keep()).await {
            Ok(c) if c.total() > 0 => tracing::info!(
                sightings = c.sightings,
                journal = c.journal,
                actions = c.actions,
                outbox = c.outbox,
                clocks = c.clocks,
                clock_mails = c.clock_mails,
                replies = c.replies,
                "old state removed from the database"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot remove old state; trying again later"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
