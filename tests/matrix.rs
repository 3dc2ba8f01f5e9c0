//! The escalation matrix's 48 hours (issue #17), on a real Dovecot and Postfix: with the
//! helpdesk's ticket export configured (`[registry]`), a ticket the helpdesk registered
//! less than 48 hours ago, or one it does not know, goes back to it with the user in copy
//! (what the helpdesk receives, where the desk's copy is filed and how it is tagged); a
//! ticket that is old enough stays with the desk; a new export is read without a restart.
//! The desk's clock: an unanswered ticket mail is tagged `$Overdue` when the limit passes,
//! answered ones (\Answered, a reply in Sent, moved to the done folder) are not.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed expectation is a failed test"
)]

mod faultkit;
mod support;

use std::path::Path;

use faultkit::{redirects, run_once};
use support::{MailStack, StoredMail, WAIT};

const HOUR: u64 = 3_600;

/// The export as the CRM writes it: creation times in IST without an offset
/// (`created_format`), tickets `ago` hours old.
fn export(path: &Path, tickets: &[(&str, u64, &str)]) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ist = jiff::tz::TimeZone::get("Asia/Kolkata").unwrap();
    let mut text = String::from("Ticket No,Created On,Email,Status\n");
    for (ticket, ago, requester) in tickets {
        let created = jiff::Timestamp::from_second(i64::try_from(now - ago * HOUR).unwrap())
            .unwrap()
            .to_zoned(ist.clone())
            .strftime("%d-%m-%Y %H:%M")
            .to_string();
        text.push_str(&format!("{ticket},{created},{requester},Open\n"));
    }
    // Replaced as a whole, as an export job does (a new file, renamed into place).
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn mail(ticket: &str, id: &str) -> Vec<u8> {
    format!(
        "From: Meena Iyer <meena.iyer@rites.co.in>\r\nTo: bid.ra@gem.test\r\n\
         Subject: Bid corrigendum, Ticket No:- {ticket}\r\nMessage-ID: <{id}@rites.co.in>\r\n\
         Date: Mon, 30 Nov 2026 10:00:00 +0530\r\n\r\nThe corrigendum is still not published.\r\n"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn young_and_unknown_tickets_go_back_to_the_helpdesk() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("tickets.csv");
    export(
        &csv,
        &[
            ("2026-1000001", 3, "meena.iyer@rites.co.in"),
            ("2026-1000002", 100, "meena.iyer@rites.co.in"),
        ],
    );
    let config = faultkit::deployment(&stack, dir.path(), "", "", None);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[registry]\ncsv = \"{}\"\nticket_column = \"Ticket No\"\ncreated_column = \"Created On\"\n\
         created_format = \"%d-%m-%Y %H:%M\"\nrequester_column = \"Email\"\nstate_column = \"Status\"\n",
        csv.display()
    ));
    std::fs::write(&config, text).unwrap();
    for (ticket, id) in [
        ("2026-1000001", "young"),
        ("2026-1000002", "old"),
        ("2026-1000003", "unknown"),
    ] {
        stack.append("bid.ra", "INBOX", &mail(ticket, id)).await;
    }
    let log = run_once(&config);
    assert!(log.contains("ticket registry loaded"), "{log}");

    let helpdesk = stack
        .wait_for("helpdesk", "INBOX", WAIT, "two mails back", |m| {
            m.len() >= 2
        })
        .await;
    assert_eq!(redirects(&helpdesk).len(), 2, "{log}");
    let subjects: Vec<String> = helpdesk.iter().map(|m| m.subject()).collect();
    assert!(
        subjects
            .iter()
            .any(|s| s == "[Ticket too early] Bid corrigendum, Ticket No:- 2026-1000001"),
        "{subjects:?}"
    );
    assert!(
        subjects
            .iter()
            .any(|s| s == "[Ticket not found] Bid corrigendum, Ticket No:- 2026-1000003"),
        "{subjects:?}"
    );
    let early = helpdesk
        .iter()
        .find(|m| m.subject().starts_with("[Ticket too early]"))
        .unwrap();
    assert_eq!(
        early.header("Cc").as_deref(),
        Some("meena.iyer@rites.co.in"),
        "the user is told too"
    );
    let note = mail_parser::MessageParser::default()
        .parse(&early.raw)
        .and_then(|m| m.body_text(0).map(|t| t.into_owned()))
        .unwrap_or_default();
    assert!(note.contains("can come to the desk from "), "{note}");
    assert!(note.contains(" IST."), "times in the desks' zone: {note}");

    let filed = stack.mailbox("bid.ra", "Redirected").await;
    assert_eq!(filed.len(), 2);
    assert_eq!(filed.iter().filter(|m| m.has_flag("$TooEarly")).count(), 1);
    assert_eq!(
        filed
            .iter()
            .filter(|m| m.has_flag("$UnknownTicket"))
            .count(),
        1
    );
    let inbox = stack.mailbox("bid.ra", "INBOX").await;
    assert_eq!(inbox.len(), 1, "the ticket old enough stays with the desk");
    assert!(inbox[0].has_flag("$Ticket") && !inbox[0].has_flag("$TooEarly"));

    // The helpdesk's next export knows 2026-1000003 (registered 60 hours ago): the running
    // daemon reads it at its next batch, without a restart; the user's next mail on that
    // ticket stays with the desk.
    let log = dir.path().join("daemon.log");
    let daemon = faultkit::spawn_watching(&config, &log).await;
    stack
        .send(
            "meena.iyer@rites.co.in",
            &["bid.ra@gem.test"],
            &mail("2026-1000002", "old-again"),
        )
        .await;
    stack
        .wait_for("bid.ra", "INBOX", WAIT, "a mail on the old export", |m| {
            m.len() == 2 && m.iter().all(|m| m.has_flag("$Ticket"))
        })
        .await;
    export(
        &csv,
        &[
            ("2026-1000001", 3, "meena.iyer@rites.co.in"),
            ("2026-1000002", 100, "meena.iyer@rites.co.in"),
            ("2026-1000003", 60, "meena.iyer@rites.co.in"),
        ],
    );
    stack
        .send(
            "meena.iyer@rites.co.in",
            &["bid.ra@gem.test"],
            &mail("2026-1000003", "again"),
        )
        .await;
    let inbox = stack
        .wait_for("bid.ra", "INBOX", WAIT, "the new mail decided", |m| {
            m.len() == 3 && m.iter().all(|m| m.has_flag("$Ticket"))
        })
        .await;
    assert!(inbox.iter().all(|m| !m.has_flag("$UnknownTicket")));
    faultkit::stop(daemon);
    let text = faultkit::log_text(&log);
    assert_eq!(
        text.matches("ticket registry loaded").count(),
        2,
        "read when a batch first needed it, and again after the new export: {text}"
    );
    assert!(
        text.contains("tickets=2") && text.contains("tickets=3"),
        "{text}"
    );
    let helpdesk = stack.mailbox("helpdesk", "INBOX").await;
    assert_eq!(redirects(&helpdesk).len(), 2, "nothing more went back");
}

