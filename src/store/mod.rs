//! State store over sqlx's `Any` driver, same SQL on SQLite and PostgreSQL. This file holds
//! the [`Store`] handle (open, open read-only, close), its errors, the embedded migrations and
//! the row helpers the other files share. The tables' operations live beside it: desk
//! progress (`progress`), the mail journal (`journal`: reading; `record`: writing), the
//! journal's action records (`actions`), tickets learned from the helpdesk's
//! acknowledgements (`acknowledged`), sightings of copies across desks (`sightings`), the
//! reply ledger and the outbox (`outbox`), retention (`prune`), reports (`report`). What to
//! do with a mail (decide), composing and sending (compose, smtp) live elsewhere.
//!
//! Exactly-once (SPEC 5) rests on three things here: a mail's decision, its planned actions,
//! its outgoing mail and its reply claims are recorded in ONE transaction before any side
//! effect ([`Store::record_decisions`]); outbox ids are dedupe keys, so copies of a broadcast
//! on several desks queue one redirect; a reply claim checks and takes the ledger atomically.

mod acknowledged;
mod actions;
mod clocks;
mod journal;
mod known;
pub use known::Journaled;
mod decision;
mod location;
mod outbox;
mod progress;
mod prune;
mod record;
mod report;
mod sightings;
mod standalone;
#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests;

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{AnyConnection, AnyPool, ConnectOptions, Connection, Executor, Row};

pub use acknowledged::LearnedTicket;
pub use actions::UnreadableAction;
pub use clocks::{ClockChange, ClockCursor, ClockMail, ClockRow, NewClock, OpenClock, StopReason};
pub use journal::{JournalEntry, MailStatus};
use location::Location;
pub use outbox::{OutboxItem, OutboxRecord, OutboxStatus, SendResult};
pub use prune::{Keep, PruneCounts, prune_periodically};
pub use record::{NewDecision, NewOutgoing, Recorded, ReplyClaim};
pub use report::{ReportRow, format_report};
pub use standalone::StoppedClock;

/// `url` with its password (userinfo or `password=` parameter) replaced by `***`, for
/// messages.
pub fn redact_url(url: &str) -> String {
    location::redact(url)
}

/// How long waiting for a free (or new) connection may take before it fails with a
/// transient error.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Rows per multi-row statement. Few statements save round trips to the database; 32 rows
/// (at most 512 parameters) was the measured balance while SQLite still looked up each
/// `$N` parameter by a linear scan (now plain `?` there: [`positional`]).
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
        path: std::path::PathBuf,
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
    (
        3,
        "outbox body bytes",
        include_str!("../../migrations/0003_outbox_body_bytes.sql"),
    ),
    (
        4,
        "desk clock",
        include_str!("../../migrations/0004_desk_clock.sql"),
    ),
    (
        5,
        "acknowledged tickets",
        include_str!("../../migrations/0005_acknowledged_tickets.sql"),
    ),
    (
        6,
        "desk clock lookup",
        include_str!("../../migrations/0006_desk_clock_lookup.sql"),
    ),
    (
        7,
        "journal actions",
        include_str!("../../migrations/0007_journal_actions.sql"),
    ),
    (
        8,
        "desk clock pages",
        include_str!("../../migrations/0008_desk_clock_pages.sql"),
    ),
    (
        9,
        "unread indexes",
        include_str!("../../migrations/0009_unread_indexes.sql"),
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
    /// The database is SQLite (placeholders: [`Store::sql`]).
    sqlite: bool,
}

/// A database checked to be reachable: where it is, its name for messages, and the options
/// to connect with.
struct Reachable {
    location: Location,
    target: String,
    options: AnyConnectOptions,
}

impl Reachable {
    fn open_error(&self) -> impl Fn(sqlx::Error) -> StoreError + '_ {
        |source| StoreError::Open {
            target: self.target.clone(),
            source,
        }
    }
}

/// Parses `url` and makes one direct connection, then closes it. sqlx's pool retries failed
/// connects until its timeout and then reports only "timed out", hiding causes such as
/// "connection refused" or "file is not a database": this probe reports the real one.
///
/// Read-write: the SQLite file and its directory are created if missing, and the WAL
/// journal mode is set (it is stored in the file and needs a moment without other
/// connections). Read-only: nothing is created; a SQLite file that does not exist is an
/// error naming the path, and without a write-ahead log (the daemon is not writing) the
/// file is opened immutable, so no -shm file is needed (a reader may not write the
/// directory).
async fn probe(url: &str, read_only: bool) -> Result<Reachable, StoreError> {
    let location = Location::parse(url)?;
    let mut url = location.sqlx_url()?;
    if read_only {
        url = url.replace("mode=rwc", "mode=ro");
        if let Location::SqliteFile(path) = &location {
            std::fs::metadata(path).map_err(|source| StoreError::Path {
                path: path.clone(),
                what: "find the state database",
                source,
            })?;
            let mut wal = path.clone().into_os_string();
            wal.push("-wal");
            if !Path::new(&wal).exists() {
                url.push_str("&immutable=1");
            }
        }
    } else {
        location.prepare()?;
    }
    let target = location.describe();
    let open_error = |source| StoreError::Open {
        target: target.clone(),
        source,
    };
    sqlx::any::install_default_drivers();
    let options = AnyConnectOptions::from_str(&url)
        .map_err(open_error)?
        .disable_statement_logging();
    let mut probe = AnyConnection::connect_with(&options)
        .await
        .map_err(open_error)?;
    if !read_only && location.is_sqlite() {
        probe
            .execute("PRAGMA journal_mode = WAL")
            .await
            .map_err(open_error)?;
    }
    probe.close().await.map_err(open_error)?;
    Ok(Reachable {
        location,
        target,
        options,
    })
}

