//! The ticket registry's sources as the real binary reads config.toml (issue #17): `check`
//! refuses a `[registry]` with no source or two, and a database URL holding a password,
//! each at its file, line and column; it names a PostgreSQL or HTTP source without asking
//! it; `classify` consults only a CSV export offline and says so for the others. (The
//! sources' lookups themselves are tested in src/registry: a real CSV file, the test
//! PostgreSQL and a local HTTP server.)
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

/// The shipped config.toml in `dir` (rules by absolute path, the demo CA replaced by a file
/// that exists, credentials for every desk) with `registry` appended; its path and the
/// line number `registry`'s first line has.
fn config_with(dir: &Path, registry: &str) -> (PathBuf, usize) {
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, "not used by check\n").expect("ca");
    let creds = dir.join("credentials");
    std::fs::create_dir_all(&creds).expect("creds");
    for (_, user) in gem::DESKS {
        std::fs::write(creds.join(user), "secret\n").expect("cred");
    }
    let mut text = std::fs::read_to_string(manifest().join("config.toml"))
        .expect("config.toml")
        .replace(
            "files = [\"rules/gem.toml\"]",
            &format!(
                "files = [\"{}\"]",
                manifest().join("rules/gem.toml").display()
            ),
        )
        .replace("/tmp/ticketgate-demo/tls/ca.pem", &ca.display().to_string());
    if !text.ends_with('\n') {
        text.push('\n');
    }
    let first = text.lines().count() + 1;
    text.push_str(registry);
    let path = dir.join("config.toml");
    std::fs::write(&path, text).expect("write config");
    (path, first)
}

fn run(args: &[&str], dir: &Path) -> (Output, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ticketgate"))
        .args(args)
        .env_remove("TICKETGATE_CONFIG")
        .env("CREDENTIALS_DIRECTORY", dir.join("credentials"))
        .env("CRM_DB_PASSWORD", "db-pw-7c1d")
        .output()
        .expect("run ticketgate");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, said)
}

fn check(dir: &Path, registry: &str) -> (Output, String, String, usize) {
    let (config, first) = config_with(dir, registry);
    let (out, said) = run(&["check", "--config", config.to_str().expect("utf8")], dir);
    (out, said, config.display().to_string(), first)
}

#[test]
fn check_wants_exactly_one_source_at_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, said, path, first) = check(dir.path(), "[registry]\ntimeout_seconds = 3\n");
    assert_eq!(out.status.code(), Some(78), "{said}");
    assert!(
        said.contains(&format!(
            "{path}:{first}:1: [registry]: set exactly one source: csv = PATH, postgres = URL (with query) or http = URL-TEMPLATE"
        )),
        "{said}"
    );
    let (out, said, path, first) = check(
        dir.path(),
        "[registry]\ncsv = \"tickets.csv\"\nticket_column = \"No\"\ncreated_column = \"On\"\n\
         postgres = \"postgres://crm@db.example/crm\"\nquery = \"SELECT $1\"\n",
    );
    assert_eq!(out.status.code(), Some(78), "{said}");
    assert!(
        said.contains(&format!(
            "{path}:{}:1: [registry]: set exactly one source, not `csv` and `postgres`",
            first + 4
        )),
        "{said}"
    );
}

#[test]
fn check_refuses_a_password_in_the_database_url_and_never_shows_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, said, path, first) = check(
        dir.path(),
        "[registry]\npostgres = \"postgres://crm:hunter2-9a@db.example/crm\"\nquery = \"SELECT $1\"\n",
    );
    assert_eq!(out.status.code(), Some(78), "{said}");
    assert!(
        said.contains(&format!(
            "{path}:{}:1: [registry]: the URL holds a password",
            first + 1
        )),
        "{said}"
    );
    assert!(!said.contains("hunter2-9a"), "{said}");
}

#[test]
fn check_names_a_network_source_and_classify_does_not_ask_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, said, _, _) = check(
        dir.path(),
        "[registry]\npostgres = \"postgres://crm@db.example/crm?sslmode=verify-full\"\n\
         query = \"SELECT number AS ticket, created_at AS created FROM tickets WHERE number = ANY($1)\"\n\
         password_env = \"CRM_DB_PASSWORD\"\ntimeout_seconds = 2\n",
    );
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("registry: postgres postgres://crm@db.example/crm?sslmode=verify-full, asked in each batch's read"),
        "{said}"
    );
    assert!(!said.contains("db-pw-7c1d"), "{said}");

    let (config, _) = config_with(
        dir.path(),
        "[registry]\nhttp = \"https://crm.example/api/tickets/{ticket}\"\ncreated_pointer = \"/created_at\"\n",
    );
    let (out, said) = run(
        &["check", "--config", config.to_str().expect("utf8")],
        dir.path(),
    );
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("registry: http https://crm.example/api/tickets/{ticket}, asked"),
        "{said}"
    );
    let mail = dir.path().join("1.eml");
    std::fs::write(
        &mail,
        "From: Sunil Patil <sunil.patil@example.in>\r\nTo: seller.registration@gem.test\r\n\
         Subject: Registration pending, Ticket No:- 2026-1000001\r\nMessage-ID: <r1@example.in>\r\n\
         Date: Mon, 30 Nov 2026 10:00:00 +0530\r\n\r\nPlease help.\r\n",
    )
    .expect("mail");
    let (out, said) = run(
        &[
            "classify",
            "--json",
            "--config",
            config.to_str().expect("utf8"),
            mail.to_str().expect("utf8"),
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(
            "the ticket registry (http) is not consulted offline; rules see registry = \"off\""
        ),
        "{said}"
    );
    let row: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(row["ticket"], "2026-1000001", "{row}");
    assert!(row.get("registry").is_none(), "{row}");
}
