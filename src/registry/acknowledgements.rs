//! The registry's `acknowledgements` source (issue #17): tickets learned from the helpdesk's
//! acknowledgement mails in a helpdesk mailbox read only (`[registry.acknowledgements]`).
//! Here: its config ([`AckConfig`], checked at file, line and column), the state shared by
//! the learning task and the lookups ([`Acknowledgements`]: which read of the mailbox is
//! done, why the last failed, a wake-up to read now), and the lookup of a batch's numbers in
//! the learned tickets of the state database, alone or beside another source.
//!
//! Not here: reading the mailbox and recognising an acknowledgement (`acklearn`, which owns
//! the IMAP session), the tables (`store::acknowledged`).

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::{Notify, watch};

use crate::problem::{Problem, Source};
use crate::secret::{Environment, Secret, SecretFrom, read_secret};
use crate::store::Store;

use super::{Answers, Lookup, RegistryConfig, TicketRecord, ticket_key};

/// The subjects of acknowledgements by default: the helpdesk saying a complaint or ticket
/// was registered, logged or generated, or acknowledging it ("Your complaint has been
/// registered", "Acknowledgement: Ticket No 2026-1234567").
pub const DEFAULT_SUBJECT: &str =
    r"(?i)\b(?:registered|acknowledge?ment|acknowledged|generated|logged)\b";
/// Seconds between reads of the mailbox when no lookup asks for one (`poll_seconds`).
const DEFAULT_POLL_SECS: u64 = 60;
/// Seconds a batch's lookup waits for a read it asked for (`timeout_seconds`).
const DEFAULT_TIMEOUT_SECS: u64 = 10;

