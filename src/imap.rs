//! One desk's IMAP session (async-imap over tokio): TLS or STARTTLS, login, SELECT, UID
//! search and batched fetch with BODY.PEEK, keyword stores, moves with a safe fallback, and
//! waiting for new mail with IDLE or polling. What to do with the mail is `pipeline`'s job.
//!
//! This file holds the session type, its endpoint, capabilities, results and errors, and the
//! helpers the parts share (timeouts, UID sets, flag names). The parts: the connection and
//! login (`imap/connection.rs`), commands on the selected mailbox (`imap/commands.rs`),
//! folders and the namespace prefix (`imap/folders.rs`), IDLE and polling (`imap/idle.rs`),
//! the clocks' reads (`imap/clock_reads.rs`), read-only reading of a folder
//! (`imap/examine.rs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_imap::Session;
use async_imap::types::Flag;

use crate::tls::Security;

mod clock_reads;
mod commands;
mod connection;
mod examine;
mod folders;
mod idle;

pub use clock_reads::bare as bare_message_id;
pub use clock_reads::{FULL_SEARCH_EVERY, ReplySearch, reply_search};
pub use connection::Stream;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub tls: Arc<rustls::ClientConfig>,
    /// Limit for connecting and for each command.
    pub timeout: Duration,
}

impl Endpoint {
    /// The IMAP server of config.toml's `[imap]`, with its TLS settings (system roots plus
    /// `ca_file`); fails when the CA file cannot be used.
    pub fn from_config(cfg: &crate::config::Config) -> Result<Endpoint, crate::tls::TlsError> {
        let s = &cfg.imap.server;
        Ok(Endpoint {
            host: s.host.clone(),
            port: s.port,
            security: s.security,
            tls: crate::tls::client_config(s.ca_file.as_deref())?,
            timeout: s.timeout,
        })
    }
}

/// What the server offers that changes how we work.
#[derive(Debug, Clone, Copy, Default)]
pub struct Capabilities {
    pub idle: bool,
    pub r#move: bool,
    pub uidplus: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct MailboxState {
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub exists: u32,
    /// The server lets clients create keywords (`\*` in PERMANENTFLAGS, RFC 3501 7.1):
    /// Dovecot, Cyrus and Courier do; Exchange does not. Without it, only folders and
    /// system flags (`\Flagged`, `\Seen`) mark the decisions.
    pub keywords: bool,
}

/// One fetched mail. `raw` is `None` when the mail is larger than the limit (not downloaded).
#[derive(Debug)]
pub struct FetchedMail {
    pub uid: u32,
    pub flags: Vec<String>,
    pub size: u32,
    pub raw: Option<MailBytes>,
}

/// A fetched mail's bytes (RFC 5322), left in the IMAP client's own response buffer: not
/// copied out, so that a large mail is held once, not twice, while a batch is fetched
/// (issue #13; the buffer is the response's own allocation in async-imap 0.11, freed
/// with it). Dereferences to the bytes.
pub struct MailBytes(async_imap::types::Fetch);

impl std::ops::Deref for MailBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.0.body().unwrap_or_default()
    }
}

impl std::fmt::Debug for MailBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MailBytes({} bytes)", self.len())
    }
}

/// Why `wait` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    Changed,
    Timeout,
    Cancelled,
}

