//! The real binary on real files: `check` reports every problem with file and line and exits
//! 78; `classify` prints one JSON object per file, also for files that are not mail.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed expectation is a failed test"
)]

#[path = "support/gem.rs"]
mod gem;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn ticketgate(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ticketgate"));
    c.args(args)
        .env_remove("TICKETGATE_CONFIG")
        .env_remove("CREDENTIALS_DIRECTORY");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run ticketgate")
}

/// The shipped config.toml's text, with the rules file named by its absolute path.
fn shipped_text() -> String {
    std::fs::read_to_string(manifest().join("config.toml"))
        .expect("config.toml")
        .replace(
            "files = [\"rules/gem.toml\"]",
            &format!(
                "files = [\"{}\"]",
                manifest().join("rules/gem.toml").display()
            ),
        )
}

/// The shipped config.toml, with the demo CA path pointed at a file that exists, and
/// credentials for every desk: what a sysadmin has after following the README.
fn shipped_config(dir: &Path) -> PathBuf {
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, "not used by check\n").expect("ca");
    let creds = dir.join("credentials");
    std::fs::create_dir_all(&creds).expect("creds");
    for (_, user) in gem::DESKS {
        std::fs::write(creds.join(user), "secret\n").expect("cred");
    }
    let text = shipped_text().replace("/tmp/ticketgate-demo/tls/ca.pem", &ca.display().to_string());
    let path = dir.join("config.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn check_accepts_the_shipped_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = shipped_config(dir.path());
    let out = ticketgate(
        &["check", "--config", cfg.to_str().expect("utf8")],
        &[("CREDENTIALS_DIRECTORY", &dir.path().join("credentials"))],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("ok: 7 desk(s), 13 rule(s), 2 ticket pattern(s)"),
        "{stdout}"
    );
}

#[test]
fn check_accepts_the_marketplace_example() {
    let out = Command::new(env!("CARGO_BIN_EXE_ticketgate"))
        .args(["check", "--config"])
        .arg(manifest().join("rules/examples/marketplace-config.toml"))
        .env("MARKETPLACE_PW", "x")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_reports_every_problem_with_file_and_line_and_exits_78() {
    let cfg = manifest().join("tests/fixtures/config/bad-config.toml");
    let out = ticketgate(&["check", "--config", cfg.to_str().expect("utf8")], &[]);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    let c = "tests/fixtures/config/bad-config.toml";
    let r = "tests/fixtures/config/bad-rules.toml";
    for (file, line, text) in [
        (
            c,
            4,
            "security = \"plain\" is only allowed for a loopback host",
        ),
        (c, 9, "unknown field `securty`"),
        (c, 20, "unknown field `password`"),
        (r, 3, "broadcast_threshold must be at least 2"),
        (r, 4, "subaddress_delimiter must be punctuation"),
        (r, 5, "retention_days must be between 1 and 36600"),
        (r, 8, "unknown ticket source `footer`"),
        (r, 9, "invalid regex"),
        (r, 13, "unknown field `sender`"),
        (r, 18, "keyword `$No Ticket` contains ` `"),
        (r, 18, "unknown action `explode`"),
        (r, 23, "needs a template `[template.advisory]`"),
        (r, 27, "unknown placeholder `{responsable_desk}`"),
        (r, 30, "the text before {subject} can be 1"),
    ] {
        let found = err
            .lines()
            .any(|l| l.contains(&format!("{file}:{line}:")) && l.contains(text));
        assert!(found, "expected {file}:{line}: {text}\nin:\n{err}");
    }
    assert!(err.contains("problem(s) found"), "{err}");
}

#[test]
fn check_names_a_missing_config_file() {
    let out = ticketgate(&["check", "--config", "/nonexistent/ticketgate.toml"], &[]);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("/nonexistent/ticketgate.toml:0:0: cannot read file")
    );
}

