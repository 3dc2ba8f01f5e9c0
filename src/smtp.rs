//! Drains the durable outbox through lettre's SMTP client: each queued mail is sent as the desk it comes
//! from, transient failures (4xx, connection trouble) are retried with backoff, permanent
//! ones (5xx) are recorded and kept visible. Composing mail is `compose`'s job, queuing is
//! the pipeline's.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use lettre::Address;
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters,
};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Server};
use crate::store::{OutboxItem, Store};
use crate::tls::Security;

/// Stored bytes of outgoing mail read from the outbox at once, beyond the first
/// mail (issue #13: memory bounded by bytes, not only by count).
const OUTBOX_READ_BYTES: u64 = 8 * 1024 * 1024;

/// First retry delay; doubled per attempt up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(5);
pub const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);
/// A mail that could not be delivered for this long is given up as permanently failed.
pub const GIVE_UP_AFTER_ATTEMPTS: u32 = 40;

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

/// How one send attempt ended.
#[derive(Debug)]
pub enum Outcome {
    Sent,
    /// Accepted for some recipients; the server refused the others for good (their
    /// addresses and its answers). Not sent again.
    SentExcept(String),
    Transient(String),
    Permanent(String),
}

/// How one SMTP transaction ended.
enum Transaction {
    /// The server took the mail; `refused` lists the recipients it refused for good.
    Delivered {
        refused: Vec<String>,
    },
    /// The server refused every recipient for good.
    AllRefused(String),
    Failed(lettre::transport::smtp::Error),
}

/// One SMTP transaction, recipient by recipient, so that one address the server refuses
/// for good (a sender's mailbox that no longer exists, say) does not keep the mail from the
/// others: such a recipient is left out and reported. A temporary refusal (4xx) of any
/// recipient fails the whole attempt, to be retried.
async fn transact(
    conn: &mut AsyncSmtpConnection,
    envelope: &Envelope,
    email: &[u8],
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
            Err(e) => Transaction::Failed(e),
        };
    }
    if !email.is_ascii() {
        options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    if let Err(e) = conn
        .command(Mail::new(envelope.from().cloned(), options))
        .await
    {
        return Transaction::Failed(e);
    }
    let mut refused = Vec::new();
    for to in envelope.to() {
        match conn.command(Rcpt::new(to.clone(), Vec::new())).await {
            Ok(_) => {}
            Err(e) if e.is_permanent() => refused.push(format!("{to}: {e}")),
            Err(e) => return Transaction::Failed(e),
        }
    }
    if refused.len() == envelope.to().len() {
        return Transaction::AllRefused(refused.join("; "));
    }
    if let Err(e) = conn.command(Data).await {
        return Transaction::Failed(e);
    }
    match conn.message(email).await {
        Ok(_) => Transaction::Delivered { refused },
        Err(e) => Transaction::Failed(e),
    }
}

/// One SMTP connection per desk (each desk sends as itself, authenticated), kept open
/// between mails and opened again when it broke.
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
    /// The open connection and when it was last used.
    conn: tokio::sync::Mutex<Option<(AsyncSmtpConnection, Instant)>>,
}

/// A kept-open connection idle for longer than this is checked with NOOP before it is used
/// (servers close idle SMTP sessions, Postfix after 300 s), so that a mail is not sent into
/// a connection the server already closed.
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(10);

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
        let server = &config.smtp;
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
                    conn: tokio::sync::Mutex::new(None),
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
            return Outcome::Permanent(SmtpError::UnknownDesk(item.desk.clone()).to_string());
        };
        let envelope = match envelope(item) {
            Ok(e) => e,
            Err(e) => return Outcome::Permanent(e.to_string()),
        };
        let ep = &self.endpoint;
        let mut slot = desk.conn.lock().await;
        let kept = match slot.take() {
            Some((mut c, used)) => {
                let usable = !c.has_broken()
                    && (used.elapsed() < CHECK_IDLE_AFTER
                        || tokio::time::timeout(ep.timeout, c.test_connected())
                            .await
                            .unwrap_or(false));
                if usable {
                    Some(c)
                } else {
                    c.abort().await;
                    None
                }
            }
            None => None,
        };
        let mut conn = match kept {
            Some(c) => c,
            None => match connect(ep, &desk.credentials).await {
                Ok(c) => c,
                Err(e) if e.is_permanent() => return Outcome::Permanent(e.to_string()),
                Err(e) => return Outcome::Transient(e.to_string()),
            },
        };
        match tokio::time::timeout(ep.timeout, transact(&mut conn, &envelope, &item.bytes)).await {
            Ok(Transaction::Delivered { refused }) => {
                *slot = Some((conn, Instant::now()));
                if refused.is_empty() {
                    Outcome::Sent
                } else {
                    Outcome::SentExcept(refused.join("; "))
                }
            }
            Ok(Transaction::AllRefused(refused)) => {
                conn.abort().await;
                Outcome::Permanent(refused)
            }
            Ok(Transaction::Failed(e)) => {
                conn.abort().await;
                if e.is_permanent() {
                    Outcome::Permanent(e.to_string())
                } else {
                    Outcome::Transient(e.to_string())
                }
            }
            Err(_) => {
                conn.abort().await;
                Outcome::Transient(format!(
                    "the SMTP server did not complete the send within {} s",
                    ep.timeout.as_secs()
                ))
            }
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
            .map_err(|e| e.to_string())?;
        let ok = conn.test_connected().await;
        let _ = conn.quit().await;
        if ok {
            Ok(())
        } else {
            Err("server did not answer NOOP".into())
        }
    }
}

