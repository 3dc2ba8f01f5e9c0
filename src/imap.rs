//! One desk's IMAP session (async-imap over tokio): TLS or STARTTLS, login, SELECT, UID
//! search and batched fetch with BODY.PEEK, keyword stores, moves with a safe fallback, and
//! waiting for new mail with IDLE or polling. What to do with the mail is `pipeline`'s job.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_imap::extensions::idle::IdleResponse;
use async_imap::types::{Flag, UnsolicitedResponse};
use async_imap::{Client, Session};
use futures_util::TryStreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::tls::Security;

mod clock_reads;
pub use clock_reads::bare as bare_message_id;

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
#[derive(Debug, Clone)]
pub struct FetchedMail {
    pub uid: u32,
    pub flags: Vec<String>,
    pub size: u32,
    pub raw: Option<Vec<u8>>,
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

/// TCP or TLS, as one stream type for async-imap.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
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
    /// Connects, secures the connection as configured, logs in. The password is only sent
    /// over TLS, or in plain to a loopback host when the config says so.
    pub async fn connect(
        ep: &Endpoint,
        login: &str,
        password: &str,
    ) -> Result<DeskSession, ImapError> {
        if ep.security == Security::Plain && !crate::config::is_loopback(&ep.host) {
            return Err(ImapError::PlainRefused(ep.host.clone()));
        }
        let t = ep.timeout;
        let tcp = timed(
            t,
            "connect",
            TcpStream::connect((ep.host.as_str(), ep.port)),
        )
        .await?
        .map_err(|e| ImapError::Connect {
            host: ep.host.clone(),
            port: ep.port,
            source: e,
        })?;
        let _ = tcp.set_nodelay(true);
        let client = match ep.security {
            Security::Tls => {
                let tls = tls_wrap(ep, tcp).await?;
                let mut c = Client::new(Stream::Tls(Box::new(tls)));
                greeting(&mut c, t).await?;
                c
            }
            Security::StartTls => {
                let mut c = Client::new(Stream::Plain(tcp));
                greeting(&mut c, t).await?;
                timed(t, "STARTTLS", c.run_command_and_check_ok("STARTTLS", None))
                    .await?
                    .map_err(proto("start TLS"))?;
                let Stream::Plain(tcp) = c.into_inner() else {
                    return Err(ImapError::Closed("start TLS"));
                };
                Client::new(Stream::Tls(Box::new(tls_wrap(ep, tcp).await?)))
            }
            Security::Plain => {
                let mut c = Client::new(Stream::Plain(tcp));
                greeting(&mut c, t).await?;
                c
            }
        };
        let mut session = timed(t, "LOGIN", client.login(login, password))
            .await?
            .map_err(|(e, _)| ImapError::Login {
                login: login.to_string(),
                reason: e.to_string(),
            })?;
        let caps = timed(t, "CAPABILITY", session.capabilities())
            .await?
            .map_err(proto("read capabilities"))?;
        let caps = Capabilities {
            idle: caps.has_str("IDLE"),
            r#move: caps.has_str("MOVE"),
            uidplus: caps.has_str("UIDPLUS"),
        };
        tracing::debug!(
            login,
            idle = caps.idle,
            r#move = caps.r#move,
            uidplus = caps.uidplus,
            "logged in"
        );
        Ok(DeskSession {
            session: Some(session),
            caps,
            timeout: t,
            mailbox: String::new(),
            folders: HashMap::new(),
            keywords: true,
            warned_no_uidplus: false,
        })
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn s(&mut self) -> Result<&mut Session<Stream>, ImapError> {
        self.session
            .as_mut()
            .ok_or(ImapError::Closed("use the session"))
    }

    pub async fn select(&mut self, mailbox: &str) -> Result<MailboxState, ImapError> {
        let t = self.timeout;
        let mb = timed(t, "SELECT", self.s()?.select(mailbox))
            .await?
            .map_err(proto("select the mailbox"))?;
        self.mailbox = mailbox.to_string();
        // No PERMANENTFLAGS at all means any flag may be stored (RFC 3501 7.1).
        let keywords = mb.permanent_flags.is_empty()
            || mb
                .permanent_flags
                .iter()
                .any(|f| matches!(f, async_imap::types::Flag::MayCreate));
        self.keywords = keywords;
        Ok(MailboxState {
            keywords,
            uidvalidity: mb
                .uid_validity
                .ok_or_else(|| ImapError::NoUidValidity(mailbox.to_string()))?,
            uidnext: mb.uid_next.unwrap_or(0),
            exists: mb.exists,
        })
    }

    /// UIDs at or above `first_uid`, ascending. (`UID n:*` also matches the highest UID when
    /// it is below n, RFC 3501 §6.4.8, hence the filter.)
    pub async fn uids_from(&mut self, first_uid: u32) -> Result<Vec<u32>, ImapError> {
        let t = self.timeout;
        let query = format!("UID {}:*", first_uid.max(1));
        let set = timed(t, "UID SEARCH", self.s()?.uid_search(query))
            .await?
            .map_err(proto("search new mail"))?;
        let mut uids: Vec<u32> = set.into_iter().filter(|u| *u >= first_uid).collect();
        uids.sort_unstable();
        Ok(uids)
    }

    /// Fetches a batch in two round trips: sizes and flags, then the bodies of the mails
    /// within `max_bytes` with BODY.PEEK (which leaves \Seen alone). Only the first mails of
    /// `uids` (ascending) whose bodies add up to at most `budget` bytes are fetched and
    /// returned, at least one: the bytes in flight are bounded, not only the count (issue
    /// #13). The caller goes on after the last UID returned.
    pub async fn fetch(
        &mut self,
        uids: &[u32],
        max_bytes: u32,
        budget: u64,
    ) -> Result<Vec<FetchedMail>, ImapError> {
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        let t = self.timeout;
        let set = uid_set(uids);
        let meta: Vec<_> = timed(t, "UID FETCH", async {
            self.s()?
                .uid_fetch(&set, "(UID FLAGS RFC822.SIZE)")
                .await
                .map_err(proto("fetch sizes"))?
                .try_collect::<Vec<_>>()
                .await
                .map_err(proto("fetch sizes"))
        })
        .await??;
        let mut mails: Vec<FetchedMail> = meta
            .iter()
            .filter_map(|f| {
                let uid = f.uid?;
                Some(FetchedMail {
                    uid,
                    flags: f.flags().map(flag_text).collect(),
                    size: f.size.unwrap_or(0),
                    raw: None,
                })
            })
            .filter(|m| uids.binary_search(&m.uid).is_ok() || uids.contains(&m.uid))
            .collect();
        mails.sort_by_key(|m| m.uid);
        mails.dedup_by_key(|m| m.uid);
        // A mail expunged since the search is missing too; the retry's search skips it.
        if let Some(&uid) = uids
            .iter()
            .find(|u| mails.binary_search_by_key(*u, |m| m.uid).is_err())
        {
            return Err(ImapError::Incomplete { what: "size", uid });
        }
        // The prefix within the byte budget (mail over `max_bytes` is not downloaded).
        let mut total = 0u64;
        let mut keep = 0;
        for m in &mails {
            let cost = if m.size <= max_bytes {
                u64::from(m.size)
            } else {
                0
            };
            if keep > 0 && total + cost > budget {
                break;
            }
            total += cost;
            keep += 1;
        }
        mails.truncate(keep);
        let small: Vec<u32> = mails
            .iter()
            .filter(|m| m.size <= max_bytes)
            .map(|m| m.uid)
            .collect();
        if !small.is_empty() {
            let set = uid_set(&small);
            // Bodies may be large: allow more time than for a plain command.
            // Each body is copied out as it arrives, so that only one copy of the batch is
            // held at a time.
            timed(t * 4, "UID FETCH BODY.PEEK[]", async {
                let mut stream = self
                    .s()?
                    .uid_fetch(&set, "(UID BODY.PEEK[])")
                    .await
                    .map_err(proto("fetch mail"))?;
                while let Some(f) = stream.try_next().await.map_err(proto("fetch mail"))? {
                    let (Some(uid), Some(body)) = (f.uid, f.body()) else {
                        continue;
                    };
                    if let Ok(i) = mails.binary_search_by_key(&uid, |m| m.uid) {
                        mails[i].raw = Some(body.to_vec());
                    }
                }
                Ok::<_, ImapError>(())
            })
            .await??;
            // Without this, a refused body fetch would pass the mail on as oversized.
            if let Some(m) = mails
                .iter()
                .find(|m| m.size <= max_bytes && m.raw.is_none())
            {
                return Err(ImapError::Incomplete {
                    what: "body",
                    uid: m.uid,
                });
            }
        }
        Ok(mails)
    }

    /// Adds keywords or system flags (`UID STORE +FLAGS.SILENT`); idempotent.
    pub async fn add_flags(&mut self, uids: &[u32], flags: &[String]) -> Result<(), ImapError> {
        // Keywords the server does not keep are left out: system flags still go.
        let kept: Vec<String>;
        let flags = if self.keywords {
            flags
        } else {
            kept = flags
                .iter()
                .filter(|f| f.starts_with('\\'))
                .cloned()
                .collect();
            &kept
        };
        if uids.is_empty() || flags.is_empty() {
            return Ok(());
        }
        let t = self.timeout;
        let set = uid_set(uids);
        // Not `uid_store`: its stream ends at the tagged answer without looking at it, so a NO
        // or BAD would pass for success and the mail be filed without its keywords.
        let command = format!("UID STORE {set} +FLAGS.SILENT ({})", flags.join(" "));
        timed(t, "UID STORE", self.s()?.run_command_and_check_ok(&command))
            .await?
            .map_err(proto("store flags"))
    }

    /// Creates `folder` unless it exists (or was created earlier in this session), and
    /// subscribes it (RFC 3501 6.3.6), once per session. A server whose personal namespace
    /// has a prefix (Courier, Cyrus: `INBOX.` with `.` as separator) refuses a top-level
    /// name: the folder is then made under `INBOX` with the server's separator, where
    /// officers' clients look (RFC 2342). Returns the server's name of the folder.
    pub async fn ensure_folder(&mut self, folder: &str) -> Result<String, ImapError> {
        if let Some(name) = self.folders.get(folder) {
            return Ok(name.clone());
        }
        let name = match self.create(folder).await {
            Ok(()) => folder.to_string(),
            Err(first) => {
                let Some(prefixed) = self.under_inbox(folder).await? else {
                    return Err(first);
                };
                self.create(&prefixed).await.map_err(|_| first)?;
                prefixed
            }
        };
        // Subscribed too: Thunderbird and most clients show only subscribed folders (LSUB),
        // so mail filed into an unsubscribed folder looks lost to the officer (issue #15).
        // SUBSCRIBE is idempotent; a server that refuses it still gets the mail filed.
        let t = self.timeout;
        match timed(t, "SUBSCRIBE", self.s()?.subscribe(&name)).await? {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(folder = %name, error = %e, "cannot subscribe the folder; officers' clients may not show it")
            }
        }
        self.folders.insert(folder.to_string(), name.clone());
        Ok(name)
    }

