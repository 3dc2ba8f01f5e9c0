//! The desks' clocks (issue #17, migration 0004): started or joined with a decision (in
//! its transaction, [`start_or_join_all`]), read per desk for review, stopped or marked overdue
//! in one transaction, listed for `ticketgate report --overdue`. What stops a clock and
//! when it is overdue is decided in `deskclock`.

use std::collections::{BTreeMap, HashMap};

use sqlx::AnyConnection;
use sqlx::any::AnyRow;

pub use super::decision::NewClock;
use super::decision::NewDecision;
use super::{ROWS_PER_INSERT, SQLITE, Store, StoreError, get, positional, query_error, row_marks};

/// One mail of a clock, where it is in the desk's mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClockMail {
    pub uidvalidity: u32,
    pub uid: u32,
    pub message_id: Option<String>,
}

/// A running clock of a desk with its mails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenClock {
    pub clock: ClockRow,
    pub mails: Vec<ClockMail>,
}

/// Where a reading of a desk's open clocks goes on: after this clock, in the database's
/// (started, ticket) order ([`Store::open_clocks_page`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClockCursor {
    started: i64,
    ticket: String,
}

/// Why a clock stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `\Answered` on one of its mails (what a mail client sets when an officer replies).
    Answered,
    /// A mail in the Sent folder replies to one of its mails.
    Sent,
    /// One of its mails was moved to the done folder.
    DoneFolder,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Answered => "answered",
            StopReason::Sent => "sent",
            StopReason::DoneFolder => "done-folder",
        }
    }
}

/// A change to a clock, written by [`Store::update_clocks`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClockChange {
    Stop {
        ticket: String,
        started: i64,
        at: i64,
        reason: StopReason,
    },
    Overdue {
        ticket: String,
        started: i64,
        at: i64,
    },
}

/// A desk's clock as the database holds it (without its mails): what `report --overdue`
/// and the digest list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClockRow {
    pub desk: String,
    pub ticket: String,
    /// When the first mail was decided (Unix seconds); with desk and ticket, the clock's key.
    pub started: i64,
    pub due: i64,
    pub sender: Option<String>,
    pub subject: String,
    /// When its mails were tagged overdue; `None`: not yet.
    pub overdue_at: Option<i64>,
}

/// The columns [`clock_row`] reads.
const CLOCK_COLUMNS: &str = "desk, ticket, started, due, sender, subject, overdue_at";

/// A `desk_clock` row selected with [`CLOCK_COLUMNS`].
fn clock_row(r: &AnyRow, op: &'static str) -> Result<ClockRow, StoreError> {
    Ok(ClockRow {
        desk: get(r, "desk", op)?,
        ticket: get(r, "ticket", op)?,
        started: get(r, "started", op)?,
        due: get(r, "due", op)?,
        sender: get(r, "sender", op)?,
        subject: get(r, "subject", op)?,
        overdue_at: get(r, "overdue_at", op)?,
    })
}

