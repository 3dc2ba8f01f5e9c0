//! Redirects and filing by `ticketgate run` on a real Dovecot and Postfix: what the helpdesk,
//! the sender and the desk's mailbox show afterwards (the note, the attached original, the
//! keywords and folders, LSUB), that no mail is redirected twice across restarts or a
//! recreated mailbox, and the report. Broadcasts are in broadcast.rs.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed expectation is a failed test"
)]

mod faultkit;
mod support;

use std::path::{Path, PathBuf};

use faultkit::{mail, redirects, run_once, ticketgate};
use support::{MailStack, StoredMail, WAIT};

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
