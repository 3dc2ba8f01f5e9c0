//! SPEC 5 "each mail is acted on once ... across crashes (kill -9 at any point)", proved on a
//! real Dovecot and Postfix with SMTP up: the daemon is killed with SIGKILL at 21 points
//! aimed at every step of handling a mail (`TICKETGATE_CRASH_AT`, see src/crash.rs), each
//! time with fresh mixed mail waiting, and restarted. The final state of every mailbox must
//! equal that of an uninterrupted run of the same backlog on a second stack. Also a kill -9
//! in the middle of a backlog (SMTP down): nothing lost, nothing repeated after the restart.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed expectation is a failed test"
)]

mod faultkit;
mod support;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;

use faultkit::{
    MailView, deployment, mail, redirects, run_once, spawn, spawn_env, wait_exit, world,
};
use support::{MailStack, WAIT};

/// Every step of handling a mail, in order (src/crash.rs).
const PHASES: [&str; 7] = [
    "fetched",
    "decided",
    "journaled",
    "flagged",
    "moved",
    "done",
    "sent",
];
/// How many waves (one per kill point) the backlog has.
const WAVES: usize = 21;

/// Wave `i` of mixed mail: (desk user, raw) pairs. Per wave: a ticketless mail (redirect and
/// copy to the sender, filed), a ticket mail (tagged), an auto-reply (tagged, never answered),
/// a broadcast To three desks (one redirect, one advisory, two duplicates filed) and a second
/// ticketless mail on another desk: four outgoing mails.
fn wave(i: usize) -> Vec<(&'static str, Vec<u8>)> {
    let mut out = vec![
        (
            "bid.ra",
            mail(
                &format!("w{i}a@example.in"),
                "bid.ra@gem.test",
                None,
                &format!("Bid {i} not visible"),
                &format!("w{i}a@example.in"),
                "My bid GEM/2024/B/1234567 is not visible.",
                "",
            ),
        ),
        (
            "order.process",
            mail(
                &format!("w{i}b@example.in"),
                "order.process@gem.test",
                None,
                &format!("Invoice {i}"),
                &format!("w{i}b@example.in"),
                "Ticket No: 2025-0000123 still unresolved.",
                "",
            ),
        ),
        (
            "payment.process",
            mail(
                &format!("w{i}c@example.in"),
                "payment.process@gem.test",
                None,
                &format!("Out of office {i}"),
                &format!("w{i}c@example.in"),
                "I am away.",
                "Auto-Submitted: auto-replied\r\n",
            ),
        ),
        (
            "upload.product",
            mail(
                &format!("w{i}e@example.in"),
                "upload.product@gem.test",
                None,
                &format!("Catalogue {i} rejected"),
                &format!("w{i}e@example.in"),
                "My product upload was rejected.",
                "",
            ),
        ),
    ];
    let broadcast = mail(
        &format!("w{i}d@example.in"),
        "buyer.registration@gem.test, seller.registration@gem.test",
        Some("payment.process@gem.test"),
        &format!("URGENT payment {i} not received"),
        &format!("w{i}d@example.in"),
        "My payment has not been received for 3 months.",
        "",
    );
    for desk in [
        "buyer.registration",
        "seller.registration",
        "payment.process",
    ] {
        out.push((desk, broadcast.clone()));
    }
    out
}

async fn deliver(stack: &MailStack, i: usize) {
    for (desk, raw) in wave(i) {
        stack.append(desk, "INBOX", &raw).await;
    }
}

/// Waits until the outgoing mail of `waves` waves has arrived: 3 redirects per wave at the
/// helpdesk, 3 copies and 1 advisory per wave for the senders.
async fn wait_sent(stack: &MailStack, waves: usize) {
    stack
        .wait_for("helpdesk", "INBOX", WAIT, "every redirect", |m| {
            m.len() >= 3 * waves
        })
        .await;
    stack
        .wait_for("outside", "INBOX", WAIT, "every copy and advisory", |m| {
            m.len() >= 4 * waves
        })
        .await;
}

