//! `ticketgate run` as a service, on a real Dovecot and Postfix: it idles and acts on new mail,
//! stops on SIGTERM, reloads its rules on SIGHUP (keeping the old ones when the new are
//! wrong), speaks systemd's notify protocol (READY, WATCHDOG, STATUS, RELOADING, STOPPING),
//! serves /metrics and /health through an IMAP outage, and logs JSON lines naming desk,
//! message and actions.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed expectation is a failed test"
)]

mod faultkit;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use faultkit::{http_get, mail, run_once, sample, spawn_watching, wait_exit, wait_http, wait_log};
use support::{DESKS, Daemon, MailStack, WAIT};

/// The seven desks on `stack`, STARTTLS with the stack's CA, state in `dir`.
fn deployment(stack: &MailStack, dir: &Path, extra_imap: &str) -> PathBuf {
    faultkit::deployment(stack, dir, extra_imap, "", None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_idles_acts_on_new_mail_and_stops_on_sigterm() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = deployment(&stack, dir.path(), "");
    let log = dir.path().join("daemon.log");
    // The watchers are waiting (IDLE) before anything is delivered.
    let mut child = spawn_watching(&config, &log).await;
    let raw = mail(
        "new@example.in",
        "payment.process@gem.test",
        None,
        "Payment not received",
        "idle-1@example.in",
        "no ticket",
        "",
    );
    stack
        .send("new@example.in", &["payment.process@gem.test"], &raw)
        .await;
    let h = stack
        .wait_for("helpdesk", "INBOX", WAIT, "redirect of the new mail", |m| {
            m.len() == 1
        })
        .await;
    assert_eq!(
        h[0].header("In-Reply-To").as_deref(),
        Some("idle-1@example.in")
    );
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let status = wait_exit(&mut child, Duration::from_secs(25));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "clean exit on SIGTERM:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_valid_rules_and_keeps_the_old_ones_otherwise() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = deployment(&stack, dir.path(), "");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/gem.toml");
    let rules = dir.path().join("rules.toml");
    let good = std::fs::read_to_string(&shipped).expect("rules");
    std::fs::write(&rules, &good).expect("write rules");
    let text = std::fs::read_to_string(&config)
        .expect("config")
        .replace(&shipped.display().to_string(), &rules.display().to_string());
    std::fs::write(&config, text).expect("write config");
    let log = dir.path().join("daemon.log");
    let mut child = spawn_watching(&config, &log).await;
    let hup = |child: &Child| {
        assert!(
            Command::new("kill")
                .args(["-HUP", &child.id().to_string()])
                .status()
                .expect("kill")
                .success()
        )
    };

    std::fs::write(
        &rules,
        format!("{good}\n[[rule]]\nname = \"broken\"\nactions = [\"explode\"]\n"),
    )
    .expect("write");
    hup(&child);
    wait_log(&log, "reload refused", 1).await;
    send_ticketless(&stack, "First", "hup-1@example.in").await;
    let filed = stack
        .wait_for(
            "bid.ra",
            "Redirected",
            WAIT,
            "old rules still in force",
            |m| m.len() == 1,
        )
        .await;
    assert!(filed[0].has_flag("$NoTicket"));

    std::fs::write(
        &rules,
        good.replace(
            "\"tag:$NoTicket\", \"tag:$Redirected\"",
            "\"tag:$NeedsTicket\", \"tag:$Redirected\"",
        ),
    )
    .expect("write");
    hup(&child);
    wait_log(&log, "rules reloaded", 1).await;
    send_ticketless(&stack, "Second", "hup-2@example.in").await;
    let filed = stack
        .wait_for("bid.ra", "Redirected", WAIT, "new rules in force", |m| {
            m.len() == 2
        })
        .await;
    let second = filed
        .iter()
        .find(|m| m.subject() == "Second")
        .expect("second");
    assert!(
        second.has_flag("$NeedsTicket") && !second.has_flag("$NoTicket"),
        "{:?}",
        second.flags
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("rules.toml") && text.contains("explode"),
        "the refusal names file and problem:\n{text}"
    );

    // config.toml: a new helpdesk applies at once; a server change waits for a restart.
    let cfg = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        cfg.replace("helpdesk@gem.test", "alice@gem.test")
            .replace("poll_seconds = 1", "poll_seconds = 2"),
    )
    .expect("write config");
    hup(&child);
    wait_log(&log, "config and rules reloaded", 2).await;
    send_ticketless(&stack, "Third", "hup-3@example.in").await;
    let alice = stack
        .wait_for(
            "alice",
            "INBOX",
            WAIT,
            "redirect to the new helpdesk",
            |m| m.len() == 1,
        )
        .await;
    assert_eq!(
        alice[0].header("In-Reply-To").as_deref(),
        Some("hup-3@example.in")
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.lines()
            .any(|l| l.contains("[imap]") && l.contains("only after a restart")),
        "the ignored server change is reported:\n{text}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// A ticketless mail from hup@example.in to bid-ra, through SMTP.
async fn send_ticketless(stack: &MailStack, subject: &str, id: &str) {
    let raw = mail(
        "hup@example.in",
        "bid.ra@gem.test",
        None,
        subject,
        id,
        "no ticket",
        "",
    );
    stack
        .send("hup@example.in", &["bid.ra@gem.test"], &raw)
        .await;
}

/// Reads systemd notify messages the daemon sends to our socket until `want` arrives.
fn expect_notify(sock: &std::os::unix::net::UnixDatagram, want: &str, seen: &mut Vec<String>) {
    expect_notify_line(sock, want, |l| l == want, seen);
}

/// Reads systemd notify messages until one has a line that `ok` accepts; returns that line.
fn expect_notify_line(
    sock: &std::os::unix::net::UnixDatagram,
    what: &str,
    ok: impl Fn(&str) -> bool,
    seen: &mut Vec<String>,
) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    let mut buf = [0u8; 4096];
    while std::time::Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            seen.push(msg.clone());
            if let Some(l) = msg.lines().find(|l| ok(l)) {
                return l.to_string();
            }
        }
    }
    panic!("no {what} from the daemon; got {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_notify_protocol_ready_watchdog_reloading_stopping() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = deployment(&stack, dir.path(), "");
    let path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let log = dir.path().join("daemon.log");
    let file = std::fs::File::create(&log).expect("log");
    // systemd sets WATCHDOG_PID to the service's pid: exec keeps the shell's pid.
    let mut child = Daemon::logging(
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "WATCHDOG_PID=$$ exec '{}' run --config '{}'",
                env!("CARGO_BIN_EXE_ticketgate"),
                config.display()
            ))
            .env("NOTIFY_SOCKET", &path)
            .env("WATCHDOG_USEC", "1000000")
            .env("RUNTIME_DIRECTORY", dir.path())
            .env_remove("TICKETGATE_DATABASE")
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("spawn"),
        &log,
    );
    let mut seen = Vec::new();
    expect_notify(&sock, "READY=1", &mut seen);
    expect_notify(&sock, "WATCHDOG=1", &mut seen);
    // STATUS= is the "Status:" line of `systemctl status`: every desk connected, counts.
    let status = expect_notify_line(
        &sock,
        "STATUS= with all desks connected",
        |l| {
            let all = l
                .strip_prefix("STATUS=")
                .and_then(|r| r.split_once(' '))
                .and_then(|(n, _)| n.split_once('/'))
                .is_some_and(|(up, of)| up == of && up != "0");
            all && l.contains(" desks connected; 0 mails handled, 0 sent")
        },
        &mut seen,
    );
    assert!(status.ends_with("0 waiting in the outbox"), "{status}");
    expect_notify(&sock, "WATCHDOG=1", &mut seen);
    assert!(
        Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .expect("kill")
            .success()
    );
    expect_notify(&sock, "RELOADING=1", &mut seen);
    expect_notify(&sock, "READY=1", &mut seen);
    // What the unit's ExecReload (packaging/reload) waits for; written before READY=1.
    assert_eq!(
        std::fs::read_to_string(dir.path().join("reload-result")).ok(),
        Some("1 ok\n".to_string())
    );
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill")
            .success()
    );
    expect_notify(&sock, "STOPPING=1", &mut seen);
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(25)).and_then(|s| s.code()),
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_show_desks_actions_and_an_imap_outage() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = deployment(&stack, dir.path(), "");
    let port = faultkit::with_metrics(&config);
    let log = dir.path().join("daemon.log");
    let mut child = spawn_watching(&config, &log).await;

    let health = wait_http(port, "/health", "all desks connected", |s, _| s == 200).await;
    assert!(health.contains("desk bid-ra: connected"), "{health}");

    let raw = mail(
        "metrics@example.in",
        "bid.ra@gem.test",
        None,
        "Where is my bid?",
        "metrics-1@example.in",
        "No ticket here.",
        "",
    );
    stack
        .send("metrics@example.in", &["bid.ra@gem.test"], &raw)
        .await;
    stack
        .wait_for("helpdesk", "INBOX", WAIT, "the redirect", |m| m.len() == 1)
        .await;
    let body = wait_http(port, "/metrics", "the redirect counted as sent", |_, b| {
        sample(b, "ticketgate_mail_sent_total") == Some(1.0)
    })
    .await;
    for (name, want) in [
        ("ticketgate_mails_seen_total{desk=\"bid-ra\"}", 1.0),
        ("ticketgate_mails_seen_total{desk=\"payment-process\"}", 0.0),
        (
            "ticketgate_actions_total{desk=\"bid-ra\",kind=\"redirect\"}",
            1.0,
        ),
        (
            "ticketgate_actions_total{desk=\"payment-process\",kind=\"redirect\"}",
            0.0,
        ),
        ("ticketgate_outbox_oldest_age_seconds", 0.0),
        (
            "ticketgate_actions_total{desk=\"bid-ra\",kind=\"file\"}",
            1.0,
        ),
        ("ticketgate_broadcasts_total", 0.0),
        ("ticketgate_outbox_depth", 0.0),
        ("ticketgate_desk_connected{desk=\"bid-ra\"}", 1.0),
        ("ticketgate_outbox_running", 1.0),
    ] {
        assert_eq!(sample(&body, name), Some(want), "{name} in:\n{body}");
    }
    let synced = sample(
        &body,
        "ticketgate_desk_last_sync_timestamp_seconds{desk=\"bid-ra\"}",
    )
    .expect("last sync");
    assert!(synced > 1.7e9, "last sync is a Unix time: {synced}");

    // Dovecot goes away: every desk shows as disconnected and the health check fails.
    let pid = std::fs::read_to_string(stack.dir.join("run/dovecot/master.pid")).expect("pid");
    assert!(
        Command::new("kill")
            .arg(pid.trim())
            .status()
            .expect("kill")
            .success()
    );
    let down = wait_http(port, "/health", "desks down", |s, b| {
        s == 503 && b.matches("NOT CONNECTED").count() == DESKS.len()
    })
    .await;
    assert!(down.contains("desk bid-ra: NOT CONNECTED"), "{down}");
    let body = wait_http(port, "/metrics", "disconnected desks", |_, b| {
        sample(b, "ticketgate_desk_connected{desk=\"bid-ra\"}") == Some(0.0)
    })
    .await;
    assert!(
        sample(&body, "ticketgate_errors_total{desk=\"bid-ra\"}").unwrap_or(0.0) >= 1.0,
        "{body}"
    );
    stack.restart_imap();
    wait_http(port, "/health", "desks back after the outage", |s, _| {
        s == 200
    })
    .await;
    let (status, _) = http_get(port, "/nothing").await;
    assert_eq!(status, 404);
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_name_desk_message_and_actions_on_every_decision() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = deployment(&stack, dir.path(), "");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str("\n[logging]\nformat = \"json\"\n");
    std::fs::write(&config, text).expect("write config");
    for (i, subject) in ["Ticket No: 2024-1234567 pending", "No ticket at all"]
        .iter()
        .enumerate()
    {
        let raw = mail(
            "json@example.in",
            "payment.process@gem.test",
            None,
            subject,
            &format!("json-{i}@example.in"),
            "Please help.",
            "",
        );
        stack.append("payment.process", "INBOX", &raw).await;
    }
    let log = run_once(&config);
    let mut decisions = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        if v["message"] == "decided" {
            decisions.push(v);
        }
    }
    assert_eq!(decisions.len(), 2, "{log}");
    for d in &decisions {
        assert_eq!(d["desk"], "payment-process", "{d}");
        assert_eq!(d["level"], "INFO", "{d}");
        assert!(
            d["actions"].as_str().is_some_and(|a| a.contains("tag:")),
            "{d}"
        );
    }
    let by_id = |id: &str| {
        decisions
            .iter()
            .find(|d| d["message_id"] == id)
            .unwrap_or_else(|| panic!("no decision for {id}: {decisions:?}"))
    };
    assert_eq!(by_id("json-0@example.in")["ticket"], "2024-1234567");
    assert!(
        by_id("json-1@example.in")["actions"]
            .as_str()
            .is_some_and(|a| a.contains("redirect:helpdesk"))
    );
}
