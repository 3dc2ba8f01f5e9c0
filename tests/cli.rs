//! The real binary on real files: `check` reports every problem with file and line and exits
//! 78; `classify` prints one JSON object per file, also for files that are not mail.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed expectation is a failed test"
)]

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

/// The shipped config.toml, with the demo CA path pointed at a file that exists, and
/// credentials for every desk: what a sysadmin has after following the README.
fn shipped_config(dir: &Path) -> PathBuf {
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, "not used by check\n").expect("ca");
    let creds = dir.join("credentials");
    std::fs::create_dir_all(&creds).expect("creds");
    for d in [
        "buyer.registration",
        "seller.registration",
        "upload.product",
        "direct.purchase",
        "bid.ra",
        "order.process",
        "payment.process",
    ] {
        std::fs::write(creds.join(d), "secret\n").expect("cred");
    }
    let text = std::fs::read_to_string(manifest().join("config.toml"))
        .expect("config.toml")
        .replace("/tmp/ticketgate-demo/tls/ca.pem", &ca.display().to_string())
        .replace(
            "files = [\"rules/gem.toml\"]",
            &format!(
                "files = [\"{}\"]",
                manifest().join("rules/gem.toml").display()
            ),
        );
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
        stdout.contains("ok: 7 desk(s), 9 rule(s), 2 ticket pattern(s)"),
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
        (r, 8, "unknown ticket source `footer`"),
        (r, 9, "invalid regex"),
        (r, 13, "unknown field `sender`"),
        (r, 18, "keyword `$No Ticket` contains ` `"),
        (r, 18, "unknown action `explode`"),
        (r, 23, "needs a template `[template.advisory]`"),
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
