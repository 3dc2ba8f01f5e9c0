//! Drains the durable outbox through lettre: each queued mail is sent as the desk it comes
//! from, transient failures (4xx, connection trouble) are retried with backoff, permanent
//! ones (5xx) are recorded and kept visible. Composing mail is `compose`'s job, queuing is
//! the pipeline's.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Server};
use crate::store::{OutboxItem, Store};
use crate::tls::Security;

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
    #[error("no desk `{0}` in config for a queued mail")]
    UnknownDesk(String),
    #[error("invalid address `{0}` in a queued mail")]
    Address(String),
}

/// How one send attempt ended.
#[derive(Debug)]
pub enum Outcome {
    Sent,
    Transient(String),
    Permanent(String),
}

/// How many `timeout_seconds` one send (connect, TLS, AUTH, envelope, data) may take in all.
pub const SEND_LIMIT_TIMEOUTS: u32 = 3;

/// One authenticated transport per desk (each desk sends as itself).
#[derive(Clone)]
pub struct Mailer {
    transports: Arc<HashMap<String, AsyncSmtpTransport<Tokio1Executor>>>,
    /// lettre's async transport bounds only the connect with its timeout: a server that
    /// stops answering later would hold the outbox forever, so each send is bounded here.
    send_limit: Duration,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("desks", &self.transports.len())
            .finish()
    }
}

impl Mailer {
    pub fn new(config: &Config) -> Result<Mailer, SmtpError> {
        let mut transports = HashMap::new();
        for desk in &config.desks {
            let t = transport(&config.smtp)?
                .credentials(Credentials::new(
                    desk.login.clone(),
                    desk.password.expose().to_string(),
                ))
                .build();
            transports.insert(desk.name.clone(), t);
        }
        Ok(Mailer {
            transports: Arc::new(transports),
            send_limit: config.smtp.timeout.saturating_mul(SEND_LIMIT_TIMEOUTS),
        })
    }

    /// Sends one queued mail; never panics, classifies every failure.
    pub async fn send(&self, item: &OutboxItem) -> Outcome {
        let Some(t) = self.transports.get(&item.desk) else {
            return Outcome::Permanent(SmtpError::UnknownDesk(item.desk.clone()).to_string());
        };
        let envelope = match envelope(item) {
            Ok(e) => e,
            Err(e) => return Outcome::Permanent(e.to_string()),
        };
        match tokio::time::timeout(self.send_limit, t.send_raw(&envelope, &item.bytes)).await {
            Ok(Ok(_)) => Outcome::Sent,
            Ok(Err(e)) if e.is_permanent() => Outcome::Permanent(e.to_string()),
            Ok(Err(e)) => Outcome::Transient(e.to_string()),
            Err(_) => Outcome::Transient(format!(
                "the SMTP server did not complete the send within {} s",
                self.send_limit.as_secs()
            )),
        }
    }

    /// Connects and authenticates as every desk, for `check --connect`.
    pub async fn test_desk(&self, desk: &str) -> Result<(), String> {
        let t = self
            .transports
            .get(desk)
            .ok_or_else(|| format!("no desk {desk}"))?;
        match t.test_connection().await {
            Ok(true) => Ok(()),
            Ok(false) => Err("server did not answer NOOP".into()),
            Err(e) => Err(e.to_string()),
        }
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

fn transport(
    server: &Server,
) -> Result<lettre::transport::smtp::AsyncSmtpTransportBuilder, SmtpError> {
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(server.host.clone())
        .port(server.port)
        .timeout(Some(server.timeout));
    let params = || -> Result<TlsParameters, SmtpError> {
        let mut p = TlsParameters::builder(server.host.clone());
        if let Some(ca) = &server.ca_file {
            let pem = std::fs::read(ca).map_err(|e| SmtpError::CaFile {
                path: ca.display().to_string(),
                source: e,
            })?;
            p = p.add_root_certificate(Certificate::from_pem(&pem)?);
        }
        Ok(p.build_rustls()?)
    };
    b = match server.security {
        Security::Tls => b.tls(Tls::Wrapper(params()?)),
        Security::StartTls => b.tls(Tls::Required(params()?)),
        // Only accepted by config for loopback hosts.
        Security::Plain => b.tls(Tls::None),
    };
    Ok(b)
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
    Sent,
    Failed(String),
    Retry { at: i64, error: String },
}

async fn record(
    store: &Store,
    id: &str,
    r: &Record,
    now: i64,
) -> Result<(), crate::store::StoreError> {
    match r {
        Record::Sent => store.outbox_sent(id, now).await,
        Record::Failed(err) => store.outbox_failed(id, err, now).await,
        Record::Retry { at, error } => store.outbox_retry(id, *at, error).await,
    }
}

/// Sends whatever is due until cancelled; `wake` is notified when the pipeline queues mail.
/// Returns when cancelled, or, with `until_empty`, when nothing is due or waiting for retry
/// within `drain_limit`.
///
/// A result that cannot be written to the database (disk full, database gone) is kept in
/// memory and written again until it is; meanwhile that mail is not sent again.
pub async fn run_outbox(
    store: Store,
    mailer: Mailer,
    wake: Arc<Notify>,
    cancel: CancellationToken,
    until_empty: Option<Duration>,
    metrics: Arc<crate::metrics::Metrics>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let started = tokio::time::Instant::now();
    let mut unrecorded: HashMap<String, Record> = HashMap::new();
    let mut store_failures = 0u32;
    loop {
        let now = crate::daemon::unix_now();
        let mut store_ok = true;
        for (id, r) in std::mem::take(&mut unrecorded) {
            if let Err(e) = record(&store, &id, &r, now).await {
                store_ok = false;
                unrecorded.insert(id, r);
                tracing::debug!(error = %chain(e), "still cannot record send results");
                break;
            }
        }
        let due = if store_ok {
            match store.outbox_due(now, 50).await {
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
            if matches!(outcome, Outcome::Sent) {
                crate::crash::point("sent");
            }
            let now = crate::daemon::unix_now();
            let result = match &outcome {
                Outcome::Sent => {
                    tracing::info!(desk = %item.desk, outbox_id = %item.id, recipients = %item.recipients.join(","), "mail sent");
                    metrics.sent.fetch_add(1, Relaxed);
                    Record::Sent
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
        let pending = store
            .outbox_depth()
            .await
            .unwrap_or(unrecorded.len() as u64);
        metrics.outbox_depth.store(pending, Relaxed);
        if let Some(limit) = until_empty
            && ((pending == 0 && unrecorded.is_empty()) || started.elapsed() >= limit)
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
        tokio::select! {
            () = cancel.cancelled() => return,
            () = wake.notified() => {}
            () = tokio::time::sleep(nap) => {}
        }
    }
}

/// An error with its causes, `outer: inner: innermost`, for log lines.
fn chain(e: impl std::error::Error + Send + Sync + 'static) -> String {
    format!("{:#}", anyhow::Error::new(e))
}
