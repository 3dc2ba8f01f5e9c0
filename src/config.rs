//! config.toml → validated [`Config`]: servers, desks and their secrets, helpdesk, state
//! database, logging, where the rules are. Every problem is reported at once with file and
//! line. Rules are compiled elsewhere (`rules`); this module only says where they are.
//!
//! This file holds the validated types, the top-level table and the section-by-section
//! checks (`parse_for`); the sections' serde shapes are in `config/raw.rs`, the `[imap]` /
//! `[smtp]` server checks in `config/servers.rs`, a desk's password source in
//! `config/desks.rs`, the `[[digest]]` groups in `config/digest.rs`, reading secrets in
//! `crate::secret`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::problem::{Problem, Source, read_file};
pub use crate::secret::{Environment, ProcessEnv, Secret};
use crate::tls::Security;

/// A mail server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// Extra CA certificate (PEM) trusted besides the system roots.
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
}

/// IMAP server plus how desks are watched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imap {
    pub server: Server,
    /// IDLE is re-issued this often (RFC 2177: servers may drop it after 30 min).
    pub idle_refresh: Duration,
    /// Without IDLE, the mailbox is polled this often.
    pub poll_interval: Duration,
    /// Mails fetched per round trip.
    pub batch_size: usize,
    /// During a catch-up, mails filed (keywords, moves) together, at least.
    pub file_group: usize,
}

/// The SMTP submission server plus how the outbox uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Smtp {
    pub server: Server,
    /// Mails sent at once, each on its own connection (`[smtp] connections`, 1-16, default
    /// [`DEFAULT_SMTP_CONNECTIONS`]). Also the most mails a kill -9 can send twice: each
    /// connection has at most one mail between the server's acceptance and its record.
    pub connections: usize,
}

/// `[smtp] connections` when config.toml leaves it out.
pub const DEFAULT_SMTP_CONNECTIONS: usize = 4;

/// The values `[smtp] connections` may take (`check` refuses others at the value).
pub const SMTP_CONNECTIONS: std::ops::RangeInclusive<usize> = 1..=16;

/// One escalation desk: its mailbox and the account that reads and sends for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desk {
    pub name: String,
    pub address: String,
    pub display_name: Option<String>,
    pub login: String,
    pub password: Secret,
    /// The file the password was read from (`password_file`), for `check`'s permission
    /// warning; `None` for an environment variable or a systemd credential.
    pub password_file: Option<PathBuf>,
    pub mailbox: String,
}

