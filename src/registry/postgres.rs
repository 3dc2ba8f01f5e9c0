//! The ticket registry from a PostgreSQL database (issue #17): one configured query per
//! batch, `$1` bound to the batch's ticket numbers as a `text[]`. The query returns one row
//! per ticket it has, with columns named `ticket` (text), `created` (timestamptz, timestamp
//! read in the rules' time zone, or epoch seconds as an integer or double precision),
//! and optionally `requester` and `state` (text); tickets without a row are unknown.
//! A connection failure, a query error or no answer within the timeout makes every lookup
//! of the batch `Unavailable` (the caller logs it once per reason): never a stuck desk.
//!
//! Not here: the config's parsing (`config`), the facts from an answer.

use std::time::Duration;

use jiff::tz::TimeZone;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow, PgValueFormat};
use sqlx::{Row, TypeInfo, ValueRef};
use tokio::sync::OnceCell;

use super::{Answers, Lookup, TicketRecord, ticket_key};
use crate::secret::Secret;

/// `[registry] postgres = URL`, `query`, the password's source, `timeout_seconds`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgConfig {
    /// `postgres://user@host/db?sslmode=verify-full&sslrootcert=...`, without a password.
    pub url: String,
    /// From `password_file`, `password_env` or `password_credential`; `None`: none needed.
    pub password: Option<Secret>,
    /// Selects `ticket`, `created`[, `requester`, `state`] for `$1`, a `text[]`.
    pub query: String,
    /// The longest a batch's lookup may take, connecting included.
    pub timeout: Duration,
}

/// A PostgreSQL query as a registry: a small pool opened at the first lookup.
#[derive(Debug)]
pub struct PgRegistry {
    config: PgConfig,
    zone: TimeZone,
    pool: OnceCell<PgPool>,
}

/// Why a batch's query gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("postgres {url}: {source}")]
    Url { url: String, source: sqlx::Error },
    #[error("postgres {url}: {source}")]
    Query { url: String, source: sqlx::Error },
    #[error("postgres {url}: no answer within {after:?}")]
    Timeout { url: String, after: Duration },
    #[error("postgres {url}: the query's row {row}: {why}")]
    Row {
        url: String,
        row: usize,
        why: String,
    },
}

/// Unix seconds of 2000-01-01T00:00:00Z, PostgreSQL's epoch for timestamps.
const PG_EPOCH: i64 = 946_684_800;

impl PgRegistry {
    /// A registry on `config`'s database; `zone` reads a `timestamp` without time zone.
    pub fn new(config: PgConfig, zone: TimeZone) -> PgRegistry {
        PgRegistry {
            config,
            zone,
            pool: OnceCell::new(),
        }
    }

    /// The database URL as logs show it (no password).
    pub fn shown(&self) -> String {
        crate::store::redact_url(&self.config.url)
    }

    /// The answers for `numbers`, from one query: `Unavailable(reason)` for every number
    /// when it failed.
    pub async fn lookup(&self, numbers: &[&str]) -> Answers {
        let keys: Vec<String> = numbers.iter().map(|n| ticket_key(n)).collect();
        match self.query(&keys).await {
            Ok(mut found) => keys
                .into_iter()
                .map(|k| {
                    let answer = found.remove(&k).map_or(Lookup::Unknown, Lookup::Known);
                    (k, answer)
                })
                .collect(),
            Err(e) => {
                let reason = e.to_string();
                keys.into_iter()
                    .map(|k| (k, Lookup::Unavailable(reason.clone())))
                    .collect()
            }
        }
    }

