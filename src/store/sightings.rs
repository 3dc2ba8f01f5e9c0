//! Sightings: where copies of one message (same group key) were seen, for broadcast
//! detection across desks. Pruning old ones is in `prune`; deciding what is a broadcast in
//! `decide` and `pipeline`.

use std::collections::HashMap;

use super::{MailKey, ROWS_PER_INSERT, Store, StoreError, get, get_key, query_error, row_marks};

/// Group keys per query of [`Store::sight_all`] (bind parameters stay far below the limits
/// of SQLite and PostgreSQL).
pub(super) const SIGHTING_QUERY_KEYS: usize = 200;

impl Store {
    /// Records that each `(group_key, key)` holds that message (a mail seen again keeps its
    /// first sighting time) and returns, in the order of `sightings`, the distinct desks,
    /// sorted, seen holding it at or after `now - window_secs`, always including the
    /// mail's own desk.
    ///
    /// Every sighting is recorded and committed first (one transaction), then the desks are
    /// read: of several desks sighting copies at once, the last to count sees all of them.
    pub async fn sight_all(
        &self,
        sightings: &[(&str, &MailKey)],
        now: i64,
        window_secs: i64,
    ) -> Result<Vec<Vec<String>>, StoreError> {
        let op = "record a sighting";
        if sightings.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await.map_err(query_error(op))?;
        for chunk in sightings.chunks(ROWS_PER_INSERT) {
            let sql = format!(
                "INSERT INTO sighting (group_key, desk, uidvalidity, uid, seen_at) VALUES {} \
                 ON CONFLICT (group_key, desk, uidvalidity, uid) DO NOTHING",
                row_marks(1, chunk.len(), 5)
            );
            let sql = self.sql(sql);
            let mut q = sqlx::query(&sql);
            for (group_key, key) in chunk {
                q = q
                    .bind(*group_key)
                    .bind(&key.desk)
                    .bind(i64::from(key.uidvalidity))
                    .bind(i64::from(key.uid))
                    .bind(now);
            }
            q.execute(&mut *tx).await.map_err(query_error(op))?;
        }
        tx.commit().await.map_err(query_error(op))?;
        let mut holders: HashMap<&str, Vec<String>> = HashMap::new();
        let mut keys: Vec<&str> = sightings.iter().map(|(g, _)| *g).collect();
        keys.sort_unstable();
        keys.dedup();
        for chunk in keys.chunks(SIGHTING_QUERY_KEYS) {
            let marks: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
            let sql = format!(
                "SELECT DISTINCT group_key, desk FROM sighting WHERE seen_at >= $1 \
                 AND group_key IN ({}) ORDER BY group_key, desk",
                marks.join(", ")
            );
            let sql = self.sql(sql);
            let mut q = sqlx::query(&sql).bind(now.saturating_sub(window_secs));
            for g in chunk {
                q = q.bind(*g);
            }
            for row in q.fetch_all(&self.pool).await.map_err(query_error(op))? {
                let g: String = get(&row, "group_key", op)?;
                let desk: String = get(&row, "desk", op)?;
                if let Some(k) = chunk.iter().find(|k| **k == g) {
                    holders.entry(k).or_default().push(desk);
                }
            }
        }
        Ok(sightings
            .iter()
            .map(|(g, key)| {
                let mut desks = holders.get(g).cloned().unwrap_or_default();
                if let Err(at) = desks.binary_search(&key.desk) {
                    desks.insert(at, key.desk.clone());
                }
                desks
            })
            .collect())
    }

    /// Every mailbox position where the message was seen, sorted.
    pub async fn sightings(&self, group_key: &str) -> Result<Vec<MailKey>, StoreError> {
        let op = "read sightings";
        sqlx::query(
            "SELECT desk, uidvalidity, uid FROM sighting WHERE group_key = $1 \
             ORDER BY desk, uidvalidity, uid",
        )
        .bind(group_key)
        .fetch_all(&self.pool)
        .await
        .map_err(query_error(op))?
        .iter()
        .map(|r| get_key(r, op))
        .collect()
    }
}
