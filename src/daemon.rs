//! The supervisor: one watcher task per desk (connect, catch up, IDLE or poll, reconnect
//! with backoff), the outbox task, signals (SIGTERM/SIGINT stop, SIGHUP reloads rules),
//! systemd notification, and the shared state they use. Decisions are `pipeline`'s.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, Desk, LogFormat, Logging};
use crate::facts::Directory;
use crate::imap::{DeskSession, Endpoint, Wake};
use crate::pipeline::{self, Policy};
use crate::rules::Rules;
use crate::smtp::{self, Mailer};
use crate::store::Store;

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `YYYY-MM-DD` (UTC) of a Unix time (civil-from-days, H. Hinnant's algorithm).
pub fn utc_day(unix: i64) -> String {
    let z = unix.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Counters for logs and the metrics endpoint.
#[derive(Debug, Default)]
pub struct Metrics {
    pub seen: AtomicU64,
    pub sent: AtomicU64,
    pub send_failures: AtomicU64,
    pub errors: AtomicU64,
    pub outbox_depth: AtomicU64,
    pub tagged: AtomicU64,
    pub filed: AtomicU64,
}

impl Metrics {
    pub fn count_actions(&self, kind: &str, n: usize) {
        let c = match kind {
            "tag" => &self.tagged,
            "file" => &self.filed,
            _ => return,
        };
        c.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// What every task shares.
#[derive(Debug)]
pub struct Shared {
    pub config: Config,
    pub store: Store,
    policy: RwLock<Arc<Policy>>,
    pub outbox_wake: Arc<Notify>,
    /// Wakes every waiting desk watcher: a copy revealed a broadcast that other desks hold.
    pub recheck: Notify,
    pub metrics: Arc<Metrics>,
}

impl Shared {
    /// The rules in force now.
    pub fn policy(&self) -> Arc<Policy> {
        match self.policy.read() {
            Ok(p) => Arc::clone(&p),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn set_policy(&self, p: Policy) {
        let p = Arc::new(p);
        match self.policy.write() {
            Ok(mut g) => *g = p,
            Err(poisoned) => *poisoned.into_inner() = p,
        }
    }
}

pub fn init_logging(l: &Logging) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("RUST_LOG")
        .or_else(|_| EnvFilter::try_new(format!("ticketgate={},warn", l.level)))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let under_systemd =
        std::env::var_os("JOURNAL_STREAM").is_some() || std::env::var_os("INVOCATION_ID").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match l.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Auto if under_systemd => {
            builder.with_ansi(false).event_format(Journald).try_init()
        }
        LogFormat::Auto | LogFormat::Text => builder.with_ansi(false).try_init(),
    };
}

/// One line per event for journald: `<priority>` (sd-daemon(3) prefix, so journalctl shows
/// the right level), no timestamp (the journal has its own), no colours, the fields.
struct Journald;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for Journald
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        write!(writer, "<{priority}>")?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

fn endpoint(cfg: &Config) -> anyhow::Result<Endpoint> {
    let s = &cfg.imap.server;
    let tls =
        crate::tls::client_config(s.ca_file.as_deref()).context("cannot set up TLS for IMAP")?;
    Ok(Endpoint {
        host: s.host.clone(),
        port: s.port,
        security: s.security,
        tls,
        timeout: s.timeout,
    })
}

/// Logs in to every desk over IMAP and SMTP; prints one line per check; returns the failures.
pub async fn check_connect(cfg: &Config) -> usize {
    let mut failures = 0;
    let ep = match endpoint(cfg) {
        Ok(e) => e,
        Err(e) => {
            println!("imap: {e:#}");
            return cfg.desks.len();
        }
    };
    let mailer = Mailer::new(cfg);
    for desk in &cfg.desks {
        match DeskSession::connect(&ep, &desk.login, desk.password.expose()).await {
            Ok(mut s) => match s.select(&desk.mailbox).await {
                Ok(st) => {
                    println!(
                        "{}: imap ok: {} has {} mail(s), UIDVALIDITY {}",
                        desk.name, desk.mailbox, st.exists, st.uidvalidity
                    );
                    let _ = s.logout().await;
                }
                Err(e) => {
                    failures += 1;
                    println!(
                        "{}: imap FAILED: cannot select {}: {e}",
                        desk.name, desk.mailbox
                    );
                }
            },
            Err(e) => {
                failures += 1;
                println!("{}: imap FAILED: {e}", desk.name);
            }
        }
        match &mailer {
            Ok(m) => match m.test_desk(&desk.name).await {
                Ok(()) => println!("{}: smtp ok", desk.name),
                Err(e) => {
                    failures += 1;
                    println!("{}: smtp FAILED: {e}", desk.name);
                }
            },
            Err(e) => {
                failures += 1;
                println!("{}: smtp FAILED: {e}", desk.name);
            }
        }
    }
    failures
}

/// The daemon. With `once`, every desk is caught up, the outbox sent, and it returns.
pub async fn run(cfg: Config, rules: Rules, once: bool) -> anyhow::Result<()> {
    let store = Store::open(&cfg.database)
        .await
        .with_context(|| format!("cannot open state database {}", cfg.database))?;
    let mailer = Mailer::new(&cfg).context("cannot set up SMTP")?;
    let ep = Arc::new(endpoint(&cfg)?);
    let dir = Directory::new(&cfg, &rules);
    let shared = Arc::new(Shared {
        config: cfg,
        store,
        policy: RwLock::new(Arc::new(Policy { rules, dir })),
        outbox_wake: Arc::new(Notify::new()),
        recheck: Notify::new(),
        metrics: Arc::new(Metrics::default()),
    });
    let token = CancellationToken::new();
    let tracker = TaskTracker::new();
    spawn_signals(&shared, &token);

    let desks = TaskTracker::new();
    let gave_up = Arc::new(AtomicU64::new(0));
    for desk in shared.config.desks.clone() {
        let (shared, ep, token, gave_up) = (
            Arc::clone(&shared),
            Arc::clone(&ep),
            token.child_token(),
            Arc::clone(&gave_up),
        );
        desks.spawn(async move {
            if !watch_desk(shared, ep, desk, token, once).await {
                gave_up.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    desks.close();
    let outbox_token = token.child_token();
    let drain = once.then_some(Duration::from_secs(60));
    let outbox_alive = Arc::new(std::sync::atomic::AtomicBool::new(!once));
    if !once {
        let s = Arc::clone(&shared);
        let (wake, metrics, store) = (
            Arc::clone(&s.outbox_wake),
            Arc::clone(&s.metrics),
            s.store.clone(),
        );
        let (t, alive, mailer) = (
            outbox_token.clone(),
            Arc::clone(&outbox_alive),
            mailer.clone(),
        );
        tracker.spawn(async move {
            smtp::run_outbox(store, mailer, wake, t, None, metrics).await;
            alive.store(false, Ordering::Relaxed);
        });
        spawn_watchdog(&desks, shared.config.desks.len(), &outbox_alive, &token);
    }
    notify(&[sd_notify::NotifyState::Ready]);
    tracing::info!(
        desks = shared.config.desks.len(),
        once,
        "ticketgate started"
    );

    if once {
        desks.wait().await;
        smtp::run_outbox(
            shared.store.clone(),
            mailer,
            Arc::clone(&shared.outbox_wake),
            outbox_token,
            drain,
            Arc::clone(&shared.metrics),
        )
        .await;
        tracing::info!(
            seen = shared.metrics.seen.load(Ordering::Relaxed),
            sent = shared.metrics.sent.load(Ordering::Relaxed),
            "exiting (--once)"
        );
        let failed = gave_up.load(Ordering::Relaxed);
        if failed > 0 {
            anyhow::bail!("{failed} desk(s) could not be handled; see the log");
        }
        return Ok(());
    }
    token.cancelled().await;
    notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("stopping: finishing the current step of every desk");
    tracker.close();
    let grace = Duration::from_secs(20);
    if tokio::time::timeout(grace, async {
        desks.wait().await;
        tracker.wait().await;
    })
    .await
    .is_err()
    {
        tracing::warn!(
            "some tasks did not stop within {grace:?}; exiting anyway (the journal makes this safe)"
        );
    }
    tracing::info!("stopped");
    Ok(())
}

/// Pings systemd's watchdog (WatchdogSec=) at half its interval, but only while every desk
/// watcher and the outbox task are running: a dead task makes systemd restart the service.
fn spawn_watchdog(
    desks: &TaskTracker,
    expected: usize,
    outbox_alive: &Arc<std::sync::atomic::AtomicBool>,
    token: &CancellationToken,
) {
    let mut usec = 0u64;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let period = Duration::from_micros(usec / 2);
    let (desks, outbox_alive, token) = (desks.clone(), Arc::clone(outbox_alive), token.clone());
    tokio::spawn(async move {
        loop {
            let running = desks.len();
            if running == expected && outbox_alive.load(Ordering::Relaxed) {
                notify(&[sd_notify::NotifyState::Watchdog]);
            } else {
                tracing::error!(
                    running,
                    expected,
                    outbox = outbox_alive.load(Ordering::Relaxed),
                    "a task has stopped; not pinging the watchdog"
                );
            }
            tokio::select! {
                () = token.cancelled() => return,
                () = tokio::time::sleep(period) => {}
            }
        }
    });
}

fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::debug!(error = %e, "cannot notify systemd");
    }
}

fn spawn_signals(shared: &Arc<Shared>, token: &CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (shared, token) = (Arc::clone(shared), token.clone());
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => { token.cancel(); return; }
                _ = int.recv() => { token.cancel(); return; }
                _ = hup.recv() => reload(&shared),
            }
        }
    });
}

/// Recompiles the rules; swaps them in only if they are valid.
fn reload(shared: &Shared) {
    notify(&[sd_notify::NotifyState::Reloading]);
    let cfg = &shared.config;
    match crate::rules::load(&cfg.rules_files, &cfg.deployment()) {
        Ok(rules) => {
            let dir = Directory::new(cfg, &rules);
            tracing::info!(rules = rules.rules.len(), "rules reloaded");
            shared.set_policy(Policy { rules, dir });
        }
        Err(e) => {
            for p in &e.0 {
                tracing::error!(file = %p.file.display(), line = p.line, problem = %p.message, "rules reload refused; the old rules stay in force");
            }
        }
    }
    notify(&[sd_notify::NotifyState::Ready]);
}

/// Reconnect delay after `failures` consecutive failures: 1 s doubling to 5 min, ±25 % jitter.
fn reconnect_delay(failures: u32) -> Duration {
    let base = Duration::from_secs(1)
        .saturating_mul(2u32.saturating_pow(failures.min(9)))
        .min(Duration::from_secs(300));
    base.mul_f64(0.75 + fastrand::f64() * 0.5)
}

/// Watches one desk until cancelled (or caught up, with `once`); false if it gave up.
async fn watch_desk(
    shared: Arc<Shared>,
    ep: Arc<Endpoint>,
    desk: Desk,
    cancel: CancellationToken,
    once: bool,
) -> bool {
    let mut failures = 0u32;
    loop {
        match session(&shared, &ep, &desk, &cancel, once, &mut failures).await {
            Ok(()) => return true,
            Err(e) => {
                failures += 1;
                shared.metrics.errors.fetch_add(1, Ordering::Relaxed);
                let delay = reconnect_delay(failures);
                tracing::warn!(desk = %desk.name, error = %format_args!("{e:#}"), retry_in_ms = delay.as_millis() as u64, "desk session failed; reconnecting");
                if once && failures >= 3 {
                    tracing::error!(desk = %desk.name, "giving up on this desk for this run");
                    return false;
                }
                tokio::select! {
                    () = cancel.cancelled() => return true,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// One connection's life: returns Ok when cancelled (or caught up, with `once`).
async fn session(
    shared: &Shared,
    ep: &Endpoint,
    desk: &Desk,
    cancel: &CancellationToken,
    once: bool,
    failures: &mut u32,
) -> anyhow::Result<()> {
    let mut s = DeskSession::connect(ep, &desk.login, desk.password.expose()).await?;
    let state = s.select(&desk.mailbox).await?;
    *failures = 0;
    let store = &shared.store;
    let mut last = match store.desk_progress(&desk.name).await? {
        Some((v, last)) if v == state.uidvalidity => last,
        Some((v, _)) => {
            tracing::warn!(desk = %desk.name, old = v, new = state.uidvalidity, "UIDVALIDITY changed: the mailbox was recreated; rescanning it (sent mail is not repeated)");
            store.set_uidvalidity(&desk.name, state.uidvalidity).await?;
            0
        }
        None => {
            store.set_uidvalidity(&desk.name, state.uidvalidity).await?;
            0
        }
    };
    tracing::info!(desk = %desk.name, mailbox = %desk.mailbox, exists = state.exists, "watching");
    let max_bytes = u32::try_from(shared.policy().rules.limits.max_mail_bytes).unwrap_or(u32::MAX);
    let batch = shared.config.imap.batch_size;
    loop {
        // Catch up on everything after the last mail done.
        loop {
            if cancel.is_cancelled() {
                let _ = s.logout().await;
                return Ok(());
            }
            let uids = s.uids_from(last.saturating_add(1)).await?;
            if uids.is_empty() {
                break;
            }
            for chunk in uids.chunks(batch) {
                let mails = s.fetch(chunk, max_bytes).await?;
                pipeline::process_batch(&mut s, shared, desk, state.uidvalidity, mails).await?;
                if let Some(max) = chunk.iter().max() {
                    last = last.max(*max);
                    store.advance(&desk.name, state.uidvalidity, last).await?;
                }
                if cancel.is_cancelled() {
                    break;
                }
            }
        }
        pipeline::tag_late_broadcasts(&mut s, shared, desk).await?;
        if once {
            let _ = s.logout().await;
            return Ok(());
        }
        match s
            .wait(
                cancel,
                &shared.recheck,
                shared.config.imap.idle_refresh,
                shared.config.imap.poll_interval,
            )
            .await?
        {
            Wake::Cancelled => {
                let _ = s.logout().await;
                return Ok(());
            }
            Wake::Changed | Wake::Timeout => {}
        }
    }
}

/// `ticketgate report`: counts per desk and day.
pub async fn report(cfg: &Config, days: u32) -> anyhow::Result<String> {
    let store = Store::open(&cfg.database)
        .await
        .with_context(|| format!("cannot open state database {}", cfg.database))?;
    let since = unix_now() - i64::from(days) * 86_400;
    let rows = store.report(since).await?;
    let mut out = crate::store::format_report(&rows);
    // Outgoing mail the SMTP server refused for good is kept, never retried: list it here so
    // that it is not only in the log.
    let outbox = store.outbox_all().await?;
    let pending = outbox
        .iter()
        .filter(|r| r.status == crate::store::OutboxStatus::Pending)
        .count();
    let failed: Vec<_> = outbox
        .iter()
        .filter(|r| r.status == crate::store::OutboxStatus::Failed)
        .collect();
    out.push_str(&format!(
        "\noutbox: {pending} waiting to be sent, {} refused permanently\n",
        failed.len()
    ));
    for r in failed {
        out.push_str(&format!(
            "  refused: desk {} mail {} ({} attempt(s)): {}\n",
            r.desk,
            r.id,
            r.attempts,
            r.last_error.as_deref().unwrap_or("-")
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_day_matches_known_dates() {
        assert_eq!(utc_day(0), "1970-01-01");
        assert_eq!(utc_day(951_782_400), "2000-02-29");
        assert_eq!(utc_day(1_795_305_600), "2026-11-22");
    }
}