impl Desk {
    /// A warning when the desk's password file can be read by users other than its owner
    /// (mode bits 0o077), with the fix; `None` otherwise.
    pub fn password_file_warning(&self) -> Option<String> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.password_file.as_ref()?;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then(|| {
            format!(
                "{}: password_file of [desk.{}] is readable by others (mode {mode:04o}); `chmod 600` it, or use a systemd credential",
                path.display(),
                self.name
            )
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Journald-friendly text under systemd (no timestamps, no colours), else plain text.
    Auto,
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct Logging {
    pub level: String,
    pub format: LogFormat,
}

/// The validated deployment.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub imap: Imap,
    pub smtp: Smtp,
    pub helpdesk: String,
    pub helpdesk_name: Option<String>,
    /// The helpdesk's phone numbers and web address as templates show them (`[helpdesk]
    /// phone`, `web`).
    pub helpdesk_phone: Option<String>,
    pub helpdesk_web: Option<String>,
    /// The line of the `[helpdesk]` header in the file (1-based; 0 when there is none), for
    /// problems about its values found after loading.
    pub helpdesk_line: usize,
    pub database: String,
    pub logging: Logging,
    pub rules_files: Vec<PathBuf>,
    pub desks: Vec<Desk>,
    /// Address of the Prometheus metrics endpoint; off when `None`.
    pub metrics: Option<SocketAddr>,
    /// The helpdesk's ticket registry (`[registry]`, issue #17); off when `None`.
    pub registry: Option<crate::registry::RegistryConfig>,
    /// The supervisors' daily digests (`[[digest]]`, issue #17); none when not set.
    pub digests: Vec<digest::DigestGroup>,
}

impl Config {
    pub fn desk(&self, name: &str) -> Option<&Desk> {
        self.desks.iter().find(|d| d.name == name)
    }

    /// What the rules may refer to.
    pub fn deployment(&self) -> crate::rules::Deployment {
        crate::rules::Deployment {
            desks: self.desks.iter().map(|d| d.name.clone()).collect(),
        }
    }
}

/// Problems found in config.toml; `Display` lists them one per line.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError(pub Vec<Problem>, pub Partial);

/// What could still be learned from a config with problems, so that `check` can go on and
/// report the rules' problems too.
#[derive(Debug, Clone, Default)]
pub struct Partial {
    pub rules_files: Option<Vec<PathBuf>>,
    pub desks: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    imap: Option<Spanned<toml::Value>>,
    smtp: Option<Spanned<toml::Value>>,
    helpdesk: Option<Spanned<toml::Value>>,
    state: Option<Spanned<toml::Value>>,
    logging: Option<Spanned<toml::Value>>,
    rules: Option<Spanned<toml::Value>>,
    metrics: Option<Spanned<toml::Value>>,
    registry: Option<Spanned<toml::Value>>,
    #[serde(default)]
    digest: Vec<Spanned<toml::Value>>,
    #[serde(default)]
    desk: BTreeMap<String, Spanned<toml::Value>>,
}
// The sections as written, server and desk-secret checks, and the tests, each in its own
// file under src/config/.
mod desks;
pub mod digest;
mod raw;
mod servers;
#[cfg(test)]
mod tests;

use desks::secret;
use raw::{RawDesk, RawHelpdesk, RawLogging, RawMetrics, RawRules, RawState, default_level};
pub use servers::is_loopback;
use servers::server;

/// What the config is loaded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `run` and `check`: the desks' passwords are read and CA files must exist.
    Connect,
    /// `classify` and `report`, which never connect: passwords are not read (each desk must
    /// still name exactly one source) and CA files are not looked at, so a supervisor
    /// without access to the credentials can use them.
    Offline,
}

/// Reads and validates config.toml. `TICKETGATE_DATABASE` overrides `[state] database`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_for(path, Purpose::Connect)
}

/// [`load`] for a purpose.
pub fn load_for(path: &Path, purpose: Purpose) -> Result<Config, ConfigError> {
    let text = read_file(path).map_err(|p| ConfigError(vec![p], Partial::default()))?;
    parse_for(path, &text, &ProcessEnv, purpose)
}

/// Validates config text; relative paths are relative to the file's directory.
pub fn parse(path: &Path, text: &str, env: &dyn Environment) -> Result<Config, ConfigError> {
    parse_for(path, text, env, Purpose::Connect)
}