#[test]
fn classify_prints_an_error_object_for_files_that_are_not_mail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = shipped_config(dir.path());
    let empty = dir.path().join("empty.eml");
    std::fs::write(&empty, "").expect("write");
    let binary = dir.path().join("binary.eml");
    std::fs::write(&binary, [0u8, 159, 146, 150, 0, 0, 255]).expect("write");
    let out = ticketgate(
        &[
            "classify",
            "--json",
            "--config",
            cfg.to_str().expect("utf8"),
            empty.to_str().expect("utf8"),
            binary.to_str().expect("utf8"),
        ],
        &[("CREDENTIALS_DIRECTORY", &dir.path().join("credentials"))],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 2);
    for l in &lines {
        assert!(l["error"].is_string(), "{l}");
        assert_eq!(l["actions"], serde_json::json!([]), "{l}");
        assert_eq!(l["ticket"], serde_json::Value::Null);
    }
}

#[test]
fn classify_gives_the_spec_keys_and_resolved_targets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = shipped_config(dir.path());
    let mail = dir.path().join("noticket.eml");
    std::fs::write(
        &mail,
        "From: Ramesh Kumar <ramesh.kumar@example.in>\r\nTo: bid.ra@gem.test\r\nSubject: Bid not visible\r\n\
         Message-ID: <a1@example.in>\r\nDate: Mon, 2 Nov 2026 10:00:00 +0530\r\n\r\nMy bid GEM/2024/B/1234567 is not visible.\r\n",
    )
    .expect("write");
    let out = ticketgate(
        &[
            "classify",
            "--json",
            "--config",
            cfg.to_str().expect("utf8"),
            mail.to_str().expect("utf8"),
        ],
        &[("CREDENTIALS_DIRECTORY", &dir.path().join("credentials"))],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    for key in [
        "file",
        "ticket",
        "ticket_source",
        "broadcast",
        "automatic",
        "actions",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(v["desk"], "bid-ra");
    assert_eq!(v["ticket"], serde_json::Value::Null);
    assert_eq!(
        v["actions"],
        serde_json::json!([
            "redirect:helpdesk@gem.test",
            "tag:$NoTicket",
            "tag:$Redirected",
            "file:Redirected"
        ])
    );
}

/// Issue #13: a database password never appears in any output, whichever form it has.
#[test]
fn an_unreachable_database_is_named_without_its_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = shipped_config(dir.path());
    for url in [
        "postgres://tg:Pw-in-userinfo-77@127.0.0.1:1/tg",
        "postgresql://tg@127.0.0.1:1/tg?connect_timeout=2&password=Pw-in-query-77",
    ] {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ticketgate"));
        let out = c
            .args(["report", "--config"])
            .arg(&config)
            .env("TICKETGATE_DATABASE", url)
            .env("CREDENTIALS_DIRECTORY", dir.path().join("credentials"))
            .output()
            .expect("run report");
        assert!(!out.status.success());
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.contains("Pw-in-"), "password in output: {all}");
        assert!(all.contains("cannot open state database postgres"), "{all}");
        assert!(all.contains("***"), "{all}");
    }
}

/// Issue #13: `check` warns about a password file others can read, and says the fix.
#[test]
fn check_warns_about_a_password_file_readable_by_others() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = shipped_config(dir.path());
    let pw = dir.path().join("bid.ra.pw");
    std::fs::write(&pw, "secret\n").expect("pw");
    let text = std::fs::read_to_string(&config).expect("config").replace(
        "password_credential = \"bid.ra\"",
        &format!("password_file = \"{}\"", pw.display()),
    );
    std::fs::write(&config, text).expect("config");
    let creds = dir.path().join("credentials");
    for (mode, warned) in [(0o644, true), (0o600, false)] {
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let out = ticketgate(
            &["check", "--config", config.to_str().expect("utf8")],
            &[("CREDENTIALS_DIRECTORY", &creds)],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert_eq!(
            err.contains("readable by others (mode 0644)") && err.contains("chmod 600"),
            warned,
            "mode {mode:o}: {err}"
        );
    }
}