/// One mail of an open clock as [`Store::open_clocks_page`] reads it: ticket, started, due,
/// sender, subject, overdue_at, then the mail's uidvalidity, uid and Message-ID (null
/// for a clock without mail).
type ClockMailRow = (
    String,
    i64,
    i64,
    Option<String>,
    String,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

/// The open clocks of `desk` from [`Store::open_clocks_page`]'s JSON text (dropped once read):
/// oldest first (started, then ticket), each clock's mails in (uidvalidity, uid) order.
fn open_clocks_from_json(desk: &str, text: String) -> Result<Vec<OpenClock>, StoreError> {
    let rows: Result<Vec<ClockMailRow>, _> = serde_json::from_str(&text);
    drop(text);
    let mut rows = rows.map_err(|e| StoreError::Corrupt {
        what: "desk clocks read as JSON",
        value: e.to_string(),
    })?;
    rows.sort_by(|a, b| (a.1, &a.0, a.6, a.7).cmp(&(b.1, &b.0, b.6, b.7)));
    let u32_of = |what, v: i64| {
        u32::try_from(v).map_err(|_| StoreError::Corrupt {
            what,
            value: v.to_string(),
        })
    };
    let mut out: Vec<OpenClock> = Vec::new();
    for (ticket, started, due, sender, subject, overdue_at, uidvalidity, uid, message_id) in rows {
        let same = out
            .last()
            .is_some_and(|c| c.clock.started == started && c.clock.ticket == ticket);
        if !same {
            out.push(OpenClock {
                clock: ClockRow {
                    desk: desk.to_string(),
                    ticket,
                    started,
                    due,
                    sender,
                    subject,
                    overdue_at,
                },
                mails: Vec::new(),
            });
        }
        if let (Some(uidvalidity), Some(uid), Some(c)) = (uidvalidity, uid, out.last_mut()) {
            c.mails.push(ClockMail {
                uidvalidity: u32_of("uidvalidity", uidvalidity)?,
                uid: u32_of("uid", uid)?,
                message_id,
            });
        }
    }
    Ok(out)
}

/// The clocks of a desk (`$1`) on some of its tickets (`$2`, ...: the placeholders follow),
/// open and stopped, with their status, read through the table's key (desk, ticket,
/// started) once per batch of ticket mails; the caller keeps the open ones. Left to choose,
/// SQLite may read the index of a desk's open clocks by start instead (it covers the
/// columns read) and scan every open clock of the desk per batch: a backlog's cost then
/// grew with the square of its ticket mails. An index on (desk, status, ticket) for this
/// lookup alone cost every clock started or stopped an entry at a random place in it
/// (migration 0009, issue #16). PostgreSQL's planner, with its statistics, takes the key.
pub(super) fn clocks_of(sqlite: bool) -> String {
    let key = if sqlite {
        " INDEXED BY sqlite_autoindex_desk_clock_1"
    } else {
        ""
    };
    format!("SELECT ticket, started, status FROM desk_clock{key} WHERE desk = $1 AND ticket IN")
}

/// Starts the desk's clock on each decision's ticket (`(decision, clock)` in decision
/// order), or adds the decision's mail to the clock already open on it, inside the
/// decisions' transaction: the first mail on a ticket without an open clock starts one
/// (started = its decision time), later ones join it, within the batch as across batches.
/// A few statements per batch: one lookup per desk and chunk of tickets, multi-row inserts.
pub(super) async fn start_or_join_all(
    tx: &mut AnyConnection,
    started: &[(&NewDecision, &NewClock)],
) -> Result<(), StoreError> {
    let op = "start a desk clock";
    if started.is_empty() {
        return Ok(());
    }
    let sqlite = tx.backend_name() == SQLITE;
    let clocks_of = clocks_of(sqlite);
    // The open clocks of the batch's (desk, ticket) pairs.
    let mut by_desk: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (d, c) in started {
        let tickets = by_desk.entry(d.key.desk.as_str()).or_default();
        if !tickets.contains(&c.ticket.as_str()) {
            tickets.push(c.ticket.as_str());
        }
    }
    let mut open: HashMap<(String, String), i64> = HashMap::new();
    for (desk, tickets) in &by_desk {
        for chunk in tickets.chunks(ROWS_PER_INSERT) {
            let sql = positional(
                sqlite,
                format!("{clocks_of} {}", row_marks(2, 1, chunk.len())),
            );
            let mut q = sqlx::query(&sql).bind(*desk);
            for t in chunk {
                q = q.bind(*t);
            }
            for row in q.fetch_all(&mut *tx).await.map_err(query_error(op))? {
                if get::<String>(&row, "status", op)? != "open" {
                    continue;
                }
                let started: i64 = get(&row, "started", op)?;
                let key = (desk.to_string(), get::<String>(&row, "ticket", op)?);
                let earliest = open.entry(key).or_insert(started);
                *earliest = (*earliest).min(started);
            }
        }
    }
    // Which mail starts a clock, and the clock each mail joins.
    let mut new_clocks: Vec<(&NewDecision, &NewClock)> = Vec::new();
    let mut mails: Vec<(&NewDecision, &NewClock, i64)> = Vec::with_capacity(started.len());
    for &(d, c) in started {
        let key = (d.key.desk.clone(), c.ticket.clone());
        let at = *open.entry(key).or_insert_with(|| {
            new_clocks.push((d, c));
            d.now
        });
        mails.push((d, c, at));
    }
    for chunk in new_clocks.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO desk_clock (desk, ticket, started, due, sender, subject, status) \
             VALUES {} ON CONFLICT DO NOTHING",
            row_marks(1, chunk.len(), 7)
        );
        let sql = positional(sqlite, sql);
        let mut q = sqlx::query(&sql);
        for (d, c) in chunk {
            q = q
                .bind(&d.key.desk)
                .bind(&c.ticket)
                .bind(d.now)
                .bind(c.due)
                .bind(d.sender.as_deref())
                .bind(super::truncate(&d.subject))
                .bind("open");
        }
        q.execute(&mut *tx).await.map_err(query_error(op))?;
    }
    for chunk in mails.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO desk_clock_mail (desk, uidvalidity, uid, ticket, started, message_id) \
             VALUES {} ON CONFLICT DO NOTHING",
            row_marks(1, chunk.len(), 6)
        );
        let sql = positional(sqlite, sql);
        let mut q = sqlx::query(&sql);
        for (d, c, at) in chunk {
            q = q
                .bind(&d.key.desk)
                .bind(i64::from(d.key.uidvalidity))
                .bind(i64::from(d.key.uid))
                .bind(&c.ticket)
                .bind(*at)
                .bind(d.message_id.as_deref());
        }
        q.execute(&mut *tx).await.map_err(query_error(op))?;
    }
    Ok(())
}

