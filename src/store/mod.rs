//! State store over sqlx's `Any` driver, same SQL on SQLite and PostgreSQL: desk progress,
//! the mail journal, sightings of copies across desks, the reply ledger, the outbox, reports.
//! What to do with a mail (decide), composing and sending (compose, smtp) live elsewhere.
//!
//! Exactly-once (SPEC 5) rests on three things here: a mail's decision, its planned actions,
//! its outgoing mail and its reply claims are recorded in ONE transaction before any side
//! effect ([`Store::record_decision`]); outbox ids are dedupe keys, so copies of a broadcast
//! on several desks queue one redirect; a reply claim checks and takes the ledger atomically.

mod known;
mod location;
mod report;
#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::future::BoxFuture;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{AnyConnection, AnyPool, ConnectOptions, Connection, Executor, Row};

use location::Location;
pub use report::{ReportRow, format_report};

/// `url` with its password (userinfo or `password=` parameter) replaced by `***`, for
/// messages.
pub fn redact_url(url: &str) -> String {
    location::redact(url)
}

/// How long waiting for a free (or new) connection may take before it fails with a
/// transient error.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Group keys per query of [`Store::sight_all`] (bind parameters stay far below the limits
/// of SQLite and PostgreSQL).
const SIGHTING_QUERY_KEYS: usize = 200;

/// Rows per multi-row statement. Few statements save round trips to the database, but
/// SQLite looks up each `$N` parameter by a linear scan, so a statement's cost grows with
/// the square of its parameters: 32 rows (at most 480 parameters) is the measured balance.
const ROWS_PER_INSERT: usize = 32;

/// Longest error text kept in the journal or the outbox; longer texts are cut.
const MAX_ERROR_LEN: usize = 2000;

/// Errors of the state store. Messages say what could not be done; the cause is the source.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use database URL {url}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot {what} {}", path.display())]
    Path {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open database {target}")]
    Open {
        target: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot bring the schema of database {target} up to date")]
    Migrate {
        target: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("cannot {op} in the state database")]
    Query {
        op: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot {op}: {what} is not in the state database")]
    Unknown { op: &'static str, what: String },
    #[error("cannot read {what}: stored value {value:?} is invalid")]
    Corrupt { what: &'static str, value: String },
}

impl StoreError {
    /// True when retrying later may succeed: connection loss, pool exhausted, SQLite busy or
    /// locked, PostgreSQL serialization failure, deadlock, or server shutting down.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Query { source, .. } | StoreError::Open { source, .. } => {
                transient_sqlx(source)
            }
            _ => false,
        }
    }
}

fn transient_sqlx(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                let code = pg.code();
                code == "40001"
                    || code == "40P01"
                    || code.starts_with("08")
                    || code.starts_with("57P")
            } else if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // Primary result code in the low byte: SQLITE_BUSY (5), SQLITE_LOCKED (6).
                db.code()
                    .and_then(|c| c.parse::<i32>().ok())
                    .is_some_and(|c| matches!(c & 0xff, 5 | 6))
            } else {
                false
            }
        }
        _ => false,
    }
}

fn query_error(op: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { op, source }
}

/// One mail in one desk's mailbox: IMAP UIDs are only meaningful with their UIDVALIDITY.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MailKey {
    pub desk: String,
    pub uidvalidity: u32,
    pub uid: u32,
}

impl fmt::Display for MailKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.desk, self.uidvalidity, self.uid)
    }
}

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
    fn as_str(self) -> &'static str {
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

/// A mail's decision, as recorded by [`Store::record_decision`] before any side effect.
#[derive(Debug, Clone)]
pub struct NewDecision {
    pub key: MailKey,
    pub message_id: Option<String>,
    /// Message-ID, else content hash: the same message on several desks shares it.
    pub group_key: String,
    pub sender: Option<String>,
    pub subject: String,
    pub ticket: Option<String>,
    pub ticket_source: Option<String>,
    pub broadcast: bool,
    pub automatic: bool,
    pub redirected: bool,
    /// The rule that matched.
    pub rule: Option<String>,
    /// Planned actions in order, e.g. `tag:$Ticket`; their index is the one
    /// [`Store::complete_action`] takes.
    pub actions: Vec<String>,
    pub outbox: Vec<NewOutgoing>,
    pub now: i64,
}

/// Outgoing mail to queue with a decision.
#[derive(Debug, Clone)]
pub struct NewOutgoing {
    /// Stable dedupe key chosen by the caller: a second row with the same id is never queued
    /// (that is how copies of a broadcast on several desks yield one redirect).
    pub id: String,
    pub desk: String,
    pub envelope_from: String,
    pub recipients: Vec<String>,
    pub bytes: Vec<u8>,
    /// For replies: queue this mail only if the ledger allows a reply now, and take the claim.
    pub reply_claim: Option<ReplyClaim>,
}