/// A state database as the daemon leaves it (schema by the migrations, WAL mode), with
/// `rows` = (desk, decided_at, ticket, redirected) journaled, in `dir/state.db`.
fn state_db(dir: &Path, rows: &[(&str, i64, Option<&str>, bool)]) -> PathBuf {
    let db = dir.join("state.db");
    let mut sql = String::from("PRAGMA journal_mode=WAL;\n");
    for m in ["0001_initial.sql", "0002_journal_by_sender.sql"] {
        sql.push_str(
            &std::fs::read_to_string(manifest().join("migrations").join(m)).expect("migration"),
        );
        sql.push('\n');
    }
    for (i, (desk, at, ticket, redirected)) in rows.iter().enumerate() {
        sql.push_str(&format!(
            "INSERT INTO journal (desk, uidvalidity, uid, status, group_key, subject, ticket, broadcast, automatic, redirected, decided_at) \
             VALUES ('{desk}', 1, {i}, 'done', 'g{i}', 's', {}, 0, 0, {}, {at});\n",
            ticket.map_or("NULL".to_string(), |t| format!("'{t}'")),
            i32::from(*redirected)
        ));
    }
    let out = Command::new("sqlite3")
        .arg(&db)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().expect("stdin").write_all(sql.as_bytes())?;
            c.wait_with_output()
        })
        .expect("sqlite3");
    assert!(out.status.success(), "sqlite3 failed");
    db
}

/// Issue #15: a supervisor runs `report` without the desks' passwords or the CA file, as a
/// non-root member of the service's group, read-only; days are the rules' time zone (IST).
#[test]
fn report_runs_read_only_without_secrets_as_a_group_member_in_ist() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("state dir");
    // 2026-11-29 18:29:59 UTC (23:59:59 IST) and one second later (00:00:00 IST on the 30th).
    let t = 1_795_976_999;
    let db = state_db(
        &state,
        &[
            ("bid-ra", t, Some("2024-1234567"), false),
            ("bid-ra", t + 1, None, true),
            ("payment-process", t + 1, None, true),
        ],
    );
    // The shipped config as it is: its CA file (under /tmp/ticketgate-demo) need not exist,
    // and no credentials are given.
    let text = shipped_text().replace(
        "sqlite:///var/lib/ticketgate/state.db",
        &format!("sqlite://{}", db.display()),
    );
    let config = dir.path().join("config.toml");
    std::fs::write(&config, text).expect("config");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    // The service's files, readable by its group (here nogroup, whose member is nobody).
    let sh = |cmd: String| {
        assert!(
            Command::new("sh")
                .args(["-c", &cmd])
                .status()
                .expect("sh")
                .success(),
            "{cmd}"
        );
    };
    sh(format!(
        "chown -R root:nogroup {0} && chmod 0750 {0} && chmod 0640 {0}/*",
        state.display()
    ));
    let before: Vec<_> = std::fs::read_dir(&state)
        .expect("ls")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let as_nobody = |format: &str| {
        let out = Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_ticketgate"))
            .args(["report", "--days", "100000", "--format", format, "--config"])
            .arg(&config)
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("TICKETGATE_DATABASE")
            .output()
            .expect("setpriv");
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            out.status.success(),
            "report --format {format} as nobody: {err}"
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let csv = as_nobody("csv");
    assert_eq!(
        csv,
        "day,desk,mails,tickets,redirected,broadcast,automatic,errors\n\
         2026-11-29,bid-ra,1,1,0,0,0,0\n\
         2026-11-30,bid-ra,1,0,1,0,0,0\n\
         2026-11-30,payment-process,1,0,1,0,0,0\n"
    );
    let json: serde_json::Value = serde_json::from_str(&as_nobody("json")).expect("json");
    assert_eq!(json["time_zone"], "Asia/Kolkata");
    assert_eq!(json["days"].as_array().map(Vec::len), Some(3));
    assert_eq!(json["outbox"]["waiting"], 0);
    let table = as_nobody("table");
    assert!(table.contains("2026-11-30  payment-process"), "{table}");
    assert!(
        table.lines().any(|l| l
            .split_whitespace()
            .eq(["total", "3", "1", "2", "0", "0", "0"])),
        "{table}"
    );
    let after: Vec<_> = std::fs::read_dir(&state)
        .expect("ls")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(before, after, "report creates no file");
}