/// The query of [`Store::open_clocks_page`]: `$1` desk, `$2` and `$3` the (started,
/// ticket) to go on after, `$4` the page size; one row of the page's clocks and mails as
/// a JSON text (`clocks`, one array per mail as [`ClockMailRow`] has it, one for a clock
/// without mail with its mail columns null: sqlx hands rows over one at a time, and with
/// the 6,116 open clocks of a 10,000-mail backlog, reading them as rows of two queries
/// took 44 ms of the review's 73, as this text 38-43 ms; issue #16) and the page's last
/// clock (`last_started`, `last_ticket`).
pub(super) fn open_clocks_page_sql(sqlite: bool) -> String {
    let json_row = if sqlite {
        "json_array"
    } else {
        "json_build_array"
    };
    page_sql(
        sqlite,
        "ticket, started, due, sender, subject, overdue_at",
        &format!(
            "{json_row}(c.ticket, c.started, c.due, c.sender, c.subject, c.overdue_at, \
             m.uidvalidity, m.uid, m.message_id)"
        ),
    )
}

/// A page of a desk's open clocks as one JSON array of `element` over the page's clocks
/// (`c`, with `columns` of `desk_clock`: ticket and started at least) and their mails
/// (`m`, null for a clock without mail), for [`open_clocks_page_sql`] and the Message-IDs
/// of [`Store::each_open_clock_message_id`].
fn page_sql(sqlite: bool, columns: &str, element: &str) -> String {
    let (aggregate, empty) = if sqlite {
        ("json_group_array", "'[]'")
    } else {
        ("json_agg", "'[]'::json")
    };
    let last = "FROM page ORDER BY started DESC, ticket DESC LIMIT 1";
    format!(
        "WITH page AS (SELECT {columns} FROM desk_clock WHERE desk = $1 AND status = 'open' \
         AND (started, ticket) > ($2, $3) ORDER BY started, ticket LIMIT $4) \
         SELECT CAST(COALESCE({aggregate}({element}), {empty}) AS TEXT) AS clocks, \
         (SELECT COUNT(*) FROM page) AS clock_count, \
         (SELECT started {last}) AS last_started, (SELECT ticket {last}) AS last_ticket \
         FROM page c LEFT JOIN desk_clock_mail m ON m.desk = $1 \
         AND m.ticket = c.ticket AND m.started = c.started",
    )
}

