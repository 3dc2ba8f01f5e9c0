//! The SMTP transport: [`Mailer`] sends one queued mail through lettre's SMTP client as
//! the desk it comes from, over the desk's kept-open connections (one per mail in flight,
//! at most `[smtp] connections`; envelope commands pipelined when the server offers it,
//! each closed after [`CLOSE_IDLE_AFTER`] idle), and says
//! how it went as an [`Outcome`] with the server's reply code. When to send and retry is `outbox`'s;
//! composing mail is `compose`'s; the TLS stream and STARTTLS settings are `smtp/tls.rs`'s.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lettre::Address;
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::commands::{Data, Ehlo, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::config::Config;
use crate::outbox::{Outcome, SendError, Transport};
use crate::store::OutboxItem;
use crate::tls::Security;

mod tls;

use tls::{TlsTcp, tls_parameters};

#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    #[error("cannot read CA file {path}: {source}")]
    CaFile {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot set up SMTP transport: {0}")]
    Transport(#[from] lettre::transport::smtp::Error),
    #[error("cannot set up TLS for SMTP: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("no desk `{0}` in config for a queued mail")]
    UnknownDesk(String),
    #[error("invalid address `{0}` in a queued mail")]
    Address(String),
}

/// A lettre error as a send failure, with the server's reply code when it gave one.
fn send_error(e: &lettre::transport::smtp::Error) -> SendError {
    SendError {
        code: e.status().map(u16::from),
        message: e.to_string(),
    }
}

/// How one SMTP transaction ended.
enum Transaction {
    /// The server took the mail; `refused` lists the recipients it refused for good.
    Delivered { refused: Vec<String> },
    /// The server refused every recipient for good: its last answer's code, and every
    /// recipient with its answer.
    AllRefused(Option<u16>, String),
    /// The transaction failed (`permanent`: a 5xx answer); `envelope` when it failed
    /// before any byte of the message was written, so the server cannot have taken it and
    /// it is safe to try again at once.
    Failed {
        error: SendError,
        permanent: bool,
        envelope: bool,
        /// The server answered DATA with 354 and waits for a message that will not come:
        /// the connection can only be dropped (a QUIT would be read as message text).
        in_data: bool,
    },
}

impl Transaction {
    fn failed(error: &lettre::transport::smtp::Error, envelope: bool) -> Transaction {
        Transaction::Failed {
            error: send_error(error),
            permanent: error.is_permanent(),
            envelope,
            in_data: false,
        }
    }
}

/// One SMTP transaction, recipient by recipient, so that one address the server refuses
/// for good (a sender's mailbox that no longer exists, say) does not keep the mail from the
/// others: such a recipient is left out and reported. A temporary refusal (4xx) of any
/// recipient fails the whole attempt, to be retried.
///
/// With `pipelining` (the server offers PIPELINING, RFC 2920), MAIL, every RCPT and DATA
/// go out in one write and their answers are read after it: two round trips per mail
/// (envelope, then message) instead of three or more.
async fn transact(
    conn: &mut AsyncSmtpConnection,
    envelope: &Envelope,
    email: &[u8],
    pipelining: bool,
) -> Transaction {
    let mut options = Vec::new();
    let non_ascii = envelope
        .to()
        .iter()
        .chain(envelope.from())
        .any(|a| !AsRef::<str>::as_ref(a).is_ascii());
    if non_ascii
        || (!email.is_ascii() && !conn.server_info().supports_feature(Extension::EightBitMime))
    {
        // Rare cases lettre knows how to handle or refuse: its own transaction.
        return match conn.send(envelope, email).await {
            Ok(_) => Transaction::Delivered {
                refused: Vec::new(),
            },
            Err(e) => Transaction::failed(&e, false),
        };
    }
    if !email.is_ascii() {
        options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    // The commands of the envelope, each ending in CRLF.
    let mut commands = vec![Mail::new(envelope.from().cloned(), options).to_string()];
    commands.extend(
        envelope
            .to()
            .iter()
            .map(|to| Rcpt::new(to.clone(), Vec::new()).to_string()),
    );
    commands.push(Data.to_string());
    let mut answers = Vec::with_capacity(commands.len());
    for (i, command) in commands.iter().enumerate() {
        let answer = if !pipelining {
            conn.command(command).await
        } else if i == 0 {
            // One write for the whole envelope; then one answer per command, in order.
            conn.command(commands.concat()).await
        } else {
            conn.read_response().await
        };
        match answer {
            Ok(a) => answers.push(Ok(a)),
            // A broken connection, or a refused MAIL FROM: nothing more to learn.
            Err(e) if e.status().is_none() || i == 0 => return Transaction::failed(&e, true),
            Err(e) => answers.push(Err(e)),
        }
    }
    let mut refused = Vec::new();
    let mut code = None;
    for (to, answer) in envelope.to().iter().zip(&answers[1..]) {
        match answer {
            Ok(_) => {}
            Err(e) if e.is_permanent() => {
                code = e.status().map(u16::from);
                refused.push(format!("{to}: {e}"));
            }
            Err(e) => {
                return Transaction::Failed {
                    error: send_error(e),
                    permanent: false,
                    envelope: true,
                    in_data: answers.last().is_some_and(Result::is_ok),
                };
            }
        }
    }
    if refused.len() == envelope.to().len() {
        // The server also refused DATA then; the caller closes the connection.
        return Transaction::AllRefused(code, refused.join("; "));
    }
    if let Some(Err(e)) = answers.last() {
        return Transaction::failed(e, true);
    }
    match conn.message(email).await {
        Ok(_) => Transaction::Delivered { refused },
        Err(e) => Transaction::failed(&e, false),
    }
}

/// The desks' SMTP connections (each desk sends as itself, authenticated): a mail takes
/// one of its desk's idle connections or opens one, and gives it back after the server's
/// answer, so a desk holds as many as it has mails in flight (the outbox sends at most
/// `[smtp] connections` at once); kept open between mails and opened again when broken.
///
/// Own connections rather than lettre's `AsyncSmtpTransport` pool, for one reason: the
/// socket needs `TCP_NODELAY`. lettre writes a message and its terminating `CRLF.CRLF` as two
/// writes; with Nagle's algorithm the second waits for the server's delayed ACK of the
/// first, which cost ~40 ms per mail on every server measured (scripts/bench).
#[derive(Clone)]
pub struct Mailer {
    endpoint: Arc<SmtpEndpoint>,
    desks: Arc<HashMap<String, DeskSender>>,
}

struct SmtpEndpoint {
    host: String,
    port: u16,
    security: Security,
    timeout: Duration,
    /// lettre's TLS settings, for STARTTLS.
    starttls: Option<TlsParameters>,
    /// For implicit TLS, which this module sets up before lettre sees the stream.
    tls: Option<Arc<rustls::ClientConfig>>,
}

struct DeskSender {
    credentials: Credentials,
    /// The desk's open connections not in use, shared with the task that closes them once
    /// idle. A send takes one out (or opens one) and puts it back when done, so a desk
    /// holds at most as many connections as the outbox sends at once (`[smtp] connections`).
    pool: Arc<tokio::sync::Mutex<Pool>>,
}

/// A desk's kept-open connections not in use, and whether a task watches them for idleness.
#[derive(Default)]
struct Pool {
    /// Most recently used last.
    idle: Vec<Kept>,
    /// A task will close each of `idle` once it has been idle for [`CLOSE_IDLE_AFTER`].
    watched: bool,
}

/// An open, authenticated connection.
struct Kept {
    conn: AsyncSmtpConnection,
    /// The server offers PIPELINING.
    pipelining: bool,
    /// When it last finished a mail.
    used: Instant,
}

/// A kept-open connection idle for longer than this is checked with NOOP before it is used
/// (servers close idle SMTP sessions, Postfix after 300 s), so that a mail is not sent into
/// a connection the server already closed.
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(10);

/// A kept-open connection idle for this long is closed (QUIT): the outbox drained, and a
/// desk's next mail opens a new one.
pub const CLOSE_IDLE_AFTER: Duration = Duration::from_secs(30);

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("desks", &self.desks.len())
            .finish()
    }
}

/// Why a connection could not be opened or used.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("cannot connect to {0}: {1}")]
    Io(String, std::io::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("invalid TLS server name `{0}`")]
    ServerName(String),
    #[error(transparent)]
    Smtp(#[from] lettre::transport::smtp::Error),
}

impl ConnectError {
    /// As a send failure, with the server's reply code when it answered.
    fn send_error(&self) -> SendError {
        SendError {
            code: match self {
                ConnectError::Smtp(e) => e.status().map(u16::from),
                _ => None,
            },
            message: self.to_string(),
        }
    }

    fn is_permanent(&self) -> bool {
        match self {
            ConnectError::Smtp(e) => e.is_permanent(),
            ConnectError::ServerName(_) => true,
            ConnectError::Io(..) | ConnectError::Timeout(_) => false,
        }
    }
}

impl Mailer {
    pub fn new(config: &Config) -> Result<Mailer, SmtpError> {
        let server = &config.smtp.server;
        let starttls = match server.security {
            Security::StartTls => Some(tls_parameters(server)?),
            _ => None,
        };
        let tls = match server.security {
            Security::Tls => Some(crate::tls::client_config(server.ca_file.as_deref())?),
            _ => None,
        };
        let endpoint = Arc::new(SmtpEndpoint {
            host: server.host.clone(),
            port: server.port,
            security: server.security,
            timeout: server.timeout,
            starttls,
            tls,
        });
        let desks = config
            .desks
            .iter()
            .map(|desk| {
                let sender = DeskSender {
                    credentials: Credentials::new(
                        desk.login.clone(),
                        desk.password.expose().to_string(),
                    ),
                    pool: Arc::default(),
                };
                (desk.name.clone(), sender)
            })
            .collect();
        Ok(Mailer {
            endpoint,
            desks: Arc::new(desks),
        })
    }

    /// Sends one queued mail; never panics, classifies every failure.
    pub async fn send(&self, item: &OutboxItem) -> Outcome {
        let Some(desk) = self.desks.get(&item.desk) else {
            return Outcome::Permanent(SendError::new(
                SmtpError::UnknownDesk(item.desk.clone()).to_string(),
            ));
        };
        let envelope = match envelope(item) {
            Ok(e) => e,
            Err(e) => return Outcome::Permanent(SendError::new(e.to_string())),
        };
        let ep = &self.endpoint;
        // The lock is held only to take a connection: the desk's other sends go on meanwhile.
        let taken = desk.pool.lock().await.idle.pop();
        let kept = match taken {
            Some(mut k) => {
                let usable = !k.conn.has_broken()
                    && (k.used.elapsed() < CHECK_IDLE_AFTER
                        || tokio::time::timeout(ep.timeout, k.conn.test_connected())
                            .await
                            .unwrap_or(false));
                if usable {
                    Some(k)
                } else {
                    abort(&mut k.conn, ep.timeout).await;
                    None
                }
            }
            None => None,
        };
        let mut reused = kept.is_some();
        let mut kept = match kept {
            Some(k) => k,
            None => match connect(ep, &desk.credentials).await {
                Ok(k) => k,
                Err(e) if e.is_permanent() => return Outcome::Permanent(e.send_error()),
                Err(e) => return Outcome::Transient(e.send_error()),
            },
        };
        loop {
            let work = transact(&mut kept.conn, &envelope, &item.bytes, kept.pipelining);
            let outcome = match tokio::time::timeout(ep.timeout, work).await {
                Ok(Transaction::Delivered { refused }) => {
                    kept.used = Instant::now();
                    let mut pool = desk.pool.lock().await;
                    pool.idle.push(kept);
                    if !pool.watched {
                        pool.watched = true;
                        tokio::spawn(close_when_idle(Arc::clone(&desk.pool)));
                    }
                    drop(pool);
                    return if refused.is_empty() {
                        Outcome::Sent
                    } else {
                        Outcome::SentExcept(refused.join("; "))
                    };
                }
                Ok(Transaction::AllRefused(code, refused)) => Outcome::Permanent(SendError {
                    code,
                    message: refused,
                }),
                Ok(Transaction::Failed {
                    envelope: true,
                    in_data: false,
                    ref error,
                    ..
                }) if reused && matches!(error.code, None | Some(421)) => {
                    // A kept connection the server had closed or dropped (a restart, its
                    // idle timeout): nothing of this mail was sent, so again, on a new one.
                    abort(&mut kept.conn, ep.timeout).await;
                    reused = false;
                    kept = match connect(ep, &desk.credentials).await {
                        Ok(k) => k,
                        Err(e) if e.is_permanent() => return Outcome::Permanent(e.send_error()),
                        Err(e) => return Outcome::Transient(e.send_error()),
                    };
                    continue;
                }
                Ok(Transaction::Failed {
                    error,
                    permanent,
                    in_data,
                    ..
                }) => {
                    if in_data {
                        // Closing the socket mid-DATA makes the server discard the mail.
                        drop(kept);
                    } else {
                        abort(&mut kept.conn, ep.timeout).await;
                    }
                    return if permanent {
                        Outcome::Permanent(error)
                    } else {
                        Outcome::Transient(error)
                    };
                }
                Err(_) => Outcome::Transient(SendError::new(format!(
                    "the SMTP server did not complete the send within {} s",
                    ep.timeout.as_secs()
                ))),
            };
            abort(&mut kept.conn, ep.timeout).await;
            return outcome;
        }
    }

    /// Connects and authenticates as every desk, for `check --connect`.
    pub async fn test_desk(&self, desk: &str) -> Result<(), String> {
        let d = self
            .desks
            .get(desk)
            .ok_or_else(|| format!("no desk {desk}"))?;
        let mut conn = connect(&self.endpoint, &d.credentials)
            .await
            .map_err(|e| e.to_string())?
            .conn;
        let ok = conn.test_connected().await;
        let _ = conn.quit().await;
        if ok {
            Ok(())
        } else {
            Err("server did not answer NOOP".into())
        }
    }
}

impl Transport for Mailer {
    async fn send(&self, item: &OutboxItem) -> Outcome {
        Mailer::send(self, item).await
    }
}

impl Mailer {
    /// Ends every kept-open connection of every desk with QUIT, all at once, each waiting
    /// at most the configured timeout: at shutdown, once nothing is being sent, so that the
    /// server's log shows a client that said goodbye (Postfix: `quit=1`), not a lost
    /// connection.
    pub async fn close(&self) {
        let timeout = self.endpoint.timeout;
        let mut quits = FuturesUnordered::new();
        for desk in self.desks.values() {
            let idle = std::mem::take(&mut desk.pool.lock().await.idle);
            for mut kept in idle {
                quits.push(async move {
                    let _ = tokio::time::timeout(timeout, kept.conn.quit()).await;
                });
            }
        }
        while quits.next().await.is_some() {}
    }
}

/// Ends a connection after a failure: QUIT, waiting at most `timeout` for the answer.
async fn abort(conn: &mut AsyncSmtpConnection, timeout: Duration) {
    let _ = tokio::time::timeout(timeout, conn.abort()).await;
}

/// Closes (QUIT) each connection in `pool` once it has been idle for [`CLOSE_IDLE_AFTER`];
/// ends when the pool is empty.
async fn close_when_idle(pool: Arc<tokio::sync::Mutex<Pool>>) {
    loop {
        let (stale, deadline) = {
            let mut p = pool.lock().await;
            let (stale, fresh): (Vec<Kept>, Vec<Kept>) = std::mem::take(&mut p.idle)
                .into_iter()
                .partition(|k| k.used.elapsed() >= CLOSE_IDLE_AFTER);
            p.idle = fresh;
            let deadline = p.idle.iter().map(|k| k.used + CLOSE_IDLE_AFTER).min();
            if deadline.is_none() {
                p.watched = false;
            }
            (stale, deadline)
        };
        // QUIT outside the lock: a send may take a fresh connection meanwhile.
        for mut k in stale {
            let _ = tokio::time::timeout(CHECK_IDLE_AFTER, k.conn.quit()).await;
        }
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => return,
        }
    }
}