/// Issue #15: a wrong database path is an error naming it, and nothing is created.
#[test]
fn report_on_a_missing_database_names_the_path_and_creates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = shipped_config(dir.path());
    let missing = dir.path().join("nowhere/state.db");
    let out = Command::new(env!("CARGO_BIN_EXE_ticketgate"))
        .args(["report", "--config"])
        .arg(&config)
        .env(
            "TICKETGATE_DATABASE",
            format!("sqlite://{}", missing.display()),
        )
        .output()
        .expect("report");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&missing.display().to_string()) && err.contains("No such file"),
        "{err}"
    );
    assert!(!dir.path().join("nowhere").exists(), "nothing created");
}

/// Issue #15: `classify` never connects, so it needs neither the desks' passwords nor the
/// CA file: a rule author runs it with the shipped config as it is.
#[test]
fn classify_needs_no_passwords_and_no_ca_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = shipped_text().replace("/tmp/ticketgate-demo/tls/ca.pem", "/nonexistent/ca.pem");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, text).expect("config");
    let mail = manifest().join("tests/fixtures/mail/realworld/b16-label-colon-dash.eml");
    let out = Command::new(env!("CARGO_BIN_EXE_ticketgate"))
        .args(["classify", "--json", "--config"])
        .arg(&config)
        .arg(&mail)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .expect("classify");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["ticket"], "2024-9081726");
    // `check` and `run` still need both.
    let out = ticketgate(&["check", "--config", config.to_str().expect("utf8")], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("CA file /nonexistent/ca.pem does not exist"),
        "{err}"
    );
    assert!(err.contains("CREDENTIALS_DIRECTORY is not set"), "{err}");
}

/// Issue #15: a template that tells citizens the helpdesk's phone needs it in config.toml;
/// `check` names the missing key at the `[helpdesk]` section.
#[test]
fn check_names_helpdesk_contact_values_the_templates_need() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = shipped_config(dir.path());
    let text = std::fs::read_to_string(&config)
        .expect("config")
        .lines()
        .filter(|l| !l.starts_with("phone =") && !l.starts_with("web ="))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&config, &text).expect("config");
    let line = text
        .lines()
        .position(|l| l == "[helpdesk]")
        .expect("[helpdesk]")
        + 1;
    let creds = dir.path().join("credentials");
    let out = ticketgate(
        &["check", "--config", config.to_str().expect("utf8")],
        &[("CREDENTIALS_DIRECTORY", &creds)],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    for key in ["phone", "web"] {
        assert!(
            err.lines()
                .any(|l| l.contains(&format!("config.toml:{line}:"))
                    && l.contains(&format!("[helpdesk] {key} is not set"))),
            "{key}: {err}"
        );
    }
}

