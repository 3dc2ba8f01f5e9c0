//! The state database in trouble: one written by an earlier release (migrated, and what it
//! remembers is not done again) and one turned read-only while the daemon runs (mail waits,
//! none lost or repeated); a read-only state directory at start, and a disk full at start and
//! one that fills up while the daemon runs, on a small tmpfs (`Tmpfs`): a clear error, and
//! no mail lost or repeated.
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
    let out = support::output(&mut ticketgate(&config, &["report"]));
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

/// A small tmpfs mounted at `path` for the state database (unmounted on drop), so that a
/// test can make the disk full or the directory read-only for real.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, options: &str) -> Tmpfs {
        std::fs::create_dir_all(path).expect("mount point");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(path)
            .status()
            .expect("mount")
            .success();
        assert!(
            ok,
            "cannot mount a tmpfs at {} (needs root)",
            path.display()
        );
        Tmpfs(path.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The deployment with its state database in `state_dir`.
fn deployment_with_state(stack: &MailStack, dir: &Path, state_dir: &Path) -> PathBuf {
    let config = deployment(stack, dir, "", "", None);
    let text = std::fs::read_to_string(&config).expect("config").replace(
        &format!("sqlite://{}/state.db", dir.display()),
        &format!("sqlite://{}/state.db", state_dir.display()),
    );
    std::fs::write(&config, text).expect("write config");
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_state_directory_is_a_clear_error_and_no_mail_is_touched() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let _fs = Tmpfs::mount(&state, "ro,size=1m");
    let config = deployment_with_state(&stack, dir.path(), &state);
    let err = start_refused(&stack, &config, "ro-1@example.in").await;
    assert!(
        err.contains(&state.join("state.db").display().to_string())
            && err.to_lowercase().contains("read-only"),
        "the error names the database and the cause:\n{err}"
    );
    assert!(stack.mailbox("helpdesk", "INBOX").await.is_empty());

    // Writable again: the mail is handled, once.
    assert!(
        Command::new("mount")
            .args(["-o", "remount,rw"])
            .arg(&state)
            .status()
            .expect("remount")
            .success()
    );
    handled_once(&stack, &config, "ro-1@example.in").await;
}

/// Puts a ticketless mail `id` in bid-ra's inbox and runs the daemon once, which must fail
/// to start and leave the mail untouched; returns what it printed.
async fn start_refused(stack: &MailStack, config: &Path, id: &str) -> String {
    let raw = mail(
        "state@example.in",
        "bid.ra@gem.test",
        None,
        "Bid query",
        id,
        "no ticket",
        "",
    );
    stack.append("bid.ra", "INBOX", &raw).await;
    let out = support::output(&mut ticketgate(config, &["run", "--once"]));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "must not start without a usable state directory:\n{err}"
    );
    let inbox = stack.mailbox("bid.ra", "INBOX").await;
    assert!(
        inbox.len() == 1 && inbox[0].flags.iter().all(|f| !f.starts_with('$')),
        "untouched: {inbox:?}"
    );
    err
}

/// Runs the daemon once; mail `id` must then have been redirected exactly once.
async fn handled_once(stack: &MailStack, config: &Path, id: &str) {
    run_once(config);
    let helpdesk = stack
        .wait_for("helpdesk", "INBOX", WAIT, "the redirect", |m| !m.is_empty())
        .await;
    assert_eq!(redirects(&helpdesk).get(id), Some(&1));
}