/// Opens an authenticated connection: TCP with `TCP_NODELAY`, implicit TLS or STARTTLS as
/// configured, EHLO, AUTH.
async fn connect(
    ep: &SmtpEndpoint,
    credentials: &Credentials,
) -> Result<AsyncSmtpConnection, ConnectError> {
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
        conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
            .await?;
        Ok(conn)
    };
    tokio::time::timeout(ep.timeout, work)
        .await
        .map_err(|_| ConnectError::Timeout(ep.timeout))?
}

/// An implicit-TLS stream, as lettre takes it.
struct TlsTcp(Box<tokio_rustls::client::TlsStream<TcpStream>>);

impl std::fmt::Debug for TlsTcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsTcp")
    }
}

impl AsyncTokioStream for TlsTcp {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl tokio::io::AsyncRead for TlsTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsTcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
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

/// lettre's TLS settings for STARTTLS: the system roots plus the configured CA file.
fn tls_parameters(server: &Server) -> Result<TlsParameters, SmtpError> {
    let mut p = TlsParameters::builder(server.host.clone());
    if let Some(ca) = &server.ca_file {
        let pem = std::fs::read(ca).map_err(|e| SmtpError::CaFile {
            path: ca.display().to_string(),
            source: e,
        })?;
        p = p.add_root_certificate(Certificate::from_pem(&pem)?);
    }
    Ok(p.build_rustls()?)
}

/// Delay before the attempt after `attempts` failed ones, with ±20 % jitter.
pub fn backoff(attempts: u32) -> Duration {
    let base = FIRST_BACKOFF
        .saturating_mul(2u32.saturating_pow(attempts.min(16)))
        .min(MAX_BACKOFF);
    let jitter = 0.8 + fastrand::f64() * 0.4;
    base.mul_f64(jitter)
}

/// What became of a send attempt, to be written to the outbox.
#[derive(Debug, Clone)]
enum Record {
    /// With the recipients refused for good, if some were.
    Sent {
        refused: Option<String>,
    },
    Failed(String),
    Retry {
        at: i64,
        error: String,
    },
}

async fn record(
    store: &Store,
    id: &str,
    r: &Record,
    now: i64,
) -> Result<(), crate::store::StoreError> {
    match r {
        Record::Sent { refused } => store.outbox_sent(id, refused.as_deref(), now).await,
        Record::Failed(err) => store.outbox_failed(id, err, now).await,
        Record::Retry { at, error } => store.outbox_retry(id, *at, error).await,
    }
}

/// When [`run_outbox`] ends by itself (`ticketgate run --once`): once `after` is cancelled
/// (the desks are done), as soon as nothing is due or waiting for retry, or `limit` after
/// that.
#[derive(Debug)]
pub struct Drain {
    pub after: CancellationToken,
    pub limit: Duration,
}

/// Sends whatever is due until cancelled; `wake` is notified when the pipeline queues mail.
/// With `drain`, it also returns when the outbox is drained (see [`Drain`]).
///
/// A result that cannot be written to the database (disk full, database gone) is kept in
/// memory and written again until it is; meanwhile that mail is not sent again.
pub async fn run_outbox(
    store: Store,
    mailer: Mailer,
    wake: Arc<Notify>,
    cancel: CancellationToken,
    drain: Option<Drain>,
    metrics: Arc<crate::metrics::Metrics>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut draining_since: Option<tokio::time::Instant> = None;
    let mut unrecorded: HashMap<String, Record> = HashMap::new();
    let mut store_failures = 0u32;
    loop {
        let now = crate::daemon::unix_now();
        let mut store_ok = true;
        for (id, r) in std::mem::take(&mut unrecorded) {
            // Once the database refuses one, the rest are kept for the next round untried.
            if store_ok && let Err(e) = record(&store, &id, &r, now).await {
                store_ok = false;
                tracing::debug!(error = %chain(e), "still cannot record send results");
            }
            if !store_ok {
                unrecorded.insert(id, r);
            }
        }
        let due = if store_ok {
            // At most 50 mails, and beyond the first about 8 MB of them, so that a few
            // large redirects are read and sent one at a time.
            match store.outbox_due(now, 50, OUTBOX_READ_BYTES).await {
                Ok(d) => d,
                Err(e) => {
                    store_ok = false;
                    tracing::error!(error = %chain(e), "cannot read the outbox; retrying");
                    Vec::new()
                }
            }
        } else {
            Vec::new()
        };
        let mut sent_any = false;
        for item in due.iter().filter(|i| !unrecorded.contains_key(&i.id)) {
            if cancel.is_cancelled() {
                return;
            }
            let outcome = mailer.send(item).await;
            if matches!(outcome, Outcome::Sent | Outcome::SentExcept(_)) {
                crate::crash::point("sent");
            }
            let now = crate::daemon::unix_now();
            let result = match &outcome {
                Outcome::Sent => {
                    tracing::info!(desk = %item.desk, outbox_id = %item.id, recipients = %item.recipients.join(","), "mail sent");
                    metrics.sent.fetch_add(1, Relaxed);
                    Record::Sent { refused: None }
                }
                Outcome::SentExcept(refused) => {
                    tracing::warn!(desk = %item.desk, outbox_id = %item.id, recipients = %item.recipients.join(","), refused = %refused, "mail sent, but refused for good for some recipients (not sent to them again)");
                    metrics.sent.fetch_add(1, Relaxed);
                    Record::Sent {
                        refused: Some(refused.clone()),
                    }
                }
                Outcome::Permanent(err) => {
                    tracing::error!(desk = %item.desk, outbox_id = %item.id, error = %err, "mail refused permanently; kept in the outbox as failed");
                    metrics.send_failures.fetch_add(1, Relaxed);
                    Record::Failed(err.clone())
                }
                Outcome::Transient(err) if item.attempts + 1 >= GIVE_UP_AFTER_ATTEMPTS => {
                    tracing::error!(desk = %item.desk, outbox_id = %item.id, error = %err, attempts = item.attempts + 1, "giving up after repeated temporary failures");
                    metrics.send_failures.fetch_add(1, Relaxed);
                    Record::Failed(err.clone())
                }
                Outcome::Transient(err) => {
                    let delay = backoff(item.attempts);
                    tracing::warn!(desk = %item.desk, outbox_id = %item.id, error = %err, retry_in_s = delay.as_secs(), "temporary send failure; will retry");
                    Record::Retry {
                        at: now + i64::try_from(delay.as_secs()).unwrap_or(i64::MAX / 2),
                        error: err.clone(),
                    }
                }
            };
            sent_any = true;
            if let Err(e) = record(&store, &item.id, &result, now).await {
                tracing::error!(outbox_id = %item.id, error = %chain(e), "cannot record the send result; holding it until the database takes it (the mail is not sent again meanwhile)");
                metrics.errors.fetch_add(1, Relaxed);
                unrecorded.insert(item.id.clone(), result);
                store_ok = false;
                break;
            }
        }
        if store_ok {
            store_failures = 0;
            if sent_any {
                continue;
            }
        } else {
            store_failures = store_failures.saturating_add(1);
        }
        let (pending, oldest) = store
            .outbox_waiting()
            .await
            .unwrap_or((unrecorded.len() as u64, None));
        metrics.outbox_depth.store(pending, Relaxed);
        metrics.outbox_oldest.store(oldest.unwrap_or(0), Relaxed);
        if let Some(d) = drain.as_ref().filter(|d| d.after.is_cancelled())
            && ((pending == 0 && unrecorded.is_empty())
                || draining_since
                    .get_or_insert_with(tokio::time::Instant::now)
                    .elapsed()
                    >= d.limit)
        {
            if pending > 0 || !unrecorded.is_empty() {
                tracing::warn!(
                    pending,
                    unrecorded = unrecorded.len(),
                    "leaving mail in the outbox for the next run"
                );
            }
            return;
        }
        let nap = if !store_ok {
            // The database refuses writes: back off (1 s doubling to 1 min).
            Duration::from_secs(1u64 << store_failures.min(6))
        } else if pending > 0 {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(30)
        };
        // Wakes once when the desks are done, to start draining.
        let desks_done = async {
            match &drain {
                Some(d) if !d.after.is_cancelled() => d.after.cancelled().await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = wake.notified() => {}
            () = tokio::time::sleep(nap) => {}
            () = desks_done => {}
        }
    }
}

/// An error with its causes, `outer: inner: innermost`, for log lines.
fn chain(e: impl std::error::Error + Send + Sync + 'static) -> String {
    format!("{:#}", anyhow::Error::new(e))
}