    /// The server's name of an existing `folder` (as named in the rules or under the
    /// personal namespace prefix), or `None` when neither exists.
    pub async fn existing_folder(&mut self, folder: &str) -> Result<Option<String>, ImapError> {
        if let Some(name) = self.folders.get(folder) {
            return Ok(Some(name.clone()));
        }
        let mut candidates = vec![folder.to_string()];
        candidates.extend(self.under_inbox(folder).await?);
        for c in candidates {
            if !self.list(&c).await?.is_empty() {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    /// CREATE, where an existing folder counts as created.
    async fn create(&mut self, name: &str) -> Result<(), ImapError> {
        let t = self.timeout;
        match timed(t, "CREATE", self.s()?.create(name)).await? {
            Ok(()) => Ok(()),
            Err(async_imap::error::Error::No(text))
                if text.to_ascii_uppercase().contains("ALREADYEXISTS")
                    || text.to_ascii_lowercase().contains("exists") =>
            {
                Ok(())
            }
            Err(e) => Err(ImapError::Protocol {
                op: "create a folder",
                source: e,
            }),
        }
    }

    /// Names matching `pattern` exactly (LIST "" pattern).
    async fn list(&mut self, pattern: &str) -> Result<Vec<String>, ImapError> {
        use futures_util::TryStreamExt;
        let t = self.timeout;
        let quoted = format!("\"{}\"", pattern.replace(['\\', '"'], ""));
        timed(t, "LIST", async {
            self.s()?
                .list(Some(""), Some(&quoted))
                .await
                .map_err(proto("list folders"))?
                .try_collect::<Vec<_>>()
                .await
                .map_err(proto("list folders"))
        })
        .await?
        .map(|names| names.iter().map(|n| n.name().to_string()).collect())
    }

    /// `folder` under INBOX with the server's hierarchy separator (`LIST "" ""`), unless it
    /// already is there or the server has no hierarchy.
    async fn under_inbox(&mut self, folder: &str) -> Result<Option<String>, ImapError> {
        use futures_util::TryStreamExt;
        let t = self.timeout;
        let root = timed(t, "LIST", async {
            self.s()?
                .list(Some(""), Some("\"\""))
                .await
                .map_err(proto("list the hierarchy separator"))?
                .try_collect::<Vec<_>>()
                .await
                .map_err(proto("list the hierarchy separator"))
        })
        .await??;
        let Some(sep) = root
            .first()
            .and_then(|n| n.delimiter())
            .map(|d| d.to_string())
        else {
            return Ok(None);
        };
        let prefix = format!("INBOX{sep}");
        Ok((!folder
            .to_ascii_uppercase()
            .starts_with(&prefix.to_ascii_uppercase()))
        .then(|| format!("{prefix}{folder}")))
    }

    /// Moves mail to `folder`: UID MOVE (RFC 6851) when offered; else UID COPY + \Deleted +
    /// UID EXPUNGE of exactly these UIDs (RFC 4315); without UIDPLUS the copies are only
    /// marked \Deleted, never expunged with a plain EXPUNGE that would remove other mail
    /// an officer marked deleted. A UID that is gone already is a no-op.
    pub async fn move_to(&mut self, uids: &[u32], folder: &str) -> Result<(), ImapError> {
        if uids.is_empty() {
            return Ok(());
        }
        // The server's name of a folder made sure of in this session.
        let mapped = self.folders.get(folder).cloned();
        let folder = mapped.as_deref().unwrap_or(folder);
        let t = self.timeout;
        let set = uid_set(uids);
        if self.caps.r#move {
            tracing::trace!(folder, set = %set, "UID MOVE");
            timed(t, "UID MOVE", self.s()?.uid_mv(&set, folder))
                .await?
                .map_err(proto("move mail"))?;
            return Ok(());
        }
        tracing::debug!(folder, set = %set, uidplus = self.caps.uidplus, "server lacks MOVE: copying, flagging \\Deleted");
        timed(t, "UID COPY", self.s()?.uid_copy(&set, folder))
            .await?
            .map_err(proto("copy mail"))?;
        self.add_flags(uids, &["\\Deleted".to_string()]).await?;
        if self.caps.uidplus {
            timed(t, "UID EXPUNGE", async {
                self.s()?
                    .uid_expunge(&set)
                    .await
                    .map_err(proto("expunge moved mail"))?
                    .try_collect::<Vec<_>>()
                    .await
                    .map_err(proto("expunge moved mail"))
            })
            .await??;
        } else if !self.warned_no_uidplus {
            self.warned_no_uidplus = true;
            tracing::warn!(mailbox = %self.mailbox, "server lacks MOVE and UIDPLUS: filed mail stays in the inbox marked \\Deleted until an officer's client expunges it");
        }
        Ok(())
    }

    /// Waits for new mail: IDLE (re-issued every `idle_refresh`, RFC 2177) when offered, else
    /// a NOOP every `poll_every`. Returns promptly, after leaving IDLE, when cancelled;
    /// `nudge` wakes it early (another desk found work for this one).
    pub async fn wait(
        &mut self,
        cancel: &CancellationToken,
        nudge: &tokio::sync::Notify,
        idle_refresh: Duration,
        poll_every: Duration,
    ) -> Result<Wake, ImapError> {
        if !self.caps.idle {
            tokio::select! {
                () = cancel.cancelled() => return Ok(Wake::Cancelled),
                () = nudge.notified() => return Ok(Wake::Changed),
                () = tokio::time::sleep(poll_every) => {}
            }
            let t = self.timeout;
            timed(t, "NOOP", self.s()?.noop())
                .await?
                .map_err(proto("poll the mailbox"))?;
            return Ok(Wake::Changed);
        }
        // Mail that arrived while other commands ran was announced then: async-imap keeps
        // such announcements aside instead of waking IDLE.
        if self.announced_new_mail() {
            return Ok(Wake::Changed);
        }
        let session = self.session.take().ok_or(ImapError::Closed("start IDLE"))?;
        let announced = session.unsolicited_responses.clone();
        let mut idle = session.idle();
        timed(self.timeout, "IDLE", idle.init())
            .await?
            .map_err(proto("start IDLE"))?;
        // ... or just before the server confirmed IDLE.
        let outcome = if new_mail_announced(|| announced.try_recv().ok()) {
            Wake::Changed
        } else {
            let (fut, stop) = idle.wait_with_timeout(idle_refresh);
            tokio::pin!(fut);
            // async-imap restarts its timeout on every response, and Dovecot sends
            // `* OK Still here` every imap_idle_notify_interval (2 min): its timeout alone would
            // never fire. The refresh is a wall-clock deadline that keepalives do not extend.
            let refresh = tokio::time::sleep(idle_refresh);
            tokio::select! {
                r = &mut fut => match r.map_err(proto("wait in IDLE"))? {
                    IdleResponse::NewData(_) | IdleResponse::ManualInterrupt => Wake::Changed,
                    IdleResponse::Timeout => Wake::Timeout,
                },
                () = refresh => {
                    drop(stop);
                    let _ = fut.await;
                    Wake::Timeout
                }
                () = nudge.notified() => {
                    drop(stop);
                    let _ = fut.await;
                    Wake::Changed
                }
                () = cancel.cancelled() => {
                    drop(stop);
                    let _ = fut.await;
                    Wake::Cancelled
                }
            }
        };
        let session = timed(self.timeout, "DONE", idle.done())
            .await?
            .map_err(proto("leave IDLE"))?;
        self.session = Some(session);
        Ok(outcome)
    }

    /// True when the server announced new mail (EXISTS/RECENT) outside IDLE since the last
    /// check; also when the announcements overflowed async-imap's buffer, so that one may
    /// have been dropped. Empties the buffer.
    fn announced_new_mail(&mut self) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| new_mail_announced(|| s.unsolicited_responses.try_recv().ok()))
    }

