//! Store tests: each is one async body taking a [`Db`], run on SQLite in a temp dir and, when
//! `TICKETGATE_TEST_POSTGRES_URL` is set (see scripts/postgres-test.sh), on a fresh PostgreSQL
//! database. Here: the harness, shared helpers, migrations and backend-specific checks
//! (pragmas, kill -9); the journal, the outbox and retention have their own files.

use super::*;
use crate::action::Action;

const NOW: i64 = 1_750_000_000; // 2025-06-15T15:06:40Z
const DAY: i64 = 86_400;

/// A freshly migrated store plus what is needed to open it again.
struct Db {
    store: Store,
    url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Db {
    async fn sqlite() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/state/tg.db", dir.path().display());
        let store = Store::open(&url).await.unwrap();
        Db {
            store,
            url,
            _dir: Some(dir),
        }
    }

    /// A new database on the server named by TICKETGATE_TEST_POSTGRES_URL, or None.
    async fn postgres() -> Option<Db> {
        use sqlx::Connection as _;
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);

        let base = std::env::var("TICKETGATE_TEST_POSTGRES_URL").ok()?;
        sqlx::any::install_default_drivers();
        let name = format!(
            "tg_test_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            fastrand::u32(..)
        );
        let mut admin = sqlx::AnyConnection::connect(&base).await.unwrap();
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap();
        admin.close().await.unwrap();
        let slash = base.rfind('/').unwrap();
        let url = format!("{}{name}", &base[..=slash]);
        let store = Store::open(&url).await.unwrap();
        Some(Db {
            store,
            url,
            _dir: None,
        })
    }

    async fn reopen(&self) -> Store {
        Store::open(&self.url).await.unwrap()
    }
}

/// A PostgreSQL test without a server: fails under CI, says `SKIPPED` otherwise.
fn skip_without_postgres() {
    crate::test_skip::skip(
        "TICKETGATE_TEST_POSTGRES_URL is not set: run under scripts/postgres-test.sh",
    );
}

/// Generates `sqlite::NAME` and `postgres::NAME` tests for each body `NAME(Db)`.
macro_rules! store_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Db::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(db) = super::Db::postgres().await else {
                        super::skip_without_postgres();
                        return;
                    };
                    crate::test_skip::ran_on("postgresql", stringify!($name));
                    super::$name(db).await;
                }
            )*
        }
    };
}

store_tests!(migrations_apply_once_and_reopen, data_survives_reopen);

// After the macro: the files below use it.
mod acknowledged;
mod clocks;
mod journal;
mod known;
mod outbox;
mod retention;

fn key(desk: &str, uidvalidity: u32, uid: u32) -> MailKey {
    MailKey {
        desk: desk.into(),
        uidvalidity,
        uid,
    }
}

fn decision(key: MailKey, group_key: &str, now: i64) -> NewDecision {
    NewDecision {
        key,
        message_id: Some(format!("<{group_key}@example.in>")),
        group_key: group_key.into(),
        sender: Some("user@example.in".into()),
        subject: "Payment pending".into(),
        ticket: None,
        ticket_source: None,
        broadcast: false,
        automatic: false,
        redirected: false,
        rule: Some("no-ticket".into()),
        actions: vec![
            Action::Tag("$NoTicket".into()),
            Action::File("Redirected".into()),
        ],
        outbox: vec![],
        clock: None,
        now,
    }
}

fn outgoing(id: &str, desk: &str) -> NewOutgoing {
    NewOutgoing {
        id: id.into(),
        desk: desk.into(),
        envelope_from: format!("{desk}@gem.example"),
        recipients: vec!["helpdesk@gem.example".into(), "user@example.in".into()],
        bytes: format!("Subject: {id}\r\n\r\nbody\r\n").into_bytes(),
        reply_claim: None,
    }
}

