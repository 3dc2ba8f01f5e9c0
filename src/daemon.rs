//! The supervisor: one watcher task per desk (connect, catch up, IDLE or poll, reconnect
//! with backoff), the outbox task, signals (SIGTERM/SIGINT stop, SIGHUP reloads rules),
//! systemd notification, and the shared state they use. Decisions are `pipeline`'s.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, Desk, LogFormat, Logging};
use crate::facts::Directory;
use crate::imap::{DeskSession, Endpoint, FetchedMail, ImapError, Wake};
use crate::metrics::Metrics;
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
    /// The last `systemctl reload` was refused (the old rules run): said in systemd's STATUS=.
    reload_refused: std::sync::atomic::AtomicBool,
    /// The first problem of the last refused reload, for `reload-result`.
    last_refusal: std::sync::Mutex<String>,
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

/// Swaps the log filter when config.toml's `[logging] level` changes on reload.
static LOG_FILTER: std::sync::OnceLock<
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>,
> = std::sync::OnceLock::new();

fn log_filter(level: &str) -> tracing_subscriber::EnvFilter {
    use tracing_subscriber::EnvFilter;
    EnvFilter::try_new(format!("ticketgate={level},warn"))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Logging as config.toml says; `RUST_LOG`, when set, wins over `[logging] level`.
pub fn init_logging(l: &Logging) {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, Layer, reload};
    let from_env = EnvFilter::try_from_env("RUST_LOG").ok();
    let fixed = from_env.is_some();
    let (filter, handle) = reload::Layer::new(from_env.unwrap_or_else(|| log_filter(&l.level)));
    let under_systemd =
        std::env::var_os("JOURNAL_STREAM").is_some() || std::env::var_os("INVOCATION_ID").is_some();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false);
    type Filtered = tracing_subscriber::layer::Layered<
        reload::Layer<EnvFilter, tracing_subscriber::Registry>,
        tracing_subscriber::Registry,
    >;
    // Under systemd with `format = "auto"`: records go to the journal's socket with their
    // fields (DESK=, UID=, ACTIONS=, RULES=...), so `journalctl -u ticketgate DESK=bid-ra`
    // selects them. Without a reachable journal socket, one line per event on stderr with a
    // syslog priority prefix.
    let journal = match l.format {
        LogFormat::Auto if std::env::var_os("JOURNAL_STREAM").is_some() => {
            crate::journal::JournalLayer::connect(crate::journal::SOCKET).ok()
        }
        _ => None,
    };
    let output: Box<dyn Layer<Filtered> + Send + Sync> = match (l.format, journal) {
        (LogFormat::Auto, Some(journal)) => journal.boxed(),
        (LogFormat::Json, _) => fmt.json().flatten_event(true).boxed(),
        (LogFormat::Auto, None) if under_systemd => fmt.event_format(Journald).boxed(),
        (LogFormat::Auto | LogFormat::Text, _) => fmt.boxed(),
    };
    if tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
        .is_ok()
        && !fixed
    {
        let _ = LOG_FILTER.set(handle);
    }
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
                        "{}: imap ok: {} has {} mail(s), UIDVALIDITY {}{}",
                        desk.name,
                        desk.mailbox,
                        st.exists,
                        st.uidvalidity,
                        if st.keywords {
                            ""
                        } else {
                            "; the server does not keep keywords ($Ticket, $NoTicket ...): decisions show as folders and \\Flagged only"
                        }
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
    crate::process::mark_start();
    // config.toml's [state] database decides, unless an administrator set the override.
    if std::env::var_os("TICKETGATE_DATABASE").is_some() {
        tracing::warn!(
            database = %crate::store::redact_url(&cfg.database),
            "TICKETGATE_DATABASE is set: it overrides [state] database of config.toml"
        );
    }
    let store = Store::open(&cfg.database).await.with_context(|| {
        format!(
            "cannot open state database {}",
            crate::store::redact_url(&cfg.database)
        )
    })?;
    let mailer = Mailer::new(&cfg).context("cannot set up SMTP")?;
    let ep = Arc::new(endpoint(&cfg)?);
    let dir = Directory::new(&cfg, &rules);
    let metrics = Arc::new(Metrics::new(cfg.desks.iter().map(|d| d.name.as_str())));
    metrics.last_reload_ok.store(unix_now(), Ordering::Relaxed);
    metrics.last_reload_accepted.store(true, Ordering::Relaxed);
    // A desk searches at least once per refresh period (IDLE) or poll interval, each search
    // taking at most the command timeout: later than that, /health calls it stale.
    metrics.stale_after_secs.store(
        (cfg.imap.idle_refresh.max(cfg.imap.poll_interval) + cfg.imap.server.timeout * 2).as_secs(),
        std::sync::atomic::Ordering::Relaxed,
    );
    let metrics_listener = match cfg.metrics {
        Some(addr) if !once => Some(crate::metrics::bind(addr).await?),
        _ => None,
    };
    let shared = Arc::new(Shared {
        config: cfg,
        store,
        policy: RwLock::new(Arc::new(Policy { rules, dir })),
        outbox_wake: Arc::new(Notify::new()),
        recheck: Notify::new(),
        metrics,
        reload_refused: std::sync::atomic::AtomicBool::new(false),
        last_refusal: std::sync::Mutex::new(String::new()),
    });
    let token = CancellationToken::new();
    let tracker = TaskTracker::new();
    spawn_signals(&shared, &token);
    if let Some(listener) = metrics_listener {
        let addr = listener
            .local_addr()
            .map_or_else(|_| "?".to_string(), |a| a.to_string());
        tracing::info!(%addr, "metrics on http://{addr}/metrics, health on /health");
        tracker.spawn(crate::metrics::serve(
            listener,
            Arc::clone(&shared.metrics),
            token.clone(),
        ));
    }

    // Retention: old state leaves the database at start and hourly, by the rules in force.
    let rules_of = Arc::clone(&shared);
    tracker.spawn(crate::store::prune_periodically(
        shared.store.clone(),
        Duration::from_secs(3600),
        move || {
            let policy = rules_of.policy();
            crate::store::Keep {
                sightings_secs: policy.rules.broadcast_window_secs,
                finished_secs: policy.rules.retention_secs,
            }
        },
        token.clone(),
    ));

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
    if !once {
        let (wake, metrics, store) = (
            Arc::clone(&shared.outbox_wake),
            Arc::clone(&shared.metrics),
            shared.store.clone(),
        );
        let (t, mailer) = (outbox_token.clone(), mailer.clone());
        // The metrics' flag is the one truth about the outbox task: /health and the
        // watchdog both read it.
        metrics.outbox_alive.store(true, Ordering::Relaxed);
        tracker.spawn(async move {
            smtp::run_outbox(store, mailer, wake, t, None, Arc::clone(&metrics)).await;
            metrics.outbox_alive.store(false, Ordering::Relaxed);
        });
        spawn_watchdog(&desks, shared.config.desks.len(), &shared.metrics, &token);
        spawn_status(&shared, &token);
    }
    notify(&[sd_notify::NotifyState::Ready]);
    tracing::info!(
        desks = shared.config.desks.len(),
        once,
        "ticketgate started"
    );

    if once {
        // Mail queued while the desks catch up is sent meanwhile; once they are done, the
        // same task drains the outbox (for at most a minute) and ends.
        let desks_done = CancellationToken::new();
        let outbox = tokio::spawn(smtp::run_outbox(
            shared.store.clone(),
            mailer,
            Arc::clone(&shared.outbox_wake),
            outbox_token,
            Some(smtp::Drain {
                after: desks_done.clone(),
                limit: Duration::from_secs(60),
            }),
            Arc::clone(&shared.metrics),
        ));
        desks.wait().await;
        desks_done.cancel();
        if let Err(e) = outbox.await {
            tracing::error!(error = %e, "the outbox task failed");
        }
        tracing::info!(
            seen = shared
                .config
                .desks
                .iter()
                .map(|d| shared.metrics.desk(&d.name).seen.load(Ordering::Relaxed))
                .sum::<u64>(),
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
    metrics: &Arc<Metrics>,
    token: &CancellationToken,
) {
    let mut usec = 0u64;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let period = Duration::from_micros(usec / 2);
    let (desks, metrics, token) = (desks.clone(), Arc::clone(metrics), token.clone());
    tokio::spawn(async move {
        loop {
            let running = desks.len();
            let outbox = metrics.outbox_alive.load(Ordering::Relaxed);
            if running == expected && outbox {
                notify(&[sd_notify::NotifyState::Watchdog]);
            } else {
                tracing::error!(
                    running,
                    expected,
                    outbox,
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

/// systemd's STATUS= (the "Status:" line of `systemctl status ticketgate`), e.g. `7/7 desks
/// connected; 120 mails handled, 31 sent, 0 waiting in the outbox`, and whether the last
/// reload was refused; sent when it changes, checked every 2 seconds.
pub fn status_line(shared: &Shared) -> String {
    let desks = &shared.config.desks;
    let m = &shared.metrics;
    let connected = desks
        .iter()
        .filter(|d| m.desk(&d.name).connected.load(Ordering::Relaxed))
        .count();
    let handled: u64 = desks
        .iter()
        .map(|d| m.desk(&d.name).seen.load(Ordering::Relaxed))
        .sum();
    let mut line = format!(
        "{connected}/{} desks connected; {handled} mails handled, {} sent, {} waiting in the outbox",
        desks.len(),
        m.sent.load(Ordering::Relaxed),
        m.outbox_depth.load(Ordering::Relaxed),
    );
    if shared.reload_refused.load(Ordering::Relaxed) {
        line.push_str("; last reload REFUSED, old rules in force (journalctl -u ticketgate)");
    }
    line
}

fn spawn_status(shared: &Arc<Shared>, token: &CancellationToken) {
    let (shared, token) = (Arc::clone(shared), token.clone());
    tokio::spawn(async move {
        let mut last = String::new();
        loop {
            let now = status_line(&shared);
            if now != last {
                notify(&[sd_notify::NotifyState::Status(&now)]);
                last = now;
            }
            tokio::select! {
                () = token.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(2)) => {}
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

/// SIGHUP: reads config.toml and the rules again and swaps in what can change without
/// reconnecting (the rules, the helpdesk, the rules files, the log level), only if all of it
/// is valid. Changes to servers, desks, the database or the metrics address are reported as
/// needing a restart and otherwise ignored.
fn reload(shared: &Shared) {
    notify(&[sd_notify::NotifyState::Reloading]);
    match load_reloadable(&shared.config) {
        Ok((merged, rules, restart_needed)) => {
            for part in restart_needed {
                tracing::warn!(
                    part,
                    "changed in config.toml; takes effect only after a restart (systemctl restart ticketgate)"
                );
            }
            if let Some(handle) = LOG_FILTER.get() {
                let _ = handle.reload(log_filter(&merged.logging.level));
            }
            let dir = Directory::new(&merged, &rules);
            tracing::info!(
                rules = rules.rules.len(),
                helpdesk = %merged.helpdesk,
                level = %merged.logging.level,
                "config and rules reloaded"
            );
            shared.set_policy(Policy { rules, dir });
            shared.metrics.reloads_ok.fetch_add(1, Ordering::Relaxed);
            shared.reload_refused.store(false, Ordering::Relaxed);
            shared
                .metrics
                .last_reload_ok
                .store(unix_now(), Ordering::Relaxed);
            shared
                .metrics
                .last_reload_accepted
                .store(true, Ordering::Relaxed);
        }
        Err(problems) => {
            for p in &problems {
                tracing::error!(file = %p.file.display(), line = p.line, problem = %p.message, "reload refused; the old config and rules stay in force");
            }
            if let Some(first) = problems.first()
                && let Ok(mut last) = shared.last_refusal.lock()
            {
                *last = format!("{first} ({} problem(s))", problems.len());
            }
            shared
                .metrics
                .reloads_failed
                .fetch_add(1, Ordering::Relaxed);
            shared.reload_refused.store(true, Ordering::Relaxed);
            shared
                .metrics
                .last_reload_accepted
                .store(false, Ordering::Relaxed);
        }
    }
    write_reload_result(shared);
    let status = status_line(shared);
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&status),
    ]);
}

/// Under systemd (`RuntimeDirectory=ticketgate`), `$RUNTIME_DIRECTORY/reload-result` holds
/// `N ok` or `N refused: FILE:LINE:COLUMN: PROBLEM`, N counting reloads since start: the
/// unit's ExecReload (packaging/reload) sends SIGHUP, waits for N to change and fails
/// `systemctl reload` on a refusal. Written to a temporary file and renamed, so a reader
/// never sees half of it.
fn write_reload_result(shared: &Shared) {
    let Some(dir) = std::env::var_os("RUNTIME_DIRECTORY") else {
        return;
    };
    let m = &shared.metrics;
    let n = m.reloads_ok.load(Ordering::Relaxed) + m.reloads_failed.load(Ordering::Relaxed);
    let line = if shared.reload_refused.load(Ordering::Relaxed) {
        let why = shared
            .last_refusal
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        format!("{n} refused: {why}\n")
    } else {
        format!("{n} ok\n")
    };
    let dir = std::path::PathBuf::from(dir);
    let tmp = dir.join("reload-result.tmp");
    if let Err(e) =
        std::fs::write(&tmp, line).and_then(|()| std::fs::rename(&tmp, dir.join("reload-result")))
    {
        tracing::warn!(error = %e, "cannot write the reload result for systemctl reload");
    }
}

/// The running config with config.toml's reloadable parts taken from disk, the rules it
/// names, and the parts that changed but need a restart.
fn load_reloadable(
    running: &Config,
) -> Result<(Config, Rules, Vec<&'static str>), Vec<crate::rules::Problem>> {
    let fresh = crate::config::load(&running.path).map_err(|e| e.0)?;
    let mut restart = Vec::new();
    if fresh.imap != running.imap {
        restart.push("[imap]");
    }
    if fresh.smtp != running.smtp {
        restart.push("[smtp]");
    }
    if fresh.desks != running.desks {
        restart.push("[desk.*]");
    }
    if fresh.database != running.database {
        restart.push("[state]");
    }
    if fresh.metrics != running.metrics {
        restart.push("[metrics]");
    }
    if fresh.logging.format != running.logging.format {
        restart.push("[logging] format");
    }
    let mut merged = running.clone();
    merged.helpdesk = fresh.helpdesk;
    merged.helpdesk_name = fresh.helpdesk_name;
    merged.helpdesk_phone = fresh.helpdesk_phone;
    merged.helpdesk_web = fresh.helpdesk_web;
    merged.rules_files = fresh.rules_files;
    merged.logging.level = fresh.logging.level;
    let rules = crate::rules::load(&merged.rules_files, &merged.deployment()).map_err(|e| e.0)?;
    Ok((merged, rules, restart))
}

/// During a catch-up, mail is decided a batch (`[imap] batch_size`) at a time but filed in
/// groups: each UID STORE and UID MOVE costs the server time in proportion to the
/// mailbox's size, so few large commands beat many small ones. A group is `[imap]
/// file_group` mails (2,000), or a tenth of the mailbox when that is more, so that a
/// catch-up's filing cost grows linearly with the backlog, not with its square. A group
/// holds only UIDs and actions, not mail.
fn file_group(configured: usize, exists: u32) -> usize {
    configured.max(exists as usize / 10)
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
    let mut trouble = Trouble::default();
    loop {
        match session(&shared, &ep, &desk, &cancel, once, &mut trouble).await {
            Ok(()) => {
                shared
                    .metrics
                    .desk(&desk.name)
                    .connected
                    .store(false, Ordering::Relaxed);
                return true;
            }
            Err(e) => {
                trouble.failures += 1;
                trouble.stalled += 1;
                if is_refusal(&e) {
                    trouble.refusals += 1;
                }
                let failures = trouble.failures;
                let gauges = shared.metrics.desk(&desk.name);
                gauges.connected.store(false, Ordering::Relaxed);
                gauges.errors.fetch_add(1, Ordering::Relaxed);
                let delay = reconnect_delay(failures);
                tracing::warn!(desk = %desk.name, error = %format_args!("{e:#}"), retry_in_ms = delay.as_millis() as u64, "desk session failed; reconnecting");
                if once && trouble.stalled >= ONCE_STALLED_SESSIONS {
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

/// A desk's consecutive failed sessions (counted from the last successful SELECT, for the
/// reconnect delay); those in a row that handled no mail at all (`stalled`); how many in a
/// row ended in a server refusal; and, in careful catch-ups, how many times each mail
/// (UIDVALIDITY, UID) was refused.
#[derive(Debug, Default)]
struct Trouble {
    failures: u32,
    stalled: u32,
    refusals: u32,
    refused: HashMap<(u32, u32), u32>,
}

/// `run --once` gives up on a desk after this many failed sessions in a row that handled no
/// mail (a careful catch-up needs up to three in a row).
const ONCE_STALLED_SESSIONS: u32 = 5;

/// After this many sessions in a row ended in a refusal (NO/BAD to a fetch, store or move),
/// the next catch-up goes mail by mail and sets aside each mail the server refuses, so that
/// one mail it will not fetch or file cannot hold up the desk.
const REFUSALS_BEFORE_CAREFUL: u32 = 2;

/// True when the error is the server refusing a command about mail.
fn is_refusal(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<ImapError>()
            .or_else(|| {
                c.downcast_ref::<pipeline::PipelineError>()
                    .and_then(pipeline::PipelineError::imap)
            })
            .is_some_and(ImapError::is_refusal)
    })
}

/// Catch-up mail by mail (after repeated refusals): each mail is fetched, decided and
/// filed on its own. A mail the server refuses ends the session (retried after the usual
/// delay); refused again in a later session, it is journaled as failed with the server's
/// answer and left where it is. Returns the highest UID handled.
async fn careful_catch_up(
    s: &mut DeskSession,
    shared: &Shared,
    desk: &Desk,
    uidvalidity: u32,
    uids: &[u32],
    cancel: &CancellationToken,
    trouble: &mut Trouble,
) -> anyhow::Result<u32> {
    let max_bytes = shared.policy().rules.limits.fetch_limit();
    let mut last = 0;
    for &uid in uids {
        if cancel.is_cancelled() {
            break;
        }
        let handled = async {
            let (mails, _) = fetch_batch(s, desk, &[uid], max_bytes, u64::MAX).await?;
            let plans = pipeline::decide_batch(shared, desk, uidvalidity, mails).await?;
            pipeline::file(s, shared, desk, uidvalidity, &plans, uid).await?;
            anyhow::Ok(())
        }
        .await;
        match handled {
            Ok(()) => trouble.stalled = 0,
            Err(e) if is_refusal(&e) => {
                let times = trouble.refused.entry((uidvalidity, uid)).or_insert(0);
                *times += 1;
                if *times < 2 {
                    tracing::warn!(desk = %desk.name, uid, error = %format_args!("{e:#}"), "the server refused this mail; trying it again after a pause");
                    return Err(e);
                }
                let error = format!("{e:#}");
                tracing::error!(desk = %desk.name, uid, error = %error, "the server keeps refusing this mail: set aside where it is (see `ticketgate report`)");
                shared.metrics.set_aside.fetch_add(1, Ordering::Relaxed);
                let key = crate::store::MailKey {
                    desk: desk.name.clone(),
                    uidvalidity,
                    uid,
                };
                shared.store.fail_mail(&key, &error, unix_now()).await?;
                shared.store.advance(&desk.name, uidvalidity, uid).await?;
                trouble.stalled = 0;
            }
            Err(e) => return Err(e),
        }
        last = uid;
    }
    Ok(last)
}

/// Fetches one batch; returns it with its highest UID.
async fn fetch_batch(
    s: &mut DeskSession,
    desk: &Desk,
    chunk: &[u32],
    max_bytes: u32,
    budget: u64,
) -> Result<(Vec<FetchedMail>, u32), ImapError> {
    let started = std::time::Instant::now();
    let mails = s.fetch(chunk, max_bytes, budget).await?;
    let bytes: u64 = mails
        .iter()
        .filter_map(|m| m.raw.as_ref())
        .map(|r| r.len() as u64)
        .sum();
    tracing::debug!(desk = %desk.name, mails = mails.len(), bytes, fetch_ms = started.elapsed().as_secs_f64() * 1000.0, "batch fetched");
    let highest = mails.last().map_or(0, |m| m.uid);
    Ok((mails, highest))
}

/// One connection's life: returns Ok when cancelled (or caught up, with `once`).
async fn session(
    shared: &Shared,
    ep: &Endpoint,
    desk: &Desk,
    cancel: &CancellationToken,
    once: bool,
    trouble: &mut Trouble,
) -> anyhow::Result<()> {
    let mut s = DeskSession::connect(ep, &desk.login, desk.password.expose()).await?;
    let state = s.select(&desk.mailbox).await?;
    trouble.failures = 0;
    let mut careful = trouble.refusals >= REFUSALS_BEFORE_CAREFUL;
    let gauges = shared.metrics.desk(&desk.name);
    gauges.connected.store(true, Ordering::Relaxed);
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
    if !state.keywords {
        tracing::warn!(desk = %desk.name, mailbox = %desk.mailbox, "the server does not keep keywords (no \\* in PERMANENTFLAGS): mail is filed into folders and \\Flagged, without $Ticket, $NoTicket and the other keywords");
    }
    let max_bytes = shared.policy().rules.limits.fetch_limit();
    let batch = shared.config.imap.batch_size;
    // Without MOVE, filing is COPY + \Deleted + EXPUNGE: a crash before the EXPUNGE copies
    // the group again, so the group stays one batch there.
    let group = if s.capabilities().r#move {
        file_group(shared.config.imap.file_group, state.exists)
    } else {
        batch
    };
    loop {
        // Catch up on everything after the last mail done: fetched and decided a batch at a
        // time, filed (keywords, moves, done, progress) in groups (`file_group`) and when
        // caught up. The durable progress only passes filed mail, so a crash in between
        // redoes the filing of mail already decided (idempotent).
        let mut decided_up_to = last;
        let mut unfiled: Vec<pipeline::Plan> = Vec::new();
        loop {
            let uids = if cancel.is_cancelled() {
                Vec::new()
            } else {
                s.uids_from(decided_up_to.saturating_add(1)).await?
            };
            if careful && !uids.is_empty() {
                tracing::warn!(desk = %desk.name, mails = uids.len(), "the server refused commands repeatedly: handling this catch-up mail by mail");
                let handled = careful_catch_up(
                    &mut s,
                    shared,
                    desk,
                    state.uidvalidity,
                    &uids,
                    cancel,
                    trouble,
                )
                .await?;
                decided_up_to = decided_up_to.max(handled);
                last = decided_up_to;
                careful = false;
                continue;
            }
            // Each batch is decided while the next one is fetched. A batch is at most
            // `batch_size` mails and, by bytes, at most one largest allowed mail (or one
            // mail): `pos` is where the next batch starts.
            let chunk_at = |pos: usize| uids.get(pos..uids.len().min(pos + batch));
            let mut pos = 0;
            // Bodies in memory, fetched and being decided, stay within one largest allowed
            // mail (`max_mail_mb`) and one more mail: the next batch is fetched alongside
            // only with what the current one leaves of that budget (issue #13).
            let budget = u64::from(max_bytes);
            let mut fetched = match chunk_at(pos).filter(|c| !c.is_empty()) {
                Some(chunk) => Some(fetch_batch(&mut s, desk, chunk, max_bytes, budget).await?),
                None => None,
            };
            while let Some((mails, highest)) = fetched.take() {
                pos += mails.len();
                let held: u64 = mails
                    .iter()
                    .filter_map(|m| m.raw.as_ref())
                    .map(|r| r.len() as u64)
                    .sum();
                let room = unfiled.len() + mails.len() < group && !cancel.is_cancelled();
                let alongside = budget.saturating_sub(held);
                let following = chunk_at(pos).filter(|c| !c.is_empty() && room);
                // A large batch is decided first, and the next one fetched after it.
                let deferred = following.filter(|_| alongside < budget / 2);
                let next = following.filter(|_| alongside >= budget / 2);
                let (plans, next) = tokio::join!(
                    pipeline::decide_batch(shared, desk, state.uidvalidity, mails),
                    async {
                        match next {
                            Some(chunk) => fetch_batch(&mut s, desk, chunk, max_bytes, alongside)
                                .await
                                .map(Some),
                            None => Ok(None),
                        }
                    }
                );
                unfiled.extend(plans?);
                decided_up_to = decided_up_to.max(highest);
                fetched = match (next?, deferred) {
                    (Some(n), _) => Some(n),
                    (None, Some(chunk)) => {
                        Some(fetch_batch(&mut s, desk, chunk, max_bytes, budget).await?)
                    }
                    (None, None) => None,
                };
            }
            if decided_up_to > last {
                pipeline::file(
                    &mut s,
                    shared,
                    desk,
                    state.uidvalidity,
                    &unfiled,
                    decided_up_to,
                )
                .await?;
                trouble.stalled = 0;
                unfiled.clear();
                last = decided_up_to;
            }
            if cancel.is_cancelled() {
                let _ = s.logout().await;
                return Ok(());
            }
            if uids.is_empty() {
                // Caught up: refusals before this one no longer count.
                trouble.refusals = 0;
                trouble.refused.clear();
                break;
            }
        }
        pipeline::tag_late_broadcasts(&mut s, shared, desk).await?;
        gauges.last_sync.store(unix_now(), Ordering::Relaxed);
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

/// How `ticketgate report` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// Aligned columns with totals, then the outbox.
    Table,
    /// One line per desk and day, with a header line (day,desk,mails,...).
    Csv,
    /// One JSON object: `days` (the rows), `outbox` (waiting, refused, partly refused).
    Json,
}

/// `ticketgate report`: counts per desk and day (in the rules' time zone) over the last
/// `days` days, and the outbox's state. Opens the database read-only.
pub async fn report(
    cfg: &Config,
    rules: &Rules,
    days: u32,
    format: ReportFormat,
) -> anyhow::Result<String> {
    let store = Store::open_read_only(&cfg.database)
        .await
        .with_context(|| {
            format!(
                "cannot open state database {}",
                crate::store::redact_url(&cfg.database)
            )
        })?;
    let since = unix_now() - i64::from(days) * 86_400;
    let rows = store.report(since, &rules.time_zone).await?;
    // Outgoing mail the SMTP server refused for good is kept, never retried: listed here so
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
    // Sent, but refused for good for some recipients (the row keeps which and why).
    let partly: Vec<_> = outbox
        .iter()
        .filter(|r| r.status == crate::store::OutboxStatus::Sent && r.last_error.is_some())
        .collect();
    match format {
        ReportFormat::Csv => {
            // Desk names are letters, digits, '-', '_' and '.' (config checks it): no field
            // needs quoting.
            let mut out =
                String::from("day,desk,mails,tickets,redirected,broadcast,automatic,errors\n");
            for r in &rows {
                out.push_str(&format!(
                    "{},{},{},{},{},{},{},{}\n",
                    r.day,
                    r.desk,
                    r.mails,
                    r.tickets,
                    r.redirected,
                    r.broadcast,
                    r.automatic,
                    r.errors
                ));
            }
            Ok(out)
        }
        ReportFormat::Json => {
            let refused = |r: &&crate::store::OutboxRecord| {
                serde_json::json!({
                    "desk": r.desk, "mail": r.id, "attempts": r.attempts,
                    "error": r.last_error,
                })
            };
            let value = serde_json::json!({
                "time_zone": rules.time_zone.iana_name().unwrap_or("UTC"),
                "since_days": days,
                "days": rows,
                "outbox": {
                    "waiting": pending,
                    "refused": failed.iter().map(refused).collect::<Vec<_>>(),
                    "partly_refused": partly.iter().map(refused).collect::<Vec<_>>(),
                },
            });
            Ok(serde_json::to_string_pretty(&value)? + "\n")
        }
        ReportFormat::Table => {
            let mut out = crate::store::format_report(&rows);
            out.push_str(&format!(
                "\noutbox: {pending} waiting to be sent, {} refused permanently, {} sent to only some recipients\n",
                failed.len(),
                partly.len()
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
            for r in partly {
                out.push_str(&format!(
                    "  partly refused: desk {} mail {}: {}\n",
                    r.desk,
                    r.id,
                    r.last_error.as_deref().unwrap_or("-")
                ));
            }
            Ok(out)
        }
    }
}
