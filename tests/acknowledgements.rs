//! The registry's `acknowledgements` source (issue #17) on a real Dovecot and Postfix: the
//! helpdesk's acknowledgement mails in a folder of its mailbox teach the daemon tickets —
//! a desk mail citing one that is old enough stays with the desk, a young one goes back
//! with the time the desk can take it up (from the acknowledgement's Date, or its arrival
//! without one), one acknowledged to someone else is tagged `$NotRequester`, and a ticket
//! no acknowledgement names (only a user's own mail does) stays unknown. A second run
//! reads only the mail after the last UID it learned from; a folder made again (a new
//! UIDVALIDITY) is read from its start. The helpdesk's folder keeps its mails byte for byte
//! and their flags (no \Seen). `check --connect` examines the folder.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed expectation is a failed test"
)]

mod faultkit;
mod support;

use faultkit::{redirects, run_once};
use support::{MailStack, PASSWORD, WAIT};

const HOUR: i64 = 3_600;
const FOLDER: &str = "Acknowledgements";

fn now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

fn rfc2822(at: i64) -> String {
    jiff::Timestamp::from_second(at)
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::get("Asia/Kolkata").unwrap())
        .strftime("%a, %d %b %Y %H:%M:%S %z")
        .to_string()
}

/// An acknowledgement as the GeM helpdesk sends it; `date`: its Date header, if any.
fn ack(ticket: &str, to: &str, date: Option<i64>) -> Vec<u8> {
    let date = date.map_or(String::new(), |d| format!("Date: {}\r\n", rfc2822(d)));
    format!(
        "From: GeM Helpdesk <helpdesk@gem.test>\r\nTo: {to}\r\n{date}\
         Subject: Your complaint has been registered - Ticket No {ticket}\r\n\
         Message-ID: <ack-{ticket}@gem.test>\r\n\r\n\
         Dear User,\r\nYour complaint has been registered with Ticket No: {ticket}.\r\n"
    )
    .into_bytes()
}

fn desk_mail(ticket: &str, id: &str) -> Vec<u8> {
    format!(
        "From: Meena Iyer <meena.iyer@rites.co.in>\r\nTo: bid.ra@gem.test\r\n\
         Subject: Bid corrigendum, Ticket No:- {ticket}\r\nMessage-ID: <{id}@rites.co.in>\r\n\
         Date: {}\r\n\r\nThe corrigendum is still not published.\r\n",
        rfc2822(now())
    )
    .into_bytes()
}