impl Store {
    /// At most `limit` open clocks of `desk` with their mails, the next after `after` in
    /// (started, ticket) order (`None`: from the oldest), and where the next page starts:
    /// `None` once this page is the last (fewer than `limit` clocks). One query, through
    /// the index of migration 0008, so that a page costs the same however many clocks are
    /// open. The desk clocks' review reads them page by page (`deskclock::check`): all at
    /// once, 30,383 open clocks after a 50,000-mail backlog held 11 MB (issue #16).
    ///
    /// The page's last (started, ticket) comes from the database, which compares tickets
    /// in its own collation (PostgreSQL's need not be byte order), as the next page's
    /// `WHERE` does.
    ///
    /// # Errors
    /// The query's, or [`StoreError::Corrupt`] for a value that is not what was written.
    pub async fn open_clocks_page(
        &self,
        desk: &str,
        after: Option<&ClockCursor>,
        limit: u32,
    ) -> Result<(Vec<OpenClock>, Option<ClockCursor>), StoreError> {
        let sql = open_clocks_page_sql(self.sqlite);
        let (text, next) = self.clocks_page(&sql, desk, after, limit).await?;
        Ok((open_clocks_from_json(desk, text)?, next))
    }

    /// Runs a [`page_sql`] query: the page's JSON text, and where the next page starts
    /// (`None` when this one holds fewer than `limit` clocks).
    async fn clocks_page(
        &self,
        sql: &str,
        desk: &str,
        after: Option<&ClockCursor>,
        limit: u32,
    ) -> Result<(String, Option<ClockCursor>), StoreError> {
        let op = "read the desk clocks";
        // The first page: every clock is after (i64::MIN, ""); `started` is a Unix time.
        let (started, ticket) = after.map_or((i64::MIN, ""), |a| (a.started, a.ticket.as_str()));
        let row = sqlx::query(sql)
            .bind(desk)
            .bind(started)
            .bind(ticket)
            .bind(i64::from(limit))
            .fetch_one(&self.pool)
            .await
            .map_err(query_error(op))?;
        let text: String = get(&row, "clocks", op)?;
        let count: i64 = get(&row, "clock_count", op)?;
        let last_started: Option<i64> = get(&row, "last_started", op)?;
        let last_ticket: Option<String> = get(&row, "last_ticket", op)?;
        let next = match (last_started, last_ticket) {
            (Some(started), Some(ticket)) if count >= i64::from(limit) => {
                Some(ClockCursor { started, ticket })
            }
            _ => None,
        };
        Ok((text, next))
    }

    /// When `desk`'s oldest open clock started (Unix seconds); `None` when none is open.
    /// Through the index of migration 0008.
    ///
    /// # Errors
    /// The query's.
    pub async fn oldest_open_clock(&self, desk: &str) -> Result<Option<i64>, StoreError> {
        let op = "read the desk clocks";
        let row = sqlx::query(
            "SELECT MIN(started) AS oldest FROM desk_clock WHERE desk = $1 AND status = 'open'",
        )
        .bind(desk)
        .fetch_one(&self.pool)
        .await
        .map_err(query_error(op))?;
        get(&row, "oldest", op)
    }

    /// Whether one of `desk`'s open clocks not yet marked overdue is due at `now` (Unix
    /// seconds): the review is about to mark it.
    ///
    /// # Errors
    /// The query's.
    pub async fn a_clock_falls_due(&self, desk: &str, now: i64) -> Result<bool, StoreError> {
        let op = "read the desk clocks";
        let row = sqlx::query(
            "SELECT COUNT(*) AS due FROM (SELECT 1 FROM desk_clock WHERE desk = $1 \
             AND status = 'open' AND overdue_at IS NULL AND due <= $2 LIMIT 1) d",
        )
        .bind(desk)
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(query_error(op))?;
        let due: i64 = get(&row, "due", op)?;
        Ok(due > 0)
    }