fn reply(id: &str, desk: &str, sender: &str, period_secs: i64) -> NewOutgoing {
    NewOutgoing {
        reply_claim: Some(ReplyClaim {
            sender: sender.into(),
            rule: "broadcast-advisory".into(),
            period_secs,
        }),
        ..outgoing(id, desk)
    }
}

/// Records one decision through [`Store::record_decisions`] (the batch production uses).
async fn record(s: &Store, d: &NewDecision) -> Recorded {
    let mut out = s.record_decisions(&mut [d.clone()]).await.unwrap();
    assert_eq!(out.len(), 1);
    out.pop().unwrap()
}

/// Stores the actions of the journaled mail `k` as releases before 0.7 did: `journal.actions`
/// NULL and one `journal_action` row per record, in order.
async fn as_before_0_7(s: &Store, k: &MailKey, records: &[&str]) {
    let key_binds =
        |q: sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments<'static>>| {
            q.bind(k.desk.clone())
                .bind(i64::from(k.uidvalidity))
                .bind(i64::from(k.uid))
        };
    key_binds(sqlx::query(
        "UPDATE journal SET actions = NULL WHERE desk = $1 AND uidvalidity = $2 AND uid = $3",
    ))
    .execute(&s.pool)
    .await
    .unwrap();
    key_binds(sqlx::query(
        "DELETE FROM journal_action WHERE desk = $1 AND uidvalidity = $2 AND uid = $3",
    ))
    .execute(&s.pool)
    .await
    .unwrap();
    for (position, record) in records.iter().enumerate() {
        key_binds(sqlx::query(
            "INSERT INTO journal_action (desk, uidvalidity, uid, position, action, done) \
             VALUES ($1, $2, $3, $4, $5, 0)",
        ))
        .bind(i64::try_from(position).unwrap())
        .bind(record.to_string())
        .execute(&s.pool)
        .await
        .unwrap();
    }
}

/// Pending outgoing mails.
async fn depth(s: &Store) -> u64 {
    s.outbox_waiting().await.unwrap().0
}

async fn migrations_apply_once_and_reopen(db: Db) {
    let count = |store: Store| async move {
        sqlx::query("SELECT COUNT(*) AS n FROM _sqlx_migrations")
            .fetch_one(&store.pool)
            .await
            .unwrap()
            .try_get::<i64, _>("n")
            .unwrap()
    };
    assert_eq!(count(db.store.clone()).await, MIGRATIONS.len() as i64);
    db.store.set_uidvalidity("works", 9).await.unwrap();
    db.store.close().await;

    let again = db.reopen().await;
    assert_eq!(count(again.clone()).await, MIGRATIONS.len() as i64);
    assert_eq!(again.desk_progress("works").await.unwrap(), Some((9, 0)));
}

async fn data_survives_reopen(db: Db) {
    let k = key("works", 4, 4);
    let mut d = decision(k.clone(), "g", NOW);
    d.outbox = vec![outgoing("o", "works")];
    record(&db.store, &d).await;
    db.store.sight_all(&[("g", &k)], NOW, 60).await.unwrap();
    db.store.close().await;

    let s = db.reopen().await;
    let entry = s.journal(&k).await.unwrap().unwrap();
    assert_eq!(entry.actions, Ok(d.actions));
    assert_eq!(entry.queued, vec!["o"]);
    assert_eq!(
        s.outbox_due_unbudgeted(NOW, 10, u64::MAX).await.unwrap()[0].id,
        "o"
    );
    assert_eq!(s.sightings("g").await.unwrap(), vec![k]);
}