    /// Runs the query for `keys` within the timeout: the records found, by key.
    ///
    /// # Errors
    /// [`PgError`]: the URL, the connection or the query failed, no answer in time, or a
    /// row lacks `ticket` or a readable `created`.
    pub async fn query(&self, keys: &[String]) -> Result<Found, PgError> {
        let url = self.shown();
        let timeout = self.config.timeout;
        let work = async {
            let pool = self
                .pool
                .get_or_try_init(|| async {
                    let mut options: PgConnectOptions =
                        self.config.url.parse().map_err(|source| PgError::Url {
                            url: url.clone(),
                            source,
                        })?;
                    options = options.application_name("ticketgate registry");
                    if let Some(p) = &self.config.password {
                        options = options.password(p.expose());
                    }
                    Ok::<_, PgError>(
                        PgPoolOptions::new()
                            .max_connections(2)
                            .acquire_timeout(timeout)
                            .idle_timeout(Some(Duration::from_secs(300)))
                            .connect_lazy_with(options),
                    )
                })
                .await?;
            sqlx::query(&self.config.query)
                .bind(keys)
                .fetch_all(pool)
                .await
                .map_err(|source| PgError::Query {
                    url: url.clone(),
                    source,
                })
        };
        let rows = tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| PgError::Timeout {
                url: url.clone(),
                after: timeout,
            })??;
        let mut found = Found::new();
        for (i, row) in rows.iter().enumerate() {
            let (ticket, record) = self.record(row).map_err(|why| PgError::Row {
                url: url.clone(),
                row: i + 1,
                why,
            })?;
            found.insert(ticket_key(&ticket), record);
        }
        Ok(found)
    }

    /// One row as (ticket, record).
    fn record(&self, row: &PgRow) -> Result<(String, TicketRecord), String> {
        let text = |name: &str, required: bool| -> Result<Option<String>, String> {
            match row.try_get::<Option<String>, _>(name) {
                Ok(v) => Ok(v),
                Err(sqlx::Error::ColumnNotFound(_)) if !required => Ok(None),
                Err(e) => Err(format!("column `{name}`: {e}")),
            }
        };
        let ticket = text("ticket", true)?.ok_or("column `ticket` is NULL")?;
        let created = created(row, &self.zone)?;
        Ok((
            ticket,
            TicketRecord {
                created,
                requester: text("requester", false)?,
                state: text("state", false)?,
            },
        ))
    }
}

/// Records found by a query, by [`ticket_key`].
pub type Found = std::collections::HashMap<String, TicketRecord>;

