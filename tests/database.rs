//! The state database in trouble: one written by an earlier release (migrated, and what it
//! remembers is not done again) and one turned read-only while the daemon runs (mail waits,
//! none lost or repeated). A read-only state directory at start and a disk that fills up
//! while the daemon runs are tested in `run.rs` (`Tmpfs`).
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed expectation is a failed test"
)]

mod faultkit;
mod support;

use faultkit::{
    deployment, log_text, mail, redirects, run_once, sh, spawn_watching, stop, ticketgate, wait_log,
};
use support::{MailStack, WAIT};

fn noticket(desk: &str, id: &str) -> Vec<u8> {
    mail(
        "db@example.in",
        &format!("{desk}@gem.test"),
        None,
        &format!("Help {id}"),
        id,
        "no ticket number here",
        "",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_an_earlier_release_is_migrated_and_its_memory_kept() {
    use sqlx::{Connection, Executor};
    let stack = MailStack::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = deployment(&stack, dir.path(), "", "", None);
    // tests/fixtures/db/state-v1.sql: `sqlite3 state.db .dump` of release 0.1.0 (schema 1)
    // after it redirected v1-noticket@example.in and tagged v1-ticket@example.in.
    {
        let url = format!("sqlite://{}/state.db?mode=rwc", dir.path().display());
        let mut c = sqlx::SqliteConnection::connect(&url)
            .await
            .expect("create db");
        c.execute(include_str!("fixtures/db/state-v1.sql"))
            .await
            .expect("load the earlier release's database");
        c.close().await.expect("close");
    }
    // The same mailbox, restored on a new server (new UIDVALIDITY), plus a new mail.
    let old = |id: &str, subject: &str, body: &str| {
        format!(
            "From: old@example.in\r\nTo: bid.ra@gem.test\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\n\
             Date: Mon, 2 Nov 2026 10:00:00 +0530\r\n\r\n{body}\r\n"
        )
        .into_bytes()
    };
    stack
        .append(
            "bid.ra",
            "INBOX",
            &old("v1-noticket@example.in", "Old query", "no ticket"),
        )
        .await;
    stack
        .append(
            "bid.ra",
            "INBOX",
            &old(
                "v1-ticket@example.in",
                "Old escalation",
                "Ticket No: 2025-0000042 open",
            ),
        )
        .await;
    stack
        .append("bid.ra", "INBOX", &noticket("bid.ra", "v2-new@example.in"))
        .await;
    let log = run_once(&config);
    assert!(log.contains("UIDVALIDITY changed"), "{log}");
    let h = stack
        .wait_for("helpdesk", "INBOX", WAIT, "the new mail's redirect", |m| {
            !m.is_empty()
        })
        .await;
    assert_eq!(
        redirects(&h).keys().collect::<Vec<_>>(),
        ["v2-new@example.in"],
        "the earlier release's redirect is remembered, not sent again"
    );
    let filed = stack.mailbox("bid.ra", "Redirected").await;
    assert_eq!(filed.len(), 2);
    assert!(filed.iter().all(|m| m.has_flag("$NoTicket")));
    let inbox = stack.mailbox("bid.ra", "INBOX").await;
    assert!(
        inbox.len() == 1 && inbox[0].has_flag("$Ticket"),
        "{inbox:?}"
    );
    let out = ticketgate(&config, &["report"]).output().expect("report");
    assert!(out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_database_turned_read_only_while_running_delays_mail_and_loses_none() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = deployment(&stack, dir.path(), "", "", None);
    let log = dir.path().join("daemon.log");
    let child = spawn_watching(&config, &log).await;
    // The database files become read-only, even for root and for the files the daemon
    // already has open (the immutable attribute).
    let files = format!("{0}/state.db {0}/state.db-wal", dir.path().display());
    sh(&format!("chattr +i {files}"));
    for i in 0..3 {
        stack
            .append(
                "bid.ra",
                "INBOX",
                &noticket("bid.ra", &format!("ro-run-{i}@example.in")),
            )
            .await;
    }
    wait_log(&log, "desk session failed; reconnecting", 2).await;
    let text = log_text(&log);
    let line = text
        .lines()
        .find(|l| l.contains("desk session failed") && l.contains("desk=bid-ra"))
        .unwrap_or_default();
    assert!(
        line.contains("state database:"),
        "the error says why the database cannot be written: {line}\n{text}"
    );
    assert!(stack.mailbox("bid.ra", "Redirected").await.is_empty());
    assert!(stack.mailbox("helpdesk", "INBOX").await.is_empty());
    sh(&format!("chattr -i {files}"));
    let filed = stack
        .wait_for(
            "bid.ra",
            "Redirected",
            WAIT,
            "every mail once writable",
            |m| m.len() == 3,
        )
        .await;
    assert!(filed.iter().all(|m| m.has_flag("$NoTicket")));
    let h = stack
        .wait_for("helpdesk", "INBOX", WAIT, "three redirects", |m| {
            m.len() >= 3
        })
        .await;
    stop(child);
    let counts = redirects(&h);
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
}