#[test]
fn embedded_migrations_match_directory() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut files: Vec<(i64, String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .map(|p| {
            let stem = p.file_stem().unwrap().to_str().unwrap().to_owned();
            let (version, description) = stem.split_once('_').unwrap();
            (
                version.parse().unwrap(),
                description.replace('_', " "),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    let embedded: Vec<(i64, String, String)> = MIGRATIONS
        .iter()
        .map(|&(v, d, sql)| (v, d.to_owned(), sql.to_owned()))
        .collect();
    assert_eq!(embedded, files, "update MIGRATIONS in src/store/mod.rs");
}

#[tokio::test]
async fn sqlite_is_wal_with_full_sync() {
    let db = Db::sqlite().await;
    let mode: String = sqlx::query("PRAGMA journal_mode")
        .fetch_one(&db.store.pool)
        .await
        .unwrap()
        .get(0);
    let sync: i64 = sqlx::query("PRAGMA synchronous")
        .fetch_one(&db.store.pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(mode, "wal");
    assert_eq!(sync, 2, "FULL");
}

#[tokio::test]
async fn sqlite_memory_works() {
    let s = Store::open("sqlite::memory:").await.unwrap();
    s.set_uidvalidity("works", 3).await.unwrap();
    assert_eq!(s.desk_progress("works").await.unwrap(), Some((3, 0)));
    assert_eq!(s.target(), "sqlite::memory:");
}

#[tokio::test]
async fn sqlite_open_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "x").unwrap();
    let url = format!("sqlite://{}/sub/tg.db", blocker.display());
    let err = Store::open(&url).await.unwrap_err();
    assert!(matches!(err, StoreError::Path { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&blocker.join("sub").display().to_string()),
        "{err}"
    );

    // A file that is not a database.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![b'j'; 4096]).unwrap();
    let err = Store::open(&format!("sqlite://{}", junk.display()))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(&junk.display().to_string()),
        "{err}"
    );
    let cause = std::error::Error::source(&err).unwrap().to_string();
    assert!(cause.contains("not a database"), "{cause}");
}

#[tokio::test]
async fn postgres_errors_hide_the_password() {
    // Nothing listens on port 1: the connection is refused at once.
    let err = Store::open("postgres://tg:s3cret@127.0.0.1:1/tg")
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("postgres://tg:***@127.0.0.1:1/tg"), "{text}");
    assert!(!format!("{err:?}").contains("s3cret"), "{err:?}");
    assert!(err.is_transient(), "{err:?}");
}

/// PostgreSQL over TLS: scripts/postgres-test.sh serves a certificate for IP 127.0.0.1 signed
/// by its own CA (TICKETGATE_TEST_POSTGRES_CA). With `sslmode=verify-full` and that CA the
/// store opens and the session is encrypted; with another CA, or by a name the certificate
/// does not hold (localhost), it is refused. (Observed: sqlx's rustls `verify-ca` checks the
/// name too, so only `verify-full` is documented.)
#[tokio::test]
async fn postgres_over_tls_verify_full() {
    use sqlx::Connection as _;
    let Ok(base) = std::env::var("TICKETGATE_TEST_POSTGRES_URL") else {
        skip_without_postgres();
        return;
    };
    crate::test_skip::ran_on("postgresql", "postgres_over_tls_verify_full");
    let ca = std::env::var("TICKETGATE_TEST_POSTGRES_CA")
        .expect("scripts/postgres-test.sh exports TICKETGATE_TEST_POSTGRES_CA with the URL");
    let other_ca = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls/ca.pem");
    let with = |url: &str, mode: &str, ca: &str| format!("{url}?sslmode={mode}&sslrootcert={ca}");

    let good = with(&base, "verify-full", &ca);
    let store = Store::open(&good).await;
    assert!(store.is_ok(), "{:?}", store.err());
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&good).await.unwrap();
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(encrypted, "the session must be TLS");
    conn.close().await.unwrap();

    let err = Store::open(&with(&base, "verify-full", other_ca))
        .await
        .err()
        .map(|e| format!("{e:#}"));
    assert!(
        err.is_some(),
        "a server certificate from another CA was accepted"
    );
    let by_name = base.replace("127.0.0.1", "localhost");
    let err = Store::open(&with(&by_name, "verify-full", &ca))
        .await
        .err()
        .map(|e| format!("{e:#}"));
    assert!(
        err.is_some(),
        "verify-full accepted a name the certificate does not hold"
    );
}