/// Mail views with the copies of a mail sent twice counted once, and the Message-IDs of the
/// mails that were sent more than once (a redirect shows in two mailboxes: the helpdesk's
/// and the sender's).
fn dedupe_sent(
    w: &BTreeMap<MailView, usize>,
) -> (BTreeMap<MailView, usize>, BTreeMap<String, usize>) {
    let mut twice = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (view, n) in w {
        let sent_by_us = view.0 == "helpdesk" || view.0 == "outside";
        if sent_by_us && *n > 1 {
            let m = twice.entry(view.2.clone()).or_insert(0);
            *m = (*m).max(*n);
            out.insert(view.clone(), 1);
        } else {
            out.insert(view.clone(), *n);
        }
    }
    (out, twice)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_21_points_ends_in_the_state_of_an_uninterrupted_run() {
    // The reference: the whole backlog, one uninterrupted run.
    let reference = {
        let stack = MailStack::start();
        let dir = tempfile::tempdir().expect("tempdir");
        let config = deployment(&stack, dir.path(), "", "", None);
        for i in 0..WAVES {
            deliver(&stack, i).await;
        }
        run_once(&config);
        // 3 redirects per wave reach the helpdesk.
        wait_sent(&stack, WAVES).await;
        world(&stack).await
    };
    assert_eq!(
        reference
            .keys()
            .filter(|v| v.0 == "helpdesk" && v.1 == "INBOX")
            .count(),
        3 * WAVES,
        "the reference run redirected every ticketless mail"
    );

    let stack = MailStack::start();
    let dir = tempfile::tempdir().expect("tempdir");
    // One mail in flight at a time, so that each kill after an SMTP acceptance repeats
    // exactly one mail (with N connections up to N: the outbox's own test holds that bound).
    let config = deployment(&stack, dir.path(), "", "connections = 1", None);
    let mut kills = Vec::new();
    for n in 1..=3 {
        for phase in PHASES {
            let round = kills.len();
            deliver(&stack, round).await;
            // Outside the `sent` rounds the SMTP server holds every session before DATA, so
            // that the kill falls in the phase aimed at and not, by chance, inside an SMTP
            // transaction that the server completes (the window of the `sent` phase).
            let hold = if phase == "sent" { "" } else { "sleep 30" };
            faultkit::smtp_faults(&stack, "", hold);
            let spec = format!("{phase}:{n}");
            let log = dir.path().join(format!("round-{round}-{phase}-{n}.log"));
            let mut child = spawn_env(&config, &log, &[("TICKETGATE_CRASH_AT", &spec)]);
            let status = wait_exit(&mut child, WAIT);
            let text = faultkit::log_text(&log);
            if status.is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
            assert_eq!(
                status.and_then(|s| s.signal()),
                Some(9),
                "round {round}: the daemon was not killed at {spec}:\n{text}"
            );
            assert!(text.contains("crash point reached"), "{text}");
            kills.push(spec);
        }
    }
    assert_eq!(kills.len(), WAVES);
    faultkit::smtp_faults(&stack, "", "");
    // After the last kill: a normal run finishes what is left.
    run_once(&config);
    wait_sent(&stack, WAVES).await;
    let after = world(&stack).await;

    // A kill in the window between the SMTP server's acceptance and the outbox's record of
    // it (phase `sent`) repeats that one mail, with the same Message-ID (README); no other
    // kill repeats anything.
    let (deduped, twice) = dedupe_sent(&after);
    let sent_kills = kills.iter().filter(|k| k.starts_with("sent:")).count();
    if twice.len() != sent_kills || twice.values().any(|n| *n != 2) {
        let rows = faultkit::outbox(dir.path()).await;
        let keep = dir.keep();
        let _ = std::fs::copy(stack.dir.join("log/postfix.log"), keep.join("postfix.log"));
        panic!(
            "mails sent more than once (Message-ID: copies): {twice:#?}, but {sent_kills} \
             kills fell after an SMTP acceptance\n{rows:#?}\nstate in {}",
            keep.display()
        );
    }
    let missing: Vec<_> = reference
        .iter()
        .filter(|(k, n)| deduped.get(*k) != Some(*n))
        .collect();
    let unexpected: Vec<_> = deduped
        .iter()
        .filter(|(k, n)| reference.get(*k) != Some(*n))
        .collect();
    assert!(
        missing.is_empty() && unexpected.is_empty(),
        "after kills at {kills:?} the mailboxes differ from an uninterrupted run.\n\
         expected but not found: {missing:#?}\nfound but not expected: {unexpected:#?}"
    );
    // Every desk mail carries its keywords: nothing left untagged anywhere.
    let untagged: Vec<_> = after
        .keys()
        .filter(|v| v.0 != "helpdesk" && v.0 != "outside" && v.3.is_empty())
        .collect();
    assert!(untagged.is_empty(), "untagged: {untagged:#?}");
    eprintln!(
        "{} kill points; sent twice, by the {sent_kills} kills after an SMTP acceptance: {twice:?}",
        kills.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_of_a_backlog_loses_nothing_and_repeats_nothing() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = deployment(&stack, dir.path(), "", "", None);
    let n = 60;
    for i in 0..n {
        // One sender per mail: one sender's 60 mails would meet the flood limit.
        let raw = mail(
            &format!("sender{i}@example.in"),
            "bid.ra@gem.test",
            None,
            &format!("Help {i}"),
            &format!("k{i}@example.in"),
            "no ticket",
            "",
        );
        stack.append("bid.ra", "INBOX", &raw).await;
    }
    // SMTP is down while the daemon is killed mid-backlog, so that every kill falls between
    // fetch, decision, journal, flag store and move (the one window no mail system can close,
    // between the SMTP server's acceptance and our record of it, is left out: see README).
    stack.stop_smtp();
    for round in 0..3usize {
        let log = dir.path().join(format!("kill-{round}.log"));
        let mut child = spawn(&config, &log);
        // Kill as soon as some, but not all, of the backlog has been filed.
        stack
            .wait_for("bid.ra", "Redirected", WAIT, "some mail filed", |m| {
                m.len() > round * 15
            })
            .await;
        child.kill().expect("SIGKILL");
        let _ = child.wait();
    }
    stack.start_smtp();
    run_once(&config);
    let helpdesk = stack
        .wait_for("helpdesk", "INBOX", WAIT, "all redirects", |m| m.len() >= n)
        .await;
    let counts = redirects(&helpdesk);
    assert_eq!(counts.len(), n, "every mail redirected");
    assert!(
        counts.values().all(|c| *c == 1),
        "a mail was redirected twice: {counts:?}"
    );
    let filed = stack.mailbox("bid.ra", "Redirected").await;
    assert_eq!(filed.len(), n);
    assert!(
        filed.iter().all(|m| m.has_flag("$NoTicket")),
        "every mail tagged"
    );
    assert!(stack.mailbox("bid.ra", "INBOX").await.is_empty());
}