impl Store {
    /// Connects and brings the schema up to date.
    ///
    /// SQLite (`sqlite:///abs/path.db`, `sqlite://rel.db`, `sqlite::memory:`): the file and its
    /// directory are created if missing; WAL journal with `synchronous=FULL`, so a committed
    /// transaction survives kill -9 and power loss; one connection, so writers in this process
    /// never contend, with a busy timeout against other processes (e.g. `ticketgate report`).
    /// PostgreSQL (`postgres://…`): a small pool.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let db = probe(url, false).await?;
        let pool = if db.location.is_sqlite() {
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
                // No transaction outlives its use of the connection. After a COMMIT that
                // failed (a full disk: SQLITE_FULL), SQLite has rolled the transaction back
                // itself, sqlx's ROLLBACK then fails, and sqlx counts the transaction as
                // still open: its next transaction is a SAVEPOINT, and a failure in that one
                // rolls back only to the savepoint, leaving a transaction open in which every
                // later write "commits" without reaching the disk (lost at the next kill -9,
                // and mail redone or sent again after it). Each connection given back to the
                // pool is therefore rolled back to no transaction: SQLite refuses the ROLLBACK
                // when none is open, the normal case (`tests/database.rs`,
                // `a_full_disk_while_running_delays_mail_and_loses_or_repeats_none`).
                .after_release(|conn, _| {
                    Box::pin(async move {
                        if conn.execute("ROLLBACK").await.is_ok() {
                            tracing::error!("a failed transaction was left open on the state database; rolled back (its writes were not recorded)");
                        }
                        Ok(true)
                    })
                })
                .connect_with(db.options.clone())
                .await
        } else {
            AnyPoolOptions::new()
                .acquire_timeout(CONNECT_TIMEOUT)
                .max_connections(4)
                .connect_with(db.options.clone())
                .await
        }
        .map_err(db.open_error())?;
        let migrate_error = |source| StoreError::Migrate {
            target: db.target.clone(),
            source,
        };
        Migrator::new(EmbeddedMigrations)
            .await
            .map_err(migrate_error)?
            .run(&pool)
            .await
            .map_err(migrate_error)?;
        Ok(Store {
            pool,
            sqlite: db.location.is_sqlite(),
            target: db.target,
        })
    }

    /// Opens an existing state database for reading only (`ticketgate report`): nothing is
    /// created, migrated or written, so a supervisor with read access (a member of the
    /// service's group) can use it. A SQLite file that does not exist is an error naming
    /// the path.
    pub async fn open_read_only(url: &str) -> Result<Store, StoreError> {
        let db = probe(url, true).await?;
        let pool = AnyPoolOptions::new()
            .acquire_timeout(CONNECT_TIMEOUT)
            .max_connections(1)
            .connect_with(db.options.clone())
            .await
            .map_err(db.open_error())?;
        Ok(Store {
            pool,
            sqlite: db.location.is_sqlite(),
            target: db.target,
        })
    }

    /// `sql` as this store's database takes it best ([`positional`]).
    fn sql(&self, sql: String) -> String {
        positional(self.sqlite, sql)
    }

    /// The database this store uses, without password, for messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Closes all connections, waiting for running queries.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

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
            // Into the string, not through a `format!` per placeholder: a batch's inserts
            // number thousands of them.
            let _ = write!(out, "${}", first + r * cols + c);
        }
        out.push(')');
    }
    out
}

/// What [`AnyConnection::backend_name`] says for SQLite.
pub(super) const SQLITE: &str = "SQLite";

/// `sql` with its numbered placeholders `$1, $2, ... $n` made plain `?` when `sqlite` is
/// set and each appears once, in order; otherwise `sql` unchanged (same meaning either way).
/// SQLite finds a numbered parameter's name by a linear scan of the statement's names at
/// every bind, so binding a multi-row insert's 480 parameters costs their square: 9 % of
/// the daemon's CPU in `perf` over a 10,000-mail backlog. Plain `?` parameters have no name.
/// PostgreSQL takes only `$N`.
pub(super) fn positional(sqlite: bool, sql: String) -> String {
    if !sqlite {
        return sql;
    }
    let mut out = String::with_capacity(sql.len());
    let mut expected = 1u64;
    let mut rest = sql.as_str();
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if after[..digits].parse::<u64>().ok() != Some(expected) {
            return sql;
        }
        out.push('?');
        expected += 1;
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
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

/// The mail key of a row with `desk`, `uidvalidity` and `uid` columns.
fn get_key(row: &AnyRow, op: &'static str) -> Result<MailKey, StoreError> {
    Ok(MailKey {
        desk: get(row, "desk", op)?,
        uidvalidity: get_u32(row, "uidvalidity", op)?,
        uid: get_u32(row, "uid", op)?,
    })
}
