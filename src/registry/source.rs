//! [`Registry`]: the one ticket registry config.toml's `[registry]` names, whichever its
//! source, as the daemon and `check` use it: a batch's lookup (the CSV export read again
//! off the async runtime when it changed; the network sources within their timeout), what
//! is news logged once (loaded, failing for a new reason, answering again), and the probe
//! of `check --connect`.
//!
//! With `[registry.acknowledgements]`, the learned tickets answer what the other source
//! does not know (or everything, alone: see `acknowledgements`).
//!
//! Not here: the sources themselves (`csv`, `postgres`, `http`, `acknowledgements`), the
//! facts from an answer.

use std::sync::{Arc, Mutex};

use jiff::tz::TimeZone;

use super::acknowledgements::Acknowledgements;
use super::csv::{CsvRegistry, Refresh};
use super::http::HttpRegistry;
use super::postgres::PgRegistry;
use super::{Answers, Lookup, RegistryConfig};

/// The source behind a [`Registry`].
#[derive(Debug)]
pub enum Backend {
    Csv(CsvRegistry),
    Postgres(PgRegistry),
    Http(HttpRegistry),
    /// Only the tickets learned from acknowledgements.
    Learned,
}

/// The ticket registry the daemon holds (`Arc`, shared by every desk).
#[derive(Debug)]
pub struct Registry {
    pub backend: Backend,
    /// The last reason a network source was unavailable, logged once until it answers.
    said: Mutex<Option<String>>,
    /// `[registry.acknowledgements]`, alone (backend `Learned`) or beside the backend.
    acks: Option<Arc<Acknowledgements>>,
}

/// The number `check --connect` asks about (no helpdesk issues it).
const PROBE_NUMBER: &str = "TICKETGATE-CHECK-0";

impl Registry {
    /// The registry `config` describes; `zone` reads creation times without an offset.
    pub fn new(config: &RegistryConfig, zone: TimeZone) -> Registry {
        let backend = match config.primary() {
            Some(RegistryConfig::Csv { path, columns }) => {
                Backend::Csv(CsvRegistry::new(path.clone(), columns.clone(), zone))
            }
            Some(RegistryConfig::Postgres(c)) => {
                Backend::Postgres(PgRegistry::new(c.clone(), zone))
            }
            Some(RegistryConfig::Http(c)) => Backend::Http(HttpRegistry::new(c.clone())),
            Some(RegistryConfig::Acknowledgements { .. }) | None => Backend::Learned,
        };
        Registry {
            backend,
            said: Mutex::new(None),
            acks: config
                .acknowledgements()
                .map(|c| Arc::new(Acknowledgements::new(c.clone()))),
        }
    }

    /// The acknowledgements source (its learning task is spawned by the supervisor), when
    /// configured.
    pub fn acknowledgements(&self) -> Option<&Arc<Acknowledgements>> {
        self.acks.as_ref()
    }

    /// The source as logs and `check` show it: `csv /path`, `postgres URL` (no password),
    /// `http TEMPLATE`.
    pub fn describe(&self) -> String {
        let primary = match &self.backend {
            Backend::Csv(c) => format!("csv {}", c.path().display()),
            Backend::Postgres(p) => format!("postgres {}", p.shown()),
            Backend::Http(h) => format!("http {}", h.template()),
            Backend::Learned => String::new(),
        };
        let Some(a) = &self.acks else {
            return primary;
        };
        let acks = format!(
            "acknowledgements in {} of {}",
            a.config.folder, a.config.login
        );
        if primary.is_empty() {
            acks
        } else {
            format!("{primary}, then {acks}")
        }
    }

    /// The CSV export, the only source read offline (`classify`); `None` for the others.
    pub fn offline(&self) -> Option<&CsvRegistry> {
        match &self.backend {
            Backend::Csv(c) => Some(c),
            _ => None,
        }
    }

    /// The answers for a batch's ticket `numbers`. Never fails and never waits beyond the
    /// source's timeout: a source that cannot answer gives `Unavailable` for each number.
    /// Logs what is news: a CSV export loaded or failing, a network source failing for a
    /// new reason or answering again; never per mail.
    pub async fn answers(self: &Arc<Self>, numbers: Vec<String>) -> Answers {
        let Some(acks) = &self.acks else {
            return self.primary_answers(numbers).await.unwrap_or_default();
        };
        let asked = numbers.clone();
        match self.primary_answers(numbers).await {
            Some(beside) => acks.answers(&asked, Some(beside)).await,
            None => {
                let a = acks.answers(&asked, None).await;
                self.news(&a);
                a
            }
        }
    }

