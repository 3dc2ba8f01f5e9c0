//! SPEC 5 "bad input gets a logged, clear outcome and never stops the daemon", on the real
//! servers: real-world mails of ../shared/corpus in the desks' mailboxes, a mail over the
//! size limit, header injection attempts, planted MIME boundaries, and a sender flooding a
//! desk.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed expectation is a failed test"
)]

mod faultkit;
mod support;

use std::path::{Path, PathBuf};

use faultkit::{
    deployment, log_text, login, mail, redirects, rules_with, run_once, spawn_watching, stop,
};
use support::{DESKS, MailStack, WAIT};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read corpus dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if p.is_file() && p.extension().is_none_or(|x| x != "md") {
            out.push(p);
        }
    }
}

/// How many corpus mails go through the servers (every k-th file of the sorted corpus);
/// `TICKETGATE_CORPUS_ALL=1` takes all of them.
const SAMPLE: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_mails_in_the_desks_are_all_handled_and_no_desk_gets_stuck() {
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    assert!(
        corpus.is_dir(),
        "{} is not beside this checkout",
        corpus.display()
    );
    let mut all = Vec::new();
    files(&corpus, &mut all);
    all.sort();
    let step = if std::env::var_os("TICKETGATE_CORPUS_ALL").is_some() {
        1
    } else {
        (all.len() / SAMPLE).max(1)
    };
    let sample: Vec<&PathBuf> = all.iter().step_by(step).collect();
    let stack = MailStack::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = deployment(&stack, dir.path(), "", "", None);
    let log = dir.path().join("daemon.log");
    let mut child = spawn_watching(&config, &log).await;

    // Delivered with IMAP APPEND (Postfix would refuse some of these files at the door);
    // spread over the seven desks while the daemon watches them.
    let mut appended = [0usize; 7];
    let mut refused = Vec::new();
    let mut sessions = Vec::new();
    for (_, user) in DESKS {
        sessions.push(login(&stack, user).await);
    }
    for (i, path) in sample.iter().enumerate() {
        let raw = std::fs::read(path).expect("read corpus file");
        let d = i % DESKS.len();
        match support::bounded("append", sessions[d].append("INBOX", None, None, &raw)).await {
            Ok(()) => appended[d] += 1,
            Err(e) => refused.push(format!("{}: {e}", path.display())),
        }
    }
    for mut s in sessions {
        let _ = s.logout().await;
    }
    // Then one plain ticketless mail per desk: its redirect proves the desk still works
    // after everything before it.
    for (name, user) in DESKS {
        let raw = mail(
            "sentinel@example.in",
            &format!("{user}@gem.test"),
            None,
            &format!("Sentinel {name}"),
            &format!("sentinel-{name}@example.in"),
            "no ticket",
            "",
        );
        stack.append(user, "INBOX", &raw).await;
    }
    let deadline = std::time::Duration::from_secs(240);
    stack
        .wait_for(
            "helpdesk",
            "INBOX",
            deadline,
            "the sentinel of every desk",
            |m| {
                let r = redirects(m);
                DESKS
                    .iter()
                    .all(|(n, _)| r.contains_key(&format!("sentinel-{n}@example.in")))
            },
        )
        .await;
    let alive = child.try_wait().expect("try_wait").is_none();
    let text = log_text(&log);
    stop(child);
    assert!(alive, "the daemon stopped:\n{text}");
    assert!(!text.contains("panicked"), "{text}");
    // Every mail is where the rules put it and carries a keyword: none was skipped.
    for (d, (_, user)) in DESKS.iter().enumerate() {
        let views = faultkit::account(&stack, user).await;
        let desk_mail: Vec<_> = views
            .iter()
            .filter(|v| ["INBOX", "Redirected", "Broadcast"].contains(&v.1.as_str()))
            .collect();
        assert_eq!(
            desk_mail.len(),
            appended[d] + 1,
            "{user}: mails lost or duplicated"
        );
        let untagged: Vec<_> = desk_mail
            .iter()
            .filter(|v| !v.3.iter().any(|f| f.starts_with('$')))
            .collect();
        assert!(untagged.is_empty(), "{user}: untagged {untagged:#?}");
    }
    eprintln!(
        "{} corpus mails handled, {} refused by Dovecot's APPEND: {refused:?}",
        appended.iter().sum::<usize>(),
        refused.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_over_the_size_limit_is_set_aside_with_a_tag_and_a_log_line() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = rules_with(dir.path(), &[("max_mail_mb = 25", "max_mail_mb = 1")]);
    let config = deployment(&stack, dir.path(), "", "", Some(&rules));
    let big = mail(
        "big@example.in",
        "bid.ra@gem.test",
        None,
        "Scanned documents",
        "big-1@example.in",
        &"no ticket, huge attachment\r\n".repeat(80_000),
        "",
    );
    assert!(big.len() > 2 * 1024 * 1024);
    stack.append("bid.ra", "INBOX", &big).await;
    stack
        .append(
            "bid.ra",
            "INBOX",
            &mail(
                "small@example.in",
                "bid.ra@gem.test",
                None,
                "Small",
                "small-1@example.in",
                "no ticket",
                "",
            ),
        )
        .await;
    let log = run_once(&config);
    let inbox = stack.mailbox("bid.ra", "INBOX").await;
    assert_eq!(inbox.len(), 1, "the big mail stays in the inbox");
    assert!(inbox[0].has_flag("$Oversized"), "{:?}", inbox[0].flags);
    assert!(!inbox[0].has_flag("\\Seen"));
    assert_eq!(inbox[0].raw.len(), big.len(), "kept unchanged");
    let line = log
        .lines()
        .find(|l| l.contains("desk=bid-ra") && l.contains("larger than"))
        .unwrap_or_else(|| panic!("no log line for the big mail:\n{log}"));
    assert!(
        line.contains(&format!("size={}", big.len())) && line.contains("limit=1048576"),
        "the log line says why: {line}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("desk=bid-ra") && l.contains("actions=tag:$Oversized")),
        "{log}"
    );
    // It is not redirected (the helpdesk would get a 2 MB attachment); the small one is.
    let h = stack
        .wait_for(
            "helpdesk",
            "INBOX",
            WAIT,
            "the small mail's redirect",
            |m| !m.is_empty(),
        )
        .await;
    assert_eq!(
        redirects(&h).keys().collect::<Vec<_>>(),
        ["small-1@example.in"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_injection_cannot_add_recipients_to_outgoing_mail() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = deployment(&stack, dir.path(), "", "", None);
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let attempts: Vec<(String, String)> = vec![
        // CRLF in an encoded-word subject, which the redirect's subject repeats.
        (
            format!("From: a@example.in\r\nSubject: =?utf-8?b?{}?=\r\n", b64("Help\r\nBcc: evil1@attacker.test")),
            "inj-1@example.in".into(),
        ),
        // A folded subject whose continuation looks like a header.
        (
            "From: b@example.in\r\nSubject: Help\r\n Bcc: evil2@attacker.test\r\n".into(),
            "inj-2@example.in".into(),
        ),
        // CRLF in an encoded-word display name of the sender (copied in Cc).
        (
            format!("From: =?utf-8?b?{}?= <c@example.in>\r\nSubject: Help\r\n", b64("C\r\nBcc: evil3@attacker.test")),
            "inj-3@example.in".into(),
        ),
        // A quoted local part with CRLF in Reply-To (whom the copy goes to).
        (
            "From: d@example.in\r\nReply-To: \"d\\\r\nBcc: evil4@attacker.test\"@example.in\r\nSubject: Help\r\n".into(),
            "inj-4@example.in".into(),
        ),
        // The incoming mail's own Bcc and Cc headers are not copied into the redirect.
        (
            "From: e@example.in\r\nBcc: evil5@attacker.test\r\nSubject: Help\r\n".into(),
            "inj-5@example.in".into(),
        ),
        // An encoded-word address list in Reply-To.
        (
            format!("From: f@example.in\r\nReply-To: =?utf-8?b?{}?=\r\nSubject: Help\r\n", b64("f@example.in, evil6@attacker.test")),
            "inj-6@example.in".into(),
        ),
    ];
    for (head, id) in &attempts {
        let raw = format!(
            "{head}To: bid.ra@gem.test\r\nMessage-ID: <{id}>\r\nDate: Mon, 2 Nov 2026 10:00:00 +0530\r\n\r\nno ticket\r\n"
        );
        stack.append("bid.ra", "INBOX", raw.as_bytes()).await;
    }
    let log = run_once(&config);
    let h = stack
        .wait_for("helpdesk", "INBOX", WAIT, "redirects", |m| {
            m.len() >= attempts.len()
        })
        .await;
    for m in &h {
        for name in ["To", "Cc", "Bcc", "Reply-To"] {
            let v = m.header(name).unwrap_or_default();
            assert!(
                !v.contains("attacker"),
                "{name}: {v} in\n{}",
                String::from_utf8_lossy(&m.raw)
            );
        }
        let head = String::from_utf8_lossy(&m.raw);
        let head = head.split("\r\n\r\n").next().unwrap_or_default();
        assert!(
            !head
                .lines()
                .any(|l| l.to_ascii_lowercase().starts_with("bcc:")),
            "{head}"
        );
    }
    // The mail system's own record of every recipient it was given.
    let postfix = std::fs::read_to_string(stack.dir.join("log/postfix.log")).unwrap_or_default();
    let evil: Vec<&str> = postfix
        .lines()
        .filter(|l| l.contains("attacker.test") && l.contains("to=<"))
        .collect();
    assert!(evil.is_empty(), "{evil:#?}\n{log}");
    assert_eq!(
        redirects(&h).len(),
        attempts.len(),
        "every attempt was still redirected to the helpdesk:\n{log}"
    );
}

/// Issue #13, on the real path (IMAP in, the outbox, Postfix, the helpdesk's mailbox): a
/// sender who knows how ticketgate's boundaries look (`=_tg_` and 16 hex digits) plants
/// 2,000 guesses, each a `--boundary` line followed by a forged HTML part in the desk's
/// voice. The helpdesk's copy must hold exactly the desk's note and the original, byte for
/// byte as it was in the desk's mailbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_boundaries_cannot_add_a_part_to_the_desks_redirect() {
    use mail_parser::{MessageParser, PartType};
    let stack = MailStack::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = deployment(&stack, dir.path(), "", "", None);
    let forged = "Content-Type: text/html\r\n\r\n<b>The desk has verified this user: reset account 4711</b>\r\n";
    let mut body = String::from("Please help, no ticket yet.\r\n");
    let guesses = (0u64..1000).chain((0u64..1000).map(|i| u64::MAX - i * 0x9e37_79b9));
    for n in guesses {
        body.push_str(&format!("--=_tg_{n:016x}\r\n{forged}"));
    }
    let raw = format!(
        "From: Mallory <mallory@example.in>\r\nTo: bid.ra@gem.test\r\nSubject: Account reset\r\n\
         X-Note: --=_tg_0000000000000007\r\nMessage-ID: <planted-1@example.in>\r\n\
         Date: Mon, 2 Nov 2026 10:00:00 +0530\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\r\n{body}"
    );
    stack.append("bid.ra", "INBOX", raw.as_bytes()).await;
    let log = run_once(&config);
    let h = stack
        .wait_for("helpdesk", "INBOX", WAIT, "the redirect", |m| !m.is_empty())
        .await;
    assert_eq!(redirects(&h).len(), 1, "{log}");
    let copy = &h[0];
    let m = MessageParser::default()
        .parse(&copy.raw)
        .expect("the helpdesk's copy parses");
    let PartType::Multipart(top) = &m.parts[0].body else {
        panic!("not multipart:\n{}", String::from_utf8_lossy(&copy.raw))
    };
    assert_eq!(top.len(), 2, "exactly the note and the original");
    let note = m.parts[top[0] as usize].text_contents().unwrap_or_default();
    assert!(note.starts_with("Dear Helpdesk"), "{note}");
    assert!(!note.contains("verified"), "{note}");
    let attached = &m.parts[top[1] as usize];
    assert!(matches!(attached.body, PartType::Message(_)));
    assert!(
        !m.parts.iter().any(|p| matches!(p.body, PartType::Html(_))),
        "a forged HTML part beside the note"
    );
    assert_eq!(
        &copy.raw[attached.offset_body as usize..attached.offset_end as usize],
        raw.as_bytes(),
        "the original, byte for byte"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_flooding_a_desk_gets_one_advisory_per_period() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = deployment(&stack, dir.path(), "", "", None);
    let n = 25;
    for i in 0..n {
        // Each one a broadcast To three desks with a ticket: tagged, advisory at most once.
        let raw = mail(
            "flood@example.in",
            "bid.ra@gem.test, order.process@gem.test, payment.process@gem.test",
            None,
            &format!("Ticket 2025-0000{i:03} URGENT {i}"),
            &format!("flood-{i}@example.in"),
            "Please act now on my payment.",
            "",
        );
        for desk in ["bid.ra", "order.process", "payment.process"] {
            stack.append(desk, "INBOX", &raw).await;
        }
    }
    let log = run_once(&config);
    // A second run later still sends nothing more.
    run_once(&config);
    let outside = stack
        .wait_for("outside", "INBOX", WAIT, "the advisory", |m| !m.is_empty())
        .await;
    let to_flooder: Vec<_> = outside
        .iter()
        .filter(|m| {
            m.header("To")
                .is_some_and(|t| t.contains("flood@example.in"))
        })
        .collect();
    assert_eq!(to_flooder.len(), 1, "{log}");
    // And no other answer is waiting to go out: the outbox holds exactly that one.
    let rows = faultkit::outbox(dir.path()).await;
    assert_eq!(
        rows.len(),
        1,
        "reply_period_hours = 168: one advisory for 25 mails: {rows:#?}"
    );
    let tagged = stack.mailbox("payment.process", "INBOX").await;
    assert!(
        tagged.iter().all(|m| m.has_flag("$Broadcast")),
        "every copy still tagged"
    );
}

/// Issue #13: 1,100 idle connections to the metrics endpoint (more than systemd's default
/// soft descriptor limit of 1024) neither exhaust the daemon's descriptors nor delay its
/// mail. A Python process holds the connections (it raises its own descriptor limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_on_metrics_leaves_mail_flowing() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = deployment(&stack, dir.path(), "", "", None);
    let port = faultkit::with_metrics(&config);
    let log = dir.path().join("daemon.log");
    let child = spawn_watching(&config, &log).await;
    let flood = r#"
import resource, socket, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
held = []
for i in range(1100):
    s = socket.socket()
    # An attacker does not wait: connections beyond the server's backlog stay half-open.
    s.setblocking(False)
    s.connect_ex(("127.0.0.1", int(sys.argv[1])))
    held.append(s)
print("holding", len(held), flush=True)
time.sleep(120)
"#;
    let mut flooder = std::process::Command::new("python3")
        .args(["-c", flood, &port.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(flooder.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("flooder output");
    assert_eq!(line.trim(), "holding 1100", "the flood is in place");
    let raw = mail(
        "flood-victim@example.in",
        "bid.ra@gem.test",
        None,
        "Where is my bid?",
        "metrics-flood@example.in",
        "No ticket here.",
        "",
    );
    stack
        .send("flood-victim@example.in", &["bid.ra@gem.test"], &raw)
        .await;
    let started = std::time::Instant::now();
    let h = stack
        .wait_for(
            "helpdesk",
            "INBOX",
            WAIT,
            "the redirect during the flood",
            |m| m.len() == 1,
        )
        .await;
    assert_eq!(redirects(&h).len(), 1);
    let fds = std::fs::read_dir(format!("/proc/{}/fd", child.id()))
        .expect("daemon's fds")
        .count();
    assert!(
        fds < 200,
        "the daemon holds {fds} descriptors during the flood"
    );
    let _ = flooder.kill();
    let _ = flooder.wait();
    println!(
        "flood: redirect delivered {:.1} s after sending, daemon holding {fds} descriptors",
        started.elapsed().as_secs_f64()
    );
    stop(child);
}

/// Issue #13: a backlog of large mails is fetched by bytes, not only by count: peak memory
/// stays within a few times the largest mail above the idle daemon, whatever the batch size
/// (here 7, as every integration test uses), and every mail is handled. Then the same with
/// mails that are redirected with the whole mail attached, within the same bound (see
/// README "Attacks tried").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_large_mails_stays_within_a_few_mails_of_memory() {
    use base64::Engine;
    let stack = MailStack::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = deployment(&stack, dir.path(), "", "", None);
    const MAIL_MB: usize = 18;
    const MAILS: usize = 8;
    let blob = base64::engine::general_purpose::STANDARD.encode(vec![
        0x5au8;
        MAIL_MB * 1024 * 1024 * 3 / 4
            - 64 * 1024
    ]);
    let lines: Vec<&str> = blob
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).expect("base64"))
        .collect();
    let attachment = lines.join("\r\n");
    let big = |i: usize, subject: &str| {
        format!(
            "From: big{i}@example.in\r\nTo: bid.ra@gem.test\r\nSubject: {subject}\r\nMessage-ID: <big-{i}@example.in>\r\nDate: Mon, 2 Nov 2026 10:00:00 +0530\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nThe scan is attached.\r\n--b\r\nContent-Type: application/pdf; name=scan.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n{attachment}\r\n--b--\r\n"
        )
    };
    let peak_of_run_once = || {
        let out = std::process::Command::new("/usr/bin/time")
            .args([
                "-v",
                env!("CARGO_BIN_EXE_ticketgate"),
                "run",
                "--once",
                "--config",
            ])
            .arg(&config)
            .env_remove("TICKETGATE_DATABASE")
            .output()
            .expect("/usr/bin/time -v ticketgate run --once");
        support::keep_output("time-ticketgate", &out);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{err}");
        err.lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("Maximum resident set size (kbytes): ")
            })
            .and_then(|v| v.trim().parse::<f64>().ok())
            .expect("peak RSS in /usr/bin/time -v output")
            / 1024.0
    };

    for i in 0..MAILS {
        let raw = big(i, &format!("Ticket 2024-00000{i:02} scan attached"));
        stack.append("bid.ra", "INBOX", raw.as_bytes()).await;
    }
    let tagged_mb = peak_of_run_once();
    let inbox = stack.mailbox("bid.ra", "INBOX").await;
    assert_eq!(inbox.len(), MAILS);
    assert!(inbox.iter().all(|m| m.has_flag("$Ticket")), "{inbox:?}");

    for i in MAILS..MAILS + MAILS / 2 {
        stack
            .append(
                "bid.ra",
                "INBOX",
                big(i, "No ticket, scan attached").as_bytes(),
            )
            .await;
    }
    let redirected_mb = peak_of_run_once();
    assert_eq!(stack.mailbox("bid.ra", "Redirected").await.len(), MAILS / 2);
    let h = stack
        .wait_for(
            "helpdesk",
            "INBOX",
            WAIT,
            "the redirects of large mails",
            |m| m.len() == MAILS / 2,
        )
        .await;
    assert_eq!(redirects(&h).len(), MAILS / 2);
    println!(
        "mails of {MAIL_MB} MB, batch 7: peak RSS {tagged_mb:.0} MB for {MAILS} tagged, {redirected_mb:.0} MB for {} redirected",
        MAILS / 2
    );
    // The idle daemon is about 20-30 MB; a batch decided while the next is fetched holds
    // at most about two mails, and parsing one about doubles it.
    let bound = 30.0 + 4.0 * MAIL_MB as f64;
    assert!(
        tagged_mb < bound,
        "tagging: peak RSS {tagged_mb:.0} MB, more than {bound:.0} MB (idle + 4 x {MAIL_MB} MB)"
    );
    // Redirects: composing, storing (sqlx and SQLite copy the mail), reading it back and
    // sending it copy a mail several times; the process-wide memory budget (four largest
    // allowed mails: src/budget.rs) makes a desk's decision and the outbox's send of large
    // mails take turns, and freed blocks go back to the system (a fixed mmap threshold).
    let bound = 30.0 + 4.0 * MAIL_MB as f64;
    assert!(
        redirected_mb < bound,
        "redirecting: peak RSS {redirected_mb:.0} MB, more than {bound:.0} MB (idle + 4 x {MAIL_MB} MB)"
    );
}

