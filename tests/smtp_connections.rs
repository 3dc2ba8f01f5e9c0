//! How the outbox uses SMTP connections, on a real Postfix (Postfix's own log counts the
//! connections): the redirects of one desk travel over one kept-open connection (with
//! `[smtp] connections = 1`; over at most N with N), each ended with QUIT when the run
//! ends, and a connection the server drops between two mails is replaced without losing or
//! repeating a mail. What is sent and how it looks is `redirects.rs`'s; send failures are `faults.rs`'s.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed expectation is a failed test"
)]

mod faultkit;
mod support;

use faultkit::{deployment, mail, redirects, run_once};
use support::{MailStack, WAIT};
use ticketgate::outbox::Outcome;
use ticketgate::store::OutboxItem;

/// Postfix's log lines so far that contain `needle`.
fn postfix_lines(stack: &MailStack, needle: &str) -> usize {
    std::fs::read_to_string(stack.dir.join("log/postfix.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// The smtpd processes (their pids) that took mail from `login`, in order of first use.
fn smtpd_pids(stack: &MailStack, login: &str) -> Vec<String> {
    let needle = format!("sasl_username={login}");
    let mut pids = Vec::new();
    let log = std::fs::read_to_string(stack.dir.join("log/postfix.log")).unwrap_or_default();
    for line in log.lines().filter(|l| l.contains(&needle)) {
        let pid = line
            .split("postfix/smtpd[")
            .nth(1)
            .and_then(|rest| rest.split(']').next())
            .unwrap_or_default()
            .to_string();
        if !pids.contains(&pid) {
            pids.push(pid);
        }
    }
    pids
}

/// Waits until Postfix's log holds at least `n` lines with `needle` (it is written by
/// another process, a moment after the mail was taken).
async fn wait_postfix_lines(stack: &MailStack, needle: &str, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while postfix_lines(stack, needle) < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Postfix's log never showed {n} lines with `{needle}`"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Queues `N` redirects on desk bid-ra, runs `run --once` with `[smtp] connections =
/// connections`, checks each reached the helpdesk once and went pipelined, and returns how
/// many SMTP connections the desk opened (Postfix's log) and its smtpd processes.
async fn redirects_over(connections: usize) -> (usize, usize, String) {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = deployment(
        &stack,
        dir.path(),
        "",
        &format!("connections = {connections}"),
        None,
    );
    const N: usize = 12;
    for i in 0..N {
        let raw = mail(
            &format!("sender{i}@example.in"),
            "bid.ra@gem.test",
            None,
            "Bid not visible",
            &format!("conn-{i}@example.in"),
            "My bid GEM/2024/B/1234567 is not visible.",
            "",
        );
        stack.append("bid.ra", "INBOX", &raw).await;
    }
    // ": connect from" (not "disconnect from"): one line per SMTP connection accepted.
    let connects_before = postfix_lines(&stack, ": connect from");
    let disconnects_before = postfix_lines(&stack, ": disconnect from");
    let lost_before = postfix_lines(&stack, "lost connection");
    let log = run_once(&config);
    let helpdesk = stack
        .wait_for("helpdesk", "INBOX", WAIT, "the redirects", |m| {
            redirects(m).len() >= N
        })
        .await;
    let redirected = redirects(&helpdesk);
    assert_eq!(redirected.len(), N, "{redirected:?}\n{log}");
    assert!(redirected.values().all(|&n| n == 1), "{redirected:?}");
    // Every mail the desk handed to Postfix (redirects and any advisories), then its
    // connections.
    let sent = log.matches("mail sent").count();
    assert!(sent >= N, "{log}");
    wait_postfix_lines(&stack, "sasl_username=bid.ra", sent).await;
    let connects = postfix_lines(&stack, ": connect from") - connects_before;
    assert_eq!(
        postfix_lines(&stack, "sasl_username=bid.ra"),
        sent,
        "one Postfix queue entry per mail sent"
    );
    // The commands went pipelined, and Postfix took them as such.
    assert_eq!(postfix_lines(&stack, "improper command pipelining"), 0);
    // Each connection ended with QUIT when the run ended, not dropped: Postfix logs
    // `quit=1` in its disconnect line, and no lost connection.
    wait_postfix_lines(&stack, ": disconnect from", disconnects_before + connects).await;
    let log_text = std::fs::read_to_string(stack.dir.join("log/postfix.log")).unwrap_or_default();
    let ended: Vec<&str> = log_text
        .lines()
        .filter(|l| l.contains(": disconnect from"))
        .skip(disconnects_before)
        .collect();
    assert!(
        ended.iter().all(|l| l.contains(" quit=1")),
        "a connection ended without QUIT:\n{}",
        ended.join("\n")
    );
    assert_eq!(postfix_lines(&stack, "lost connection"), lost_before);
    (connects, smtpd_pids(&stack, "bid.ra").len(), log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redirects_of_one_desk_travel_over_one_smtp_connection() {
    let (connects, smtpds, log) = redirects_over(1).await;
    assert_eq!(connects, 1, "12 mails over one SMTP connection\n{log}");
    assert_eq!(smtpds, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_three_connections_a_desk_opens_at_most_three() {
    let (connects, smtpds, log) = redirects_over(3).await;
    // A fetch batch (7 mails) is queued in one transaction, so the outbox reads several
    // at once and sends them side by side: more than one connection, at most three.
    assert!(
        (2..=3).contains(&connects) && smtpds == connects,
        "{connects} connections, {smtpds} smtpd processes for `connections = 3`\n{log}"
    );
}

/// One test mail from desk bid-ra to the helpdesk.
fn item(i: usize) -> OutboxItem {
    OutboxItem {
        id: format!("drop-{i}"),
        desk: "bid-ra".into(),
        envelope_from: "bid.ra@gem.test".into(),
        recipients: vec!["helpdesk@gem.test".into()],
        bytes: format!(
            "From: bid.ra@gem.test\r\nTo: helpdesk@gem.test\r\nSubject: drop {i}\r\n\
             Message-ID: <drop-{i}@gem.test>\r\nDate: Mon, 2 Nov 2026 10:00:00 +0530\r\n\r\nmail {i}\r\n"
        )
        .into_bytes(),
        attempts: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_server_drops_midway_is_replaced_and_every_mail_arrives_once() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = deployment(&stack, dir.path(), "", "", None);
    let config = ticketgate::config::load(&path).expect("config");
    let mailer = ticketgate::smtp::Mailer::new(&config).expect("mailer");
    for i in 0..3 {
        assert_eq!(mailer.send(&item(i)).await, Outcome::Sent, "mail {i}");
    }
    // Delivered and done in Postfix first: a Postfix stopped while its LMTP delivery is in
    // flight delivers that mail again after its restart (its own at-least-once, not ours).
    wait_postfix_lines(&stack, "status=sent", 3).await;
    // Postfix goes away and comes back: the kept connection is dead, unknown to the client.
    stack.stop_smtp();
    stack.start_smtp();
    for i in 3..6 {
        assert_eq!(mailer.send(&item(i)).await, Outcome::Sent, "mail {i}");
    }
    let inbox = stack
        .wait_for("helpdesk", "INBOX", WAIT, "the six mails", |m| m.len() >= 6)
        .await;
    for i in 0..6 {
        let subject = format!("drop {i}");
        let copies = inbox.iter().filter(|m| m.subject() == subject).count();
        assert_eq!(copies, 1, "mail {i} arrived {copies} times");
    }
    assert_eq!(inbox.len(), 6);
    wait_postfix_lines(&stack, "sasl_username=bid.ra", 6).await;
    // One smtpd (one connection) before the restart, a new one after it.
    assert_eq!(smtpd_pids(&stack, "bid.ra").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipient_refused_for_now_among_accepted_ones_fails_the_attempt_without_delivery() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = deployment(&stack, dir.path(), "", "", None);
    faultkit::smtp_faults(&stack, "helpdesk@gem.test 451 4.3.2 try later\n", "");
    let config = ticketgate::config::load(&path).expect("config");
    let mailer = ticketgate::smtp::Mailer::new(&config).expect("mailer");
    let mut two = item(0);
    two.recipients.push("seller.registration@gem.test".into());
    // The server answered DATA with 354 (one recipient took it): the attempt is given up
    // at once, without waiting for the SMTP timeout and without delivering to anyone.
    let started = std::time::Instant::now();
    let outcome = mailer.send(&two).await;
    assert!(
        matches!(&outcome, Outcome::Transient(e) if e.code == Some(451)),
        "{outcome:?}"
    );
    assert!(
        started.elapsed() < config.smtp.server.timeout,
        "{:?}",
        started.elapsed()
    );
    faultkit::smtp_faults(&stack, "", "");
    assert_eq!(mailer.send(&two).await, Outcome::Sent);
    for user in ["helpdesk", "seller.registration"] {
        let inbox = stack
            .wait_for(user, "INBOX", WAIT, "the mail", |m| !m.is_empty())
            .await;
        assert_eq!(inbox.len(), 1, "{user} got the mail once");
    }
}