/// `[registry.acknowledgements]`: the helpdesk mailbox on `[imap]`'s server whose
/// acknowledgement mails teach tickets, and how to tell them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckConfig {
    /// The IMAP login of the helpdesk mailbox.
    pub login: String,
    /// From `password_file`, `password_env` or `password_credential` (like a desk's).
    pub password: Secret,
    /// The folder read (EXAMINE, never SELECT); `INBOX` by default.
    pub folder: String,
    /// Senders of acknowledgements, lower case; empty: config.toml's `helpdesk` address.
    pub from: Vec<String>,
    /// A regex an acknowledgement's subject matches ([`DEFAULT_SUBJECT`] by default).
    pub subject: String,
    /// How often the mailbox is read when no lookup asks.
    pub poll: Duration,
    /// How long a lookup waits for the read it asks for (a ticket not learned yet).
    pub timeout: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAck {
    login: Option<String>,
    password_file: Option<String>,
    password_env: Option<String>,
    password_credential: Option<String>,
    folder: Option<String>,
    from: Option<FromList>,
    subject: Option<String>,
    poll_seconds: Option<u64>,
    timeout_seconds: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum FromList {
    One(String),
    Many(Vec<String>),
}

/// `problem` of parsing config.toml, with the fix when it is the TOML library's answer to
/// a `[registry.acknowledgements]` without a `[registry]` line before it (an implicit
/// table, whose position it cannot tell).
pub fn explain(mut problem: Problem, text: &str) -> Problem {
    if problem.message.contains("expected a borrowed string")
        && text.contains("[registry.acknowledgements]")
        && !text.lines().any(|l| l.trim() == "[registry]")
    {
        problem.message = "[registry.acknowledgements] needs a `[registry]` line before it (which may stay empty when the acknowledgements are the only source)".into();
    }
    problem
}

/// Where `[registry.acknowledgements]` (or `acknowledgements = { ... }`) starts in the file.
fn table_start(src: &Source<'_>, registry_start: usize) -> usize {
    src.text
        .find("[registry.acknowledgements]")
        .unwrap_or_else(|| src.key_offset(registry_start, "acknowledgements"))
}

impl AckConfig {
    /// Checks `[registry.acknowledgements]` (`registry_start`: where `[registry]` starts;
    /// `base`: config.toml's directory; `offline`: the password is not read).
    ///
    /// # Errors
    /// A [`Problem`] at the key: unknown keys, no `login` or password source or two, an
    /// empty folder, a sender that is not an address, a subject that is not a regex, a
    /// zero interval, a password that cannot be read.
    pub fn parse(
        src: &Source<'_>,
        registry_start: usize,
        value: toml::Value,
        base: &Path,
        env: &dyn Environment,
        offline: bool,
    ) -> Result<AckConfig, Problem> {
        let start = table_start(src, registry_start);
        let at = |key: &str, msg: String| {
            src.problem_at_key(start, key, format!("[registry.acknowledgements]: {msg}"))
        };
        let r = RawAck::deserialize(value).map_err(|e| {
            let msg = e.message().trim().to_string();
            let key = msg
                .split_once("field `")
                .and_then(|(_, rest)| rest.split_once('`'))
                .map_or("acknowledgements", |(k, _)| k);
            at(key, msg.clone())
        })?;
        let Some(login) = r.login.filter(|l| !l.trim().is_empty()) else {
            return Err(src.problem_at(
                start,
                "[registry.acknowledgements]: set `login`, the helpdesk mailbox's IMAP user (on [imap]'s server)",
            ));
        };
        let sources: Vec<(&'static str, SecretFrom<'_>)> = [
            r.password_file.as_deref().map(|f| {
                (
                    "password_file",
                    SecretFrom::File("password_file", Path::new(f)),
                )
            }),
            r.password_env
                .as_deref()
                .map(|v| ("password_env", SecretFrom::Env("password_env", v))),
            r.password_credential.as_deref().map(|c| {
                (
                    "password_credential",
                    SecretFrom::Credential("password_credential", c),
                )
            }),
        ]
        .into_iter()
        .flatten()
        .collect();
        let mut sources = sources.into_iter();
        let (Some((_, from_secret)), None) = (sources.next(), sources.next()) else {
            let key = [
                ("password_env", r.password_env.is_some()),
                ("password_credential", r.password_credential.is_some()),
            ]
            .iter()
            .find(|(_, on)| *on)
            .map_or("login", |(k, _)| k);
            return Err(at(
                key,
                "set exactly one of password_file, password_env or password_credential (passwords are never written inline)".into(),
            ));
        };
        let password = if offline {
            Secret::new("")
        } else {
            read_secret(from_secret, "password", base, env).map_err(|(k, m)| at(k, m))?
        };
        let folder = r.folder.unwrap_or_else(|| "INBOX".into());
        if folder.trim().is_empty() {
            return Err(at(
                "folder",
                "folder is empty: name the folder to read, e.g. \"INBOX\"".into(),
            ));
        }
        let from: Vec<String> = match r.from {
            None => Vec::new(),
            Some(FromList::One(a)) => vec![a],
            Some(FromList::Many(v)) => v,
        };
        if let Some(bad) = from.iter().find(|a| {
            let a = a.trim();
            a.split_once('@')
                .is_none_or(|(l, d)| l.is_empty() || d.is_empty() || a.contains(' '))
        }) {
            return Err(at("from", format!("`{bad}` is not a mail address")));
        }
        let subject = r.subject.unwrap_or_else(|| DEFAULT_SUBJECT.into());
        if let Err(e) = regex::Regex::new(&subject) {
            return Err(at("subject", format!("not a regex: {e}")));
        }
        let secs = |key: &str, v: Option<u64>, default: u64| match v {
            Some(0) => Err(at(key, format!("{key} must be at least 1"))),
            v => Ok(Duration::from_secs(v.unwrap_or(default))),
        };
        Ok(AckConfig {
            login,
            password,
            folder,
            from: from.iter().map(|a| a.trim().to_ascii_lowercase()).collect(),
            subject,
            poll: secs("poll_seconds", r.poll_seconds, DEFAULT_POLL_SECS)?,
            timeout: secs("timeout_seconds", r.timeout_seconds, DEFAULT_TIMEOUT_SECS)?,
        })
    }
}

impl RegistryConfig {
    /// The CSV, PostgreSQL or HTTP source (the one beside the acknowledgements); `None`
    /// for the acknowledgements alone.
    pub fn primary(&self) -> Option<&RegistryConfig> {
        match self {
            RegistryConfig::Acknowledgements { beside, .. } => beside.as_deref(),
            other => Some(other),
        }
    }

    /// The acknowledgements' settings, when configured.
    pub fn acknowledgements(&self) -> Option<&AckConfig> {
        match self {
            RegistryConfig::Acknowledgements { config, .. } => Some(config),
            _ => None,
        }
    }
}

/// Where the learning task is: reads done, one running, why the last one failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadState {
    /// Reads of the mailbox finished (successfully or not) since the start.
    pub done: u64,
    /// A read is under way.
    pub running: bool,
    /// Why the last finished read failed; `None`: it read the folder to its end. Before
    /// the first read: "not read yet".
    pub failed: Option<String>,
}