/// Issue #13: an attached message with a million parts is handled in seconds, and another
/// desk's mail arriving meanwhile is redirected as usual (parsing runs off the runtime's
/// worker, with a cap on the parts scanned).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_part_mail_does_not_hold_up_another_desk() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = deployment(&stack, dir.path(), "", "", None);
    let log = dir.path().join("daemon.log");
    let child = spawn_watching(&config, &log).await;
    let mut inner = String::from(
        "From: h@gem.test\r\nSubject: s\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=p\r\n\r\n",
    );
    for _ in 0..1_000_000 {
        inner.push_str("--p\r\n\r\nx\r\n");
    }
    inner.push_str("--p--\r\n");
    let bomb = format!(
        "From: bomb@example.in\r\nTo: bid.ra@gem.test\r\nSubject: Ticket 2024-7777777 parts\r\nMessage-ID: <bomb@example.in>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--o\r\nContent-Type: message/rfc822\r\n\r\n{inner}\r\n--o--\r\n"
    );
    let started = std::time::Instant::now();
    stack.append("bid.ra", "INBOX", bomb.as_bytes()).await;
    let raw = mail(
        "other@example.in",
        "payment.process@gem.test",
        None,
        "Payment not received",
        "other-desk@example.in",
        "No ticket here.",
        "",
    );
    stack
        .send("other@example.in", &["payment.process@gem.test"], &raw)
        .await;
    stack
        .wait_for(
            "helpdesk",
            "INBOX",
            WAIT,
            "the other desk's redirect",
            |m| m.len() == 1,
        )
        .await;
    let other = started.elapsed();
    let inbox = stack
        .wait_for(
            "bid.ra",
            "INBOX",
            WAIT,
            "the million-part mail tagged",
            |m| m.len() == 1 && m[0].has_flag("$Ticket"),
        )
        .await;
    assert_eq!(inbox.len(), 1);
    println!(
        "million parts: other desk's redirect after {:.1} s, the mail tagged after {:.1} s",
        other.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    stop(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_flooding_a_desk_gets_at_most_the_configured_number_of_answers() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = deployment(&stack, dir.path(), "", "", None);
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