    /// UIDs of the mail with this Message-ID in the selected mailbox.
    pub async fn search_message_id(&mut self, message_id: &str) -> Result<Vec<u32>, ImapError> {
        if message_id.is_empty()
            || message_id
                .chars()
                .any(|c| c == '"' || c == '\\' || c.is_control())
        {
            return Ok(Vec::new());
        }
        let t = self.timeout;
        let query = format!(
            "HEADER Message-ID \"{}\"",
            message_id.trim_start_matches('<').trim_end_matches('>')
        );
        let found = timed(t, "UID SEARCH", self.s()?.uid_search(query))
            .await?
            .map_err(proto("search a message id"))?;
        let mut uids: Vec<u32> = found.into_iter().collect();
        uids.sort_unstable();
        Ok(uids)
    }

    pub async fn logout(mut self) -> Result<(), ImapError> {
        let t = self.timeout;
        timed(t, "LOGOUT", self.s()?.logout())
            .await?
            .map_err(proto("log out"))
    }
}

/// async-imap keeps at most this many announcements; more are dropped.
const ANNOUNCEMENTS_KEPT: usize = 100;

/// Reads announcements to the end (`next` yields the next one kept, if any); true when
/// one announced new mail or some may have been lost.
fn new_mail_announced(mut next: impl FnMut() -> Option<UnsolicitedResponse>) -> bool {
    let mut count = 0;
    let mut new_mail = false;
    while let Some(r) = next() {
        count += 1;
        new_mail |= matches!(
            r,
            UnsolicitedResponse::Exists(_) | UnsolicitedResponse::Recent(_)
        );
    }
    new_mail || count >= ANNOUNCEMENTS_KEPT
}

async fn greeting(c: &mut Client<Stream>, t: Duration) -> Result<(), ImapError> {
    match timed(t, "greeting", c.read_response()).await? {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(ImapError::Closed("read the greeting")),
        Err(e) => Err(ImapError::Protocol {
            op: "read the greeting",
            source: e.into(),
        }),
    }
}

async fn tls_wrap(ep: &Endpoint, tcp: TcpStream) -> Result<TlsStream<TcpStream>, ImapError> {
    let name = rustls::pki_types::ServerName::try_from(ep.host.clone())
        .map_err(|_| ImapError::ServerName(ep.host.clone()))?;
    let connector = TlsConnector::from(Arc::clone(&ep.tls));
    timed(ep.timeout, "TLS handshake", connector.connect(name, tcp))
        .await?
        .map_err(|e| ImapError::Tls {
            host: ep.host.clone(),
            source: e,
        })
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