/// "At most one reply to this sender for this rule per period" (like Sieve vacation `:days`).
#[derive(Debug, Clone)]
pub struct ReplyClaim {
    /// Compared case-insensitively (stored lower-cased).
    pub sender: String,
    pub rule: String,
    pub period_secs: i64,
}

/// What [`Store::record_decision`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// False when the mail was already journaled: nothing was changed.
    pub first_time: bool,
    /// Outbox ids this mail's decision queued, sorted. Missing are ids that another mail
    /// queued first and replies whose claim was refused.
    pub queued: Vec<String>,
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
    /// Planned actions in order, each with its done flag.
    pub actions: Vec<(String, bool)>,
    /// Outbox ids queued by this mail's decision, sorted.
    pub queued: Vec<String>,
    pub error: Option<String>,
    pub decided_at: i64,
    pub finished_at: Option<i64>,
}

/// Outgoing mail due for an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    pub id: String,
    pub desk: String,
    pub envelope_from: String,
    pub recipients: Vec<String>,
    pub bytes: Vec<u8>,
    /// Attempts made so far.
    pub attempts: u32,
}

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
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    /// The mail whose decision queued it.
    pub mail: MailKey,
}

/// The embedded `migrations/` directory, in sqlx's `<VERSION>_<DESCRIPTION>.sql` layout.
/// Listed by hand instead of `sqlx::migrate!` so that sqlx's `macros` feature (a second,
/// host-side build of sqlx and the bundled SQLite) is not needed; a test checks that this
/// list and the directory agree.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../migrations/0001_initial.sql"),
    ),
    (
        2,
        "journal by sender",
        include_str!("../../migrations/0002_journal_by_sender.sql"),
    ),
];

#[derive(Debug)]
struct EmbeddedMigrations;

