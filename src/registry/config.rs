//! `[registry]` of config.toml (issue #17): which one source the ticket registry reads —
//! a CSV export (`csv`), a PostgreSQL query (`postgres` + `query`) or an HTTP JSON lookup
//! (`http`) — and its settings, checked with every problem at its file, line and column;
//! `[registry.acknowledgements]` (checked in `acknowledgements`) alone or beside one.
//! Secrets (a database password, a bearer token) are read here like the desks' passwords,
//! never written inline.
//!
//! Not here: reading the sources (`csv`, `postgres`, `http`), the facts from an answer.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::problem::{Problem, Source};
use crate::secret::{Environment, Secret, SecretFrom, read_secret};

use super::acknowledgements::AckConfig;
use super::csv::Columns;
use super::http::HttpConfig;
use super::postgres::PgConfig;

/// `[registry]` of config.toml: where the helpdesk's tickets are read from, exactly one
/// source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryConfig {
    /// A CSV export (`csv = "/path/tickets.csv"` and the names of its columns).
    Csv {
        /// The export, absolute (relative paths are taken from config.toml's directory).
        path: PathBuf,
        columns: Columns,
    },
    /// One SQL query per batch on a PostgreSQL database.
    Postgres(PgConfig),
    /// One HTTP GET per ticket (answers cached).
    Http(HttpConfig),
    /// Tickets learned from the helpdesk's acknowledgement mails, alone or filling in what
    /// the source `beside` does not know or cannot answer.
    Acknowledgements {
        beside: Option<Box<RegistryConfig>>,
        config: AckConfig,
    },
}

impl RegistryConfig {
    /// The source's kind as config.toml names it: `csv`, `postgres`, `http` or
    /// `acknowledgements`.
    pub fn kind(&self) -> &'static str {
        match self {
            RegistryConfig::Csv { .. } => "csv",
            RegistryConfig::Postgres(_) => "postgres",
            RegistryConfig::Http(_) => "http",
            RegistryConfig::Acknowledgements { .. } => "acknowledgements",
        }
    }
}

/// Seconds a network source may take for a batch's lookups (`timeout_seconds`).
const DEFAULT_TIMEOUT_SECS: u64 = 5;
/// Seconds an HTTP answer is reused (`cache_seconds`).
const DEFAULT_CACHE_SECS: u64 = 300;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    csv: Option<PathBuf>,
    ticket_column: Option<String>,
    created_column: Option<String>,
    created_format: Option<String>,
    requester_column: Option<String>,
    state_column: Option<String>,

    postgres: Option<String>,
    query: Option<String>,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
    password_credential: Option<String>,

    http: Option<String>,
    created_pointer: Option<String>,
    requester_pointer: Option<String>,
    state_pointer: Option<String>,
    ca_file: Option<PathBuf>,
    cache_seconds: Option<u64>,
    token_file: Option<PathBuf>,
    token_env: Option<String>,
    token_credential: Option<String>,

    timeout_seconds: Option<u64>,

    acknowledgements: Option<toml::Value>,
}

