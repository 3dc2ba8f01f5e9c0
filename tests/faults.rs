//! SPEC 5 against injected faults of the real servers (issue #7): SMTP answering 4xx, 5xx
//! or slowly; Dovecot restarted during IDLE and during a backlog; a desk's login refused for
//! a while. What is asserted is what users see: mailbox contents, headers and keywords, the
//! outbox rows in the state database, and the per-desk log lines a sysadmin reads. Also a
//! whole SMTP outage: redirects wait in the outbox and are delivered once it is over.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed expectation is a failed test"
)]

mod faultkit;
mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;

use faultkit::{
    deployment, log_text, mail, outbox, redirects, sh, smtp_faults, spawn, spawn_watching, stop,
    wait_log, wait_log_lines,
};
use support::{MailStack, WAIT};
use ticketgate::store::OutboxStatus;

fn noticket(from: &str, desk: &str, id: &str) -> Vec<u8> {
    mail(
        from,
        &format!("{desk}@gem.test"),
        None,
        &format!("Help needed {id}"),
        id,
        "no ticket number here",
        "",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_4xx_is_retried_from_the_outbox_until_delivered_once() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = deployment(&stack, dir.path(), "", "", None);
    smtp_faults(
        &stack,
        "helpdesk@gem.test 451 4.3.2 helpdesk queue full, try later\n",
        "",
    );
    let log = dir.path().join("daemon.log");
    let child = spawn_watching(&config, &log).await;
    stack
        .append(
            "bid.ra",
            "INBOX",
            &noticket("t4@example.in", "bid.ra", "t4@example.in"),
        )
        .await;
    // The desk's work does not wait for SMTP: filed and tagged while the helpdesk says 451.
    let filed = stack
        .wait_for("bid.ra", "Redirected", WAIT, "filed during the 4xx", |m| {
            m.len() == 1
        })
        .await;
    assert!(filed[0].has_flag("$NoTicket"));
    wait_log(&log, "temporary send failure", 2).await;
    let text = log_text(&log);
    assert!(text.contains("451"), "the 4xx answer is logged:\n{text}");
    assert!(stack.mailbox("helpdesk", "INBOX").await.is_empty());
    smtp_faults(&stack, "", "");
    let h = stack
        .wait_for("helpdesk", "INBOX", WAIT, "the retried redirect", |m| {
            !m.is_empty()
        })
        .await;
    stop(child);
    assert_eq!(
        redirects(&stack.mailbox("helpdesk", "INBOX").await).get("t4@example.in"),
        Some(&1),
        "delivered exactly once: {:?}",
        h.iter().map(|m| m.subject()).collect::<Vec<_>>()
    );
    let rows = outbox(dir.path()).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].status, OutboxStatus::Sent, "{rows:?}");
    assert!(
        rows[0].attempts >= 3,
        "two refused attempts, then success: {rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_5xx_is_recorded_as_failed_visible_and_never_retried() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = deployment(&stack, dir.path(), "", "", None);
    let gone =
        "gone@example.in 550 5.1.1 <gone@example.in>: Recipient address rejected: no such user\n";
    smtp_faults(
        &stack,
        &format!("{gone}helpdesk@gem.test 550 5.7.1 <helpdesk@gem.test>: refused for this test\n"),
        "",
    );
    let log = dir.path().join("daemon.log");
    let child = spawn_watching(&config, &log).await;
    // Every recipient of this redirect (the helpdesk, and `gone` in Cc) is refused for good:
    // kept as failed, never tried again.
    stack
        .append(
            "bid.ra",
            "INBOX",
            &noticket("gone@example.in", "bid.ra", "gone-1@example.in"),
        )
        .await;
    wait_log(&log, "mail refused permanently", 1).await;
    // Only `gone` is refused: the helpdesk still gets the redirect (sent by another desk,
    // so over a new SMTP session that sees the changed table).
    smtp_faults(&stack, gone, "");
    stack
        .append(
            "order.process",
            "INBOX",
            &noticket("gone@example.in", "order.process", "gone-2@example.in"),
        )
        .await;
    wait_log(&log, "refused for good for some recipients", 1).await;
    // A later mail from someone else still goes out: the outbox is not stuck.
    stack
        .append(
            "payment.process",
            "INBOX",
            &noticket("fine@example.in", "payment.process", "fine-1@example.in"),
        )
        .await;
    let h = stack
        .wait_for("helpdesk", "INBOX", WAIT, "the two later redirects", |m| {
            m.len() >= 2
        })
        .await;
    // Let the outbox task run through more rounds than the first retry delay (5 s) would
    // allow: the failed mail must not be tried again.
    wait_log(&log, "mail sent", 1).await;
    let text = log_text(&log);
    stop(child);
    let counts = redirects(&h);
    assert_eq!(counts.get("fine-1@example.in"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("gone-2@example.in"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("gone-1@example.in"), None, "{counts:?}");
    let refused: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("mail refused permanently"))
        .collect();
    assert_eq!(refused.len(), 1, "logged once, never retried:\n{text}");
    assert!(
        refused[0].contains("550") && refused[0].contains("desk=bid-ra"),
        "{}",
        refused[0]
    );
    let partly: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("refused for good for some recipients"))
        .collect();
    assert_eq!(partly.len(), 1, "logged once, never retried:\n{text}");
    assert!(
        partly[0].contains("gone@example.in")
            && partly[0].contains("550")
            && partly[0].contains("desk=order-process"),
        "{}",
        partly[0]
    );
    let rows = outbox(dir.path()).await;
    let failed: Vec<_> = rows
        .iter()
        .filter(|r| r.status == OutboxStatus::Failed)
        .collect();
    assert_eq!(failed.len(), 1, "{rows:?}");
    assert_eq!(failed[0].attempts, 1, "{rows:?}");
    assert!(
        failed[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("550") && e.contains("helpdesk@gem.test")),
        "{rows:?}"
    );
    let sent_except: Vec<_> = rows
        .iter()
        .filter(|r| r.status == OutboxStatus::Sent && r.last_error.is_some())
        .collect();
    assert_eq!(sent_except.len(), 1, "{rows:?}");
    assert!(
        sent_except[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("gone@example.in") && !e.contains("helpdesk")),
        "{rows:?}"
    );
    // `ticketgate report` shows both to the sysadmin.
    let out = support::output(&mut faultkit::ticketgate(&config, &["report"]));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(
        report.contains("1 refused permanently, 1 sent to only some recipients")
            && report
                .lines()
                .any(|l| l.contains("refused: desk bid-ra") && l.contains("550"))
            && report
                .lines()
                .any(|l| l.contains("partly refused: desk order-process")
                    && l.contains("gone@example.in")),
        "{report}"
    );
    // A restart does not retry either.
    let log2 = dir.path().join("daemon2.log");
    let out = faultkit::run_once(&config);
    std::fs::write(&log2, &out).expect("log");
    assert!(!out.contains("mail refused permanently"), "{out}");
    assert!(
        !out.contains("refused for good for some recipients"),
        "{out}"
    );
    let rows = outbox(dir.path()).await;
    assert!(
        rows.iter()
            .any(|r| r.status == OutboxStatus::Failed && r.attempts == 1),
        "{rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_smtp_server_times_out_is_retried_and_delivers_once() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().expect("tempdir");
    // timeout_seconds = 5 (deployment): each step of a send may take 5 s; the server first
    // answers RCPT after 20 s.
    let config = deployment(&stack, dir.path(), "", "", None);
    smtp_faults(&stack, "", "sleep 20");
    let log = dir.path().join("daemon.log");
    let child = spawn_watching(&config, &log).await;
    stack
        .append(
            "bid.ra",
            "INBOX",
            &noticket("slow@example.in", "bid.ra", "slow-1@example.in"),
        )
        .await;
    stack
        .wait_for(
            "bid.ra",
            "Redirected",
            WAIT,
            "filed while SMTP is slow",
            |m| m.len() == 1,
        )
        .await;
    wait_log(&log, "did not complete the send within 5 s", 1).await;
    // Slow but within the limit: delivered, once.
    smtp_faults(&stack, "", "sleep 2");
    stack
        .wait_for(
            "helpdesk",
            "INBOX",
            WAIT,
            "redirect via the slow server",
            |m| !m.is_empty(),
        )
        .await;
    stack
        .wait_for("outside", "INBOX", WAIT, "copy to the sender", |m| {
            !m.is_empty()
        })
        .await;
    stop(child);
    assert_eq!(
        redirects(&stack.mailbox("helpdesk", "INBOX").await).get("slow-1@example.in"),
        Some(&1)
    );
    assert_eq!(
        redirects(&stack.mailbox("outside", "INBOX").await).get("slow-1@example.in"),
        Some(&1)
    );
    let rows = outbox(dir.path()).await;
    assert_eq!(rows[0].status, OutboxStatus::Sent, "{rows:?}");
}

/// `retry_in_ms` values of the reconnect lines of `desk`, in order.
fn reconnects(log: &str, desk: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains("desk session failed; reconnecting"))
        .filter(|l| l.contains(&format!("desk={desk} ")))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("retry_in_ms="))
                .and_then(|v| v.parse().ok())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_restart_during_idle_and_during_a_backlog_loses_and_repeats_nothing() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = deployment(&stack, dir.path(), "", "", None);
    let log = dir.path().join("daemon.log");
    let child = spawn_watching(&config, &log).await;

    // 1. Every desk is in IDLE: the server goes away and comes back.
    stack.restart_imap();
    wait_log(&log, "desk session failed; reconnecting", 7).await;
    for (desk, id) in [("payment.process", "idle-a"), ("order.process", "idle-b")] {
        stack
            .append(desk, "INBOX", &noticket("r@example.in", desk, id))
            .await;
    }
    stack
        .wait_for("helpdesk", "INBOX", WAIT, "both redirects", |m| {
            m.len() == 2
        })
        .await;

    // 2. A backlog is being fetched, decided, tagged and moved when the server restarts.
    let n = 40;
    let padding = "x".repeat(60_000);
    for i in 0..n {
        // One sender per mail: one sender's 40 mails would meet the flood limit.
        let raw = mail(
            &format!("b{i}@example.in"),
            "bid.ra@gem.test",
            None,
            &format!("Backlog {i}"),
            &format!("bl{i}@example.in"),
            &format!("no ticket\r\n{padding}"),
            "",
        );
        stack.append("bid.ra", "INBOX", &raw).await;
    }
    stack
        .wait_for("bid.ra", "Redirected", WAIT, "part of the backlog", |m| {
            !m.is_empty()
        })
        .await;
    stack.restart_imap();
    let filed = stack
        .wait_for("bid.ra", "Redirected", WAIT, "the whole backlog", |m| {
            m.len() == n
        })
        .await;
    let h = stack
        .wait_for("helpdesk", "INBOX", WAIT, "every redirect", |m| {
            m.len() >= n + 2
        })
        .await;
    let text = log_text(&log);
    stop(child);
    let counts = redirects(&h);
    assert_eq!(counts.len(), n + 2, "{counts:?}");
    // Nothing sent twice: one `mail sent` per outbox id. (A copy too many at the helpdesk
    // is the mail system's own: Dovecot also does Postfix's LMTP delivery, and a restart
    // between storing a mail and answering makes Postfix deliver it again.)
    let mut sent: BTreeMap<&str, usize> = BTreeMap::new();
    for line in text.lines().filter(|l| l.contains("mail sent")) {
        if let Some(id) = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("outbox_id="))
        {
            *sent.entry(id).or_default() += 1;
        }
    }
    assert_eq!(sent.len(), n + 2, "{sent:#?}");
    assert!(sent.values().all(|c| *c == 1), "sent twice: {sent:#?}");
    assert!(counts.values().all(|c| *c <= 2), "{counts:?}");
    assert!(filed.iter().all(|m| m.has_flag("$NoTicket")));
    assert!(stack.mailbox("bid.ra", "INBOX").await.is_empty());
    // Each desk logged its own reconnect with a delay.
    for (name, _) in support::DESKS {
        assert!(
            !reconnects(&text, name).is_empty(),
            "no reconnect line for {name}:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_refused_for_a_while_backs_off_and_other_desks_keep_working() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = deployment(&stack, dir.path(), "", "", None);
    let log = dir.path().join("daemon.log");
    let child = spawn_watching(&config, &log).await;
    let users: PathBuf = stack.dir.join("users");
    let good = std::fs::read_to_string(&users).expect("users");
    // bid.ra's password changes on the server and its session is dropped.
    std::fs::write(
        &users,
        good.replace(
            &format!("bid.ra:{{PLAIN}}{}", support::PASSWORD),
            "bid.ra:{PLAIN}changed",
        ),
    )
    .expect("users");
    sh(&format!(
        "doveadm -c {}/dovecot.conf kick bid.ra",
        stack.dir.display()
    ));
    // Mail for bid.ra still arrives (Postfix delivers over LMTP, no login needed).
    stack
        .send(
            "w@example.in",
            &["bid.ra@gem.test"],
            &noticket("w@example.in", "bid.ra", "refused-1@example.in"),
        )
        .await;
    wait_log_lines(&log, 3, "bid-ra reconnect", |l| {
        l.contains("desk session failed; reconnecting") && l.contains("desk=bid-ra ")
    })
    .await;
    // Meanwhile the other desks work.
    stack
        .append(
            "order.process",
            "INBOX",
            &noticket("w@example.in", "order.process", "other-1@example.in"),
        )
        .await;
    let h = stack
        .wait_for(
            "helpdesk",
            "INBOX",
            WAIT,
            "the other desk's redirect",
            |m| !m.is_empty(),
        )
        .await;
    assert_eq!(
        redirects(&h).keys().collect::<Vec<_>>(),
        ["other-1@example.in"]
    );
    // The password is restored: bid.ra catches up on its own.
    std::fs::write(&users, &good).expect("users");
    stack
        .wait_for("helpdesk", "INBOX", WAIT, "bid.ra's redirect", |m| {
            m.len() == 2
        })
        .await;
    let text = log_text(&log);
    stop(child);
    let delays = reconnects(&text, "bid-ra");
    assert!(delays.len() >= 3, "{text}");
    // Exponential backoff with ±25 % jitter: 2 s, 4 s, 8 s... (the ranges never overlap).
    for (i, d) in delays.iter().take(5).enumerate() {
        let base = 2000u64 << i;
        assert!(
            (base * 3 / 4..=base * 5 / 4).contains(d),
            "backoff {i} is {d} ms, not 2^{} s ±25 %: {delays:?}",
            i + 1
        );
    }
    let refused = text
        .lines()
        .find(|l| l.contains("desk=bid-ra ") && l.contains("refused"))
        .unwrap_or_default();
    assert!(
        refused.to_lowercase().contains("login") || refused.contains("AUTHENTICATIONFAILED"),
        "the log says why: {refused}"
    );
    assert!(!text.contains(support::PASSWORD), "no password in the log");
    for (name, _) in support::DESKS.iter().filter(|(n, _)| *n != "bid-ra") {
        assert!(
            reconnects(&text, name).is_empty(),
            "{name} was not disturbed:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_no_bad_and_a_connection_cut_mid_literal_are_survived() {
    use faultkit::proxy::Fault;
    let stack = MailStack::start();
    let scenarios = [
        (
            "bid.ra",
            Fault::Answer {
                command: "UID STORE",
                answer: "NO [SERVERBUG] injected fault",
            },
        ),
        (
            "order.process",
            Fault::Answer {
                command: "UID MOVE",
                answer: "BAD injected fault",
            },
        ),
        (
            "payment.process",
            Fault::Answer {
                command: "BODY.PEEK[]",
                answer: "NO [UNAVAILABLE] injected fault",
            },
        ),
        (
            "upload.product",
            Fault::CutBefore {
                marker: "CUT-MARKER",
            },
        ),
    ];
    for (i, (user, fault)) in scenarios.into_iter().enumerate() {
        let times = 2;
        let dir = tempfile::tempdir().expect("tempdir");
        let (proxy, config) =
            faultkit::deployment_behind_proxy(&stack, dir.path(), fault.clone(), times).await;
        let id = format!("proxy-{i}@example.in");
        let raw = mail(
            "p@example.in",
            &format!("{user}@gem.test"),
            None,
            "Help",
            &id,
            &format!(
                "no ticket\r\n{}\r\nCUT-MARKER and more text",
                "padding ".repeat(500)
            ),
            "",
        );
        stack.append(user, "INBOX", &raw).await;
        let log = dir.path().join("daemon.log");
        let child = faultkit::spawn(&config, &log);
        let filed = stack
            .wait_for(
                user,
                "Redirected",
                WAIT,
                &format!("{fault:?} survived"),
                |m| m.len() == 1,
            )
            .await;
        let h = stack
            .wait_for("helpdesk", "INBOX", WAIT, "the redirect", |m| m.len() > i)
            .await;
        let text = log_text(&log);
        stop(child);
        assert_eq!(
            proxy.fired.load(std::sync::atomic::Ordering::SeqCst),
            times,
            "{fault:?} fired:\n{text}"
        );
        assert!(filed[0].has_flag("$NoTicket"), "{:?}", filed[0].flags);
        assert!(stack.mailbox(user, "INBOX").await.is_empty());
        assert_eq!(
            redirects(&h).get(&id),
            Some(&1),
            "{fault:?}: {:?}",
            redirects(&h)
        );
        let desk = support::DESKS
            .iter()
            .find(|(_, u)| *u == user)
            .map(|(n, _)| *n)
            .unwrap_or_default();
        assert!(
            reconnects(&text, desk).len() >= times,
            "{fault:?}: the desk logged its reconnects:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_the_server_keeps_refusing_to_file_is_set_aside_and_the_desk_goes_on() {
    use faultkit::proxy::Fault;
    let stack = MailStack::start();
    // Two refused group moves (two sessions), then two refused moves, in two sessions, for
    // each of the three mails handled one by one; the fourth mail, later, is filed normally.
    let times = 8;
    let fault = Fault::Answer {
        command: "UID MOVE",
        answer: "NO [NOPERM] injected fault",
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (proxy, config) = faultkit::deployment_behind_proxy(&stack, dir.path(), fault, times).await;
    let mut uids = Vec::new();
    for i in 0..3 {
        let id = format!("refused-{i}@example.in");
        uids.push(
            stack
                .append(
                    "bid.ra",
                    "INBOX",
                    &noticket(&format!("r{i}@example.in"), "bid.ra", &id),
                )
                .await,
        );
    }
    let log = dir.path().join("daemon.log");
    let child = faultkit::spawn(&config, &log);
    wait_log(&log, "set aside where it is", 3).await;
    let id = "after-refusals@example.in";
    stack
        .append("bid.ra", "INBOX", &noticket("r9@example.in", "bid.ra", id))
        .await;
    let filed = stack
        .wait_for("bid.ra", "Redirected", WAIT, "the later mail filed", |m| {
            m.len() == 1
        })
        .await;
    let helpdesk = stack
        .wait_for("helpdesk", "INBOX", WAIT, "four redirects", |m| {
            m.len() >= 4
        })
        .await;
    let text = log_text(&log);
    stop(child);

    assert_eq!(
        proxy.fired.load(std::sync::atomic::Ordering::SeqCst),
        times,
        "{text}"
    );
    assert!(
        text.contains("handling this catch-up mail by mail")
            && text
                .matches("the server refused this mail; trying it again")
                .count()
                == 3,
        "the log says why the desk slowed down:\n{text}"
    );
    assert_eq!(filed[0].header("Message-ID").as_deref(), Some(id));
    let inbox = stack.mailbox("bid.ra", "INBOX").await;
    assert_eq!(inbox.len(), 3, "the refused mails stay where they were");
    assert!(
        inbox.iter().all(|m| m.has_flag("$NoTicket")),
        "and keep their keywords: {:?}",
        inbox.iter().map(|m| &m.flags).collect::<Vec<_>>()
    );
    let counts = redirects(&helpdesk);
    assert_eq!(counts.len(), 4, "{counts:?}");
    assert!(
        counts.values().all(|n| *n == 1),
        "each redirected once: {counts:?}"
    );

    // The journal says what the server answered, for `ticketgate report`.
    let store =
        ticketgate::store::Store::open(&format!("sqlite://{}/state.db", dir.path().display()))
            .await
            .expect("open state database");
    let (uidvalidity, _) = store
        .desk_progress("bid-ra")
        .await
        .expect("progress")
        .expect("bid-ra progress");
    for uid in uids {
        let key = ticketgate::store::MailKey {
            desk: "bid-ra".into(),
            uidvalidity,
            uid,
        };
        let entry = store.journal(&key).await.expect("journal").expect("entry");
        assert_eq!(entry.status, ticketgate::store::MailStatus::Failed, "{key}");
        assert!(
            entry
                .error
                .as_deref()
                .unwrap_or_default()
                .contains("NOPERM"),
            "{key}: {:?}",
            entry.error
        );
    }
    store.close().await;
}

/// Issue #15: a server that keeps no keywords (PERMANENTFLAGS without `\\*`, as Exchange):
/// the desk says so once, and still files by folder and flags broadcasts; no keyword is
/// sent to the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_keywords_still_gets_mail_filed() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let fault = faultkit::proxy::Fault::Rewrite {
        from: " \\*)]",
        to: ")]",
    };
    let (proxy, config) = faultkit::deployment_behind_proxy(&stack, dir.path(), fault, 0).await;
    let id = "nokeywords@example.in";
    stack
        .append("bid.ra", "INBOX", &noticket("nk@example.in", "bid.ra", id))
        .await;
    let log = faultkit::run_once(&config);
    assert!(
        proxy.fired.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the proxy rewrote PERMANENTFLAGS"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("the server does not keep keywords") && l.contains("bid-ra")),
        "{log}"
    );
    let filed = stack.mailbox("bid.ra", "Redirected").await;
    assert_eq!(filed.len(), 1, "filed by folder");
    assert!(
        filed[0].flags.iter().all(|f| !f.starts_with('$')),
        "no keyword stored: {:?}",
        filed[0].flags
    );
    let check = support::output(&mut faultkit::ticketgate(&config, &["check", "--connect"]));
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(
        out.lines()
            .any(|l| l.starts_with("bid-ra: imap ok") && l.contains("does not keep keywords")),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_outage_delays_and_then_delivers() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = deployment(&stack, dir.path(), "", "", None);
    stack.stop_smtp();
    let raw = mail(
        "late@example.in",
        "bid.ra@gem.test",
        None,
        "Help",
        "outage-1@example.in",
        "no ticket",
        "",
    );
    stack.append("bid.ra", "INBOX", &raw).await;
    let log = dir.path().join("daemon.log");
    let mut child = spawn(&config, &log);
    stack
        .wait_for(
            "bid.ra",
            "Redirected",
            WAIT,
            "decided and filed while SMTP is down",
            |m| m.len() == 1,
        )
        .await;
    wait_log(&log, "temporary send failure", 1).await;
    assert!(stack.mailbox("helpdesk", "INBOX").await.is_empty());
    stack.start_smtp();
    let h = stack
        .wait_for(
            "helpdesk",
            "INBOX",
            WAIT,
            "redirect after SMTP is back",
            |m| m.len() == 1,
        )
        .await;
    assert_eq!(
        h[0].header("In-Reply-To").as_deref(),
        Some("outage-1@example.in")
    );
    let _ = child.kill();
    let _ = child.wait();
}