/// [`parse`] for a purpose.
pub fn parse_for(
    path: &Path,
    text: &str,
    env: &dyn Environment,
    purpose: Purpose,
) -> Result<Config, ConfigError> {
    let offline = purpose == Purpose::Offline;
    let src = Source { path, text };
    let raw: RawFile = src.parse().map_err(|p| {
        let p = crate::registry::acknowledgements::explain(p, text);
        ConfigError(vec![p], Partial::default())
    })?;
    // The production template's `CHANGE-ME` values, named one by one before anything else.
    let left = crate::template::placeholders(&src);
    if !left.is_empty() {
        return Err(ConfigError(left, Partial::default()));
    }
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut problems = Vec::new();
    let top = |name: &str, problems: &mut Vec<Problem>| {
        problems.push(src.problem_at(0, format!("missing section [{name}]")));
    };

    let imap =
        match raw.imap {
            None => {
                top("imap", &mut problems);
                None
            }
            Some(v) => server(&src, v, "[imap]", (993, 143), &base, offline, &mut problems).map(
                |(s, r)| Imap {
                    server: s,
                    idle_refresh: Duration::from_secs(
                        r.idle_refresh_minutes.unwrap_or(10).clamp(1, 28) * 60,
                    ),
                    poll_interval: Duration::from_secs(r.poll_seconds.unwrap_or(60).max(1)),
                    batch_size: r.batch_size.unwrap_or(200).clamp(1, 5000),
                    file_group: r.file_group.unwrap_or(2000).clamp(1, 100_000),
                },
            ),
        };
    let smtp =
        match raw.smtp {
            None => {
                top("smtp", &mut problems);
                None
            }
            Some(v) => server(&src, v, "[smtp]", (465, 587), &base, offline, &mut problems).map(
                |(s, r)| Smtp {
                    server: s,
                    connections: r.connections.unwrap_or(DEFAULT_SMTP_CONNECTIONS),
                },
            ),
        };
    let helpdesk = match raw.helpdesk {
        None => {
            top("helpdesk", &mut problems);
            None
        }
        Some(v) => {
            let start = v.span().start;
            match src.section::<RawHelpdesk>(v, "[helpdesk]") {
                Ok(h) if crate::rules::compile::looks_like_address(&h.address) => Some(h),
                Ok(h) => {
                    problems.push(src.problem_at_key(
                        start,
                        "address",
                        format!("`{}` is not a mail address", h.address),
                    ));
                    None
                }
                Err(p) => {
                    problems.push(p);
                    None
                }
            }
        }
    };
    let database = match raw.state {
        None => Some("sqlite:///var/lib/ticketgate/state.db".to_string()),
        Some(v) => {
            let start = v.span().start;
            src.section::<RawState>(v, "[state]")
                .map_err(|p| problems.push(p))
                .ok()
                .and_then(|s| {
                    if s.database.starts_with("sqlite:") || s.database.starts_with("postgres") {
                        Some(s.database)
                    } else {
                        problems.push(src.problem_at_key(
                            start,
                            "database",
                            "expected a sqlite:///path/state.db or postgres://user@host/db URL",
                        ));
                        None
                    }
                })
        }
    };
    let database = env.var("TICKETGATE_DATABASE").or(database);
    let logging = match raw.logging {
        None => Some(Logging {
            level: default_level(),
            format: LogFormat::Auto,
        }),
        Some(v) => {
            let start = v.span().start;
            src.section::<RawLogging>(v, "[logging]")
                .map_err(|p| problems.push(p))
                .ok()
                .and_then(|l| {
                    // A level, or tracing directives such as "warn,ticketgate=debug": each
                    // one ends in a level (a bare word would be taken for a target name).
                    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
                    let valid = l.level.split(',').all(|d| {
                        let level = d.rsplit('=').next().unwrap_or_default().trim();
                        LEVELS.contains(&level.to_ascii_lowercase().as_str())
                    });
                    if valid {
                        Some(Logging {
                            level: l.level,
                            format: l.format,
                        })
                    } else {
                        problems.push(src.problem_at_key(
                            start,
                            "level",
                            format!(
                                "[logging]: `{}` is not a log level; use error, warn, info, debug or trace (or directives such as \"warn,ticketgate=debug\")",
                                l.level
                            ),
                        ));
                        None
                    }
                })
        }
    };
    let rules_files = match raw.rules {
        None => Some(vec![base.join("rules/gem.toml")]),
        Some(v) => {
            let start = v.span().start;
            src.section::<RawRules>(v, "[rules]")
                .map_err(|p| problems.push(p))
                .ok()
                .and_then(|r| {
                    if r.files.is_empty() {
                        problems.push(src.problem_at_key(
                            start,
                            "files",
                            "expected at least one rules file",
                        ));
                        return None;
                    }
                    Some(r.files.iter().map(|f| base.join(f)).collect())
                })
        }
    };
    let metrics = match raw.metrics {
        None => None,
        Some(v) => {
            let start = v.span().start;
            src.section::<RawMetrics>(v, "[metrics]")
                .map_err(|p| problems.push(p))
                .ok()
                .and_then(|m| match m.listen.parse::<SocketAddr>() {
                    Ok(a) => Some(a),
                    Err(_) => {
                        problems.push(src.problem_at_key(
                            start,
                            "listen",
                            format!("`{}` is not an address like 127.0.0.1:9187", m.listen),
                        ));
                        None
                    }
                })
        }
    };

    let registry = raw.registry.and_then(|v| {
        crate::registry::RegistryConfig::parse(&src, v, &base, env, offline)
            .map_err(|p| problems.push(p))
            .ok()
    });

    let mut desks = Vec::new();
    if raw.desk.is_empty() {
        problems.push(src.problem_at(
            0,
            "no [desk.NAME] section: at least one desk mailbox must be watched",
        ));
    }
    // Desks in file order: the order that breaks ties (e.g. which desk answers a broadcast).
    let mut raw_desks: Vec<_> = raw.desk.into_iter().collect();
    let declared: Vec<String> = raw_desks.iter().map(|(n, _)| n.clone()).collect();
    raw_desks.sort_by_key(|(_, v)| v.span().start);
    let in_order: Vec<String> = raw_desks.iter().map(|(n, _)| n.clone()).collect();
    let digests = digest::parse(&src, raw.digest, &in_order)
        .map_err(|mut p| problems.append(&mut p))
        .unwrap_or_default();
    for (name, v) in raw_desks {
        let start = v.span().start;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            problems.push(src.problem_at(
                start,
                format!("desk name `{name}` may only hold letters, digits, '-', '_' and '.'"),
            ));
        }
        let Ok(d) = src
            .section::<RawDesk>(v, &format!("[desk.{name}]"))
            .map_err(|p| problems.push(p))
        else {
            continue;
        };
        if !crate::rules::compile::looks_like_address(&d.address) {
            problems.push(src.problem_at_key(
                start,
                "address",
                format!("`{}` is not a mail address", d.address),
            ));
        }
        let password = match secret(&d, &base, env, offline) {
            Ok(s) => Some(s),
            Err((key, msg)) => {
                problems.push(src.problem_at_key(start, key, format!("[desk.{name}]: {msg}")));
                None
            }
        };
        if let Some(password) = password {
            desks.push(Desk {
                name,
                address: d.address.to_ascii_lowercase(),
                display_name: d.name,
                login: d.login,
                password,
                password_file: d.password_file.as_ref().map(|f| base.join(f)),
                mailbox: d.mailbox,
            });
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for d in &desks {
        if !seen.insert(d.address.clone()) {
            problems.push(src.problem_at(
                0,
                format!("desk address `{}` is used by two desks", d.address),
            ));
        }
    }

    match (imap, smtp, helpdesk, database, logging, rules_files) {
        (Some(imap), Some(smtp), Some(h), Some(database), Some(logging), Some(rules_files))
            if problems.is_empty() =>
        {
            Ok(Config {
                path: path.to_path_buf(),
                imap,
                smtp,
                helpdesk: h.address.to_ascii_lowercase(),
                helpdesk_name: h.name,
                helpdesk_phone: h.phone,
                helpdesk_web: h.web,
                helpdesk_line: text
                    .lines()
                    .position(|l| l.trim() == "[helpdesk]")
                    .map_or(0, |i| i + 1),
                database,
                logging,
                rules_files,
                desks,
                metrics,
                registry,
                digests,
            })
        }
        (_, _, _, _, _, rules_files) => Err(ConfigError(
            problems,
            Partial {
                rules_files,
                desks: declared,
            },
        )),
    }
}
