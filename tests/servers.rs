//! `ticketgate run` on servers unlike the default Dovecot, for real: without IDLE, MOVE and
//! UIDPLUS; over implicit TLS verified against the configured CA; with a personal namespace
//! prefix and `.` separator (Courier, Cyrus); and with IDLE keepalives every second, which
//! must not postpone the desk's refresh.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed expectation is a failed test"
)]

mod faultkit;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use faultkit::{
    http_get, mail, run_once, sample, spawn_watching, ticketgate, wait_exit, wait_http,
};
use support::{DESKS, MailStack, StackOptions, WAIT};

/// The seven desks on `stack`, STARTTLS with the stack's CA, state in `dir`.
fn deployment(stack: &MailStack, dir: &Path, extra_imap: &str) -> PathBuf {
    faultkit::deployment(stack, dir, extra_imap, "", None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_without_idle_move_and_uidplus() {
    let caps = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE SORT SORT=DISPLAY THREAD=REFERENCES THREAD=REFS \
                THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN NAMESPACE LIST-EXTENDED \
                I18NLEVEL=1 ESEARCH ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS BINARY SNIPPET=FUZZY \
                PREVIEW=FUZZY PREVIEW STATUS=SIZE SAVEDATE LITERAL+ NOTIFY SPECIAL-USE";
    let stack = MailStack::start_with(StackOptions {
        imap_capability: Some(caps.to_string()),
        ..StackOptions::default()
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let config = deployment(&stack, dir.path(), "");
    let log = dir.path().join("daemon.log");
    let mut child = spawn_watching(&config, &log).await;
    let raw = mail(
        "poll@example.in",
        "order.process@gem.test",
        None,
        "Order stuck",
        "poll-1@example.in",
        "no ticket",
        "",
    );
    stack
        .send("poll@example.in", &["order.process@gem.test"], &raw)
        .await;
    stack
        .wait_for(
            "helpdesk",
            "INBOX",
            WAIT,
            "redirect found by polling",
            |m| m.len() == 1,
        )
        .await;
    let filed = stack
        .wait_for("order.process", "Redirected", WAIT, "filed by COPY", |m| {
            m.len() == 1
        })
        .await;
    assert!(filed[0].has_flag("$NoTicket"));
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !text.contains("UID MOVE"),
        "MOVE must not be sent when not advertised"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_is_verified_against_the_configured_ca() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = deployment(&stack, dir.path(), "");
    let text = std::fs::read_to_string(&config)
        .expect("config")
        .replace(
            &format!("port = {}\nsecurity = \"starttls\"", stack.imap_port),
            &format!("port = {}\nsecurity = \"tls\"", stack.imaps_port),
        )
        .replace(
            &format!("port = {}\nsecurity = \"starttls\"", stack.smtp_port),
            &format!("port = {}\nsecurity = \"tls\"", stack.smtps_port),
        );
    assert!(text.matches("security = \"tls\"").count() == 2, "{text}");
    std::fs::write(&config, &text).expect("write");
    let out = support::output(&mut ticketgate(&config, &["check", "--connect"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("imap ok").count(), DESKS.len(), "{stdout}");
    assert_eq!(stdout.matches("smtp ok").count(), DESKS.len(), "{stdout}");
    let raw = mail(
        "tls@example.in",
        "bid.ra@gem.test",
        None,
        "Help",
        "tls-1@example.in",
        "no ticket",
        "",
    );
    stack.append("bid.ra", "INBOX", &raw).await;
    run_once(&config);
    let h = stack
        .wait_for("helpdesk", "INBOX", WAIT, "redirect sent over SMTPS", |m| {
            m.len() == 1
        })
        .await;
    assert_eq!(
        h[0].header("In-Reply-To").as_deref(),
        Some("tls-1@example.in")
    );

    // Without the stack's CA the certificate is not trusted: nothing is sent, check says why.
    std::fs::write(
        &config,
        text.replace(&format!("ca_file = \"{}\"\n", stack.ca_file.display()), ""),
    )
    .expect("write");
    let out = support::output(&mut ticketgate(&config, &["check", "--connect"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(69), "{stdout}");
    assert!(
        stdout.contains("imap FAILED") && stdout.contains("invalid peer certificate"),
        "{stdout}"
    );
}

/// Issue #15: a server whose personal namespace has a prefix and `.` as separator (Courier
/// and Cyrus style, here Dovecot configured so): folders are made under `INBOX.`, where
/// officers' clients look, subscribed, and mail is filed and tagged there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folders_go_under_the_personal_namespace_prefix() {
    let stack = MailStack::start_with(StackOptions {
        namespace: Some(("INBOX.".into(), ".".into())),
        ..StackOptions::default()
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let config = deployment(&stack, dir.path(), "");
    let raw = mail(
        "ns@example.in",
        "bid.ra@gem.test",
        None,
        "Where is my bid?",
        "ns-1@example.in",
        "No ticket here.",
        "",
    );
    stack
        .send("ns@example.in", &["bid.ra@gem.test"], &raw)
        .await;
    stack
        .wait_for("bid.ra", "INBOX", WAIT, "the mail delivered", |m| {
            m.len() == 1
        })
        .await;
    run_once(&config);
    let filed = stack.mailbox("bid.ra", "INBOX.Redirected").await;
    assert_eq!(filed.len(), 1, "filed under INBOX.");
    assert!(filed[0].has_flag("$NoTicket") && filed[0].has_flag("$Redirected"));
    assert!(stack.mailbox("bid.ra", "INBOX").await.is_empty());
    let subscribed = faultkit::subscribed(&stack, "bid.ra").await;
    assert!(
        subscribed.iter().any(|n| n == "INBOX.Redirected"),
        "LSUB: {subscribed:?}"
    );
    stack
        .wait_for("helpdesk", "INBOX", WAIT, "the redirect", |m| m.len() == 1)
        .await;
}

/// Issue #13: Dovecot's IDLE keepalive (`* OK Still here`, here every second) must not
/// postpone the refresh. The refresh re-searches the mailbox (mail that arrived while another
/// folder was selected is found then), which moves the desk's last sync in /metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_refreshes_on_time_despite_server_keepalives() {
    let stack = MailStack::start_with(StackOptions {
        idle_notify: Some("1 secs".into()),
        ..StackOptions::default()
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let config = deployment(&stack, dir.path(), "idle_refresh_minutes = 1");
    let port = faultkit::with_metrics(&config);
    let log = dir.path().join("daemon.log");
    let mut child = spawn_watching(&config, &log).await;
    let last_sync = |b: &str| {
        sample(
            b,
            "ticketgate_desk_last_sync_timestamp_seconds{desk=\"bid-ra\"}",
        )
        .unwrap_or(0.0)
    };
    let first = last_sync(
        &wait_http(port, "/metrics", "the first search", |_, b| {
            last_sync(b) > 0.0
        })
        .await,
    );
    let started = std::time::Instant::now();
    // One refresh period (60 s) plus the round trip; a refresh postponed by every keepalive
    // would never come.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let later = loop {
        let (_, body) = http_get(port, "/metrics").await;
        if last_sync(&body) > first {
            break last_sync(&body);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no IDLE refresh within 90 s (idle_refresh_minutes = 1, keepalive every second)"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let (status, health) = http_get(port, "/health").await;
    assert_eq!(status, 200, "{health}");
    println!(
        "IDLE refreshed after {:.0} s (last sync {first} -> {later})",
        started.elapsed().as_secs_f64()
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = wait_exit(&mut child, Duration::from_secs(25));
}
