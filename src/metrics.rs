//! Counters and gauges the daemon keeps about itself, their Prometheus text rendering, and
//! the small loopback HTTP endpoint that serves them (`/metrics`) with a health page
//! (`/health`). What is counted is decided where it happens (`pipeline`, `smtp`, `daemon`);
//! this module only holds the numbers and shows them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The action kinds counted in `ticketgate_actions_total` (see `Action::kind`).
pub const ACTION_KINDS: [&str; 8] = [
    "redirect", "forward", "reply", "tag", "file", "seen", "record", "clock",
];

/// What one desk watcher reports about itself.
#[derive(Debug, Default)]
pub struct DeskGauges {
    /// Mails decided (not counting those found already done after a restart).
    pub seen: AtomicU64,
    /// Sessions that failed (connection, login, a command refused); each is followed by a
    /// reconnect after backoff.
    pub errors: AtomicU64,
    /// Logged in with the mailbox selected.
    pub connected: AtomicBool,
    /// Unix time of the last completed catch-up (everything in the mailbox handled); 0: never.
    pub last_sync: AtomicI64,
    /// Actions decided at this desk, by kind (index in [`ACTION_KINDS`]).
    pub actions: [AtomicU64; ACTION_KINDS.len()],
    /// Desk clocks running (issue #17), as of the desk's last review of them.
    pub clocks_open: AtomicU64,
    /// Of those, the ones past their limit (their mail tagged `$Overdue`).
    pub clocks_overdue: AtomicU64,
}

/// Every number the daemon exposes. Shared by all tasks; updates are relaxed atomics.
#[derive(Debug, Default)]
pub struct Metrics {
    desks: BTreeMap<String, DeskGauges>,
    /// Unix time the oldest mail waiting in the outbox was queued; 0: none waits.
    pub outbox_oldest: AtomicI64,
    pub broadcasts: AtomicU64,
    pub set_aside: AtomicU64,
    /// Mails found decided after a restart whose journaled actions could not be read back
    /// (set aside, tagged like unreadable mail).
    pub journal_unreadable: AtomicU64,
    pub sent: AtomicU64,
    pub send_failures: AtomicU64,
    pub outbox_depth: AtomicU64,
    pub outbox_alive: AtomicBool,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// Unix time config and rules were last loaded successfully (start or reload).
    pub last_reload_ok: AtomicI64,
    /// Whether the last reload was accepted (1 until one is refused).
    pub last_reload_accepted: AtomicBool,
    /// Errors outside any desk (the outbox task, the database).
    pub errors: AtomicU64,
    /// A connected desk whose last completed search is older than this many seconds is
    /// reported stale by `/health` (its refresh period plus the command timeout); 0: never.
    pub stale_after_secs: AtomicU64,
}