/// Opens an authenticated connection: TCP with `TCP_NODELAY`, implicit TLS or STARTTLS as
/// configured, EHLO, AUTH.
async fn connect(ep: &SmtpEndpoint, credentials: &Credentials) -> Result<Kept, ConnectError> {
    let work = async {
        let shown = format!("{}:{}", ep.host, ep.port);
        let tcp = TcpStream::connect((ep.host.as_str(), ep.port))
            .await
            .map_err(|e| ConnectError::Io(shown.clone(), e))?;
        tcp.set_nodelay(true)
            .map_err(|e| ConnectError::Io(shown.clone(), e))?;
        let stream: Box<dyn AsyncTokioStream> = match &ep.tls {
            Some(config) if ep.security == Security::Tls => {
                let name = rustls::pki_types::ServerName::try_from(ep.host.clone())
                    .map_err(|_| ConnectError::ServerName(ep.host.clone()))?;
                let tls = tokio_rustls::TlsConnector::from(Arc::clone(config))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| ConnectError::Io(shown.clone(), e))?;
                Box::new(TlsTcp(Box::new(tls)))
            }
            _ => Box::new(tcp),
        };
        let hello = ClientId::default();
        let mut conn = AsyncSmtpConnection::connect_with_transport(stream, &hello).await?;
        if let Some(params) = &ep.starttls {
            if !conn.can_starttls() {
                conn.abort().await;
                return Err(ConnectError::Io(
                    shown,
                    std::io::Error::other("the server does not offer STARTTLS"),
                ));
            }
            conn.starttls(params.clone(), &hello).await?;
        }
        // lettre keeps only the extensions it uses itself: EHLO once more to learn whether
        // the server takes pipelined commands.
        let ehlo = conn.command(Ehlo::new(hello)).await?;
        let pipelining = ehlo
            .message()
            .any(|l| l.trim().eq_ignore_ascii_case("PIPELINING"));
        conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
            .await?;
        Ok(Kept {
            conn,
            pipelining,
            used: Instant::now(),
        })
    };
    tokio::time::timeout(ep.timeout, work)
        .await
        .map_err(|_| ConnectError::Timeout(ep.timeout))?
}

fn envelope(item: &OutboxItem) -> Result<Envelope, SmtpError> {
    let parse = |a: &str| {
        a.parse::<Address>()
            .map_err(|_| SmtpError::Address(a.to_string()))
    };
    let from = parse(&item.envelope_from)?;
    let to = item
        .recipients
        .iter()
        .map(|r| parse(r))
        .collect::<Result<Vec<_>, _>>()?;
    Envelope::new(Some(from), to).map_err(|_| SmtpError::Address(item.recipients.join(",")))
}