    /// The CSV, PostgreSQL or HTTP source's answers; `None` for the acknowledgements alone.
    async fn primary_answers(self: &Arc<Self>, numbers: Vec<String>) -> Option<Answers> {
        let refs: Vec<&str> = numbers.iter().map(String::as_str).collect();
        Some(match &self.backend {
            Backend::Csv(_) => {
                let me = Arc::clone(self);
                let keys: Vec<String> = refs.iter().map(|n| super::ticket_key(n)).collect();
                tokio::task::spawn_blocking(move || {
                    let Backend::Csv(csv) = &me.backend else {
                        return Answers::new();
                    };
                    log_refresh(csv, csv.refresh());
                    let numbers: Vec<&str> = numbers.iter().map(String::as_str).collect();
                    csv.lookup(&numbers)
                })
                .await
                .unwrap_or_else(|e| {
                    let why = format!("reading the export failed: {e}");
                    keys.into_iter()
                        .map(|k| (k, Lookup::Unavailable(why.clone())))
                        .collect()
                })
            }
            Backend::Postgres(p) => {
                let a = p.lookup(&refs).await;
                self.news(&a);
                a
            }
            Backend::Http(h) => {
                let a = h.lookup(&refs).await;
                self.news(&a);
                a
            }
            Backend::Learned => return None,
        })
    }

    /// Logs a network source's first failure for a reason, and its recovery.
    fn news(&self, answers: &Answers) {
        let failure = answers.values().find_map(|a| match a {
            Lookup::Unavailable(why) => Some(why.clone()),
            _ => None,
        });
        let Ok(mut said) = self.said.lock() else {
            return;
        };
        match failure {
            Some(why) if said.as_deref() != Some(why.as_str()) => {
                tracing::warn!(
                    source = %self.describe(),
                    error = %why,
                    "ticket registry unavailable: rules see registry = \"unavailable\""
                );
                *said = Some(why);
            }
            None if said.is_some() && !answers.is_empty() => {
                tracing::info!(source = %self.describe(), "ticket registry answers again");
                *said = None;
            }
            _ => {}
        }
    }

    /// `check --connect`: asks the source once, about a number nobody issued (a CSV
    /// export is read). A line saying what answered.
    ///
    /// # Errors
    /// Why the source cannot answer.
    pub async fn probe(&self) -> Result<String, String> {
        match &self.backend {
            Backend::Csv(c) => match c.refresh() {
                Refresh::Failed(why) => Err(why),
                _ => Ok(format!("{} can be read", c.path().display())),
            },
            Backend::Postgres(p) => p
                .query(&[PROBE_NUMBER.to_string()])
                .await
                .map(|found| {
                    format!(
                        "{}: the query ran ({} row(s) for the dummy number {PROBE_NUMBER})",
                        p.shown(),
                        found.len()
                    )
                })
                .map_err(|e| e.to_string()),
            Backend::Http(h) => match h.get(PROBE_NUMBER).await {
                Lookup::Unavailable(why) => Err(why),
                Lookup::Unknown => Ok(format!(
                    "GET {}: 404 for the dummy number {PROBE_NUMBER}, as for an unknown ticket",
                    h.url(PROBE_NUMBER)
                )),
                Lookup::Known(_) => Ok(format!(
                    "GET {}: answered with a ticket for the dummy number {PROBE_NUMBER}",
                    h.url(PROBE_NUMBER)
                )),
            },
            Backend::Learned => Ok(self.describe()),
        }
    }
}

fn log_refresh(csv: &CsvRegistry, refresh: Refresh) {
    match refresh {
        Refresh::Unchanged => {}
        Refresh::Loaded { tickets, skipped } => tracing::info!(
            path = %csv.path().display(),
            tickets,
            skipped,
            "ticket registry loaded"
        ),
        Refresh::Failed(error) => {
            tracing::warn!(%error, "ticket registry unavailable: rules see registry = \"unavailable\"")
        }
    }
}