/// Issue #15: a wrongly typed value is located at the value, not its section; an [imap]
/// key in [smtp] and an invalid log level are refused at their keys; a missing rules file
/// is named, with no problem lacking a file name.
#[test]
fn check_locates_typed_values_misplaced_keys_levels_and_missing_rules() {
    let cfg = manifest().join("tests/fixtures/config/bad-config-2.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_ticketgate"))
        .args(["check", "--config"])
        .arg(&cfg)
        .env("TG_TEST_PW", "x")
        .output()
        .expect("check");
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    let c = "tests/fixtures/config/bad-config-2.toml";
    for (at, text) in [
        (
            format!("{c}:5:8:"),
            "invalid type: string \"10143\", expected u16",
        ),
        (format!("{c}:11:1:"), "`batch_size` is an [imap] setting"),
        (format!("{c}:17:1:"), "`loud` is not a log level"),
        (
            "tests/fixtures/config/missing-rules.toml:0:0:".to_string(),
            "cannot read file",
        ),
    ] {
        assert!(
            err.lines().any(|l| l.contains(&at) && l.contains(text)),
            "expected {at} {text} in:\n{err}"
        );
    }
    assert!(
        err.lines().all(|l| !l.starts_with(':')),
        "every problem names its file:\n{err}"
    );
}

/// Issue #15: `classify --show-mail` prints the mail `run` would send, rendered from the
/// templates: the broadcast advisory from the desk it names, the redirect with the sender in
/// Cc and the original attached, no placeholder left raw.
#[test]
fn classify_show_mail_prints_what_run_would_send() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = shipped_config(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_ticketgate"))
        .args(["classify", "--show-mail", "--config"])
        .arg(&config)
        .arg(manifest().join("tests/fixtures/mail/broadcast-all-desks.eml"))
        .arg(manifest().join("tests/fixtures/mail/no-ticket.eml"))
        .output()
        .expect("classify");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mails: Vec<&str> = text.split("--- mail to send").skip(1).collect();
    assert_eq!(mails.len(), 2, "{text}");
    let advisory = mails[0];
    assert!(
        advisory.contains("From: \"GeM Payment Process\" <payment.process@gem.test>"),
        "{advisory}"
    );
    assert!(
        advisory.contains("taken up by the payment-process desk"),
        "{advisory}"
    );
    let redirect = mails[1];
    for want in [
        "To: helpdesk@gem.test",
        "Cc: sunil.patil@example.in",
        "Subject: [No CRM ticket] Unable to register as seller",
        "1800-419-3436",
        "[attached: the original mail",
    ] {
        assert!(redirect.contains(want), "{want} in:\n{redirect}");
    }
    // A paragraph of the template is one line: a phone wraps it to its own width.
    assert!(
        redirect
            .lines()
            .any(|l| l.starts_with("The mail attached below")
                && l.ends_with("after 48 hours unresolved at the Helpdesk.")),
        "{redirect}"
    );
    assert!(
        !text.contains("{helpdesk") && !text.contains("{desk"),
        "{text}"
    );
}

/// Issue #15: the shipped Thunderbird tag definitions name every keyword the shipped rules
/// (and the daemon itself) set, so no decision is invisible in Thunderbird.
#[test]
fn thunderbird_tags_cover_every_shipped_keyword() {
    let tags = std::fs::read_to_string(manifest().join("contrib/thunderbird/ticketgate-tags.js"))
        .expect("tag file");
    let rules = std::fs::read_to_string(manifest().join("rules/gem.toml")).expect("rules");
    let mut keywords: Vec<String> = rules
        .split('"')
        .filter_map(|s| s.strip_prefix("tag:"))
        .filter(|k| !k.starts_with('\\'))
        .map(str::to_string)
        .collect();
    keywords.push("$Unreadable".into());
    keywords.push("$Broadcast".into());
    let desks = gem::desk_names();
    let mut expanded = Vec::new();
    for k in keywords {
        if k.contains("{suggested_desk}") {
            expanded.extend(desks.iter().map(|d| k.replace("{suggested_desk}", d)));
        } else {
            expanded.push(k);
        }
    }
    assert!(expanded.len() > 10, "{expanded:?}");
    for k in expanded {
        let key = format!("pref(\"mailnews.tags.{}.tag\"", k.to_lowercase());
        assert!(tags.contains(&key), "no Thunderbird tag for {k}");
    }
}