/// The `acknowledgements` source as the daemon holds it: its config, the state database
/// the learned tickets are in, and the learning task's state.
#[derive(Debug)]
pub struct Acknowledgements {
    pub config: AckConfig,
    store: OnceLock<Store>,
    /// Asks the learning task to read the folder now.
    pub wake: Notify,
    state: watch::Sender<ReadState>,
}

impl Acknowledgements {
    /// The source of `config`, with no store yet ([`Acknowledgements::use_store`]).
    pub fn new(config: AckConfig) -> Acknowledgements {
        Acknowledgements {
            config,
            store: OnceLock::new(),
            wake: Notify::new(),
            state: watch::Sender::new(ReadState {
                failed: Some("the helpdesk mailbox has not been read yet".into()),
                ..ReadState::default()
            }),
        }
    }

    /// The state database the learned tickets are read from (the daemon's; set once).
    pub fn use_store(&self, store: Store) {
        let _ = self.store.set(store);
    }

    /// The learning task starts a read.
    pub fn read_started(&self) {
        self.state.send_modify(|s| s.running = true);
    }

    /// The learning task finished a read: `failed` says why it did not reach the end.
    pub fn read_finished(&self, failed: Option<String>) {
        self.state.send_modify(|s| {
            s.running = false;
            s.done += 1;
            s.failed = failed;
        });
    }

    /// The learning task's state now.
    pub fn read_state(&self) -> ReadState {
        self.state.borrow().clone()
    }

    /// Asks for a read that starts after now and waits for it (at most `timeout`); the
    /// reason it failed, or `None` when it read the folder to its end.
    async fn read_now(&self) -> Option<String> {
        let mut rx = self.state.subscribe();
        let target = {
            let s = rx.borrow_and_update();
            // A read under way may have started before the mail that asks: wait for the next.
            s.done + 1 + u64::from(s.running)
        };
        self.wake.notify_one();
        match tokio::time::timeout(self.config.timeout, rx.wait_for(|s| s.done >= target)).await {
            Ok(Ok(s)) => s.failed.clone(),
            Ok(Err(_)) => Some("the acknowledgement reader has stopped".into()),
            Err(_) => Some(format!(
                "the helpdesk mailbox was not read within {}s",
                self.config.timeout.as_secs()
            )),
        }
    }

    async fn learned(&self, keys: &[String]) -> Result<Answers, String> {
        let Some(store) = self.store.get() else {
            return Err("no state database".into());
        };
        let found = store
            .learned_tickets(keys)
            .await
            .map_err(|e| e.to_string())?;
        Ok(found
            .into_values()
            .map(|t| {
                (
                    t.ticket,
                    Lookup::Known(TicketRecord {
                        created: t.created,
                        requester: t.requester,
                        state: None,
                    }),
                )
            })
            .collect())
    }

    /// The answers for `numbers`, given what the other source said (`beside`; `None`
    /// alone). A number the other source knows keeps its answer; for the rest the learned
    /// tickets answer, read again after asking the learning task to read the mailbox now
    /// when some are missing. A number still missing is the other source's answer, or
    /// alone `Unknown` when the mailbox was read to its end, else `Unavailable`.
    pub async fn answers(&self, numbers: &[String], beside: Option<Answers>) -> Answers {
        let mut keys: Vec<String> = numbers.iter().map(|n| ticket_key(n)).collect();
        keys.sort_unstable();
        keys.dedup();
        let mut out = beside.unwrap_or_default();
        keys.retain(|k| !matches!(out.get(k), Some(Lookup::Known(_))));
        if keys.is_empty() {
            return out;
        }
        let mut learned = match self.learned(&keys).await {
            Ok(a) => a,
            Err(why) => {
                fill(&mut out, &keys, &Lookup::Unavailable(why));
                return out;
            }
        };
        let mut missing: Vec<String> = keys
            .iter()
            .filter(|k| !learned.contains_key(*k))
            .cloned()
            .collect();
        let mut failed = None;
        if !missing.is_empty() {
            failed = self.read_now().await;
            match self.learned(&missing).await {
                Ok(more) => learned.extend(more),
                Err(why) => failed = Some(why),
            }
            missing.retain(|k| !learned.contains_key(k));
        }
        out.extend(learned);
        let rest = match failed {
            None => Lookup::Unknown,
            Some(why) => Lookup::Unavailable(format!("acknowledgements: {why}")),
        };
        fill(&mut out, &missing, &rest);
        out
    }
}

