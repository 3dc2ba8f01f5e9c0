//! `ticketgate run` against a real Dovecot and Postfix started by the test harness: what the
//! helpdesk, the sender and each desk's mailbox show afterwards, across restarts, kill -9,
//! an SMTP outage and a server without IDLE and MOVE.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed expectation is a failed test"
)]

mod faultkit;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use faultkit::{mail, redirects, run_once, spawn, spawn_watching, ticketgate, wait_exit, wait_log};
use support::{DESKS, Daemon, MailStack, StackOptions, StoredMail, WAIT};

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
    let out = ticketgate(&config, &["run", "--once"])
        .env("RUST_LOG", "trace")
        .output()
        .expect("run");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("logged in"), "trace log was written:\n{log}");
    assert!(
        !log.contains(support::PASSWORD),
        "a password reached the log:\n{log}"
    );
    assert_eq!(redirects(&stack.mailbox("helpdesk", "INBOX").await), counts);

    // Reports count what happened.
    let out = ticketgate(&config, &["report"]).output().expect("report");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("bid-ra"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_of_a_backlog_loses_nothing_and_repeats_nothing() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = deployment(&stack, dir.path(), "");
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
async fn smtp_outage_delays_and_then_delivers() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = deployment(&stack, dir.path(), "");
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
    let out = ticketgate(&config, &["check", "--connect"])
        .output()
        .expect("check --connect");
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
    let out = ticketgate(&config, &["check", "--connect"])
        .output()
        .expect("check --connect");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(69), "{stdout}");
    assert!(
        stdout.contains("imap FAILED") && stdout.contains("invalid peer certificate"),
        "{stdout}"
    );
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
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", stack.imap_port))
            .await
            .expect("connect");
        let mut c = async_imap::Client::new(tcp);
        c.read_response().await.expect("greeting");
        let mut s = c
            .login("bid.ra", support::PASSWORD)
            .await
            .map_err(|(e, _)| e)
            .expect("login");
        s.delete("Desk").await.expect("delete");
        s.logout().await.expect("logout");
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
    let mut child = Daemon(
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
            .stderr(file)
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn"),
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

/// One HTTP GET on loopback, as a Prometheus scraper or a health probe does it.
async fn http_get(port: u16, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the metrics endpoint");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).await.expect("response");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

/// Polls `path` until `ok` accepts (status, body), or fails the test after WAIT.
async fn wait_http(port: u16, path: &str, what: &str, ok: impl Fn(u16, &str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = http_get(port, path).await;
        if ok(status, &body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {path} answered {status}:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
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
    let config = deployment(stack, dir, "");
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
    let out = ticketgate(config, &["run", "--once"])
        .output()
        .expect("run --once");
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
    //    accepts one, the outbox cannot record it, and holds it instead of sending it again.
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
    wait_log(&log, "database or disk is full", 2).await;
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
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_flooding_a_desk_gets_at_most_the_configured_number_of_answers() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = deployment(&stack, dir.path(), "");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/gem.toml");
    let rules = dir.path().join("rules.toml");
    let text = std::fs::read_to_string(&shipped).expect("rules");
    assert!(text.contains("sender_answer_limit = 10"));
    std::fs::write(
        &rules,
        text.replace("sender_answer_limit = 10", "sender_answer_limit = 3"),
    )
    .expect("write rules");
    let cfg = std::fs::read_to_string(&config)
        .expect("config")
        .replace(&shipped.display().to_string(), &rules.display().to_string());
    std::fs::write(&config, cfg).expect("write config");
    let flood = |i: usize| {
        mail(
            "Flood@Example.in",
            "bid.ra@gem.test",
            None,
            &format!("Where is my payment {i}"),
            &format!("flood-{i}@example.in"),
            "no ticket, again",
            "",
        )
    };
    // Six in one run (one fetch batch), two more in a later run.
    for i in 0..6 {
        stack.append("bid.ra", "INBOX", &flood(i)).await;
    }
    run_once(&config);
    for i in 6..8 {
        stack.append("bid.ra", "INBOX", &flood(i)).await;
    }
    run_once(&config);
    // The SMTP server accepted them before `run --once` returned; delivery follows.
    let helpdesk = stack
        .wait_for("helpdesk", "INBOX", WAIT, "three redirects", |m| {
            m.len() >= 3
        })
        .await;
    assert_eq!(redirects(&helpdesk).len(), 3, "{:?}", redirects(&helpdesk));
    let copies = stack
        .wait_for("outside", "INBOX", WAIT, "three copies", |m| m.len() >= 3)
        .await;
    assert_eq!(copies.len(), 3, "the sender got three copies, no more");
    let filed = stack.mailbox("bid.ra", "Redirected").await;
    assert_eq!(filed.len(), 3);
    let inbox = stack.mailbox("bid.ra", "INBOX").await;
    assert_eq!(inbox.len(), 5, "the rest waits for the officer");
    assert!(
        inbox
            .iter()
            .all(|m| m.has_flag("$Flood") && m.has_flag("$NoTicket")),
        "{:?}",
        inbox.iter().map(|m| &m.flags).collect::<Vec<_>>()
    );
    // Another sender is not held back.
    stack
        .append(
            "bid.ra",
            "INBOX",
            &mail(
                "calm@example.in",
                "bid.ra@gem.test",
                None,
                "One question",
                "calm-1@example.in",
                "no ticket",
                "",
            ),
        )
        .await;
    run_once(&config);
    let helpdesk = stack
        .wait_for(
            "helpdesk",
            "INBOX",
            WAIT,
            "the calm sender's redirect",
            |m| m.len() >= 4,
        )
        .await;
    assert_eq!(redirects(&helpdesk).get("calm-1@example.in"), Some(&1));
    assert_eq!(redirects(&helpdesk).len(), 4, "{:?}", redirects(&helpdesk));
}