/// Fills the file system holding `path` to the last byte.
fn fill_disk(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("filler");
    let block = vec![0u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    for size in [4096, 512, 1] {
        while f.write_all(&block[..size]).is_ok() {}
    }
    let _ = f.sync_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_at_start_is_a_clear_error_and_no_mail_is_touched() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let _fs = Tmpfs::mount(&state, "size=1m");
    let filler = state.join("filler");
    fill_disk(&filler);
    let config = deployment_with_state(&stack, dir.path(), &state);
    let err = start_refused(&stack, &config, "full-start@example.in").await;
    assert!(
        err.contains(&state.display().to_string()) && err.contains("No space left on device"),
        "the error names the directory and the cause:\n{err}"
    );
    std::fs::remove_file(&filler).expect("free the disk");
    handled_once(&stack, &config, "full-start@example.in").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_while_running_delays_mail_and_loses_or_repeats_none() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let _fs = Tmpfs::mount(&state, "size=4m");
    let config = deployment_with_state(&stack, dir.path(), &state);
    let log = dir.path().join("daemon.log");
    let ticketless = |i: usize| {
        mail(
            &format!("full{i}@example.in"),
            "bid.ra@gem.test",
            None,
            &format!("Bid query {i}"),
            &format!("full-{i}@example.in"),
            &"Please look into my bid, it has no ticket yet. ".repeat(20),
            "",
        )
    };
    let mut child = spawn_watching(&config, &log).await;
    let filler = state.join("filler");

    // 1. Redirects queued while SMTP is down are sent when the disk is full: the server
    //    accepts one per SMTP connection in use, the outbox cannot record them, and holds
    //    them instead of sending them again.
    const QUEUED: usize = 5;
    stack.stop_smtp();
    for i in 0..QUEUED {
        stack.append("bid.ra", "INBOX", &ticketless(i)).await;
    }
    stack
        .wait_for("bid.ra", "Redirected", WAIT, "decided and queued", |m| {
            m.len() == QUEUED
        })
        .await;
    wait_log(&log, "temporary send failure", 1).await;
    fill_disk(&filler);
    stack.start_smtp();
    wait_log(&log, "holding it until the database takes it", 1).await;

    // 2. New mail cannot be journaled: it waits in the inbox, untouched.
    const LATER: usize = 40;
    for i in QUEUED..QUEUED + LATER {
        stack.append("bid.ra", "INBOX", &ticketless(i)).await;
    }
    // (The outbox's held results name the same cause: wait for the desk's own line.)
    faultkit::wait_log_lines(&log, 1, "the desk's failure", |l| {
        l.contains("desk session failed") && l.contains("database or disk is full")
    })
    .await;
    let inbox = stack.mailbox("bid.ra", "INBOX").await;
    assert!(
        !inbox.is_empty(),
        "some mail must wait while the disk is full"
    );
    assert!(
        inbox.iter().all(|m| !m.has_flag("$NoTicket")),
        "mail waiting in the inbox has not been acted on"
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.lines()
            .any(|l| l.contains("desk session failed") && l.contains("database or disk is full")),
        "the desk's log line names the cause:\n{text}"
    );

    // 3. Space again: everything is handled, and every redirect reached the helpdesk once.
    std::fs::remove_file(&filler).expect("free the disk");
    let all = QUEUED + LATER;
    let filed = stack
        .wait_for(
            "bid.ra",
            "Redirected",
            WAIT,
            "every mail after the disk is freed",
            |m| m.len() == all,
        )
        .await;
    assert!(filed.iter().all(|m| m.has_flag("$NoTicket")));
    let helpdesk = stack
        .wait_for("helpdesk", "INBOX", WAIT, "one redirect per mail", |m| {
            m.len() >= all
        })
        .await;
    let counts = redirects(&helpdesk);
    assert_eq!(counts.len(), all, "{counts:?}");
    assert!(
        counts.values().all(|&n| n == 1),
        "nothing twice: {counts:?}"
    );

    // 4. What the daemon recorded after the disk was freed is on disk, not only in its
    //    connection: after a kill -9, a new run finds every mail done and every redirect
    //    sent, and sends none again.
    let _ = child.kill();
    let _ = child.wait();
    let log = run_once(&config);
    assert!(
        !log.contains("mail sent") && !log.contains(" decided "),
        "a restart after kill -9 redid mail recorded before it:\n{log}"
    );
    let helpdesk = stack.mailbox("helpdesk", "INBOX").await;
    let counts = redirects(&helpdesk);
    assert!(
        counts.len() == all && counts.values().all(|&n| n == 1),
        "nothing twice after the restart: {counts:?}"
    );
}