impl RawRegistry {
    /// The keys set, by source they belong to (`None`: shared by the network sources).
    fn keys(&self) -> Vec<(&'static str, Option<&'static str>)> {
        let set = |k: &'static str, on: bool, src: Option<&'static str>| on.then_some((k, src));
        [
            set("ticket_column", self.ticket_column.is_some(), Some("csv")),
            set("created_column", self.created_column.is_some(), Some("csv")),
            set("created_format", self.created_format.is_some(), Some("csv")),
            set(
                "requester_column",
                self.requester_column.is_some(),
                Some("csv"),
            ),
            set("state_column", self.state_column.is_some(), Some("csv")),
            set("query", self.query.is_some(), Some("postgres")),
            set(
                "password_file",
                self.password_file.is_some(),
                Some("postgres"),
            ),
            set(
                "password_env",
                self.password_env.is_some(),
                Some("postgres"),
            ),
            set(
                "password_credential",
                self.password_credential.is_some(),
                Some("postgres"),
            ),
            set(
                "created_pointer",
                self.created_pointer.is_some(),
                Some("http"),
            ),
            set(
                "requester_pointer",
                self.requester_pointer.is_some(),
                Some("http"),
            ),
            set("state_pointer", self.state_pointer.is_some(), Some("http")),
            set("ca_file", self.ca_file.is_some(), Some("http")),
            set("cache_seconds", self.cache_seconds.is_some(), Some("http")),
            set("token_file", self.token_file.is_some(), Some("http")),
            set("token_env", self.token_env.is_some(), Some("http")),
            set(
                "token_credential",
                self.token_credential.is_some(),
                Some("http"),
            ),
            set("timeout_seconds", self.timeout_seconds.is_some(), None),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// What parsing needs besides the section: where it is, and how secrets are read.
struct Ctx<'a, 'b> {
    src: &'a Source<'b>,
    start: usize,
    base: &'a Path,
    env: &'a dyn Environment,
    offline: bool,
}

impl Ctx<'_, '_> {
    fn at(&self, key: &str, message: impl Into<String>) -> Problem {
        self.src
            .problem_at_key(self.start, key, format!("[registry]: {}", message.into()))
    }

    /// The secret named by at most one of three keys (`None`: none set; always an empty
    /// secret offline, where nothing connects).
    fn secret(
        &self,
        what: &str,
        [file, var, credential]: [(&'static str, Option<&str>); 3],
    ) -> Result<Option<Secret>, Problem> {
        let set: Vec<&str> = [file, var, credential]
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| *k)
            .collect();
        let from = match (file.1, var.1, credential.1) {
            _ if set.len() > 1 => {
                return Err(self.at(
                    set[1],
                    format!(
                        "set at most one of {}, {} or {}",
                        file.0, var.0, credential.0
                    ),
                ));
            }
            (Some(f), _, _) => SecretFrom::File(file.0, Path::new(f)),
            (_, Some(v), _) => SecretFrom::Env(var.0, v),
            (_, _, Some(c)) => SecretFrom::Credential(credential.0, c),
            _ => return Ok(None),
        };
        if self.offline {
            return Ok(Some(Secret::new("")));
        }
        read_secret(from, what, self.base, self.env)
            .map(Some)
            .map_err(|(key, msg)| self.at(key, msg))
    }
}

impl RegistryConfig {
    /// Checks `[registry]` of config.toml (`base`: the file's directory; `offline`: secrets
    /// are not read and CA files not looked at, as for the desks).
    ///
    /// # Errors
    /// A [`Problem`] at the section or the key: unknown keys, none or two of `csv`,
    /// `postgres` and `http`, a key of another source, a missing or empty one, a password
    /// written in the URL, a secret that cannot be read.
    pub fn parse(
        src: &Source<'_>,
        v: Spanned<toml::Value>,
        base: &Path,
        env: &dyn Environment,
        offline: bool,
    ) -> Result<RegistryConfig, Problem> {
        let start = v.span().start;
        let mut r: RawRegistry = src.section(v, "[registry]")?;
        let acks = r
            .acknowledgements
            .take()
            .map(|a| AckConfig::parse(src, start, a, base, env, offline))
            .transpose()?;
        let cx = Ctx {
            src,
            start,
            base,
            env,
            offline,
        };
        let sources: Vec<&'static str> = [
            ("csv", r.csv.is_some()),
            ("postgres", r.postgres.is_some()),
            ("http", r.http.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, on)| on.then_some(k))
        .collect();
        let kind = match (sources.as_slice(), acks) {
            ([one], None) => *one,
            ([], Some(config)) => {
                return Ok(RegistryConfig::Acknowledgements {
                    beside: None,
                    config,
                });
            }
            ([one], Some(config)) => {
                let beside = Some(Box::new(RegistryConfig::parse_one(&cx, r, one)?));
                return Ok(RegistryConfig::Acknowledgements { beside, config });
            }
            ([], None) => {
                return Err(src.problem_at(
                    start,
                    "[registry]: set exactly one source: csv = PATH, postgres = URL (with query) or http = URL-TEMPLATE",
                ));
            }
            ([_, second, ..], _) => {
                return Err(cx.at(
                    second,
                    format!(
                        "set exactly one source, not {}",
                        sources
                            .iter()
                            .map(|s| format!("`{s}`"))
                            .collect::<Vec<_>>()
                            .join(" and ")
                    ),
                ));
            }
        };
        RegistryConfig::parse_one(&cx, r, kind)
    }

    /// The one CSV, PostgreSQL or HTTP source `kind` of `r`.
    fn parse_one(cx: &Ctx<'_, '_>, r: RawRegistry, kind: &str) -> Result<RegistryConfig, Problem> {
        if let Some((key, Some(owner))) = r
            .keys()
            .into_iter()
            .find(|(_, o)| o.is_some_and(|o| o != kind))
        {
            return Err(cx.at(
                key,
                format!("`{key}` is a setting of `{owner}`, not of `{kind}`"),
            ));
        }
        match kind {
            "csv" => csv(cx, r),
            "postgres" => postgres(cx, r),
            _ => http(cx, r),
        }
    }
}

fn timeout(cx: &Ctx<'_, '_>, r: &RawRegistry) -> Result<Duration, Problem> {
    match r.timeout_seconds {
        Some(0) => Err(cx.at("timeout_seconds", "timeout_seconds must be at least 1")),
        s => Ok(Duration::from_secs(s.unwrap_or(DEFAULT_TIMEOUT_SECS))),
    }
}

fn csv(cx: &Ctx<'_, '_>, r: RawRegistry) -> Result<RegistryConfig, Problem> {
    if r.timeout_seconds.is_some() {
        return Err(cx.at(
            "timeout_seconds",
            "`timeout_seconds` is a setting of `postgres` and `http`, not of `csv`",
        ));
    }
    for (key, value) in [
        ("ticket_column", r.ticket_column.as_ref()),
        ("created_column", r.created_column.as_ref()),
        ("requester_column", r.requester_column.as_ref()),
        ("state_column", r.state_column.as_ref()),
    ] {
        if value.is_some_and(|v| v.trim().is_empty()) {
            return Err(cx.at(
                key,
                format!("{key} is empty: name the column of the export's header line"),
            ));
        }
    }
    let (Some(ticket), Some(created)) = (r.ticket_column, r.created_column) else {
        return Err(cx.at(
            "csv",
            "a CSV export needs ticket_column and created_column (names of its header line)",
        ));
    };
    Ok(RegistryConfig::Csv {
        path: cx.base.join(r.csv.unwrap_or_default()),
        columns: Columns {
            ticket,
            created,
            requester: r.requester_column,
            state: r.state_column,
            created_format: r.created_format,
        },
    })
}

fn postgres(cx: &Ctx<'_, '_>, r: RawRegistry) -> Result<RegistryConfig, Problem> {
    let timeout = timeout(cx, &r)?;
    let url = r.postgres.clone().unwrap_or_default();
    let shown = crate::store::redact_url(&url);
    let parsed = url::Url::parse(&url)
        .ok()
        .filter(|u| matches!(u.scheme(), "postgres" | "postgresql"));
    let Some(parsed) = parsed else {
        return Err(cx.at(
            "postgres",
            format!("`{shown}` is not a URL like postgres://user@host/db?sslmode=verify-full"),
        ));
    };
    if parsed.password().is_some() {
        return Err(cx.at(
            "postgres",
            "the URL holds a password: set password_file, password_env or password_credential instead (passwords are never written inline)",
        ));
    }
    if let Err(e) = url.parse::<sqlx::postgres::PgConnectOptions>() {
        return Err(cx.at("postgres", format!("`{shown}`: {e}")));
    }
    let Some(query) = r.query.clone().filter(|q| !q.trim().is_empty()) else {
        return Err(cx.at(
            "postgres",
            "a postgres source needs `query`, e.g. SELECT number AS ticket, created_at AS created, requester, state FROM tickets WHERE number = ANY($1)",
        ));
    };
    if !query.contains("$1") {
        return Err(cx.at(
            "query",
            "the query must use $1, the batch's ticket numbers as a text array (`WHERE number = ANY($1)`)",
        ));
    }
    let password = cx.secret(
        "password",
        [
            (
                "password_file",
                r.password_file.as_deref().and_then(Path::to_str),
            ),
            ("password_env", r.password_env.as_deref()),
            ("password_credential", r.password_credential.as_deref()),
        ],
    )?;
    Ok(RegistryConfig::Postgres(PgConfig {
        url,
        password,
        query,
        timeout,
    }))
}

fn http(cx: &Ctx<'_, '_>, r: RawRegistry) -> Result<RegistryConfig, Problem> {
    let timeout = timeout(cx, &r)?;
    let template = r.http.clone().unwrap_or_default();
    if !template.contains("{ticket}") {
        return Err(cx.at(
            "http",
            format!("`{template}` has no {{ticket}}: write where the ticket number goes, e.g. https://crm.example/api/tickets/{{ticket}}"),
        ));
    }
    let sample = template.replace("{ticket}", "2024-1234567");
    let url = match url::Url::parse(&sample) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => u,
        _ => {
            return Err(cx.at(
                "http",
                format!("`{template}` is not an http:// or https:// URL template"),
            ));
        }
    };
    let host = url.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if url.scheme() == "http" && !is_loopback(host) {
        return Err(cx.at(
            "http",
            format!(
                "plain http:// is only allowed for a loopback host, not `{host}`; use https://"
            ),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(cx.at(
            "http",
            "the URL holds credentials: set token_file, token_env or token_credential instead",
        ));
    }
    let Some(created_pointer) = r.created_pointer.clone() else {
        return Err(cx.at(
            "http",
            "an http source needs created_pointer, the JSON pointer of the creation time (e.g. \"/created_at\")",
        ));
    };
    for (key, p) in [
        ("created_pointer", Some(&created_pointer)),
        ("requester_pointer", r.requester_pointer.as_ref()),
        ("state_pointer", r.state_pointer.as_ref()),
    ] {
        if let Some(p) = p
            && !p.is_empty()
            && !p.starts_with('/')
        {
            return Err(cx.at(
                key,
                format!("`{p}` is not a JSON pointer (RFC 6901): it starts with '/', e.g. \"/ticket/created_at\""),
            ));
        }
    }
    let ca_file = r.ca_file.as_ref().map(|f| cx.base.join(f));
    if let Some(f) = &ca_file
        && !cx.offline
    {
        if !f.is_file() {
            return Err(cx.at("ca_file", format!("CA file {} does not exist", f.display())));
        }
        // As the lookups will read it: a file without a PEM certificate is refused here.
        if let Err(e) = crate::tls::client_config(Some(f)) {
            return Err(cx.at("ca_file", e.to_string()));
        }
    }
    let token = cx.secret(
        "token",
        [
            ("token_file", r.token_file.as_deref().and_then(Path::to_str)),
            ("token_env", r.token_env.as_deref()),
            ("token_credential", r.token_credential.as_deref()),
        ],
    )?;
    Ok(RegistryConfig::Http(HttpConfig {
        template,
        timeout,
        cache: Duration::from_secs(r.cache_seconds.unwrap_or(DEFAULT_CACHE_SECS)),
        created_pointer,
        requester_pointer: r.requester_pointer,
        state_pointer: r.state_pointer,
        ca_file,
        token,
    }))
}

/// True for 127.0.0.0/8, ::1 and `localhost` (as `[imap] security = "plain"` allows).
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Tests: `text` as `/etc/ticketgate/config.toml` (with one `[other]` section first), its
/// `[registry]` parsed with `env`; a problem as its text.
#[cfg(test)]
pub(super) fn parse_config(text: &str, env: &dyn Environment) -> Result<RegistryConfig, String> {
    let text = format!("[other]\nx = 1\n\n{text}");
    let src = Source {
        path: Path::new("/etc/ticketgate/config.toml"),
        text: &text,
    };
    #[derive(Deserialize)]
    struct File {
        registry: Spanned<toml::Value>,
    }
    let file: File = src.parse().map_err(|p| p.to_string())?;
    RegistryConfig::parse(
        &src,
        file.registry,
        Path::new("/etc/ticketgate"),
        env,
        false,
    )
    .map_err(|p| p.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests;
