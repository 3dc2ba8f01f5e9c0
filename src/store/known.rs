//! Batch reads of what a fetched batch's plan depends on ([`crate::plan::KnownState`]) and
//! of the journaled actions of the mails a crash left decided: a bounded number of queries
//! per batch, whatever its number of mails, senders or rules. Writes are elsewhere in the
//! store; the single-mail reads ([`Store::answers_since`], [`Store::journal`]) stay for
//! tools and tests.

use std::collections::{BTreeMap, HashMap};

use super::actions::{self, UnreadableAction};
use super::sightings::SIGHTING_QUERY_KEYS;
use super::{MailKey, Store, StoreError, get, get_u32, get_u64, query_error};
use crate::action::Action;

/// A recovered mail's planned actions in order, or the first record that cannot be read.
pub type Journaled = Result<Vec<Action>, UnreadableAction>;

/// `$first, $first+1, ...`: `n` numbered placeholders, comma-separated.
fn marks(first: usize, n: usize) -> String {
    (0..n)
        .map(|i| format!("${}", first + i))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    /// How many answers each of `senders` (lower-cased) got since `since` (Unix seconds),
    /// as [`Store::answers_since`] counts them: mails journaled as redirected (the sender in
    /// Cc) and replies in the reply ledger. Senders with none are absent. One query per 200
    /// senders.
    pub async fn answers_since_all(
        &self,
        senders: &[String],
        since: i64,
    ) -> Result<HashMap<String, u32>, StoreError> {
        let op = "count the answers to senders";
        let mut out: HashMap<String, u32> = HashMap::new();
        for chunk in senders.chunks(SIGHTING_QUERY_KEYS) {
            let list = marks(2, chunk.len());
            let sql = format!(
                "SELECT lower(sender) AS s, COUNT(*) AS n FROM journal \
                 WHERE lower(sender) IN ({list}) AND decided_at >= $1 AND redirected = 1 \
                 GROUP BY lower(sender) \
                 UNION ALL \
                 SELECT sender AS s, COUNT(*) AS n FROM reply_ledger \
                 WHERE sender IN ({list}) AND replied_at >= $1 GROUP BY sender"
            );
            let mut q = sqlx::query(&sql).bind(since);
            for s in chunk {
                q = q.bind(s.as_str());
            }
            for row in q.fetch_all(&self.pool).await.map_err(query_error(op))? {
                let sender: String = get(&row, "s", op)?;
                let n = u32::try_from(get_u64(&row, "n", op)?).unwrap_or(u32::MAX);
                let total = out.entry(sender).or_insert(0);
                *total = total.saturating_add(n);
            }
        }
        Ok(out)
    }

    /// When the last reply went to each of `senders` (lower-cased), per template (the reply
    /// ledger's rule), Unix seconds, for a whole batch. One query per
    /// 200 senders.
    pub async fn last_replies(
        &self,
        senders: &[String],
    ) -> Result<HashMap<(String, String), i64>, StoreError> {
        let op = "read the reply ledger";
        let mut out = HashMap::new();
        for chunk in senders.chunks(SIGHTING_QUERY_KEYS) {
            let sql = format!(
                "SELECT sender, rule, replied_at FROM reply_ledger WHERE sender IN ({})",
                marks(1, chunk.len())
            );
            let sql = self.sql(sql);
            let mut q = sqlx::query(&sql);
            for s in chunk {
                q = q.bind(s.as_str());
            }
            for row in q.fetch_all(&self.pool).await.map_err(query_error(op))? {
                out.insert(
                    (get(&row, "sender", op)?, get(&row, "rule", op)?),
                    get(&row, "replied_at", op)?,
                );
            }
        }
        Ok(out)
    }

    /// The planned actions, in order, of the journaled mails `uids` of one desk mailbox
    /// (as [`Store::journal`] lists them): what crash recovery redoes. Mails without actions
    /// are absent. One query per 200 mails, and one more for the `journal_action` rows of
    /// those among them journaled before release 0.7.
    pub async fn journaled_actions(
        &self,
        desk: &str,
        uidvalidity: u32,
        uids: &[u32],
    ) -> Result<BTreeMap<u32, Journaled>, StoreError> {
        let op = "read the journal";
        let mut out: BTreeMap<u32, Journaled> = BTreeMap::new();
        let key_of = |uid| MailKey {
            desk: desk.to_string(),
            uidvalidity,
            uid,
        };
        for chunk in uids.chunks(SIGHTING_QUERY_KEYS) {
            // Journaled since release 0.7: the actions are in the journal row.
            let sql = format!(
                "SELECT uid, actions FROM journal \
                 WHERE desk = $1 AND uidvalidity = $2 AND uid IN ({})",
                marks(3, chunk.len())
            );
            let sql = self.sql(sql);
            let mut q = sqlx::query(&sql).bind(desk).bind(i64::from(uidvalidity));
            for uid in chunk {
                q = q.bind(i64::from(*uid));
            }
            let mut before: Vec<u32> = Vec::new();
            for row in q.fetch_all(&self.pool).await.map_err(query_error(op))? {
                let uid = get_u32(&row, "uid", op)?;
                let Some(record) = get::<Option<String>>(&row, "actions", op)? else {
                    before.push(uid);
                    continue;
                };
                let planned = actions::decode_all(&key_of(uid), &record);
                if planned.as_ref().is_ok_and(Vec::is_empty) {
                    continue;
                }
                out.insert(uid, planned);
            }
            // Journaled before (`actions` NULL): one journal_action row per action.
            out.extend(self.action_rows(desk, uidvalidity, &before).await?);
        }
        Ok(out)
    }

    /// The planned actions of the mails `uids` journaled before release 0.7, from their
    /// `journal_action` rows (one per action), each mail's in order or its first record
    /// that cannot be read. Mails without rows are absent. One query; none for no mail.
    pub(super) async fn action_rows(
        &self,
        desk: &str,
        uidvalidity: u32,
        uids: &[u32],
    ) -> Result<BTreeMap<u32, Journaled>, StoreError> {
        let op = "read the journal";
        let mut out: BTreeMap<u32, Journaled> = BTreeMap::new();
        if uids.is_empty() {
            return Ok(out);
        }
        let sql = format!(
            "SELECT uid, position, action FROM journal_action \
             WHERE desk = $1 AND uidvalidity = $2 AND uid IN ({}) ORDER BY uid, position",
            marks(3, uids.len())
        );
        let sql = self.sql(sql);
        let mut q = sqlx::query(&sql).bind(desk).bind(i64::from(uidvalidity));
        for uid in uids {
            q = q.bind(i64::from(*uid));
        }
        for row in q.fetch_all(&self.pool).await.map_err(query_error(op))? {
            let uid = get_u32(&row, "uid", op)?;
            let position = get_u32(&row, "position", op)?;
            let record: String = get(&row, "action", op)?;
            let entry = out.entry(uid).or_insert_with(|| Ok(Vec::new()));
            // After an unreadable record the mail's later ones do not matter.
            if let Ok(list) = entry {
                match actions::decode(&record) {
                    Ok(a) => list.push(a),
                    Err(reason) => {
                        *entry = Err(UnreadableAction {
                            key: MailKey {
                                desk: desk.to_string(),
                                uidvalidity,
                                uid,
                            },
                            position,
                            record,
                            reason,
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}