/// Committed data survives the process dying without any shutdown: a child process (this test
/// binary, running `abort_child`) records a decision and aborts; the parent then reads it.
#[tokio::test]
async fn sqlite_commit_survives_abort() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/tg.db", dir.path().display());
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "store::tests::abort_child"])
        .args(["--nocapture", "--test-threads=1"])
        .env("TICKETGATE_ABORT_CHILD_DB", &url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the child must die by abort: {status:?}");
    let s = Store::open(&url).await.unwrap();
    let entry = s.journal(&key("works", 1, 1)).await.unwrap().unwrap();
    assert_eq!(entry.queued, vec!["redirect"]);
    assert_eq!(depth(&s).await, 1);
}

/// The child half of `sqlite_commit_survives_abort`; does nothing unless that test runs it.
#[tokio::test]
async fn abort_child() {
    let Ok(url) = std::env::var("TICKETGATE_ABORT_CHILD_DB") else {
        return;
    };
    let s = Store::open(&url).await.unwrap();
    let mut d = decision(key("works", 1, 1), "g", NOW);
    d.outbox = vec![outgoing("redirect", "works")];
    record(&s, &d).await;
    std::process::abort();
}

impl Store {
    /// Every open clock of `desk`, read as the review reads them, in pages of `per_page`.
    pub(super) async fn open_clocks_in_pages(
        &self,
        desk: &str,
        per_page: u32,
    ) -> Result<Vec<super::clocks::OpenClock>, StoreError> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let (page, next) = self
                .open_clocks_page(desk, after.as_ref(), per_page)
                .await?;
            assert!(
                page.len() <= per_page as usize,
                "{} > {per_page}",
                page.len()
            );
            all.extend(page);
            match next {
                Some(n) => after = Some(n),
                None => return Ok(all),
            }
        }
    }

    /// Every open clock of `desk`, a page per clock (each boundary crossed).
    pub(super) async fn open_clocks(
        &self,
        desk: &str,
    ) -> Result<Vec<super::clocks::OpenClock>, StoreError> {
        self.open_clocks_in_pages(desk, 1).await
    }

    /// [`Store::outbox_due`] outside any memory budget: the mails only.
    pub(super) async fn outbox_due_unbudgeted(
        &self,
        now: i64,
        limit: u32,
        max_bytes: u64,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        self.outbox_due_skipping(now, limit, max_bytes, &[]).await
    }

    /// [`Store::outbox_due`] passing over the mails `skip`, with no memory budget.
    pub(super) async fn outbox_due_skipping(
        &self,
        now: i64,
        limit: u32,
        max_bytes: u64,
        skip: &[&str],
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let memory = crate::budget::MailMemory::new(u64::MAX);
        let skip = skip.iter().map(|s| (*s).to_string()).collect();
        let due = self
            .outbox_due(now, limit, max_bytes, &memory, &skip, true)
            .await?;
        Ok(due.map(|(items, _)| items).unwrap_or_default())
    }
}

/// SQLite's `EXPLAIN QUERY PLAN` rows of `query` (its SQL starting with those words): each
/// row's `detail`.
async fn query_plan<'q>(
    db: &Db,
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
) -> Vec<String> {
    let rows = query.fetch_all(&db.store.pool).await.unwrap();
    rows.iter()
        .map(|r| r.try_get::<String, _>("detail").unwrap())
        .collect()
}

/// Issue #16: the lookup a batch of ticket mails makes goes through the clock table's key
/// (desk, ticket, started). With a condition on the status, SQLite chose an index by
/// (desk, status) and scanned every open clock of the desk per batch: a 10,000-mail backlog
/// took twice as long, each batch longer than the one before.
#[tokio::test]
async fn the_clock_lookup_of_a_batch_uses_the_key_of_desk_and_ticket() {
    let db = Db::sqlite().await;
    let sql = format!(
        "EXPLAIN QUERY PLAN {} ($2, $3)",
        super::clocks::clocks_of(true)
    );
    let plan = query_plan(
        &db,
        sqlx::query(&sql)
            .bind("bid-ra")
            .bind("2024-1")
            .bind("2024-2"),
    )
    .await;
    assert!(
        plan.iter()
            .any(|d| d.contains("sqlite_autoindex_desk_clock_1")
                && d.contains("desk=?")
                && d.contains("ticket=?")),
        "{plan:?}"
    );
}