impl Metrics {
    /// Metrics for these desks (the set is fixed for the life of the process).
    pub fn new<'a>(desks: impl IntoIterator<Item = &'a str>) -> Metrics {
        Metrics {
            desks: desks
                .into_iter()
                .map(|d| (d.to_string(), DeskGauges::default()))
                .collect(),
            ..Metrics::default()
        }
    }

    /// The gauges of one desk; a desk not configured gets a throwaway set.
    pub fn desk(&self, name: &str) -> &DeskGauges {
        static NONE: std::sync::OnceLock<DeskGauges> = std::sync::OnceLock::new();
        self.desks
            .get(name)
            .unwrap_or_else(|| NONE.get_or_init(DeskGauges::default))
    }

    /// Counts `n` actions of a kind (`Action::kind`) decided at `desk`.
    pub fn count_action(&self, desk: &str, kind: &str, n: u64) {
        if let Some(i) = ACTION_KINDS.iter().position(|k| *k == kind) {
            self.desk(desk).actions[i].fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Actions of a kind decided at all desks.
    pub fn actions(&self, kind: &str) -> u64 {
        ACTION_KINDS.iter().position(|k| *k == kind).map_or(0, |i| {
            self.desks
                .values()
                .map(|g| g.actions[i].load(Ordering::Relaxed))
                .sum()
        })
    }

    /// Desks not connected now, by name.
    pub fn disconnected(&self) -> Vec<&str> {
        self.desks
            .iter()
            .filter(|(_, g)| !g.connected.load(Ordering::Relaxed))
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// The Prometheus text exposition format (version 0.0.4), at Unix time `now` (seconds;
    /// ages are counted to it).
    pub fn render(&self, now: i64) -> String {
        let mut out = String::with_capacity(4096);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let per_desk = |f: &dyn Fn(&DeskGauges) -> String| -> Vec<(String, String)> {
            self.desks
                .iter()
                .map(|(name, g)| (format!("{{desk=\"{}\"}}", escape(name)), f(g)))
                .collect()
        };
        let one = |v: u64| vec![(String::new(), v.to_string())];
        family(
            "ticketgate_mails_seen_total",
            "counter",
            "Mails decided, per desk.",
            &per_desk(&|g| load(&g.seen).to_string()),
        );
        family(
            "ticketgate_actions_total",
            "counter",
            "Actions decided, per desk and kind (a tag or file action counts once per mail).",
            &self
                .desks
                .iter()
                .flat_map(|(name, g)| {
                    ACTION_KINDS.iter().enumerate().map(move |(i, k)| {
                        (
                            format!("{{desk=\"{}\",kind=\"{k}\"}}", escape(name)),
                            load(&g.actions[i]).to_string(),
                        )
                    })
                })
                .collect::<Vec<_>>(),
        );
        family(
            "ticketgate_broadcasts_total",
            "counter",
            "Mails found to be broadcast to many desks (every copy counts).",
            &one(load(&self.broadcasts)),
        );
        family(
            "ticketgate_set_aside_total",
            "counter",
            "Mails that could not be read and were tagged and left in place.",
            &one(load(&self.set_aside)),
        );
        family(
            "ticketgate_journal_unreadable_total",
            "counter",
            "Mails whose journaled actions could not be read back after a restart (set aside).",
            &one(load(&self.journal_unreadable)),
        );
        family(
            "ticketgate_mail_sent_total",
            "counter",
            "Outgoing mails accepted by the SMTP server.",
            &one(load(&self.sent)),
        );
        family(
            "ticketgate_send_failures_total",
            "counter",
            "Outgoing mails refused for good (kept in the outbox as failed).",
            &one(load(&self.send_failures)),
        );
        family(
            "ticketgate_outbox_depth",
            "gauge",
            "Outgoing mails waiting to be sent (including those waiting for a retry).",
            &one(load(&self.outbox_depth)),
        );
        let oldest = self.outbox_oldest.load(Ordering::Relaxed);
        family(
            "ticketgate_outbox_oldest_age_seconds",
            "gauge",
            "Age of the oldest outgoing mail still waiting to be sent; 0 when none waits.",
            &[(
                String::new(),
                if oldest > 0 { (now - oldest).max(0) } else { 0 }.to_string(),
            )],
        );
        family(
            "ticketgate_errors_total",
            "counter",
            "Errors: failed desk sessions per desk, and errors outside any desk (desk=\"\").",
            &per_desk(&|g| load(&g.errors).to_string())
                .into_iter()
                .chain([("{desk=\"\"}".to_string(), load(&self.errors).to_string())])
                .collect::<Vec<_>>(),
        );
        family(
            "ticketgate_desk_connected",
            "gauge",
            "1 while the desk's IMAP session is logged in with its mailbox selected.",
            &per_desk(&|g| u8::from(g.connected.load(Ordering::Relaxed)).to_string()),
        );
        family(
            "ticketgate_desk_last_sync_timestamp_seconds",
            "gauge",
            "Unix time the desk's mailbox was last fully caught up (0: not yet).",
            &per_desk(&|g| g.last_sync.load(Ordering::Relaxed).to_string()),
        );
        family(
            "ticketgate_desk_clocks_open",
            "gauge",
            "Desk clocks running: ticket mail the desk keeps that no officer has answered yet.",
            &per_desk(&|g| load(&g.clocks_open).to_string()),
        );
        family(
            "ticketgate_desk_clocks_overdue",
            "gauge",
            "Desk clocks past [matrix] desk_hours, unanswered (their mail tagged $Overdue).",
            &per_desk(&|g| load(&g.clocks_overdue).to_string()),
        );
        family(
            "ticketgate_outbox_running",
            "gauge",
            "1 while the outbox task runs.",
            &one(u64::from(self.outbox_alive.load(Ordering::Relaxed))),
        );
        family(
            "ticketgate_reloads_total",
            "counter",
            "Rules reloads (SIGHUP), by result.",
            &[
                (
                    "{result=\"ok\"}".to_string(),
                    load(&self.reloads_ok).to_string(),
                ),
                (
                    "{result=\"refused\"}".to_string(),
                    load(&self.reloads_failed).to_string(),
                ),
            ],
        );
        family(
            "ticketgate_config_last_reload_successful",
            "gauge",
            "1 when the last reload (or the start) loaded config and rules, 0 when it was refused.",
            &one(u64::from(self.last_reload_accepted.load(Ordering::Relaxed))),
        );
        family(
            "ticketgate_config_last_reload_success_timestamp_seconds",
            "gauge",
            "Unix time config and rules were last loaded successfully (start or reload).",
            &[(
                String::new(),
                self.last_reload_ok.load(Ordering::Relaxed).to_string(),
            )],
        );
        crate::process::render(&mut out, &crate::process::Process::read());
        out
    }

    /// `/health` at Unix time `now` (seconds): 200 and "ok" when every desk is connected
    /// and searched within its refresh period and the outbox task runs; else 503, the body
    /// naming what is not.
    pub fn health(&self, now: i64) -> (u16, String) {
        let down = self.disconnected();
        let outbox = self.outbox_alive.load(Ordering::Relaxed);
        let stale_after =
            i64::try_from(self.stale_after_secs.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
        let mut stale = 0;
        let mut body = String::new();
        for (name, g) in &self.desks {
            let connected = g.connected.load(Ordering::Relaxed);
            let last = g.last_sync.load(Ordering::Relaxed);
            let state = if !connected {
                "NOT CONNECTED".to_string()
            } else if stale_after > 0 && last > 0 && now - last > stale_after {
                stale += 1;
                format!(
                    "STALE: connected, but no search for {} s (refresh period {} s)",
                    now - last,
                    stale_after
                )
            } else {
                "connected".to_string()
            };
            let _ = writeln!(body, "desk {name}: {state} (last sync {last})");
        }
        let _ = writeln!(
            body,
            "outbox: {} ({} waiting)",
            if outbox { "running" } else { "NOT RUNNING" },
            self.outbox_depth.load(Ordering::Relaxed)
        );
        if down.is_empty() && outbox && stale == 0 {
            (200, format!("ok\n{body}"))
        } else {
            (503, format!("unhealthy\n{body}"))
        }
    }
}

/// Escapes a label value (backslash, double quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// At most this many connections to the metrics endpoint are open at once; further ones
/// wait in the kernel's listen backlog. A flood of idle connections can then neither exhaust
/// the daemon's file descriptors nor delay its mail (issue #13).
pub const MAX_CONNECTIONS: usize = 16;
/// A connection that has not sent its request and read the answer within this time is
/// closed (slowloris).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `/metrics` and `/health` on `addr` until cancelled. Plain HTTP/1.0-style: one
/// request per connection, GET or HEAD only; meant for loopback and a Prometheus scraper.
/// At most [`MAX_CONNECTIONS`] at a time, each for at most 5 s.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, cancel: CancellationToken) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        // A free slot first, then accept: while all slots are busy, new connections stay in
        // the backlog and cost the daemon nothing.
        let slot = tokio::select! {
            () = cancel.cancelled() => return,
            s = Arc::clone(&slots).acquire_owned() => s,
        };
        let Ok(slot) = slot else { return };
        let conn = tokio::select! {
            () = cancel.cancelled() => return,
            c = listener.accept() => c,
        };
        match conn {
            Ok((stream, _)) => {
                let m = Arc::clone(&metrics);
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(CONNECTION_TIMEOUT, answer(stream, &m)).await;
                    drop(slot);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: cannot accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Binds the metrics endpoint; an error names the address.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for metrics on {addr}: {e}"))
}

async fn answer(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() > 8192 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut words = head.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(crate::clock::unix_now()),
        ),
        ("GET" | "HEAD", "/health") => {
            let (s, b) = metrics.health(crate::clock::unix_now());
            (s, "text/plain; charset=utf-8", b)
        }
        ("GET" | "HEAD", _) => (
            404,
            "text/plain",
            "not found: try /metrics or /health\n".into(),
        ),
        _ => (405, "text/plain", "only GET and HEAD\n".into()),
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let mut response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        response.push_str(&body);
    }
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_desk_labels() {
        let m = Metrics::new(["bid-ra", "payment-process"]);
        m.desk("bid-ra").seen.fetch_add(3, Ordering::Relaxed);
        m.desk("bid-ra").connected.store(true, Ordering::Relaxed);
        m.desk("payment-process")
            .errors
            .fetch_add(2, Ordering::Relaxed);
        m.count_action("bid-ra", "redirect", 2);
        m.count_action("bid-ra", "tag", 5);
        m.count_action("bid-ra", "no-such-kind", 9);
        m.outbox_depth.store(4, Ordering::Relaxed);
        assert_eq!(m.actions("redirect"), 2);
        assert!(
            m.render(1_000)
                .lines()
                .any(|l| l == "ticketgate_outbox_oldest_age_seconds 0")
        );
        m.outbox_oldest.store(880, Ordering::Relaxed);
        let text = m.render(1_000);
        for line in [
            "ticketgate_mails_seen_total{desk=\"bid-ra\"} 3",
            "ticketgate_mails_seen_total{desk=\"payment-process\"} 0",
            "ticketgate_actions_total{desk=\"bid-ra\",kind=\"redirect\"} 2",
            "ticketgate_actions_total{desk=\"bid-ra\",kind=\"tag\"} 5",
            "ticketgate_actions_total{desk=\"payment-process\",kind=\"redirect\"} 0",
            "ticketgate_outbox_oldest_age_seconds 120",
            "ticketgate_config_last_reload_successful 0",
            "ticketgate_build_info{version=\"0.1.0\"} 1",
            "ticketgate_outbox_depth 4",
            "ticketgate_errors_total{desk=\"payment-process\"} 2",
            "ticketgate_desk_connected{desk=\"bid-ra\"} 1",
            "ticketgate_desk_connected{desk=\"payment-process\"} 0",
            "# TYPE ticketgate_outbox_depth gauge",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in:\n{text}"
            );
        }
        // Every sample line belongs to a family declared before it.
        let mut declared = std::collections::HashSet::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                declared.insert(rest.split(' ').next().unwrap_or("").to_string());
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap_or("");
                assert!(declared.contains(name), "undeclared sample `{l}`");
            }
        }
    }

    #[test]
    fn health_names_what_is_down() {
        let m = Metrics::new(["bid-ra", "payment-process"]);
        m.desk("bid-ra").connected.store(true, Ordering::Relaxed);
        m.outbox_alive.store(true, Ordering::Relaxed);
        let (status, body) = m.health(0);
        assert_eq!(status, 503);
        assert!(
            body.contains("desk payment-process: NOT CONNECTED"),
            "{body}"
        );
        m.desk("payment-process")
            .connected
            .store(true, Ordering::Relaxed);
        assert_eq!(m.health(0).0, 200);
        m.outbox_alive.store(false, Ordering::Relaxed);
        let (status, body) = m.health(0);
        assert_eq!(status, 503);
        assert!(body.contains("outbox: NOT RUNNING"), "{body}");
    }

    #[test]
    fn a_desk_not_searched_within_its_refresh_period_is_stale() {
        let m = Metrics::new(["bid-ra"]);
        m.desk("bid-ra").connected.store(true, Ordering::Relaxed);
        m.desk("bid-ra").last_sync.store(1_000, Ordering::Relaxed);
        m.outbox_alive.store(true, Ordering::Relaxed);
        m.stale_after_secs.store(660, Ordering::Relaxed);
        assert_eq!(m.health(1_660).0, 200);
        let (status, body) = m.health(1_661);
        assert_eq!(status, 503);
        assert!(
            body.contains("desk bid-ra: STALE: connected, but no search for 661 s"),
            "{body}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