impl<'s> MigrationSource<'s> for EmbeddedMigrations {
    fn resolve(self) -> BoxFuture<'s, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
                .map(|&(version, description, sql)| {
                    Migration::new(
                        version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        Cow::Borrowed(sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// The state database. Cheap to clone (a connection pool).
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    target: String,
}

impl Store {
    /// Connects and brings the schema up to date.
    ///
    /// SQLite (`sqlite:///abs/path.db`, `sqlite://rel.db`, `sqlite::memory:`): the file and its
    /// directory are created if missing; WAL journal with `synchronous=FULL`, so a committed
    /// transaction survives kill -9 and power loss; one connection, so writers in this process
    /// never contend, with a busy timeout against other processes (e.g. `ticketgate report`).
    /// PostgreSQL (`postgres://…`): a small pool.
    /// Opens an existing state database for reading only (`ticketgate report`): nothing is
    /// created, migrated or written, so a supervisor with read access (a member of the
    /// service's group) can use it. A SQLite file that does not exist is an error naming
    /// the path.
    pub async fn open_read_only(url: &str) -> Result<Store, StoreError> {
        let location = Location::parse(url)?;
        let target = location.describe();
        let open_error = |source| StoreError::Open {
            target: target.clone(),
            source,
        };
        let mut url = location.sqlx_url()?.replace("mode=rwc", "mode=ro");
        if let Location::SqliteFile(path) = &location {
            std::fs::metadata(path).map_err(|source| StoreError::Path {
                path: path.clone(),
                what: "find the state database",
                source,
            })?;
            // Without a write-ahead log the daemon is not writing: the file can be read as
            // it is, with no -shm file to create (a reader may not write the directory).
            let mut wal = path.clone().into_os_string();
            wal.push("-wal");
            if !Path::new(&wal).exists() {
                url.push_str("&immutable=1");
            }
        }
        sqlx::any::install_default_drivers();
        let options = AnyConnectOptions::from_str(&url)
            .map_err(open_error)?
            .disable_statement_logging();
        // A direct connection first, for the real cause of a failure (see `open`).
        AnyConnection::connect_with(&options)
            .await
            .map_err(open_error)?
            .close()
            .await
            .map_err(open_error)?;
        let pool = AnyPoolOptions::new()
            .acquire_timeout(CONNECT_TIMEOUT)
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(open_error)?;
        Ok(Store { pool, target })
    }

    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let location = Location::parse(url)?;
        location.prepare()?;
        let target = location.describe();
        let open_error = |source| StoreError::Open {
            target: target.clone(),
            source,
        };
        sqlx::any::install_default_drivers();
        let options = AnyConnectOptions::from_str(&location.sqlx_url()?)
            .map_err(open_error)?
            .disable_statement_logging();

        // One direct connection first: sqlx's pool retries failed connects until its timeout
        // and then reports only "timed out", hiding causes such as "connection refused" or
        // "file is not a database". The journal mode is stored in the SQLite file, so it is
        // set here once; it needs a moment without other connections.
        let mut probe = AnyConnection::connect_with(&options)
            .await
            .map_err(open_error)?;
        if location.is_sqlite() {
            probe
                .execute("PRAGMA journal_mode = WAL")
                .await
                .map_err(open_error)?;
        }
        probe.close().await.map_err(open_error)?;

        let pool = if location.is_sqlite() {
            // One connection: writers in this process queue here instead of meeting
            // SQLITE_BUSY. Kept open for good: through `Any`, every new connection to
            // `sqlite::memory:` gets a new, empty database.
            AnyPoolOptions::new()
                .acquire_timeout(CONNECT_TIMEOUT)
                .max_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute("PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000; PRAGMA temp_store = MEMORY;")
                            .await
                            .map(drop)
                    })
                })
                .connect_with(options)
                .await
        } else {
            AnyPoolOptions::new()
                .acquire_timeout(CONNECT_TIMEOUT)
                .max_connections(4)
                .connect_with(options)
                .await
        }
        .map_err(open_error)?;
        let migrator =
            Migrator::new(EmbeddedMigrations)
                .await
                .map_err(|source| StoreError::Migrate {
                    target: target.clone(),
                    source,
                })?;
        migrator
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                target: target.clone(),
                source,
            })?;
        Ok(Store { pool, target })
    }

    /// The database this store uses, without password, for messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Closes all connections, waiting for running queries.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ---------------------------------------------------------------- desk progress

    /// The desk's UIDVALIDITY and the highest UID finished (done or set aside), if known.
    pub async fn desk_progress(&self, desk: &str) -> Result<Option<(u32, u32)>, StoreError> {
        let op = "read desk progress";
        let row = sqlx::query("SELECT uidvalidity, last_uid FROM desk_progress WHERE desk = $1")
            .bind(desk)
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

    // ---------------------------------------------------------------- journal

    /// The journal entry of one mail, if it was decided or set aside.
    pub async fn journal(&self, key: &MailKey) -> Result<Option<JournalEntry>, StoreError> {
        let op = "read the journal";
        let Some(row) = sqlx::query(
            "SELECT status, group_key, message_id, sender, subject, ticket, ticket_source, \
             broadcast, automatic, redirected, rule, error, decided_at, finished_at \
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
        let actions = sqlx::query(
            "SELECT action, done FROM journal_action \
             WHERE desk = $1 AND uidvalidity = $2 AND uid = $3 ORDER BY position",
        )
        .bind(&key.desk)
        .bind(i64::from(key.uidvalidity))
        .bind(i64::from(key.uid))
        .fetch_all(&self.pool)
        .await
        .map_err(query_error(op))?
        .iter()
        .map(|r| Ok((get::<String>(r, "action", op)?, get_bool(r, "done", op)?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
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

    /// The latest journal entry of this desk for the message with this group key, under any
    /// UIDVALIDITY: was this message handled before the mailbox was renumbered?
    pub async fn journal_by_group(
        &self,
        desk: &str,
        group_key: &str,
    ) -> Result<Option<JournalEntry>, StoreError> {
        let op = "look up the journal by message";
        if group_key.is_empty() {
            return Ok(None);
        }
        let Some(row) = sqlx::query(
            "SELECT uidvalidity, uid FROM journal WHERE desk = $1 AND group_key = $2 \
             ORDER BY decided_at DESC, uidvalidity DESC, uid DESC LIMIT 1",
        )
        .bind(desk)
        .bind(group_key)
        .fetch_optional(&self.pool)
        .await
        .map_err(query_error(op))?
        else {
            return Ok(None);
        };
        let key = MailKey {
            desk: desk.to_owned(),
            uidvalidity: get_u32(&row, "uidvalidity", op)?,
            uid: get_u32(&row, "uid", op)?,
        };
        self.journal(&key).await
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

    /// Records a decision in ONE transaction: the journal row, its planned actions, reply
    /// claims and outbox rows. Idempotent: when the mail is already journaled nothing changes
    /// and the ids it queued before are returned.
    ///
    /// An outgoing mail with a [`ReplyClaim`] is queued only if no reply went to that sender
    /// for that rule within the period, and the claim is taken in the same statement, so of
    /// two desks deciding on copies at the same moment only one replies. Claims are taken in
    /// (sender, rule) order and outbox rows inserted in id order, so concurrent decisions lock
    /// rows in the same order and cannot deadlock each other.
    pub async fn record_decision(&self, d: &NewDecision) -> Result<Recorded, StoreError> {
        let mut recorded = self.record_decisions(std::slice::from_ref(d)).await?;
        recorded.pop().ok_or(StoreError::Unknown {
            op: "record a decision",
            what: format!("the result for mail {}", d.key),
        })
    }

    /// [`Store::record_decision`] for the decisions of a whole fetch batch, in ONE
    /// transaction (one commit instead of one per mail): all of them are recorded before any
    /// of their side effects, or none is. Results in the order of `decisions`.
    pub async fn record_decisions(
        &self,
        decisions: &[NewDecision],
    ) -> Result<Vec<Recorded>, StoreError> {
        let op = "record a decision";
        let mut out = Vec::with_capacity(decisions.len());
        if decisions.is_empty() {
            return Ok(out);
        }
        let mut tx = self.pool.begin().await.map_err(query_error(op))?;
        let mut inserted: HashSet<MailKey> = HashSet::new();
        for chunk in decisions.chunks(ROWS_PER_INSERT) {
            inserted.extend(insert_journal_rows(&mut tx, chunk).await?);
        }
        let first: Vec<&NewDecision> = decisions
            .iter()
            .filter(|d| inserted.contains(&d.key))
            .collect();
        for chunk in first.chunks(ROWS_PER_INSERT) {
            insert_action_rows(&mut tx, chunk).await?;
        }
        for d in decisions {
            // Removed once seen: the same mail twice in one call is journaled once.
            out.push(if inserted.remove(&d.key) {
                Recorded {
                    first_time: true,
                    queued: record_outgoing(&mut tx, d).await?,
                }
            } else {
                Recorded {
                    first_time: false,
                    queued: queued_by(&mut *tx, &d.key).await?,
                }
            });
        }
        tx.commit().await.map_err(query_error(op))?;
        Ok(out)
    }

    /// Marks planned action `index` (0-based, as in [`NewDecision::actions`]) as carried out.
    pub async fn complete_action(&self, key: &MailKey, index: u32) -> Result<(), StoreError> {
        let op = "mark an action done";
        let changed = sqlx::query(
            "UPDATE journal_action SET done = 1 \
             WHERE desk = $1 AND uidvalidity = $2 AND uid = $3 AND position = $4",
        )
        .bind(&key.desk)
        .bind(i64::from(key.uidvalidity))
        .bind(i64::from(key.uid))
        .bind(i64::from(index))
        .execute(&self.pool)
        .await
        .map_err(query_error(op))?
        .rows_affected();
        if changed == 0 {
            return Err(StoreError::Unknown {
                op,
                what: format!("action {index} of mail {key}"),
            });
        }
        Ok(())
    }

    /// Marks the mail done and advances the desk's progress, in one transaction. The mail
    /// must have been journaled. Calling it again is a no-op.
    pub async fn complete_mail(&self, key: &MailKey, now: i64) -> Result<(), StoreError> {
        self.complete_mails(std::slice::from_ref(key), now).await
    }

    /// [`Store::complete_mail`] for several mails in ONE transaction: each is marked done
    /// and each desk's progress advanced to its highest UID among them. Every mail must have
    /// been journaled; if one was not, nothing changes.
    pub async fn complete_mails(&self, keys: &[MailKey], now: i64) -> Result<(), StoreError> {
        let op = "mark a mail done";
        if keys.is_empty() {
            return Ok(());
        }
        let mut by_mailbox: BTreeMap<(&str, u32), BTreeSet<u32>> = BTreeMap::new();
        for key in keys {
            by_mailbox
                .entry((&key.desk, key.uidvalidity))
                .or_default()
                .insert(key.uid);
        }
        let mut tx = self.pool.begin().await.map_err(query_error(op))?;
        let mut highest: Vec<(&str, u32, u32)> = Vec::new();
        for (&(desk, uidvalidity), uids) in &by_mailbox {
            let uids: Vec<u32> = uids.iter().copied().collect();
            for chunk in uids.chunks(ROWS_PER_INSERT) {
                let marks = row_marks(5, 1, chunk.len());
                let update = format!(
                    "UPDATE journal SET status = 'done', finished_at = $1 \
                     WHERE desk = $2 AND uidvalidity = $3 AND status <> $4 AND uid IN {marks}"
                );
                let mut q = sqlx::query(&update)
                    .bind(now)
                    .bind(desk)
                    .bind(i64::from(uidvalidity))
                    .bind(MailStatus::Done.as_str());
                for uid in chunk {
                    q = q.bind(i64::from(*uid));
                }
                let changed = q.execute(&mut *tx).await.map_err(query_error(op))?;
                if changed.rows_affected() < chunk.len() as u64 {
                    // Some were done already (a no-op), or were never journaled (an error).
                    let select = format!(
                        "SELECT uid FROM journal WHERE desk = $1 AND uidvalidity = $2 \
                         AND uid IN {}",
                        row_marks(3, 1, chunk.len())
                    );
                    let mut q = sqlx::query(&select).bind(desk).bind(i64::from(uidvalidity));
                    for uid in chunk {
                        q = q.bind(i64::from(*uid));
                    }
                    let rows = q.fetch_all(&mut *tx).await.map_err(query_error(op))?;
                    let known: HashSet<u32> = rows
                        .iter()
                        .map(|r| get_u32(r, "uid", op))
                        .collect::<Result<_, _>>()?;
                    if let Some(uid) = chunk.iter().find(|u| !known.contains(u)) {
                        return Err(StoreError::Unknown {
                            op,
                            what: format!(
                                "mail {}",
                                MailKey {
                                    desk: desk.to_string(),
                                    uidvalidity,
                                    uid: *uid
                                }
                            ),
                        });
                    }
                }
            }
            if let Some(&last) = uids.last() {
                highest.push((desk, uidvalidity, last));
            }
        }
        for (desk, uidvalidity, uid) in highest {
            advance(&mut *tx, desk, uidvalidity, uid)
                .await
                .map_err(query_error(op))?;
        }
        tx.commit().await.map_err(query_error(op))
    }

    /// Sets the mail aside after an error: journaled as failed (created if it was never
    /// decided), counted in the report, not retried. A mail already done stays done.
    /// The desk's progress is left alone: it moves past the mail with the rest of its
    /// group ([`crate::pipeline::file`]), so that mail decided before it in the same group
    /// is still redone after a crash.
    pub async fn fail_mail(&self, key: &MailKey, error: &str, now: i64) -> Result<(), StoreError> {
        let op = "set a mail aside";
        sqlx::query(
            "INSERT INTO journal (desk, uidvalidity, uid, status, group_key, message_id, sender, \
             subject, ticket, ticket_source, broadcast, automatic, redirected, rule, error, \
             decided_at, finished_at) \
             VALUES ($1, $2, $3, 'failed', '', NULL, NULL, '', NULL, NULL, 0, 0, 0, NULL, $4, $5, $5) \
             ON CONFLICT (desk, uidvalidity, uid) DO UPDATE \
             SET status = 'failed', error = excluded.error, finished_at = excluded.finished_at \
             WHERE journal.status <> 'done'",
        )
        .bind(&key.desk)
        .bind(i64::from(key.uidvalidity))
        .bind(i64::from(key.uid))
        .bind(truncate(error))
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(query_error(op))
        .map(drop)
    }

    // ---------------------------------------------------------------- sightings

    /// Records that `key` holds the message `group_key` (first sighting time is kept) and
    /// returns the distinct desks, sorted, that were seen holding it at or after
    /// `now - window_secs`, always including `key.desk`.
    ///
    /// Not one transaction on purpose: each sighting is committed before the count is read,
    /// so of several desks sighting copies at once, the last to count sees all of them.
    pub async fn sight(
        &self,
        group_key: &str,
        key: &MailKey,
        now: i64,
        window_secs: i64,
    ) -> Result<Vec<String>, StoreError> {
        let op = "record a sighting";
        sqlx::query(
            "INSERT INTO sighting (group_key, desk, uidvalidity, uid, seen_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (group_key, desk, uidvalidity, uid) DO NOTHING",
        )
        .bind(group_key)
        .bind(&key.desk)
        .bind(i64::from(key.uidvalidity))
        .bind(i64::from(key.uid))
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(query_error(op))?;
        let rows = sqlx::query(
            "SELECT DISTINCT desk FROM sighting WHERE group_key = $1 AND seen_at >= $2 \
             ORDER BY desk",
        )
        .bind(group_key)
        .bind(now.saturating_sub(window_secs))
        .fetch_all(&self.pool)
        .await
        .map_err(query_error(op))?;
        let mut desks = rows
            .iter()
            .map(|r| get::<String>(r, "desk", op))
            .collect::<Result<Vec<_>, _>>()?;
        if let Err(at) = desks.binary_search(&key.desk) {
            desks.insert(at, key.desk.clone());
        }
        Ok(desks)
    }

    /// [`Store::sight`] for a whole fetch batch: every sighting is recorded and committed
    /// first (one transaction), then the desks holding each message are read. Results in the
    /// order of `sightings`.
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
        .map(|r| {
            Ok(MailKey {
                desk: get(r, "desk", op)?,
                uidvalidity: get_u32(r, "uidvalidity", op)?,
                uid: get_u32(r, "uid", op)?,
            })
        })
        .collect()
    }

    /// Deletes sightings older than `before`; returns how many. Keeps the table bounded.
    pub async fn prune_sightings(&self, before: i64) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM sighting WHERE seen_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await
            .map_err(query_error("prune sightings"))?
            .rows_affected())
    }

    // ---------------------------------------------------------------- reply ledger

    /// True when a reply went to `sender` for `rule` strictly after `since`. With
    /// `since = now - period` this is exactly when a [`ReplyClaim`] would be refused.
    pub async fn replied_since(
        &self,
        sender: &str,
        rule: &str,
        since: i64,
    ) -> Result<bool, StoreError> {
        Ok(self
            .last_reply(sender, rule)
            .await?
            .is_some_and(|at| at > since))
    }

    /// When the last reply went to `sender` for `rule`, if ever.
    pub async fn last_reply(&self, sender: &str, rule: &str) -> Result<Option<i64>, StoreError> {
        let op = "read the reply ledger";
        sqlx::query("SELECT replied_at FROM reply_ledger WHERE sender = $1 AND rule = $2")
            .bind(sender.to_lowercase())
            .bind(rule)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_error(op))?
            .map(|r| get(&r, "replied_at", op))
            .transpose()
    }

    // ---------------------------------------------------------------- outbox

    /// Pending outgoing mail whose next attempt is due, oldest first, at most `limit` mails
    /// and, beyond the first, at most `max_bytes` of stored (base64) bodies in all: large
    /// mails are read one at a time (issue #13).
    pub async fn outbox_due(
        &self,
        now: i64,
        limit: u32,
        max_bytes: u64,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let op = "read the outbox";
        // Which mails first, by their sizes only (no body is held in a sort); then the
        // chosen mails' bodies.
        let sizes = sqlx::query(
            "SELECT id, CAST(LENGTH(body_base64) AS BIGINT) AS size FROM outbox \
             WHERE status = 'pending' AND next_attempt_at <= $1 \
             ORDER BY next_attempt_at, created_at, id LIMIT $2",
        )
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(query_error(op))?;
        let mut ids: Vec<String> = Vec::new();
        let mut total = 0u64;
        for r in &sizes {
            let size = u64::try_from(get::<i64>(r, "size", op)?).unwrap_or(0);
            if !ids.is_empty() && total.saturating_add(size) > max_bytes {
                break;
            }
            total = total.saturating_add(size);
            ids.push(get(r, "id", op)?);
        }
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT id, desk, envelope_from, recipients, body_base64, attempts FROM outbox \
             WHERE id IN ({}) ORDER BY next_attempt_at, created_at, id",
            placeholders.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for id in &ids {
            q = q.bind(id);
        }
        q.fetch_all(&self.pool)
            .await
            .map_err(query_error(op))?
            .iter()
            .map(|r| {
                let recipients: String = get(r, "recipients", op)?;
                let body: String = get(r, "body_base64", op)?;
                Ok(OutboxItem {
                    id: get(r, "id", op)?,
                    desk: get(r, "desk", op)?,
                    envelope_from: get(r, "envelope_from", op)?,
                    recipients: serde_json::from_str(&recipients).map_err(|_| {
                        StoreError::Corrupt {
                            what: "outbox recipients",
                            value: recipients.clone(),
                        }
                    })?,
                    bytes: BASE64.decode(&body).map_err(|e| StoreError::Corrupt {
                        what: "outbox mail body",
                        value: e.to_string(),
                    })?,
                    attempts: get_u32(r, "attempts", op)?,
                })
            })
            .collect()
    }

    /// When the earliest pending mail is due, if any: how long the sender may sleep.
    pub async fn outbox_next_attempt(&self) -> Result<Option<i64>, StoreError> {
        let op = "read the outbox";
        let row =
            sqlx::query("SELECT MIN(next_attempt_at) AS due FROM outbox WHERE status = 'pending'")
                .fetch_one(&self.pool)
                .await
                .map_err(query_error(op))?;
        get(&row, "due", op)
    }

    /// The mail was accepted by the SMTP server, for every recipient or (with `refused`:
    /// which recipients and why) for some of them; the refusal is kept as the row's error
    /// for `ticketgate report`. Its body is dropped; the row stays. Not sent again.
    pub async fn outbox_sent(
        &self,
        id: &str,
        refused: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        self.outbox_update(
            "mark outgoing mail sent",
            id,
            "UPDATE outbox SET status = 'sent', attempts = attempts + 1, finished_at = $2, \
             body_base64 = '', last_error = $3 WHERE id = $1 AND status = 'pending'",
            now,
            refused,
        )
        .await
    }

    /// A transient failure: count the attempt, keep the error, try again at `next_attempt_at`.
    pub async fn outbox_retry(
        &self,
        id: &str,
        next_attempt_at: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        self.outbox_update(
            "reschedule outgoing mail",
            id,
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $2, last_error = $3 \
             WHERE id = $1 AND status = 'pending'",
            next_attempt_at,
            Some(error),
        )
        .await
    }

    /// A permanent failure: the mail is not tried again but kept, with its body and error,
    /// visible in [`Store::outbox_all`].
    pub async fn outbox_failed(&self, id: &str, error: &str, now: i64) -> Result<(), StoreError> {
        self.outbox_update(
            "give up on outgoing mail",
            id,
            "UPDATE outbox SET status = 'failed', attempts = attempts + 1, finished_at = $2, \
             last_error = $3 WHERE id = $1 AND status = 'pending'",
            now,
            Some(error),
        )
        .await
    }

    /// Runs one of the outbox state changes, which apply only to pending rows: repeating one
    /// after the row left `pending` is a no-op; an unknown id is an error.
    async fn outbox_update(
        &self,
        op: &'static str,
        id: &str,
        sql: &'static str,
        time: i64,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let query = sqlx::query(sql)
            .bind(id)
            .bind(time)
            .bind(error.map(truncate));
        let changed = query
            .execute(&self.pool)
            .await
            .map_err(query_error(op))?
            .rows_affected();
        if changed == 0 {
            let exists = sqlx::query("SELECT id FROM outbox WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
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

    /// Pending outgoing mails.
    pub async fn outbox_depth(&self) -> Result<u64, StoreError> {
        Ok(self.outbox_waiting().await?.0)
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

    // ---------------------------------------------------------------- report

    /// Counts per desk and UTC day of the mails journaled at or after `since` (by decision
    /// time), sorted by day then desk.
    /// Counts per desk and day in `tz` of the mails journaled since `since` (Unix seconds),
    /// ordered by day and desk. The database groups by quarter hour (every time zone's
    /// offset is a multiple of 15 minutes); the days are made here.
    pub async fn report(
        &self,
        since: i64,
        tz: &jiff::tz::TimeZone,
    ) -> Result<Vec<ReportRow>, StoreError> {
        let op = "compute the report";
        // COUNT, not SUM: PostgreSQL's SUM(bigint) is numeric, which `Any` cannot decode.
        let rows = sqlx::query(
            "SELECT desk, decided_at / 900 AS quarter, COUNT(*) AS mails, \
             COUNT(ticket) AS tickets, \
             COUNT(CASE WHEN redirected = 1 THEN 1 END) AS redirected, \
             COUNT(CASE WHEN broadcast = 1 THEN 1 END) AS broadcast, \
             COUNT(CASE WHEN automatic = 1 THEN 1 END) AS automatic, \
             COUNT(CASE WHEN status = 'failed' THEN 1 END) AS errors \
             FROM journal WHERE decided_at >= $1 \
             GROUP BY desk, decided_at / 900",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await
        .map_err(query_error(op))?;
        let mut days: std::collections::BTreeMap<(String, String), ReportRow> =
            std::collections::BTreeMap::new();
        for r in &rows {
            let desk: String = get(r, "desk", op)?;
            let quarter: i64 = get(r, "quarter", op)?;
            let day = crate::clock::local_day(quarter * 900, tz);
            let row = days
                .entry((day.clone(), desk.clone()))
                .or_insert_with(|| ReportRow {
                    desk,
                    day,
                    ..ReportRow::default()
                });
            row.mails += get_u64(r, "mails", op)?;
            row.tickets += get_u64(r, "tickets", op)?;
            row.redirected += get_u64(r, "redirected", op)?;
            row.broadcast += get_u64(r, "broadcast", op)?;
            row.automatic += get_u64(r, "automatic", op)?;
            row.errors += get_u64(r, "errors", op)?;
        }
        Ok(days.into_values().collect())
    }
}

/// Monotonic progress; see [`Store::advance`]. Usable inside a transaction.
/// One decision of [`Store::record_decisions`], inside its transaction.
/// `($s, $s+1, ...), (...)`: placeholders for `rows` rows of `cols` values, numbered from
/// `first` (the `Any` driver has no portable placeholder of its own).
fn row_marks(first: usize, rows: usize, cols: usize) -> String {
    let mut out = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 0..cols {
            if c > 0 {
                out.push_str(", ");
            }
            out.push_str(&format!("${}", first + r * cols + c));
        }
        out.push(')');
    }
    out
}

/// Journals decisions (status decided) in one statement; returns the keys that were new.
async fn insert_journal_rows(
    tx: &mut AnyConnection,
    decisions: &[NewDecision],
) -> Result<Vec<MailKey>, StoreError> {
    let op = "record a decision";
    let sql = format!(
        "INSERT INTO journal (desk, uidvalidity, uid, status, group_key, message_id, sender, \
         subject, ticket, ticket_source, broadcast, automatic, redirected, rule, decided_at) \
         VALUES {} ON CONFLICT (desk, uidvalidity, uid) DO NOTHING \
         RETURNING desk, uidvalidity, uid",
        row_marks(1, decisions.len(), 15)
    );
    let mut q = sqlx::query(&sql);
    for d in decisions {
        q = q
            .bind(&d.key.desk)
            .bind(i64::from(d.key.uidvalidity))
            .bind(i64::from(d.key.uid))
            .bind(MailStatus::Decided.as_str())
            .bind(&d.group_key)
            .bind(d.message_id.as_deref())
            .bind(d.sender.as_deref())
            .bind(&d.subject)
            .bind(d.ticket.as_deref())
            .bind(d.ticket_source.as_deref())
            .bind(i64::from(d.broadcast))
            .bind(i64::from(d.automatic))
            .bind(i64::from(d.redirected))
            .bind(d.rule.as_deref())
            .bind(d.now);
    }
    let rows = q.fetch_all(&mut *tx).await.map_err(query_error(op))?;
    rows.iter()
        .map(|row| {
            Ok(MailKey {
                desk: get(row, "desk", op)?,
                uidvalidity: get_u32(row, "uidvalidity", op)?,
                uid: get_u32(row, "uid", op)?,
            })
        })
        .collect()
}

/// The planned actions of newly journaled decisions, in one statement.
async fn insert_action_rows(
    tx: &mut AnyConnection,
    decisions: &[&NewDecision],
) -> Result<(), StoreError> {
    let op = "record a decision";
    let rows: Vec<(&NewDecision, usize, &String)> = decisions
        .iter()
        .flat_map(|d| d.actions.iter().enumerate().map(move |(i, a)| (*d, i, a)))
        .collect();
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO journal_action (desk, uidvalidity, uid, position, action, done) \
             VALUES {}",
            row_marks(1, chunk.len(), 6)
        );
        let mut q = sqlx::query(&sql);
        for (d, position, action) in chunk {
            q = q
                .bind(&d.key.desk)
                .bind(i64::from(d.key.uidvalidity))
                .bind(i64::from(d.key.uid))
                .bind(i64::try_from(*position).unwrap_or(i64::MAX))
                .bind(*action)
                .bind(0_i64);
        }
        q.execute(&mut *tx).await.map_err(query_error(op))?;
    }
    Ok(())
}

/// Takes the reply claims and queues the outgoing mail of a newly journaled decision;
/// returns the outbox ids it queued, sorted.
async fn record_outgoing(
    tx: &mut AnyConnection,
    d: &NewDecision,
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
    let mut refused: HashSet<&str> = HashSet::new();
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
            refused.insert(out.id.as_str());
        }
    }

    let mut outgoing: Vec<&NewOutgoing> = d
        .outbox
        .iter()
        .filter(|out| !refused.contains(out.id.as_str()))
        .collect();
    outgoing.sort_by(|a, b| a.id.cmp(&b.id));
    let mut queued = Vec::new();
    for out in outgoing {
        let recipients =
            serde_json::to_string(&out.recipients).map_err(|e| StoreError::Corrupt {
                what: "outgoing recipients",
                value: e.to_string(),
            })?;
        let added = sqlx::query(
            "INSERT INTO outbox (id, desk, envelope_from, recipients, body_base64, status, \
             attempts, next_attempt_at, last_error, created_at, finished_at, \
             mail_desk, mail_uidvalidity, mail_uid) \
             VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, NULL, $6, NULL, $7, $8, $9) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&out.id)
        .bind(&out.desk)
        .bind(&out.envelope_from)
        .bind(recipients)
        .bind(BASE64.encode(&out.bytes))
        .bind(d.now)
        .bind(&d.key.desk)
        .bind(i64::from(d.key.uidvalidity))
        .bind(i64::from(d.key.uid))
        .execute(&mut *tx)
        .await
        .map_err(query_error(op))?
        .rows_affected();
        if added == 1 {
            queued.push(out.id.clone());
        }
    }
    Ok(queued)
}

async fn advance<'e, E>(executor: E, desk: &str, uidvalidity: u32, uid: u32) -> sqlx::Result<()>
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

async fn queued_by<'e, E>(executor: E, key: &MailKey) -> Result<Vec<String>, StoreError>
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

/// An error text as stored: at most MAX_ERROR_LEN bytes, without NUL (which PostgreSQL
/// refuses in text columns).
fn truncate(text: &str) -> String {
    let mut end = text.len().min(MAX_ERROR_LEN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].replace('\0', "")
}

fn get<'r, T>(row: &'r AnyRow, column: &'static str, op: &'static str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get(column)
        .map_err(|source| StoreError::Query { op, source })
}

fn get_u32(row: &AnyRow, column: &'static str, op: &'static str) -> Result<u32, StoreError> {
    let value: i64 = get(row, column, op)?;
    u32::try_from(value).map_err(|_| StoreError::Corrupt {
        what: column,
        value: value.to_string(),
    })
}

fn get_u64(row: &AnyRow, column: &'static str, op: &'static str) -> Result<u64, StoreError> {
    let value: i64 = get(row, column, op)?;
    u64::try_from(value).map_err(|_| StoreError::Corrupt {
        what: column,
        value: value.to_string(),
    })
}

fn get_bool(row: &AnyRow, column: &'static str, op: &'static str) -> Result<bool, StoreError> {
    let value: i64 = get(row, column, op)?;
    match value {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(StoreError::Corrupt {
            what: column,
            value: other.to_string(),
        }),
    }
}