/// Issue #16: each index costs every row written into its table an entry, most of them at
/// a random place that the next commit rewrites; an index no query reads is only that
/// cost. The journal and the desk clocks keep the indexes their queries go through: by
/// time (reports, pruning), by sender (the flood limit), and the open clocks by start (the
/// review's pages); none by group key, none by clock status for the batch's lookup.
#[tokio::test]
async fn the_journal_and_the_clocks_carry_only_the_indexes_their_queries_read() {
    let db = Db::sqlite().await;
    let mut names = Vec::new();
    for table in ["journal", "desk_clock"] {
        let rows = sqlx::query(&format!(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = '{table}' \
             AND sql IS NOT NULL ORDER BY name"
        ))
        .fetch_all(&db.store.pool)
        .await
        .unwrap();
        names.extend(rows.iter().map(|r| r.try_get::<String, _>("name").unwrap()));
    }
    assert_eq!(
        names,
        [
            "journal_by_sender",
            "journal_by_time",
            "desk_clock_open_by_start"
        ]
    );
}

/// Issue #16: each page of a desk's open clocks is a range of the index of migration 0008
/// in the order the pages go: no sort of every open clock per page (with one, reviewing
/// 30,000 open clocks in pages took three times as long as reading them at once).
#[tokio::test]
async fn a_page_of_open_clocks_is_read_through_an_index_in_page_order() {
    let db = Db::sqlite().await;
    let sql = format!(
        "EXPLAIN QUERY PLAN {}",
        super::clocks::open_clocks_page_sql(true)
    );
    let plan = query_plan(
        &db,
        sqlx::query(&sql)
            .bind("bid-ra")
            .bind(NOW)
            .bind("2024-1")
            .bind(2_000_i64),
    )
    .await;
    let search = plan
        .iter()
        .position(|d| {
            d.contains("desk_clock_open_by_start")
                && d.contains("desk=? AND status=?")
                && d.contains("(started,ticket)>(?,?)")
        })
        .unwrap_or_else(|| panic!("no range of the index: {plan:?}"));
    // The page's own rows are sorted for its last clock (at most a page); the desk's open
    // clocks are not.
    assert!(!plan[search + 1].contains("TEMP B-TREE"), "{plan:?}");
}

#[test]
fn sqlite_gets_plain_placeholders_only_when_numbered_once_in_order() {
    let insert = format!("INSERT INTO t (a, b) VALUES {}", row_marks(1, 2, 2));
    assert_eq!(
        positional(true, insert.clone()),
        "INSERT INTO t (a, b) VALUES (?, ?), (?, ?)"
    );
    // PostgreSQL keeps `$N`.
    assert_eq!(positional(false, insert.clone()), insert);
    // Ten and more: the whole number is one placeholder.
    let many = format!("VALUES {}", row_marks(1, 1, 12));
    assert_eq!(positional(true, many).matches('?').count(), 12);
    // Out of order or repeated: unchanged, still correct on SQLite.
    for sql in [
        "SELECT 1 WHERE a = $2 AND b = $1",
        "SELECT 1 WHERE a = $1 OR b = $1",
        "UPDATE t SET a = $1 WHERE b IN ($3, $4) AND c = $2",
    ] {
        assert_eq!(positional(true, sql.to_string()), sql);
    }
    assert_eq!(
        positional(
            true,
            "SELECT a FROM t WHERE b = $1 AND c IN ($2, $3)".into()
        ),
        "SELECT a FROM t WHERE b = ? AND c IN (?, ?)"
    );
}