    /// Calls `each` with the Message-ID (as stored: angle brackets and all) of every mail
    /// of `desk`'s open clocks that has one, a page of `per_page` clocks at a time (as
    /// [`Store::open_clocks_page`] pages them), so that nothing is held for all of them at
    /// once. The review looks for replies in the Sent and done folders once for all its
    /// pages with these (`deskclock::check`). The 6,116 open clocks of a 10,000-mail
    /// backlog take 12 ms this way, 16 ms row by row (sqlx hands rows over one at a time).
    ///
    /// # Errors
    /// The query's, or [`StoreError::Corrupt`] for a text that is not a JSON array.
    pub async fn each_open_clock_message_id(
        &self,
        desk: &str,
        per_page: u32,
        mut each: impl FnMut(&str),
    ) -> Result<(), StoreError> {
        let sql = page_sql(self.sqlite, "ticket, started", "m.message_id");
        let mut after = None;
        loop {
            let (text, next) = self
                .clocks_page(&sql, desk, after.as_ref(), per_page)
                .await?;
            let ids: Vec<Option<String>> =
                serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
                    what: "desk clocks' Message-IDs read as JSON",
                    value: e.to_string(),
                })?;
            ids.iter().flatten().for_each(|id| each(id));
            match next {
                Some(n) => after = Some(n),
                None => return Ok(()),
            }
        }
    }

    /// Writes `changes` to `desk`'s clocks in one transaction. Stopping a clock that is not
    /// open, or marking one overdue twice, changes nothing (the first time stays).
    pub async fn update_clocks(
        &self,
        desk: &str,
        changes: &[ClockChange],
    ) -> Result<(), StoreError> {
        let op = "update the desk clocks";
        if changes.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(query_error(op))?;
        for c in changes {
            let q = match c {
                ClockChange::Stop {
                    ticket,
                    started,
                    at,
                    reason,
                } => sqlx::query(
                    "UPDATE desk_clock SET status = 'stopped', stopped_at = $1, stop_reason = $2 \
                     WHERE desk = $3 AND ticket = $4 AND started = $5 AND status = 'open'",
                )
                .bind(*at)
                .bind(reason.as_str())
                .bind(desk)
                .bind(ticket)
                .bind(*started),
                ClockChange::Overdue {
                    ticket,
                    started,
                    at,
                } => sqlx::query(
                    "UPDATE desk_clock SET overdue_at = $1 WHERE desk = $2 AND ticket = $3 \
                     AND started = $4 AND overdue_at IS NULL",
                )
                .bind(*at)
                .bind(desk)
                .bind(ticket)
                .bind(*started),
            };
            q.execute(&mut *tx).await.map_err(query_error(op))?;
        }
        tx.commit().await.map_err(query_error(op))
    }

    /// Open clocks of every desk due at or before `until` (Unix seconds), most overdue
    /// first: what `ticketgate report --overdue` and the digest list. At its due second a
    /// clock is overdue, as the watcher's review has it (`now >= due`).
    pub async fn clocks_due_before(&self, until: i64) -> Result<Vec<ClockRow>, StoreError> {
        let op = "list the desk clocks";
        let sql = format!(
            "SELECT {CLOCK_COLUMNS} FROM desk_clock \
             WHERE status = 'open' AND due <= $1 ORDER BY due, desk, ticket"
        );
        let rows = sqlx::query(&sql)
            .bind(until)
            .fetch_all(&self.pool)
            .await
            .map_err(query_error(op))?;
        rows.iter().map(|r| clock_row(r, op)).collect()
    }
}