/// Issue #17 point 3, the desk's clock: four ticket mails the desk keeps; an officer answers
/// one (\Answered, as a mail client sets it), replies to another from the Sent folder,
/// moves a third to the done folder, and leaves the fourth. When the limit passes (here
/// `desk_hours = 0.002`, 7.2 s), the running daemon wakes by itself and tags only the
/// fourth `$Overdue` and \Flagged; `report --overdue` lists it alone. A daemon killed and
/// started again keeps the clocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_ticket_mail_is_tagged_overdue_when_the_desk_clock_runs_out() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().unwrap();
    let rules = faultkit::rules_with(
        dir.path(),
        &[
            ("\ndesk_hours = 48", "\ndesk_hours = 0.002"),
            ("# done_folder = \"Done\"", "done_folder = \"Done\""),
            (
                "# overdue_notice = \"overdue-notice\"",
                "overdue_notice = \"overdue-notice\"",
            ),
        ],
    );
    let config = faultkit::deployment(&stack, dir.path(), "", "", Some(&rules));
    // The supervisors' digest (the helpdesk's mailbox stands in for the supervisor's),
    // due at 00:00: a daemon queues yesterday's when it starts.
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(
        "\n[[digest]]\nname = \"GeM desks\"\nsupervisors = [\"helpdesk@gem.test\"]\ntime = \"00:00\"\n\n[logging]\nlevel = \"debug\"\n",
    );
    std::fs::write(&config, text).unwrap();
    let tickets = [
        "2026-2000001",
        "2026-2000002",
        "2026-2000003",
        "2026-2000004",
    ];
    let mut uids = Vec::new();
    for (n, ticket) in tickets.iter().enumerate() {
        uids.push(
            stack
                .append("bid.ra", "INBOX", &mail(ticket, &format!("clock{n}")))
                .await,
        );
    }
    let log = dir.path().join("daemon.log");
    let daemon = faultkit::spawn_watching(&config, &log).await;
    stack
        .wait_for("bid.ra", "INBOX", WAIT, "four ticket mails kept", |m| {
            m.len() == 4 && m.iter().all(|m| m.has_flag("$Ticket"))
        })
        .await;
    // The officer acts once the daemon has closed its first round (it then goes to IDLE,
    // where Dovecot hands it what changed meanwhile): news of a flag or a move that reaches
    // it during its own commands wakes no round (only new mail does), and the searches
    // checked below need the rounds these changes wake.
    faultkit::wait_log(&log, "round closed desk=bid-ra", 1).await;
    // The officer, in a mail client of their own.
    let mut officer = stack.login("bid.ra").await;
    support::bounded("the officer's answer and move", async {
        officer.select("INBOX").await.unwrap();
        officer
            .run_command_and_check_ok(&format!("UID STORE {} +FLAGS (\\Answered)", uids[0]))
            .await
            .unwrap();
        officer.create("Done").await.unwrap();
        officer
            .run_command_and_check_ok(&format!("UID MOVE {} Done", uids[2]))
            .await
            .unwrap();
        officer.logout().await.unwrap();
    })
    .await;
    let reply = "From: bid.ra@gem.test\r\nTo: meena.iyer@rites.co.in\r\n\
                 Subject: Re: Bid corrigendum, Ticket No:- 2026-2000002\r\n\
                 Message-ID: <answer-1@gem.test>\r\nIn-Reply-To: <clock1@rites.co.in>\r\n\
                 References: <clock1@rites.co.in>\r\nDate: Mon, 30 Nov 2026 11:00:00 +0530\r\n\r\n\
                 The corrigendum is published.\r\n";
    stack.append("bid.ra", "Sent", reply.as_bytes()).await;

    let inbox = stack
        .wait_for("bid.ra", "INBOX", WAIT, "the fourth mail overdue", |m| {
            m.iter().any(|m| m.has_flag("$Overdue"))
        })
        .await;
    let overdue: Vec<String> = inbox
        .iter()
        .filter(|m| m.has_flag("$Overdue"))
        .map(StoredMail::subject)
        .collect();
    assert_eq!(overdue, ["Bid corrigendum, Ticket No:- 2026-2000004"]);
    let flagged = inbox.iter().find(|m| m.has_flag("$Overdue")).unwrap();
    assert!(flagged.has_flag("\\Flagged"), "shown in every client");
    let done = stack.mailbox("bid.ra", "Done").await;
    assert!(done.iter().all(|m| !m.has_flag("$Overdue")));
    // The notice is queued with the tags; the outbox sends it a moment later.
    faultkit::wait_log(&log, "outbox_id=overdue-notice:bid-ra:2026-2000004", 1).await;
    faultkit::stop(daemon);
    let text = faultkit::log_text(&log);
    for reason in ["reason=answered", "reason=sent", "reason=done-folder"] {
        assert!(text.contains(reason), "{reason} in:\n{text}");
    }
    // The review that marked the clock overdue searched Sent and Done in full first (the
    // searches before it read only what came since the one before).
    let lines: Vec<&str> = text.lines().collect();
    let ran_out = lines
        .iter()
        .position(|l| l.contains("desk clock ran out"))
        .unwrap();
    let before: Vec<&&str> = lines[..ran_out]
        .iter()
        .filter(|l| l.contains("replies searched") && l.contains("desk=bid-ra"))
        .collect();
    assert!(before.len() >= 4, "{before:#?}");
    for last in &before[before.len() - 2..] {
        assert!(last.contains("full=true"), "{before:#?}");
    }
    assert!(
        before.iter().any(|l| l.contains("full=false")),
        "{before:#?}"
    );
    // The level-3 notice went to the user of the overdue ticket, once.
    let notices: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.contains("mail sent") && l.contains("outbox_id=overdue-notice:bid-ra:2026-2000004")
        })
        .collect();
    assert_eq!(notices.len(), 1, "{text}");
    assert!(
        notices[0].contains("recipients=meena.iyer@rites.co.in"),
        "{text}"
    );

    let report = faultkit::ticketgate(&config, &["report", "--overdue", "--format", "csv"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&report.stdout);
    assert!(report.status.success(), "{listed}");
    let lines: Vec<&str> = listed.lines().skip(1).collect();
    assert_eq!(lines.len(), 1, "{listed}");
    assert!(
        lines[0].starts_with("bid-ra,2026-2000004,overdue,"),
        "{listed}"
    );
    // Today's digest, printed for a supervisor at the terminal: the four mails, the overdue
    // ticket (also when its limit is this very second), the three answered in time.
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::get("Asia/Kolkata").unwrap())
        .date()
        .to_string();
    let out = faultkit::ticketgate(&config, &["digest", "--day", &today])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}");
    assert!(
        printed.lines().any(|l| l.starts_with("bid-ra ")
            && l.split_whitespace().nth(1) == Some("4")
            && l.split_whitespace().nth(5) == Some("1")),
        "bid-ra: 4 mails, 1 overdue:\n{printed}"
    );
    assert!(printed.contains("bid-ra: ticket 2026-2000004"), "{printed}");
    assert!(
        printed.contains("100 %"),
        "three answered in time: {printed}"
    );

    // Restarted (kill -9 before, no clean stop): the clocks are in the database; nothing is
    // tagged twice and the answered ones stay stopped.
    let log2 = dir.path().join("daemon2.log");
    let daemon = faultkit::spawn_watching(&config, &log2).await;
    faultkit::wait_log(&log2, "watching", 7).await;
    faultkit::stop(daemon);
    let inbox = stack.mailbox("bid.ra", "INBOX").await;
    assert_eq!(inbox.iter().filter(|m| m.has_flag("$Overdue")).count(), 1);
    let again = faultkit::log_text(&log2);
    assert!(!again.contains("desk clock ran out"), "{again}");
    assert!(!again.contains("overdue-notice"), "{again}");

    // The digest: the first daemon queued yesterday's at its start and sent it, once.
    let digests = stack
        .wait_for("helpdesk", "INBOX", WAIT, "the digest", |m| {
            m.iter().any(|m| m.subject().starts_with("[Digest "))
        })
        .await;
    let digest = digests
        .iter()
        .find(|m| m.subject().starts_with("[Digest "))
        .unwrap();
    let parsed = mail_parser::MessageParser::default()
        .parse(&digest.raw)
        .unwrap();
    assert_eq!(parsed.text_body.len(), 1, "a text/plain part");
    assert_eq!(parsed.html_body.len(), 1, "and a text/html one");
    assert!(
        parsed.body_html(0).unwrap().contains("bgcolor"),
        "bars as table cells"
    );
    let out = faultkit::ticketgate(&config, &["digest", "--send"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("already queued for this day"),
        "once per day: {said}"
    );
}