#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error("cannot connect to {host}:{port}: {source}")]
    Connect {
        host: String,
        port: u16,
        source: std::io::Error,
    },
    #[error("TLS with {host} failed: {source}")]
    Tls {
        host: String,
        source: std::io::Error,
    },
    #[error("`{0}` is not a valid TLS server name")]
    ServerName(String),
    #[error("plain IMAP is only allowed to a loopback host, not {0}")]
    PlainRefused(String),
    #[error("login as {login} refused: {reason}")]
    Login { login: String, reason: String },
    #[error("server did not answer {0} within the timeout")]
    Timeout(&'static str),
    #[error("cannot {op}: {source}")]
    Protocol {
        op: &'static str,
        source: async_imap::error::Error,
    },
    #[error("cannot {0}: the server closed the connection")]
    Closed(&'static str),
    #[error("mailbox {0} has no UIDVALIDITY")]
    NoUidValidity(String),
    /// A second connection to the desk found its mailbox recreated (RFC 3501 2.3.1.1).
    #[error("mailbox {mailbox} has a new UIDVALIDITY ({now}, was {was}): it was recreated")]
    UidValidityChanged { mailbox: String, was: u32, now: u32 },
    /// async-imap ends a FETCH's stream at the tagged answer whatever it says: a NO or BAD
    /// shows only as missing data.
    #[error("the server returned no {what} for UID {uid} (it refused the fetch?)")]
    Incomplete { what: &'static str, uid: u32 },
}

impl ImapError {
    /// True when the server answered NO or BAD to a fetch, store or move of mail (or a
    /// body fetch came back without the body): it may refuse the same mail again, unlike a
    /// lost connection or a timeout. Not: answers that say the condition is passing or
    /// server-wide (RFC 5530 UNAVAILABLE, INUSE, LIMIT, OVERQUOTA), a refused folder
    /// creation (a configuration matter), nor a mail gone between search and fetch.
    pub fn is_refusal(&self) -> bool {
        use async_imap::error::Error;
        match self {
            ImapError::Protocol {
                op,
                source: Error::No(text) | Error::Bad(text),
            } => {
                let upper = text.to_ascii_uppercase();
                *op != "create a folder"
                    && !["[UNAVAILABLE]", "[INUSE]", "[LIMIT]", "[OVERQUOTA]"]
                        .iter()
                        .any(|code| upper.contains(code))
            }
            ImapError::Incomplete { what, .. } => *what == "body",
            _ => false,
        }
    }

    /// True when reconnecting later may help (everything but a refused configuration).
    pub fn is_transient(&self) -> bool {
        !matches!(self, ImapError::PlainRefused(_) | ImapError::ServerName(_))
    }
}

/// A logged-in session with one mailbox selected.
#[derive(Debug)]
pub struct DeskSession {
    session: Option<Session<Stream>>,
    caps: Capabilities,
    timeout: Duration,
    mailbox: String,
    /// Folders made sure of in this session: the rules' name -> the server's name (the
    /// same, or under the personal namespace prefix, e.g. `INBOX.Redirected`).
    folders: HashMap<String, String>,
    /// What the desk clocks' review saw of each folder it searched for replies in this
    /// session (the server's name -> mark), so that the next search reads only what came
    /// since ([`clock_reads::reply_search`]). A new session searches in full again.
    looked: HashMap<String, clock_reads::FolderMark>,
    /// The selected mailbox accepts keywords (see [`MailboxState::keywords`]).
    keywords: bool,
    warned_no_uidplus: bool,
}

async fn timed<T>(
    limit: Duration,
    what: &'static str,
    f: impl Future<Output = T>,
) -> Result<T, ImapError> {
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| ImapError::Timeout(what))
}

fn proto(op: &'static str) -> impl FnOnce(async_imap::error::Error) -> ImapError {
    move |source| ImapError::Protocol { op, source }
}

impl DeskSession {
    /// `UID FETCH set items` within `limit` (`what` names it in a timeout, `op` in a
    /// protocol error), each response handed to `each` as it comes and then let go: a
    /// response kept holds on to async-imap's read buffer, and the server mixes in news of
    /// other mail (flags set and mail moved by another connection, issue #16).
    async fn each_fetched(
        &mut self,
        limit: Duration,
        what: &'static str,
        op: &'static str,
        set: &str,
        items: &str,
        mut each: impl FnMut(async_imap::types::Fetch),
    ) -> Result<(), ImapError> {
        use futures_util::TryStreamExt;
        timed(limit, what, async {
            let mut stream = self.s()?.uid_fetch(set, items).await.map_err(proto(op))?;
            while let Some(f) = stream.try_next().await.map_err(proto(op))? {
                each(f);
            }
            Ok(())
        })
        .await?
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn s(&mut self) -> Result<&mut Session<Stream>, ImapError> {
        self.session
            .as_mut()
            .ok_or(ImapError::Closed("use the session"))
    }

    pub async fn logout(mut self) -> Result<(), ImapError> {
        let t = self.timeout;
        timed(t, "LOGOUT", self.s()?.logout())
            .await?
            .map_err(proto("log out"))
    }
}

fn flag_text(f: Flag<'_>) -> String {
    match f {
        Flag::Seen => "\\Seen".into(),
        Flag::Answered => "\\Answered".into(),
        Flag::Flagged => "\\Flagged".into(),
        Flag::Deleted => "\\Deleted".into(),
        Flag::Draft => "\\Draft".into(),
        Flag::Recent => "\\Recent".into(),
        Flag::MayCreate => "\\*".into(),
        Flag::Custom(c) => c.to_string(),
    }
}

/// `1:5,7,9:12` from sorted or unsorted UIDs.
pub fn uid_set(uids: &[u32]) -> String {
    let mut v: Vec<u32> = uids.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < v.len() {
        let start = v[i];
        let mut end = start;
        while i + 1 < v.len() && v[i + 1] == end + 1 {
            i += 1;
            end = v[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_sets_are_compact_ranges() {
        assert_eq!(uid_set(&[1, 2, 3, 5, 7, 8, 9, 12]), "1:3,5,7:9,12");
        assert_eq!(uid_set(&[9, 1, 2, 2]), "1:2,9");
        assert_eq!(uid_set(&[4]), "4");
    }

    #[test]
    fn only_refusals_that_may_concern_one_mail_count() {
        use async_imap::error::Error;
        let answer = |op, text: &str| ImapError::Protocol {
            op,
            source: Error::No(text.to_string()),
        };
        assert!(answer("move mail", "[NOPERM] not allowed").is_refusal());
        assert!(answer("fetch mail", "[SERVERBUG] Internal error").is_refusal());
        assert!(
            ImapError::Protocol {
                op: "move mail",
                source: Error::Bad("bad".into())
            }
            .is_refusal()
        );
        for passing in [
            "[UNAVAILABLE] later",
            "[InUse] locked",
            "[LIMIT] too many",
            "[OVERQUOTA] full",
        ] {
            assert!(!answer("move mail", passing).is_refusal(), "{passing}");
        }
        assert!(!answer("create a folder", "[NOPERM] no").is_refusal());
        assert!(
            ImapError::Incomplete {
                what: "body",
                uid: 3
            }
            .is_refusal()
        );
        assert!(
            !ImapError::Incomplete {
                what: "size",
                uid: 3
            }
            .is_refusal()
        );
        assert!(!ImapError::Timeout("UID MOVE").is_refusal());
    }

    #[tokio::test]
    async fn plain_to_a_remote_host_is_refused_before_connecting() {
        let tls = crate::tls::client_config(None).unwrap_or_else(|e| panic!("{e}"));
        let ep = Endpoint {
            host: "imap.gem.gov.in".into(),
            port: 143,
            security: Security::Plain,
            tls,
            timeout: Duration::from_secs(1),
        };
        let err = DeskSession::connect(&ep, "u", "p")
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("only allowed to a loopback host"), "{err}");
    }
}