fn body(raw: &[u8]) -> String {
    mail_parser::MessageParser::default()
        .parse(raw)
        .and_then(|m| m.body_text(0).map(|t| t.into_owned()))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_are_learned_from_acknowledgements_without_changing_the_helpdesk_folder() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().unwrap();
    let config = faultkit::deployment(&stack, dir.path(), "", "", None);
    std::fs::write(
        dir.path().join("credentials/helpdesk"),
        format!("{PASSWORD}\n"),
    )
    .unwrap();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[registry]\n[registry.acknowledgements]\nlogin = \"helpdesk\"\npassword_file = \"credentials/helpdesk\"\nfolder = \"{FOLDER}\"\n"
    ));
    std::fs::write(&config, text).unwrap();

    let t = now();
    let young_at = t - 3 * HOUR;
    stack
        .append(
            "helpdesk",
            FOLDER,
            &ack(
                "2026-2000001",
                "meena.iyer@rites.co.in",
                Some(t - 60 * HOUR),
            ),
        )
        .await;
    stack
        .append(
            "helpdesk",
            FOLDER,
            &ack(
                "2026-2000002",
                "Meena Iyer <meena.iyer@rites.co.in>",
                Some(young_at),
            ),
        )
        .await;
    stack
        .append(
            "helpdesk",
            FOLDER,
            &ack("2026-2000003", "someone@gmail.com", Some(t - 100 * HOUR)),
        )
        .await;
    // No Date: its arrival (INTERNALDATE, now) counts, so the ticket is young.
    stack
        .append(
            "helpdesk",
            FOLDER,
            &ack("2026-2000004", "meena.iyer@rites.co.in", None),
        )
        .await;
    // A user's own mail in the folder citing a ticket: not an acknowledgement.
    stack
        .append(
            "helpdesk",
            FOLDER,
            &desk_mail("2026-2000009", "to-helpdesk"),
        )
        .await;
    let before = stack.mailbox("helpdesk", FOLDER).await;
    assert_eq!(before.len(), 5);

    let out = support::output(&mut faultkit::ticketgate(&config, &["check", "--connect"]));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(
            "acknowledgements: imap ok: Acknowledgements of helpdesk has 5 mail(s), UIDVALIDITY"
        ),
        "{said}"
    );
    assert!(out.status.success(), "{said}");

    for (ticket, id) in [
        ("2026-2000001", "old"),
        ("2026-2000002", "young"),
        ("2026-2000003", "other"),
        ("2026-2000004", "undated"),
        ("2026-2000009", "unknown"),
    ] {
        stack
            .append("bid.ra", "INBOX", &desk_mail(ticket, id))
            .await;
    }
    let log = run_once(&config);
    assert!(
        log.contains("reading the helpdesk's acknowledgements") && log.contains("from_uid=1"),
        "{log}"
    );
    assert!(log.contains("read=5 learned=4"), "{log}");

    let helpdesk = stack
        .wait_for("helpdesk", "INBOX", WAIT, "three mails back", |m| {
            m.len() >= 3
        })
        .await;
    assert_eq!(redirects(&helpdesk).len(), 3, "{log}");
    let subject = |prefix: &str, ticket: &str| {
        helpdesk
            .iter()
            .find(|m| m.subject() == format!("[{prefix}] Bid corrigendum, Ticket No:- {ticket}"))
            .unwrap_or_else(|| panic!("no {prefix} for {ticket} in {helpdesk:?}"))
    };
    // The desk can take the young ticket up 48 hours after the acknowledgement's Date.
    let ready = jiff::Timestamp::from_second(young_at + 48 * HOUR)
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::get("Asia/Kolkata").unwrap())
        .strftime("%Y-%m-%d %H:%M")
        .to_string();
    let note = body(&subject("Ticket too early", "2026-2000002").raw);
    assert!(note.contains(&format!("{ready} IST")), "{ready}: {note}");
    subject("Ticket too early", "2026-2000004");
    subject("Ticket not found", "2026-2000009");

    let inbox = stack.mailbox("bid.ra", "INBOX").await;
    assert_eq!(
        inbox.len(),
        2,
        "the old ticket and the other requester's stay"
    );
    let kept = |ticket: &str| {
        inbox
            .iter()
            .find(|m| m.subject().ends_with(ticket))
            .unwrap_or_else(|| panic!("{ticket} not kept"))
    };
    let old = kept("2026-2000001");
    assert!(
        old.has_flag("$Ticket") && !old.has_flag("$NotRequester"),
        "{:?}",
        old.flags
    );
    let other = kept("2026-2000003");
    assert!(other.has_flag("$NotRequester"), "{:?}", other.flags);

    // A second run reads only what came after the last UID learned from.
    stack
        .append(
            "helpdesk",
            FOLDER,
            &ack(
                "2026-2000005",
                "meena.iyer@rites.co.in",
                Some(t - 70 * HOUR),
            ),
        )
        .await;
    stack
        .append("bid.ra", "INBOX", &desk_mail("2026-2000005", "later"))
        .await;
    let log = run_once(&config);
    assert!(log.contains("from_uid=6"), "{log}");
    assert!(log.contains("read=1 learned=1"), "{log}");
    let inbox = stack.mailbox("bid.ra", "INBOX").await;
    assert_eq!(
        inbox.len(),
        3,
        "the newly acknowledged old ticket stays: {log}"
    );
    assert_eq!(
        redirects(&stack.mailbox("helpdesk", "INBOX").await).len(),
        3
    );

    // The helpdesk's folder: the same mails, byte for byte, with the same flags.
    let after = stack.mailbox("helpdesk", FOLDER).await;
    assert_eq!(after.len(), 6);
    for (b, a) in before.iter().zip(&after) {
        assert_eq!((b.uid, &b.flags, &b.raw), (a.uid, &a.flags, &a.raw));
    }
    assert!(after.iter().all(|m| !m.has_flag("\\Seen")), "{after:?}");

    // The folder made again (a new UIDVALIDITY): read again from its start.
    let mut s = stack.login("helpdesk").await;
    support::bounded("delete the folder", async {
        s.delete(FOLDER).await.unwrap();
        let _ = s.logout().await;
    })
    .await;
    stack
        .append(
            "helpdesk",
            FOLDER,
            &ack(
                "2026-2000006",
                "meena.iyer@rites.co.in",
                Some(t - 80 * HOUR),
            ),
        )
        .await;
    stack
        .append("bid.ra", "INBOX", &desk_mail("2026-2000006", "recreated"))
        .await;
    let log = run_once(&config);
    assert!(
        log.contains("new UIDVALIDITY: reading it again from the start")
            && log.contains("from_uid=1")
            && log.contains("read=1 learned=1"),
        "{log}"
    );
    assert_eq!(stack.mailbox("bid.ra", "INBOX").await.len(), 4, "{log}");
}