/// Issue #17: "clocks survive restarts and UIDVALIDITY changes". The desk's folder is
/// deleted and restored by an officer's client (a new UIDVALIDITY, new UIDs): the restored
/// mail is decided again and joins the clock already running on its ticket (no second
/// clock), and when the limit passes it is the restored copy that is tagged `$Overdue`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_survives_a_recreated_mailbox() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().unwrap();
    let rules = faultkit::rules_with(dir.path(), &[("\ndesk_hours = 48", "\ndesk_hours = 0.002")]);
    let config = faultkit::deployment(&stack, dir.path(), "", "", Some(&rules));
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "login = \"bid.ra\"\n",
        "login = \"bid.ra\"\nmailbox = \"Desk\"\n",
    );
    std::fs::write(&config, text).unwrap();
    let raw = mail("2026-3000001", "restored");
    stack.append("bid.ra", "Desk", &raw).await;
    run_once(&config);
    // The officer's client deletes the folder and restores it with the same mail.
    let mut officer = stack.login("bid.ra").await;
    support::bounded("delete the folder", async {
        officer.delete("Desk").await.unwrap();
        officer.logout().await.unwrap();
    })
    .await;
    stack.append("bid.ra", "Desk", &raw).await;
    let log = run_once(&config);
    assert!(log.contains("UIDVALIDITY changed"), "{log}");
    // Until the limit passes (7.2 s after the first decision), each run reviews the clock.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let desk = stack.mailbox("bid.ra", "Desk").await;
        if desk.iter().any(|m| m.has_flag("$Overdue")) {
            assert_eq!(desk.len(), 1);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never tagged $Overdue"
        );
        run_once(&config);
    }
    let out = faultkit::ticketgate(&config, &["report", "--overdue", "--format", "csv"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(listed.lines().count(), 2, "one clock, not two: {listed}");
}

/// Issue #16: the desk's clocks are reviewed a page at a time
/// (`ticketgate::deskclock::CLOCKS_PER_PAGE`), so that a desk with thousands of open clocks
/// does not hold them all at once. With more clocks than a page, an answer on either page
/// stops its clock (\Answered set in the officer's client before the daemon started, a
/// reply in Sent), and every other clock runs out once: tagged `$Overdue` on the server,
/// logged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clocks_on_every_page_of_the_review_stop_or_run_out_once() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().unwrap();
    // 1.8 s: the clocks run out during the catch-up or after it; either way the review
    // stops the answered ones first, and tags each of the others once.
    let rules = faultkit::rules_with(
        dir.path(),
        &[("\ndesk_hours = 48", "\ndesk_hours = 0.0005")],
    );
    let config = faultkit::deployment(&stack, dir.path(), "", "", Some(&rules));
    let metrics = faultkit::with_metrics(&config);
    let count = ticketgate::deskclock::CLOCKS_PER_PAGE as usize + 10;
    // One ticket per mail, in UID order: the review's pages go by (started, ticket), so
    // the last ten mails are on the second page.
    let answered: Vec<usize> = (0..count).step_by(400).collect();
    assert!(
        answered.iter().any(|&n| n >= count - 10),
        "one on the second page"
    );
    let replied = [3, count - 5];
    let mut officer = stack.login("bid.ra").await;
    for n in 0..count {
        let raw = mail(&format!("2026-{:07}", 4_000_000 + n), &format!("page{n}"));
        let flags = answered.contains(&n).then_some("(\\Answered)");
        support::bounded("append", officer.append("INBOX", flags, None, &raw))
            .await
            .unwrap();
    }
    let _ = support::bounded("create Sent", officer.create("Sent")).await;
    for n in replied {
        let reply = format!(
            "From: bid.ra@gem.test\r\nTo: meena.iyer@rites.co.in\r\n\
             Subject: Re: Bid corrigendum\r\nMessage-ID: <answer-{n}@gem.test>\r\n\
             In-Reply-To: <page{n}@rites.co.in>\r\nReferences: <page{n}@rites.co.in>\r\n\
             Date: Mon, 30 Nov 2026 11:00:00 +0530\r\n\r\nDone.\r\n"
        );
        support::bounded(
            "append",
            officer.append("Sent", None, None, reply.as_bytes()),
        )
        .await
        .unwrap();
    }
    support::bounded("log out", officer.logout()).await.unwrap();

    let log = dir.path().join("daemon.log");
    let daemon = faultkit::spawn_watching(&config, &log).await;
    let stopped = answered.len() + replied.len();
    faultkit::wait_log(&log, "desk clock ran out", count - stopped).await;
    faultkit::wait_log(&log, "desk clock stopped", stopped).await;
    // The gauges add up every page's clocks once the review ends: all running, all overdue.
    let running = count - stopped;
    let want = [
        format!("ticketgate_desk_clocks_open{{desk=\"bid-ra\"}} {running}"),
        format!("ticketgate_desk_clocks_overdue{{desk=\"bid-ra\"}} {running}"),
    ];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, body) = faultkit::http_get(metrics, "/metrics").await;
        if want.iter().all(|w| body.lines().any(|l| l == w)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{want:?} not in:\n{body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    faultkit::stop(daemon);

    let text = faultkit::log_text(&log);
    let lines = |needle: &str| text.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(lines("desk clock ran out"), count - stopped, "once each");
    assert_eq!(lines("reason=answered"), answered.len());
    assert_eq!(lines("reason=sent"), replied.len());
    let inbox = stack.mailbox("bid.ra", "INBOX").await;
    assert_eq!(inbox.len(), count);
    for (n, m) in inbox.iter().enumerate() {
        let answer = answered.contains(&n) || replied.contains(&n);
        assert_eq!(
            m.has_flag("$Overdue"),
            !answer,
            "mail {n} ({}): {:?}",
            m.subject(),
            m.flags
        );
    }
}

/// The review searches the Sent folder in full once, then only for what came since (issue
/// #16): a reply filed into Sent after that search is seen on the next round even when
/// its client dated it ten days back (an APPEND with an old internal date, as when an
/// officer's client moves an old reply there), which a search by date alone misses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_filed_into_sent_with_an_old_date_still_stops_its_clock() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().unwrap();
    let config = faultkit::deployment(&stack, dir.path(), "", "", None);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[logging]\nlevel = \"debug\"\n");
    std::fs::write(&config, text).unwrap();
    stack
        .append("bid.ra", "INBOX", &mail("2026-5000001", "dated1"))
        .await;
    let earlier = b"From: bid.ra@gem.test\r\nSubject: an old reply\r\n\
                    Message-ID: <old-1@gem.test>\r\n\r\nOld.\r\n";
    stack.append("bid.ra", "Sent", earlier).await;
    let log = dir.path().join("daemon.log");
    let daemon = faultkit::spawn_watching(&config, &log).await;
    // The first round's review searched Sent in full.
    faultkit::wait_log_lines(&log, 1, "the first search of bid.ra's Sent", |l| {
        l.contains("replies searched") && l.contains("desk=bid-ra")
    })
    .await;
    // IMAP's date-time, quoted (async-imap sends it as given).
    let ten_days_ago = jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::from_hours(240))
        .unwrap()
        .strftime("\"%d-%b-%Y %H:%M:%S +0000\"")
        .to_string();
    let reply = "From: bid.ra@gem.test\r\nTo: meena.iyer@rites.co.in\r\n\
                 Subject: Re: Bid corrigendum\r\nMessage-ID: <answer-dated@gem.test>\r\n\
                 In-Reply-To: <dated1@rites.co.in>\r\nReferences: <dated1@rites.co.in>\r\n\r\n\
                 Published.\r\n";
    let mut officer = stack.login("bid.ra").await;
    // An unquoted date-time would make Dovecot wait for a literal: bounded.
    support::bounded(
        "append with a date",
        officer.append("Sent", None, Some(&ten_days_ago), reply.as_bytes()),
    )
    .await
    .unwrap();
    support::bounded("log out", officer.logout()).await.unwrap();
    // New mail starts the next round.
    stack
        .append("bid.ra", "INBOX", &mail("2026-5000002", "dated2"))
        .await;
    faultkit::wait_log(&log, "reason=sent", 1).await;
    faultkit::stop(daemon);
    let text = faultkit::log_text(&log);
    let stopped: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("desk clock stopped"))
        .collect();
    assert_eq!(stopped.len(), 1, "{text}");
    assert!(stopped[0].contains("ticket=2026-5000001"), "{text}");
    // The first search read the folder in full; the later ones what came since (from the
    // UIDNEXT the first one saw).
    let searches: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("replies searched") && l.contains("desk=bid-ra"))
        .collect();
    assert!(searches.len() >= 2, "{text}");
    assert!(
        searches[0].contains("full=true") && searches[0].contains("search=SINCE "),
        "{}",
        searches[0]
    );
    assert!(
        searches[1..]
            .iter()
            .all(|l| l.contains("full=false") && l.contains("search=OR UID ")),
        "{searches:#?}"
    );
}