/// Unix seconds of the row's `created`: timestamptz, timestamp (in `zone`), or epoch seconds.
fn created(row: &PgRow, zone: &TimeZone) -> Result<i64, String> {
    let value = row
        .try_get_raw("created")
        .map_err(|e| format!("column `created`: {e}"))?;
    if value.is_null() {
        return Err("column `created` is NULL".into());
    }
    let kind = value.type_info().name().to_string();
    let micros = |bytes: &[u8]| -> Result<i64, String> {
        let b: [u8; 8] = bytes
            .try_into()
            .map_err(|_| format!("`created` ({kind}) is not 8 bytes"))?;
        Ok(i64::from_be_bytes(b))
    };
    match kind.as_str() {
        "TIMESTAMPTZ" | "TIMESTAMP" if value.format() == PgValueFormat::Binary => {
            let bytes = value.as_bytes().map_err(|e| e.to_string())?;
            let since = micros(bytes)?.div_euclid(1_000_000) + PG_EPOCH;
            if kind == "TIMESTAMPTZ" {
                return Ok(since);
            }
            // A civil time: read in the rules' time zone, as the CSV export's.
            let civil = jiff::Timestamp::from_second(since)
                .map_err(|e| e.to_string())?
                .to_zoned(TimeZone::UTC)
                .datetime();
            civil
                .to_zoned(zone.clone())
                .map(|z| z.timestamp().as_second())
                .map_err(|e| e.to_string())
        }
        "INT8" => row.try_get::<i64, _>("created").map_err(|e| e.to_string()),
        "INT4" => row
            .try_get::<i32, _>("created")
            .map(i64::from)
            .map_err(|e| e.to_string()),
        "FLOAT8" => row
            .try_get::<f64, _>("created")
            .map(|f| f.floor() as i64)
            .map_err(|e| e.to_string()),
        "TEXT" | "VARCHAR" => {
            let t = row
                .try_get::<String, _>("created")
                .map_err(|e| e.to_string())?;
            super::csv::parse_time(&t, None, zone)
        }
        other => Err(format!(
            "column `created` is {other}: return timestamptz, or epoch seconds as bigint"
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    fn ist() -> TimeZone {
        TimeZone::get("Asia/Kolkata").unwrap()
    }

    /// The test server's URL without its password, and the password (scripts/postgres-test.sh).
    fn server() -> Option<(String, Secret)> {
        let url = std::env::var("TICKETGATE_TEST_POSTGRES_URL").ok()?;
        let mut u = url::Url::parse(&url).unwrap();
        let password = u.password().unwrap_or_default().to_string();
        u.set_password(None).unwrap();
        Some((u.to_string(), Secret::new(password)))
    }

    fn registry(url: String, password: Option<Secret>, query: &str) -> PgRegistry {
        PgRegistry::new(
            PgConfig {
                url,
                password,
                query: query.into(),
                timeout: Duration::from_secs(5),
            },
            ist(),
        )
    }

    #[tokio::test]
    async fn a_batch_is_one_query_on_the_crm_table() {
        let Some((url, password)) = server() else {
            crate::test_skip::skip(
                "TICKETGATE_TEST_POSTGRES_URL is not set: run under scripts/postgres-test.sh",
            );
            return;
        };
        crate::test_skip::ran_on(
            "postgresql",
            "registry_a_batch_is_one_query_on_the_crm_table",
        );
        let table = format!("crm_tickets_{}_{}", std::process::id(), fastrand::u32(..));
        let setup = registry(
            url.clone(),
            Some(password.clone()),
            "SELECT $1::text[] AS x WHERE false",
        );
        let pool = {
            setup.query(&[]).await.unwrap();
            setup.pool.get().unwrap().clone()
        };
        sqlx::query(&format!(
            "CREATE TABLE {table} (number text PRIMARY KEY, created_at timestamptz NOT NULL, \
             opened timestamp, epoch bigint, requester text, state text)"
        ))
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(&format!(
            "INSERT INTO {table} VALUES \
             ('2024-1234567', '2024-11-28T10:15:00+05:30', '2024-11-28 10:15', 1732769100, 'meena@rites.co.in', 'Open'), \
             ('2024-7777777', '2024-11-29T00:00:00Z', NULL, NULL, NULL, NULL)"
        ))
        .execute(&pool)
        .await
        .unwrap();
        for created in ["created_at", "opened", "epoch"] {
            let r = registry(
                url.clone(),
                Some(password.clone()),
                &format!(
                    "SELECT number AS ticket, {created} AS created, requester, state FROM {table} \
                     WHERE number = ANY($1) AND {created} IS NOT NULL"
                ),
            );
            let a = r.lookup(&["2024-1234567", " 2024-0000000"]).await;
            assert_eq!(
                a["2024-1234567"],
                Lookup::Known(TicketRecord {
                    created: 1_732_769_100,
                    requester: Some("meena@rites.co.in".into()),
                    state: Some("Open".into()),
                }),
                "{created}"
            );
            assert_eq!(a["2024-0000000"], Lookup::Unknown);
        }
        // Over TLS, the server's certificate verified against its CA (sslrootcert).
        if let Ok(ca) = std::env::var("TICKETGATE_TEST_POSTGRES_CA") {
            let r = registry(
                format!("{url}?sslmode=verify-full&sslrootcert={ca}"),
                Some(password.clone()),
                &format!(
                    "SELECT number AS ticket, created_at AS created FROM {table} WHERE number = ANY($1)"
                ),
            );
            let a = r.lookup(&["2024-1234567"]).await;
            assert!(matches!(a["2024-1234567"], Lookup::Known(_)), "{a:?}");
        }
        // Requester and state are optional columns.
        let r = registry(
            url.clone(),
            Some(password.clone()),
            &format!(
                "SELECT number AS ticket, created_at AS created FROM {table} WHERE number = ANY($1)"
            ),
        );
        let a = r.lookup(&["2024-7777777"]).await;
        assert_eq!(
            a["2024-7777777"],
            Lookup::Known(TicketRecord {
                created: 1_732_838_400,
                requester: None,
                state: None
            })
        );
        // A query without `ticket` is an error of the source, for every number.
        let r = registry(
            url.clone(),
            Some(password.clone()),
            &format!("SELECT created_at AS created FROM {table} WHERE number = ANY($1)"),
        );
        let Lookup::Unavailable(why) = &r.lookup(&["2024-1234567"]).await["2024-1234567"] else {
            panic!("unavailable")
        };
        assert!(why.contains("column `ticket`"), "{why}");
        // A wrong password: unavailable, and the reason shows neither password.
        let r = registry(url.clone(), Some(Secret::new("wrong-pw")), "SELECT $1");
        let Lookup::Unavailable(why) = &r.lookup(&["2024-1234567"]).await["2024-1234567"] else {
            panic!("unavailable")
        };
        assert!(
            !why.contains("wrong-pw") && !why.contains(password.expose()),
            "{why}"
        );
        sqlx::query(&format!("DROP TABLE {table}"))
            .execute(&pool)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_server_that_does_not_answer_is_unavailable_within_the_timeout() {
        // A listener that accepts and never speaks: the startup handshake waits forever.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                open.push(s);
            }
        });
        let mut r = registry(
            format!("postgres://crm@127.0.0.1:{port}/crm?sslmode=disable"),
            None,
            "SELECT $1",
        );
        r.config.timeout = Duration::from_millis(300);
        let started = std::time::Instant::now();
        let a = r.lookup(&["2024-1234567", "2024-7654321"]).await;
        assert!(started.elapsed() < Duration::from_secs(3));
        for k in ["2024-1234567", "2024-7654321"] {
            assert!(matches!(&a[k], Lookup::Unavailable(_)), "{a:?}");
        }
        held.abort();
    }
}
