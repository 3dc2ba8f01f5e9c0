//! Desk progress: each desk mailbox's UIDVALIDITY and the highest UID finished (done or set
//! aside). Marking mails done, which advances it, is in `record`.

use sqlx::Executor;

use super::{Store, StoreError, get_u32, query_error};

impl Store {
    /// The desk's UIDVALIDITY and the highest UID finished (done or set aside), if known.
    pub async fn desk_progress(&self, desk: &str) -> Result<Option<(u32, u32)>, StoreError> {
        self.progress(
            "SELECT uidvalidity, last_uid FROM desk_progress WHERE desk = $1",
            desk,
            "read desk progress",
        )
        .await
    }

    /// (uidvalidity, last_uid) of the one row `sql` selects by `key`, if any.
    pub(super) async fn progress(
        &self,
        sql: &'static str,
        key: &str,
        op: &'static str,
    ) -> Result<Option<(u32, u32)>, StoreError> {
        let row = sqlx::query(sql)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_error(op))?;
        row.map(|row| {
            Ok((
                get_u32(&row, "uidvalidity", op)?,
                get_u32(&row, "last_uid", op)?,
            ))
        })
        .transpose()
    }

    /// Records the mailbox's UIDVALIDITY; when it differs from the stored one (or none is
    /// stored), the last finished UID is reset to 0. Setting the same value again is a no-op.
    pub async fn set_uidvalidity(&self, desk: &str, uidvalidity: u32) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO desk_progress (desk, uidvalidity, last_uid) VALUES ($1, $2, 0) \
             ON CONFLICT (desk) DO UPDATE SET uidvalidity = excluded.uidvalidity, last_uid = 0 \
             WHERE desk_progress.uidvalidity <> excluded.uidvalidity",
        )
        .bind(desk)
        .bind(i64::from(uidvalidity))
        .execute(&self.pool)
        .await
        .map_err(query_error("record UIDVALIDITY"))?;
        Ok(())
    }

    /// Raises the desk's last finished UID to `uid` (never lowers it). Ignored when
    /// `uidvalidity` is not the desk's current one: a stale UID must not move progress.
    pub async fn advance(&self, desk: &str, uidvalidity: u32, uid: u32) -> Result<(), StoreError> {
        advance(&self.pool, desk, uidvalidity, uid)
            .await
            .map_err(query_error("advance desk progress"))
    }
}

/// Monotonic progress; see [`Store::advance`]. Usable inside a transaction.
pub(super) async fn advance<'e, E>(
    executor: E,
    desk: &str,
    uidvalidity: u32,
    uid: u32,
) -> sqlx::Result<()>
where
    E: Executor<'e, Database = sqlx::Any>,
{
    sqlx::query(
        "INSERT INTO desk_progress (desk, uidvalidity, last_uid) VALUES ($1, $2, $3) \
         ON CONFLICT (desk) DO UPDATE SET last_uid = excluded.last_uid \
         WHERE desk_progress.uidvalidity = excluded.uidvalidity \
         AND desk_progress.last_uid < excluded.last_uid",
    )
    .bind(desk)
    .bind(i64::from(uidvalidity))
    .bind(i64::from(uid))
    .execute(executor)
    .await
    .map(drop)
}
