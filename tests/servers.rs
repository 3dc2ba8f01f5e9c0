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

/// The mail of `user`'s folders as an officer's client shows it (folder, Message-ID,
/// keywords and flags), sorted.
async fn desk_view(stack: &MailStack, user: &str) -> Vec<faultkit::MailView> {
    let mut v = faultkit::account(stack, user).await;
    v.sort();
    v
}

/// Dovecot's ids of the IMAP sessions logged in as order.process in `log` (its log).
fn desk_sessions(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("imap-login: Info: Login: user=<order.process>"))
        .filter_map(|l| l.split("session=<").nth(1)?.split('>').next())
        .map(str::to_string)
        .collect()
}

/// Issue #16: a catch-up longer than one group (`file_group = 10` here) files each full
/// group on a second connection to the desk while the first goes on fetching. The same
/// backlog on a server that allows one connection per user is filed on the desk's own
/// connection: both desks end alike, mail by mail, each mail without a ticket redirected
/// once, and Dovecot's log shows the second login and its logout, or its refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_catch_up_files_on_a_second_connection_or_on_the_first_when_refused() {
    let roomy = MailStack::start();
    let strict = MailStack::start_with(StackOptions {
        max_connections_per_user: Some(1),
        ..StackOptions::default()
    });
    let user = "order.process";
    let mut outcome = Vec::new();
    // Each stack with the desk's logins a run makes there: two where the second
    // connection is allowed, one where it is refused.
    for (stack, expected) in [(&roomy, 2), (&strict, 1)] {
        // One session for all the appends (the strict server allows one at a time).
        let mut officer = stack.login(user).await;
        for i in 0..45 {
            // Every third mail has no ticket number (redirected and filed into Redirected),
            // the others keep their ticket's keyword in the INBOX.
            let subject = if i % 3 == 0 {
                format!("Order {i} stuck")
            } else {
                format!("Order {i} stuck, ticket 2024-{:07}", 1_000_000 + i)
            };
            // A sender each: many mails without a ticket from one sender are a flood.
            let raw = mail(
                &format!("buyer{i}@example.in"),
                "order.process@gem.test",
                None,
                &subject,
                &format!("backlog-{i}@example.in"),
                "Please help.",
                "",
            );
            support::bounded("append", officer.append("INBOX", None, None, &raw))
                .await
                .expect("append");
        }
        support::bounded("log out", officer.logout())
            .await
            .expect("logout");
        let dir = tempfile::tempdir().expect("tempdir");
        let config = deployment(stack, dir.path(), "");
        // Dovecot's log of the run alone (the appends and the checks log in too).
        let dovecot_log = stack.dir.join("log/dovecot.log");
        let earlier = std::fs::read_to_string(&dovecot_log).unwrap_or_default();
        let before = earlier.len();
        let log = run_once(&config);
        // Dovecot logs asynchronously: wait for the run's logins, then for each session's
        // end.
        let is_login = |l: &str| l.contains("imap-login: Info: Login: user=<order.process>");
        let logins_before = earlier.lines().filter(|l| is_login(l)).count();
        faultkit::wait_log_lines(
            &dovecot_log,
            logins_before + expected,
            "the run's logins",
            is_login,
        )
        .await;
        let during =
            std::fs::read_to_string(&dovecot_log).unwrap_or_default()[before..].to_string();
        for id in desk_sessions(&during) {
            faultkit::wait_log(&dovecot_log, &format!("<{id}>: Info: Disconnected"), 1).await;
        }
        let dovecot =
            std::fs::read_to_string(&dovecot_log).unwrap_or_default()[before..].to_string();
        // Postfix delivers the redirects after the run has handed them over.
        let helpdesk = stack
            .wait_for("helpdesk", "INBOX", WAIT, "15 redirects delivered", |m| {
                m.len() >= 15
            })
            .await;
        outcome.push((
            desk_view(stack, user).await,
            faultkit::redirects(&helpdesk),
            log,
            dovecot,
        ));
    }
    let (roomy_desk, roomy_redirects, roomy_log, roomy_dovecot) = &outcome[0];
    let (strict_desk, strict_redirects, strict_log, strict_dovecot) = &outcome[1];
    let logins = desk_sessions;
    // Roomy: the desk's own login and one more for the filing, both logged out cleanly.
    let sessions = logins(roomy_dovecot);
    assert_eq!(sessions.len(), 2, "{roomy_dovecot}");
    for id in &sessions {
        assert!(
            roomy_dovecot
                .lines()
                .any(|l| l.contains(&format!("<{id}>: Info: Disconnected: Logged out"))),
            "session {id} was not logged out: {roomy_dovecot}"
        );
    }
    assert!(
        roomy_log.contains("filing on a second connection"),
        "{roomy_log}"
    );
    assert!(!roomy_log.contains("no second connection"), "{roomy_log}");
    // Strict: the second login refused, said once, and everything filed on the first.
    assert_eq!(logins(strict_dovecot).len(), 1, "{strict_dovecot}");
    assert!(
        strict_dovecot.contains("Maximum number of connections from user+IP exceeded"),
        "{strict_dovecot}"
    );
    assert_eq!(
        strict_log
            .matches("no second connection to the desk")
            .count(),
        1,
        "{strict_log}"
    );
    // The refused second login ends no session (the desk's own login may be refused once
    // while Dovecot still counts the test's append session, and is retried).
    assert!(
        strict_log
            .lines()
            .filter(|l| l.contains("desk session failed"))
            .all(|l| l.contains("op=connect")),
        "{strict_log}"
    );
    // Both desks end alike, and as the rules say.
    assert_eq!(roomy_desk, strict_desk);
    let in_folder = |folder: &str, keyword: &str| {
        roomy_desk
            .iter()
            .filter(|(_, f, _, flags)| f == folder && flags.iter().any(|k| k == keyword))
            .count()
    };
    assert_eq!(roomy_desk.len(), 45, "{roomy_desk:?}");
    assert_eq!(in_folder("INBOX", "$Ticket"), 30, "{roomy_desk:?}");
    assert_eq!(in_folder("Redirected", "$NoTicket"), 15, "{roomy_desk:?}");
    // Sent once each: the run's own count (a second copy delivered after the wait above
    // would show here).
    for log in [roomy_log, strict_log] {
        let exit = log
            .lines()
            .find(|l| l.contains("exiting (--once)"))
            .unwrap_or_default();
        assert!(exit.contains("sent=15"), "{exit}");
    }
    assert_eq!(roomy_redirects.len(), 15, "{roomy_redirects:?}");
    assert!(
        roomy_redirects.values().all(|n| *n == 1),
        "{roomy_redirects:?}"
    );
    assert_eq!(roomy_redirects, strict_redirects);
}
