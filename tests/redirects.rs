//! What `ticketgate run` does to mail, on a real Dovecot and Postfix: redirects and filing
//! (what the helpdesk, the sender and the desk's mailbox show afterwards: the note, the
//! attached original, the keywords and folders, LSUB; no mail redirected twice across
//! restarts or a recreated mailbox; the report), and broadcasts across the desks (SPEC 1
//! rule 2: every copy is tagged in every desk, one redirect and one advisory in all, the
//! right desk acts), in Bcc, in To/Cc and across a restart.
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

use faultkit::{mail, redirects, run_once, ticketgate};
use support::{DESKS, Daemon, MailStack, StoredMail, WAIT};

/// The seven desks on `stack`, STARTTLS with the stack's CA, state in `dir`.
fn deployment(stack: &MailStack, dir: &Path, extra_imap: &str) -> PathBuf {
    faultkit::deployment(stack, dir, extra_imap, "", None)
}

fn attached_original(redirect: &StoredMail) -> Vec<u8> {
    let msg = mail_parser::MessageParser::default()
        .parse(&redirect.raw)
        .expect("parse redirect");
    for part in msg.parts.iter() {
        if let mail_parser::PartType::Message(_) = &part.body {
            let start = part.offset_body as usize;
            let end = part.offset_end as usize;
            return redirect.raw[start..end].to_vec();
        }
    }
    panic!(
        "no message/rfc822 part in redirect:\n{}",
        String::from_utf8_lossy(&redirect.raw)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_tags_and_files_and_never_twice() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = deployment(&stack, dir.path(), "");
    let customer = "ramesh.kumar@example.in";
    let noticket = mail(
        customer,
        "bid.ra@gem.test",
        None,
        "Bid not visible",
        "nt-1@example.in",
        "My bid GEM/2024/B/1234567 is not visible. Call 1800-419-3436.",
        "",
    );
    let ticket = mail(
        customer,
        "bid.ra@gem.test",
        None,
        "Escalation",
        "t-1@example.in",
        "Ticket No: 2024-1234567 unresolved for 3 days.",
        "",
    );
    let auto = mail(
        customer,
        "bid.ra@gem.test",
        None,
        "Out of office",
        "auto-1@example.in",
        "I am away.",
        "Auto-Submitted: auto-replied\r\n",
    );
    let own = mail(
        "helpdesk@gem.test",
        "bid.ra@gem.test",
        None,
        "Please check",
        "own-1@gem.test",
        "No ticket yet.",
        "",
    );
    let replyto = mail(
        customer,
        "order.process@gem.test",
        None,
        "Invoice stuck",
        "rt-1@example.in",
        "Invoice not accepted.",
        "Reply-To: accounts@example.in\r\n",
    );
    for (raw, rcpt) in [
        (&noticket, "bid.ra"),
        (&ticket, "bid.ra"),
        (&auto, "bid.ra"),
        (&own, "bid.ra"),
        (&replyto, "order.process"),
    ] {
        stack
            .send(customer, &[&MailStack::address(rcpt)], raw)
            .await;
    }
    stack
        .wait_for(
            "bid.ra",
            "INBOX",
            WAIT,
            "4 mails delivered to bid.ra",
            |m| m.len() == 4,
        )
        .await;
    stack
        .wait_for(
            "order.process",
            "INBOX",
            WAIT,
            "1 mail delivered to order.process",
            |m| m.len() == 1,
        )
        .await;

    run_once(&config);

    let helpdesk = stack
        .wait_for("helpdesk", "INBOX", WAIT, "two redirects", |m| m.len() >= 2)
        .await;
    let counts = redirects(&helpdesk);
    assert_eq!(counts.get("nt-1@example.in"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("rt-1@example.in"), Some(&1), "{counts:?}");
    assert_eq!(
        helpdesk.len(),
        2,
        "no redirect for the ticket, auto-reply or own mail: {counts:?}"
    );

    let r = helpdesk
        .iter()
        .find(|m| m.header("In-Reply-To").as_deref() == Some("nt-1@example.in"))
        .expect("redirect");
    assert_eq!(
        r.header("From").map(|f| f.contains("bid.ra@gem.test")),
        Some(true),
        "{:?}",
        r.header("From")
    );
    assert_eq!(
        r.header("To").map(|t| t.contains("helpdesk@gem.test")),
        Some(true)
    );
    assert_eq!(
        r.header("Cc").map(|c| c.contains(customer)),
        Some(true),
        "{:?}",
        r.header("Cc")
    );
    assert_eq!(r.header("Auto-Submitted").as_deref(), Some("auto-replied"));
    let rt = helpdesk
        .iter()
        .find(|m| m.header("In-Reply-To").as_deref() == Some("rt-1@example.in"))
        .expect("redirect");
    assert_eq!(
        rt.header("Cc").map(|c| c.contains("accounts@example.in")),
        Some(true),
        "Reply-To wins over From"
    );

    // The desk's view: filed and tagged, never marked read, in a folder the officer's
    // client shows: Thunderbird lists subscribed folders only (LSUB, not LIST).
    let subscribed = faultkit::subscribed(&stack, "bid.ra").await;
    assert!(
        subscribed.iter().any(|n| n == "Redirected"),
        "LSUB: {subscribed:?}"
    );
    let redirected = stack.mailbox("bid.ra", "Redirected").await;
    assert_eq!(redirected.len(), 1);
    assert!(
        redirected[0].has_flag("$NoTicket") && redirected[0].has_flag("$Redirected"),
        "{:?}",
        redirected[0].flags
    );
    assert!(!redirected[0].has_flag("\\Seen"));
    assert_eq!(
        attached_original(r),
        redirected[0].raw,
        "the original is attached unchanged"
    );
    let inbox = stack.mailbox("bid.ra", "INBOX").await;
    assert_eq!(inbox.len(), 3);
    let by_subject = |s: &str| inbox.iter().find(|m| m.subject() == s).expect(s);
    assert!(by_subject("Escalation").has_flag("$Ticket"));
    assert!(by_subject("Out of office").has_flag("$Automatic"));
    assert!(by_subject("Please check").has_flag("$Own"));
    assert!(inbox.iter().all(|m| !m.has_flag("\\Seen")));

    // The sender got the copy (external addresses land in `outside`).
    let outside = stack
        .wait_for("outside", "INBOX", WAIT, "copies to the senders", |m| {
            m.len() >= 2
        })
        .await;
    assert_eq!(redirects(&outside).get("nt-1@example.in"), Some(&1));

    // A second run finds nothing to do: nothing is redirected twice. Even at trace level
    // no password reaches the log (async-imap traces LOGIN; `log` is capped at debug).
    let out = support::output(ticketgate(&config, &["run", "--once"]).env("RUST_LOG", "trace"));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("logged in"), "trace log was written:\n{log}");
    assert!(
        !log.contains(support::PASSWORD),
        "a password reached the log:\n{log}"
    );
    assert_eq!(redirects(&stack.mailbox("helpdesk", "INBOX").await), counts);

    // Reports count what happened.
    let out = support::output(&mut ticketgate(&config, &["report"]));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("bid-ra"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_mailbox_with_a_new_uidvalidity_is_not_redirected_again() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = deployment(&stack, dir.path(), "");
    // bid-ra watches the folder "Desk" instead of INBOX, so that it can be deleted.
    let text = std::fs::read_to_string(&config).expect("config").replace(
        "login = \"bid.ra\"\n",
        "login = \"bid.ra\"\nmailbox = \"Desk\"\n",
    );
    std::fs::write(&config, text).expect("write");
    let raws: Vec<Vec<u8>> = (0..3)
        .map(|i| {
            mail(
                "uv@example.in",
                "bid.ra@gem.test",
                None,
                &format!("Help {i}"),
                &format!("uv{i}@example.in"),
                "Ticket No: 2025-0000001 and more",
                "",
            )
        })
        .collect();
    let noticket = mail(
        "uv@example.in",
        "bid.ra@gem.test",
        None,
        "No ticket",
        "uv-nt@example.in",
        "no ticket",
        "",
    );
    for r in &raws {
        stack.append("bid.ra", "Desk", r).await;
    }
    stack.append("bid.ra", "Desk", &noticket).await;
    run_once(&config);
    stack
        .wait_for("helpdesk", "INBOX", WAIT, "one redirect", |m| m.len() == 1)
        .await;
    // The officer's client deletes and recreates the folder with the same mail (restore).
    {
        let mut s = stack.login("bid.ra").await;
        support::bounded("delete the folder", async {
            s.delete("Desk").await.expect("delete");
            s.logout().await.expect("logout");
        })
        .await;
    }
    for r in raws.iter().chain([&noticket]) {
        stack.append("bid.ra", "Desk", r).await;
    }
    let log = run_once(&config);
    assert!(log.contains("UIDVALIDITY changed"), "{log}");
    let desk = stack.mailbox("bid.ra", "Desk").await;
    assert_eq!(
        desk.iter().filter(|m| m.has_flag("$Ticket")).count(),
        3,
        "restored mail is tagged again"
    );
    let h = stack.mailbox("helpdesk", "INBOX").await;
    assert_eq!(
        redirects(&h).get("uv-nt@example.in"),
        Some(&1),
        "not redirected a second time"
    );
    assert_eq!(h.len(), 1);
}

// Broadcasts.

/// The seven desks on `stack` over plain IMAP and SMTP, passwords in `$TG_PW`.
fn broadcast_deployment(stack: &MailStack, dir: &Path) -> PathBuf {
    let desks = support::gem::desk_sections(support::DOMAIN, |_| "password_env = \"TG_PW\"".into());
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/gem.toml");
    let text = format!(
        "[imap]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"plain\"\n\n[smtp]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"plain\"\n\n\
         [helpdesk]\naddress = \"helpdesk@gem.test\"\nphone = \"1800-419-3436\"\nweb = \"gem.gov.in/gemtickets\"\n\n[state]\ndatabase = \"sqlite://{}/state.db\"\n\n[rules]\nfiles = [\"{}\"]\n\n{desks}",
        stack.imap_port,
        stack.smtp_port,
        dir.display(),
        rules.display()
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).expect("config");
    path
}

fn broadcast_run(config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ticketgate"));
    c.arg("run")
        .arg("--config")
        .arg(config)
        .env("TG_PW", support::PASSWORD)
        .env("RUST_LOG", "ticketgate=debug")
        .env_remove("TICKETGATE_DATABASE");
    c
}

fn broadcast_mail(to: &str, cc: &str, id: &str) -> Vec<u8> {
    format!(
        "From: Harish Gupta <harish.gupta@example.in>\r\nTo: {to}\r\n{cc}Subject: URGENT payment not received\r\nMessage-ID: <{id}>\r\n\
         Date: Mon, 2 Nov 2026 10:00:00 +0530\r\n\r\nPayment for our invoice is not received for 3 months and the budget is blocked.\r\n"
    )
    .into_bytes()
}

/// Every copy of the mail with this Message-ID in each desk, wherever it was filed.
async fn copies(stack: &MailStack, id: &str) -> Vec<(String, StoredMail)> {
    let mut out = Vec::new();
    for (_, user) in DESKS {
        for folder in ["INBOX", "Redirected", "Broadcast"] {
            for m in stack.mailbox(user, folder).await {
                if m.header("Message-ID").as_deref() == Some(id) {
                    out.push((format!("{user}/{folder}"), m));
                }
            }
        }
    }
    out
}

/// Waits until each of the `n` copies is tagged $Broadcast, and all but the acting one are
/// duplicates filed in Broadcast, as if the broadcast had been known from the first copy.
async fn wait_all_tagged(stack: &MailStack, id: &str, n: usize) -> Vec<(String, StoredMail)> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let c = copies(stack, id).await;
        let duplicates = c
            .iter()
            .filter(|(w, m)| m.has_flag("$Duplicate") && w.ends_with("/Broadcast"))
            .count();
        if c.len() == n && c.iter().all(|(_, m)| m.has_flag("$Broadcast")) && duplicates == n - 1 {
            return c;
        }
        let state: Vec<String> = c
            .iter()
            .map(|(w, m)| format!("{w} {:?}", m.flags))
            .collect();
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every copy got $Broadcast: {state:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Mail ticketgate sent about the original `id`, by kind.
async fn sent_about(stack: &MailStack, user: &str, id: &str) -> (usize, usize) {
    let mails = stack.mailbox(user, "INBOX").await;
    let ours: Vec<&StoredMail> = mails
        .iter()
        .filter(|m| {
            m.header("X-Ticketgate").is_some() && m.header("In-Reply-To").as_deref() == Some(id)
        })
        .collect();
    let redirects = ours
        .iter()
        .filter(|m| m.subject().starts_with("[No CRM ticket]"))
        .count();
    (redirects, ours.len() - redirects)
}

fn terminate(mut child: Daemon) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bcc_to_all_seven_desks_is_tagged_everywhere_and_answered_once() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = broadcast_deployment(&stack, dir.path());
    let log_path = dir.path().join("daemon.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let child = Daemon::logging(
        broadcast_run(&config)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn"),
        &log_path,
    );
    let raw = broadcast_mail("gem-support@example.in", "", "bcc-1@example.in");
    let rcpts: Vec<String> = DESKS.iter().map(|(_, u)| MailStack::address(u)).collect();
    let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    stack.send("harish.gupta@example.in", &rcpts, &raw).await;
    let c = wait_all_tagged(&stack, "bcc-1@example.in", 7).await;
    stack
        .wait_for("helpdesk", "INBOX", WAIT, "the redirect", |m| !m.is_empty())
        .await;
    stack
        .wait_for(
            "outside",
            "INBOX",
            WAIT,
            "cc of the redirect and the advisory",
            |m| m.len() >= 2,
        )
        .await;
    terminate(child);
    assert_eq!(
        sent_about(&stack, "helpdesk", "bcc-1@example.in").await,
        (1, 0),
        "exactly one redirect to the helpdesk"
    );
    assert_eq!(
        sent_about(&stack, "outside", "bcc-1@example.in").await,
        (1, 1),
        "the sender: one copy of the redirect, one advisory"
    );
    let advisory = stack
        .mailbox("outside", "INBOX")
        .await
        .into_iter()
        .find(|m| m.subject().starts_with("Re:"))
        .expect("advisory");
    let text = String::from_utf8_lossy(&advisory.raw).to_string();
    assert!(
        text.contains("payment-process"),
        "the advisory names the responsible desk:\n{text}"
    );
    // ... and comes from it, whichever copy queued it (Bcc copies arrive in any order).
    assert_eq!(
        advisory
            .header("From")
            .map(|f| f.contains("payment.process@gem.test")),
        Some(true),
        "the advisory is sent by the desk it names: {:?}",
        advisory.header("From")
    );
    // The helpdesk's contact comes from config, and no placeholder is left raw (the text
    // as the sender's client shows it: decoded).
    let shown = mail_parser::MessageParser::default()
        .parse(&advisory.raw)
        .and_then(|m| m.body_text(0).map(|t| t.to_string()))
        .expect("advisory text");
    assert!(shown.contains("1800-419-3436"), "{shown}");
    assert!(
        !shown.contains('{') && !shown.contains('}'),
        "raw placeholder in:\n{shown}"
    );
    let acting: Vec<&String> = c
        .iter()
        .filter(|(_, m)| !m.has_flag("$Duplicate"))
        .map(|(w, _)| w)
        .collect();
    assert_eq!(
        acting,
        [&"payment.process/Redirected".to_string()],
        "the desk that fits acts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seven_desks_in_to_and_cc_one_desk_acts_the_others_file_duplicates() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = broadcast_deployment(&stack, dir.path());
    let to: Vec<String> = DESKS[..4]
        .iter()
        .map(|(_, u)| MailStack::address(u))
        .collect();
    let cc: Vec<String> = DESKS[4..]
        .iter()
        .map(|(_, u)| MailStack::address(u))
        .collect();
    let raw = broadcast_mail(
        &to.join(", "),
        &format!("Cc: {}, director@example.in\r\n", cc.join(", ")),
        "hdr-1@example.in",
    );
    let mut rcpts: Vec<&str> = to.iter().chain(cc.iter()).map(String::as_str).collect();
    rcpts.push("director@example.in");
    stack.send("harish.gupta@example.in", &rcpts, &raw).await;
    for (_, user) in DESKS {
        stack
            .wait_for(user, "INBOX", WAIT, "delivery", |m| m.len() == 1)
            .await;
    }
    let out = support::output(broadcast_run(&config).arg("--once"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = wait_all_tagged(&stack, "hdr-1@example.in", 7).await;
    let duplicates: Vec<&String> = c
        .iter()
        .filter(|(_, m)| m.has_flag("$Duplicate"))
        .map(|(w, _)| w)
        .collect();
    assert_eq!(duplicates.len(), 6, "{duplicates:?}");
    assert!(
        duplicates.iter().all(|w| w.ends_with("/Broadcast")),
        "{duplicates:?}"
    );
    let acting: Vec<&String> = c
        .iter()
        .filter(|(_, m)| !m.has_flag("$Duplicate"))
        .map(|(w, _)| w)
        .collect();
    assert_eq!(acting, [&"payment.process/Redirected".to_string()]);
    stack
        .wait_for("helpdesk", "INBOX", WAIT, "the redirect", |m| !m.is_empty())
        .await;
    assert_eq!(
        sent_about(&stack, "helpdesk", "hdr-1@example.in").await,
        (1, 0)
    );
    stack
        .wait_for("outside", "INBOX", WAIT, "original, cc, advisory", |m| {
            m.len() >= 3
        })
        .await;
    assert_eq!(
        sent_about(&stack, "outside", "hdr-1@example.in").await,
        (1, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_arriving_apart_across_a_restart_are_still_one_broadcast() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = broadcast_deployment(&stack, dir.path());
    let raw = broadcast_mail("gem-support@example.in", "", "apart-1@example.in");
    stack
        .send("harish.gupta@example.in", &["bid.ra@gem.test"], &raw)
        .await;
    stack
        .wait_for("bid.ra", "INBOX", WAIT, "first copy", |m| m.len() == 1)
        .await;
    let out = support::output(broadcast_run(&config).arg("--once"));
    assert!(out.status.success());
    // Handled as a single mail: redirected, not a broadcast (yet).
    let first = stack
        .wait_for("bid.ra", "Redirected", WAIT, "first copy filed", |m| {
            m.len() == 1
        })
        .await;
    assert!(!first[0].has_flag("$Broadcast"));
    stack
        .send(
            "harish.gupta@example.in",
            &["order.process@gem.test", "payment.process@gem.test"],
            &raw,
        )
        .await;
    stack
        .wait_for("payment.process", "INBOX", WAIT, "later copy", |m| {
            m.len() == 1
        })
        .await;
    stack
        .wait_for("order.process", "INBOX", WAIT, "later copy", |m| {
            m.len() == 1
        })
        .await;
    // Two runs: the one that sees the third copy, and one in which bid-ra tags its old copy.
    for _ in 0..2 {
        let out = support::output(broadcast_run(&config).arg("--once"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let c = wait_all_tagged(&stack, "apart-1@example.in", 3).await;
    let first = c
        .iter()
        .find(|(w, _)| w.starts_with("bid.ra/"))
        .expect("bid.ra copy");
    assert_eq!(
        first.0, "bid.ra/Broadcast",
        "the first copy is re-filed as a duplicate"
    );
    stack
        .wait_for("helpdesk", "INBOX", WAIT, "the redirect", |m| !m.is_empty())
        .await;
    assert_eq!(
        sent_about(&stack, "helpdesk", "apart-1@example.in").await,
        (1, 0),
        "still one redirect"
    );
    stack
        .wait_for("outside", "INBOX", WAIT, "advisory", |m| {
            m.iter().any(|x| x.subject().starts_with("Re:"))
        })
        .await;
    assert_eq!(
        sent_about(&stack, "outside", "apart-1@example.in").await.1,
        1,
        "one advisory"
    );
}
