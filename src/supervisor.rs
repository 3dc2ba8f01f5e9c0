//! The supervisor: starts one watcher per desk, the outbox task and the metrics endpoint;
//! handles signals (SIGTERM/SIGINT stop, SIGHUP reloads config and rules), systemd's
//! notifications (READY, STATUS=, WATCHDOG) and the shutdown grace period. What a desk's
//! watcher does is `watcher`'s; sending is `outbox`'s.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::unix_now;
use crate::config::Config;
use crate::facts::Directory;
use crate::imap::Endpoint;
use crate::metrics::Metrics;
use crate::outbox::{Drain, Outbox};
use crate::rules::Rules;
use crate::shared::{Policy, Shared};
use crate::smtp::Mailer;
use crate::store::Store;
use crate::watcher;

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
    let ep = Arc::new(Endpoint::from_config(&cfg).context("cannot set up TLS for IMAP")?);
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
    let shared = Arc::new(Shared::new(cfg, store, Policy { rules, dir }, metrics));
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
            if !watcher::watch_desk(shared, ep, desk, token, once).await {
                gave_up.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    desks.close();
    // `[registry.acknowledgements]`: learns tickets from the helpdesk's mailbox, read only
    // (also with --once: the desks' lookups ask it to read).
    if shared
        .registry
        .as_ref()
        .is_some_and(|r| r.acknowledgements().is_some())
    {
        tracker.spawn(crate::acklearn::run(
            Arc::clone(&shared),
            Arc::clone(&ep),
            token.clone(),
        ));
    }
    if !once {
        // The supervisors' digests: each day at their time (queued once per day).
        tracker.spawn(crate::digest::send::run(Arc::clone(&shared), token.clone()));
    }
    let outbox_token = token.child_token();
    if !once {
        let (wake, metrics, store, memory) = (
            Arc::clone(&shared.outbox_wake),
            Arc::clone(&shared.metrics),
            shared.store.clone(),
            shared.memory.clone(),
        );
        let (t, mailer) = (outbox_token.clone(), mailer.clone());
        let lanes = shared.config.smtp.connections;
        // The metrics' flag is the one truth about the outbox task: /health and the
        // watchdog both read it.
        metrics.outbox_alive.store(true, Ordering::Relaxed);
        tracker.spawn(async move {
            Outbox::new(store, mailer, wake, Arc::clone(&metrics), memory)
                .with_lanes(lanes)
                .run(t, None)
                .await;
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
        let desks_done_for_outbox = desks_done.clone();
        let closing = mailer.clone();
        let outbox = Outbox::new(
            shared.store.clone(),
            mailer,
            Arc::clone(&shared.outbox_wake),
            Arc::clone(&shared.metrics),
            shared.memory.clone(),
        )
        .with_lanes(shared.config.smtp.connections);
        let outbox = tokio::spawn(async move {
            outbox
                .run(
                    outbox_token,
                    Some(Drain {
                        after: desks_done_for_outbox,
                        limit: Duration::from_secs(60),
                    }),
                )
                .await;
        });
        desks.wait().await;
        desks_done.cancel();
        if let Err(e) = outbox.await {
            tracing::error!(error = %e, "the outbox task failed");
        }
        closing.close().await;
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
        // The outbox has stopped: its kept-open SMTP connections end with QUIT.
        mailer.close().await;
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
    if shared.reload_refusal().is_some() {
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
            crate::logging::set_level(&merged.logging.level);
            let dir = Directory::new(&merged, &rules);
            tracing::info!(
                rules = rules.rules.len(),
                helpdesk = %merged.helpdesk,
                level = %merged.logging.level,
                "config and rules reloaded"
            );
            shared.set_policy(Policy { rules, dir });
            shared.metrics.reloads_ok.fetch_add(1, Ordering::Relaxed);
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
            shared.refuse_reload(
                problems
                    .first()
                    .map(|first| format!("{first} ({} problem(s))", problems.len()))
                    .unwrap_or_default(),
            );
            shared
                .metrics
                .reloads_failed
                .fetch_add(1, Ordering::Relaxed);
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
    let line = match shared.reload_refusal() {
        Some(why) => format!("{n} refused: {why}\n"),
        None => format!("{n} ok\n"),
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