/// Sets `answer` for the `keys` the other source did not answer (alone: all of them).
fn fill(out: &mut Answers, keys: &[String], answer: &Lookup) {
    for k in keys {
        out.entry(k.clone()).or_insert_with(|| answer.clone());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;
    use std::sync::Arc;

    struct Env;
    impl Environment for Env {
        fn var(&self, name: &str) -> Option<String> {
            (name == "HELPDESK_PW").then(|| "s3cret".into())
        }
    }

    fn parse(text: &str) -> Result<RegistryConfig, String> {
        super::super::config::parse_config(text, &Env)
    }

    #[test]
    fn alone_as_a_table_of_its_own() {
        let c = parse("[registry]\n[registry.acknowledgements]\nlogin = \"helpdesk\"\npassword_env = \"HELPDESK_PW\"\n")
            .unwrap();
        assert_eq!(c.kind(), "acknowledgements");
        assert!(c.primary().is_none());
        let a = c.acknowledgements().unwrap();
        assert_eq!((a.login.as_str(), a.folder.as_str()), ("helpdesk", "INBOX"));
        assert_eq!(a.password.expose(), "s3cret");
        assert!(a.from.is_empty());
        assert_eq!(a.subject, DEFAULT_SUBJECT);
        assert_eq!(a.poll, Duration::from_secs(60));
    }

    #[test]
    fn beside_another_source_and_inline() {
        let c = parse(
            "[registry]\ncsv = \"t.csv\"\nticket_column = \"No\"\ncreated_column = \"On\"\n\
             acknowledgements = { login = \"hd\", password_env = \"HELPDESK_PW\", folder = \"Acks\", from = \"Helpdesk-GeM@gov.in\" }\n",
        )
        .unwrap();
        assert_eq!(c.primary().map(RegistryConfig::kind), Some("csv"));
        let a = c.acknowledgements().unwrap();
        assert_eq!(a.folder, "Acks");
        assert_eq!(a.from, ["helpdesk-gem@gov.in"]);
    }

    #[test]
    fn problems_are_named_at_their_line_and_column() {
        let at = |body: &str| {
            parse(&format!("[registry]\n[registry.acknowledgements]\n{body}")).unwrap_err()
        };
        assert_eq!(
            at("password_env = \"HELPDESK_PW\"\n"),
            "/etc/ticketgate/config.toml:5:1: [registry.acknowledgements]: set `login`, the helpdesk mailbox's IMAP user (on [imap]'s server)"
        );
        let e = at("login = \"hd\"\n");
        assert!(
            e.contains(":6:1: [registry.acknowledgements]: set exactly one of password_file"),
            "{e}"
        );
        let e = at("login = \"hd\"\npassword_env = \"HELPDESK_PW\"\npassword_credential = \"x\"\n");
        assert!(
            e.contains(":7:1:") && e.contains("set exactly one of"),
            "{e}"
        );
        let e = at("login = \"hd\"\npassword_env = \"NOPE\"\n");
        assert!(
            e.contains(":7:1: [registry.acknowledgements]: environment variable NOPE is not set"),
            "{e}"
        );
        let e = at("login = \"hd\"\npassword_env = \"HELPDESK_PW\"\nsubject = \"(\"\n");
        assert!(
            e.contains(":8:1: [registry.acknowledgements]: not a regex"),
            "{e}"
        );
        let e = at("login = \"hd\"\npassword_env = \"HELPDESK_PW\"\nfrom = [\"helpdesk\"]\n");
        assert!(
            e.contains(":8:1: [registry.acknowledgements]: `helpdesk` is not a mail address"),
            "{e}"
        );
        let e = at("login = \"hd\"\npassword_env = \"HELPDESK_PW\"\npoll_seconds = 0\n");
        assert!(
            e.contains(":8:1: [registry.acknowledgements]: poll_seconds must be at least 1"),
            "{e}"
        );
        let e = at("login = \"hd\"\npassword_env = \"HELPDESK_PW\"\nmailbox = \"x\"\n");
        assert!(
            e.contains(":8:1: [registry.acknowledgements]: unknown field `mailbox`"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_registry_line_is_explained() {
        let p = Problem {
            file: "/c.toml".into(),
            line: 4,
            column: 11,
            message: "invalid type: string \"acknowledgements\", expected a borrowed string".into(),
        };
        let text = "[registry.acknowledgements]\nlogin = \"hd\"\n";
        assert!(
            explain(p.clone(), text)
                .message
                .contains("needs a `[registry]` line")
        );
        assert_eq!(explain(p.clone(), &format!("[registry]\n{text}")), p);
    }

    fn source(dir: &Path) -> impl Future<Output = Arc<Acknowledgements>> {
        let url = format!("sqlite://{}/state.db", dir.display());
        async move {
            let store = Store::open(&url).await.unwrap();
            store
                .learn_tickets(
                    "INBOX",
                    (1, 1),
                    &[crate::store::LearnedTicket {
                        ticket: "2026-1000001".into(),
                        created: 1_000,
                        requester: Some("a@rites.co.in".into()),
                    }],
                    2_000,
                )
                .await
                .unwrap();
            let a = Acknowledgements::new(AckConfig {
                login: "hd".into(),
                password: Secret::new(""),
                folder: "INBOX".into(),
                from: Vec::new(),
                subject: DEFAULT_SUBJECT.into(),
                poll: Duration::from_secs(60),
                timeout: Duration::from_secs(1),
            });
            a.use_store(store);
            Arc::new(a)
        }
    }

    #[tokio::test]
    async fn learned_known_read_unknown_and_unread_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let a = source(dir.path()).await;
        let numbers = vec!["2026-1000001".to_string(), " 2026-1000002".to_string()];
        // No learning task answers: a ticket not learned is unavailable, not unknown.
        let got = a.answers(&numbers, None).await;
        assert!(
            matches!(&got["2026-1000001"], Lookup::Known(t) if t.created == 1_000 && t.requester.as_deref() == Some("a@rites.co.in"))
        );
        assert!(
            matches!(&got["2026-1000002"], Lookup::Unavailable(w) if w.contains("not read within 1s")),
            "{got:?}"
        );
        // A learning task that reads the folder to its end when asked: unknown.
        let reader = Arc::clone(&a);
        let task = tokio::spawn(async move {
            loop {
                reader.wake.notified().await;
                reader.read_started();
                reader.read_finished(None);
            }
        });
        let got = a.answers(&numbers, None).await;
        task.abort();
        assert_eq!(got["2026-1000002"], Lookup::Unknown);
        assert!(a.read_state().failed.is_none());
    }

    #[tokio::test]
    async fn beside_another_source_learned_tickets_fill_in() {
        let dir = tempfile::tempdir().unwrap();
        let a = source(dir.path()).await;
        a.read_finished(None);
        let crm = TicketRecord {
            created: 5,
            requester: None,
            state: Some("Open".into()),
        };
        let beside: Answers = [
            ("2026-1000001".to_string(), Lookup::Unknown),
            ("2026-1000003".to_string(), Lookup::Known(crm.clone())),
            (
                "2026-1000004".to_string(),
                Lookup::Unavailable("down".into()),
            ),
        ]
        .into_iter()
        .collect();
        let numbers: Vec<String> = ["2026-1000001", "2026-1000003", "2026-1000004"]
            .map(String::from)
            .to_vec();
        // The read asked for finishes without a task: the wait times out, the other
        // source's answers stand for what was not learned.
        let got = a.answers(&numbers, Some(beside)).await;
        assert!(matches!(&got["2026-1000001"], Lookup::Known(t) if t.created == 1_000));
        assert_eq!(got["2026-1000003"], Lookup::Known(crm));
        assert_eq!(got["2026-1000004"], Lookup::Unavailable("down".into()));
    }
}