/// Issue #17: with `[registry]` naming the helpdesk's CSV export, `classify` (offline, no
/// password) shows the registry facts and decides on them as `run` would: a ticket 3 hours
/// old goes back to the helpdesk, one quoted by another organisation is tagged. A ticket
/// missing from the export is unknown; an export that cannot be read makes it unavailable.
#[test]
fn classify_reads_the_ticket_registry_export() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = shipped_config(dir.path());
    let hour = 3_600;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let at = |hours_ago: u64| {
        jiff::Timestamp::from_second(i64::try_from(now - hours_ago * hour).expect("time"))
            .expect("time")
            .to_string()
    };
    let csv = dir.path().join("tickets.csv");
    std::fs::write(
        &csv,
        format!(
            "Ticket No,Created On,Email,Status\n\
             2026-1000001,{},sunil.patil@example.in,Open\n\
             2026-1000002,{},someone@other.example,Open\n",
            at(3),
            at(100)
        ),
    )
    .expect("csv");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str(&format!(
        "\n[registry]\ncsv = \"{}\"\nticket_column = \"Ticket No\"\ncreated_column = \"Created On\"\nrequester_column = \"Email\"\nstate_column = \"Status\"\n",
        csv.display()
    ));
    std::fs::write(&config, text).expect("config");
    let mails = dir.path().join("mails");
    std::fs::create_dir_all(&mails).expect("mails");
    for (n, ticket) in [
        (1, "2026-1000001"),
        (2, "2026-1000002"),
        (3, "2026-1000009"),
    ] {
        std::fs::write(
            mails.join(format!("{n}.eml")),
            format!(
                "From: Sunil Patil <sunil.patil@example.in>\r\nTo: seller.registration@gem.test\r\n\
                 Subject: Registration pending, Ticket No:- {ticket}\r\nMessage-ID: <r{n}@example.in>\r\n\
                 Date: Mon, 30 Nov 2026 10:00:00 +0530\r\n\r\nPlease help.\r\n"
            ),
        )
        .expect("mail");
    }
    // `check` reads the export as `run` will, and names what it skips.
    let out = ticketgate(
        &["check", "--config", config.to_str().expect("utf8")],
        &[("CREDENTIALS_DIRECTORY", &dir.path().join("credentials"))],
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "registry: 2 ticket(s) in {}, 0 line(s) skipped",
            csv.display()
        )),
        "{said}"
    );
    let classify = || {
        Command::new(env!("CARGO_BIN_EXE_ticketgate"))
            .args(["classify", "--json", "--config"])
            .arg(&config)
            .args((1..=3).map(|n| mails.join(format!("{n}.eml"))))
            .output()
            .expect("classify")
    };
    let out = classify();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(rows[0]["registry"], "known");
    assert_eq!(rows[0]["ticket_age_hours"], 3);
    assert_eq!(rows[0]["ticket_too_young"], true);
    assert_eq!(rows[0]["requester_matches"], true);
    assert_eq!(rows[0]["ticket_state"], "Open");
    assert_eq!(rows[0]["rules"], serde_json::json!(["ticket-too-early"]));
    assert_eq!(rows[1]["ticket_age_hours"], 100);
    assert_eq!(rows[1]["requester_matches"], false);
    assert_eq!(
        rows[1]["rules"],
        serde_json::json!(["ticket-not-requester", "ticket"])
    );
    assert_eq!(rows[2]["registry"], "unknown");
    assert_eq!(rows[2]["rules"], serde_json::json!(["ticket-unknown"]));
    // The export gone: every lookup is unavailable, said once on stderr.
    std::fs::remove_file(&csv).expect("rm");
    let out = classify();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ticket registry unavailable"), "{err}");
    let first: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .expect("a line"),
    )
    .expect("json");
    assert_eq!(first["registry"], "unavailable");
    assert_eq!(
        first["rules"],
        serde_json::json!(["registry-unavailable", "ticket"])
    );
}
