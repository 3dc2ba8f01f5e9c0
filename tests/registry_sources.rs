//! The ticket registry's sources as the real binary reads config.toml (issue #17): `check`
//! refuses a `[registry]` with no source or two, and a database URL holding a password,
//! each at its file, line and column; it names a PostgreSQL or HTTP source without asking
//! it; `classify` consults only a CSV export offline and says so for the others; a `ca_file`
//! that is missing or holds no certificate is refused at its line. The HTTP source over
//! HTTPS, served from inside the test with a CA and server certificates made by `openssl`
//! at test time: with the CA configured the facts come through; with another CA, none, or
//! a certificate for another name, the lookup is `registry = "unavailable"` and says which
//! certificate problem. (The sources' other lookups are tested in src/registry: a real CSV
//! file, the test PostgreSQL and a local HTTP server.)
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed expectation is a failed test"
)]

#[path = "support/gem.rs"]
mod gem;
#[path = "support/skip.rs"]
mod skip;

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

#[test]
fn check_refuses_a_registry_ca_file_that_is_missing_or_holds_no_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, said, path, first) = check(
        dir.path(),
        "[registry]\nhttp = \"https://crm.example/api/tickets/{ticket}\"\ncreated_pointer = \"/created_at\"\nca_file = \"crm-ca.pem\"\n",
    );
    assert_eq!(out.status.code(), Some(78), "{said}");
    let missing = dir.path().join("crm-ca.pem");
    assert!(
        said.contains(&format!(
            "{path}:{}:1: [registry]: CA file {} does not exist",
            first + 3,
            missing.display()
        )),
        "{said}"
    );
    std::fs::write(&missing, "this is not a certificate\n").expect("write");
    let (out, said, path, first) = check(
        dir.path(),
        "[registry]\nhttp = \"https://crm.example/api/tickets/{ticket}\"\ncreated_pointer = \"/created_at\"\nca_file = \"crm-ca.pem\"\n",
    );
    assert_eq!(out.status.code(), Some(78), "{said}");
    assert!(
        said.contains(&format!(
            "{path}:{}:1: [registry]: CA file {} holds no usable PEM certificate",
            first + 3,
            missing.display()
        )),
        "{said}"
    );
}

/// A CA, and server certificates it signed: `good` for localhost and 127.0.0.1, `other`
/// for crm.example only; and a second CA that signed nothing here. Made with the `openssl`
/// command line (as scripts/mailstack/up.sh makes the mail stack's); `None` without it.
struct Pki {
    ca: PathBuf,
    stranger_ca: PathBuf,
    good: (PathBuf, PathBuf),
    other: (PathBuf, PathBuf),
}

fn openssl(dir: &Path, args: &[&str]) -> bool {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .is_ok_and(|o| o.status.success())
}

const EC: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

fn pki(dir: &Path) -> Option<Pki> {
    for (name, cn) in [("ca", "/CN=crm test CA"), ("stranger", "/CN=some other CA")] {
        let (key, cert) = (format!("{name}-key.pem"), format!("{name}.pem"));
        let args: Vec<&str> = ["req", "-x509", "-days", "2"]
            .into_iter()
            .chain(EC)
            .chain(["-subj", cn, "-keyout", &key, "-out", &cert])
            .collect();
        if !openssl(dir, &args) {
            return None;
        }
    }
    for (name, san) in [
        ("good", "DNS:localhost,IP:127.0.0.1"),
        ("other", "DNS:crm.example"),
    ] {
        let (key, csr, cert, ext) = (
            format!("{name}-key.pem"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        std::fs::write(
            dir.join(&ext),
            format!(
                "subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n"
            ),
        )
        .ok()?;
        let request: Vec<&str> = ["req"]
            .into_iter()
            .chain(EC)
            .chain(["-subj", "/CN=crm", "-keyout", &key, "-out", &csr])
            .collect();
        let sign = [
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ];
        if !openssl(dir, &request) || !openssl(dir, &sign) {
            return None;
        }
    }
    let at = |f: &str| dir.join(f);
    Some(Pki {
        ca: at("ca.pem"),
        stranger_ca: at("stranger.pem"),
        good: (at("good.pem"), at("good-key.pem")),
        other: (at("other.pem"), at("other-key.pem")),
    })
}

/// A CRM's JSON lookup over HTTPS on 127.0.0.1 with the certificate `cert` (and its
/// `key`): `/api/tickets/2026-1000001` is a ticket, anything else 404. Serves until the
/// test's runtime ends; its port.
async fn https_crm(cert: &Path, key: &Path) -> u16 {
    use rustls_pki_types::pem::PemObject as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let chain: Vec<rustls_pki_types::CertificateDer<'static>> =
        rustls_pki_types::CertificateDer::pem_file_iter(cert)
            .expect("server cert")
            .map(|c| c.expect("pem"))
            .collect();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key).expect("server key");
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake: nothing to serve.
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let (status, body) = match head.split(' ').nth(1) {
                    Some("/api/tickets/2026-1000001") => (
                        "200 OK",
                        r#"{"created_at":"2026-11-20T10:15:00+05:30","requester":"meena.iyer@rites.co.in","state":"Open"}"#,
                    ),
                    _ => ("404 Not Found", "{}"),
                };
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    port
}

/// The registry of `[registry] http = "https://HOST:PORT/api/tickets/{ticket}"` with
/// `ca_file`, asked about the ticket as a batch's read asks: its facts for a mail from the
/// requester, and the lookup's answer.
async fn ask(
    host: &str,
    port: u16,
    ca_file: Option<&Path>,
) -> (
    ticketgate::registry::TicketFacts,
    ticketgate::registry::Lookup,
) {
    use ticketgate::registry::{Registry, RegistryConfig, http::HttpConfig};
    let config = RegistryConfig::Http(HttpConfig {
        template: format!("https://{host}:{port}/api/tickets/{{ticket}}"),
        timeout: std::time::Duration::from_secs(5),
        cache: std::time::Duration::ZERO,
        created_pointer: "/created_at".into(),
        requester_pointer: Some("/requester".into()),
        state_pointer: Some("/state".into()),
        ca_file: ca_file.map(Path::to_path_buf),
        token: None,
    });
    let registry = std::sync::Arc::new(Registry::new(
        &config,
        jiff::tz::TimeZone::get("Asia/Kolkata").expect("zone"),
    ));
    let answers = registry.answers(vec!["2026-1000001".into()]).await;
    let now = 1_796_000_000; // 2026-11-30, ten days after the ticket's creation
    let facts = ticketgate::registry::ticket_facts(
        Some("2026-1000001"),
        Some(&answers),
        &["meena.iyer@rites.co.in"],
        now,
        (&ticketgate::worktime::Calendar::Plain, 48),
    );
    let lookup = answers
        .get("2026-1000001")
        .cloned()
        .expect("an answer for the ticket asked");
    (facts, lookup)
}

fn why(lookup: &ticketgate::registry::Lookup) -> String {
    match lookup {
        ticketgate::registry::Lookup::Unavailable(why) => why.clone(),
        other => panic!("expected unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn the_http_registry_over_https_trusts_only_the_configured_ca_and_name() {
    use ticketgate::registry::RegistryState;
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(pki) = pki(dir.path()) else {
        skip::skip(
            "the `openssl` command line is needed to make the test certificates (apt-get install openssl)",
        );
        return;
    };
    let port = https_crm(&pki.good.0, &pki.good.1).await;

    // The CRM's CA configured: the facts come through, by IP and by name.
    for host in ["127.0.0.1", "localhost"] {
        let (facts, lookup) = ask(host, port, Some(&pki.ca)).await;
        assert_eq!(facts.registry, RegistryState::Known, "{host}: {lookup:?}");
        assert_eq!(facts.ticket_known, Some(true));
        assert_eq!(facts.ticket_state.as_deref(), Some("Open"));
        assert_eq!(facts.requester_matches, Some(true));
        assert!(facts.ticket_age_hours.is_some_and(|h| h >= 48), "{facts:?}");
    }

    // Another CA, or only the system roots: unavailable, naming the certificate problem.
    for ca in [Some(pki.stranger_ca.as_path()), None] {
        let (facts, lookup) = ask("127.0.0.1", port, ca).await;
        assert_eq!(facts.registry, RegistryState::Unavailable, "{ca:?}");
        assert_eq!(facts.ticket_known, None);
        let why = why(&lookup);
        assert!(
            why.contains("invalid peer certificate") && why.contains("UnknownIssuer"),
            "{ca:?}: {why}"
        );
    }

    // A certificate the right CA signed, but for another name: refused too.
    let other = https_crm(&pki.other.0, &pki.other.1).await;
    let (facts, lookup) = ask("127.0.0.1", other, Some(&pki.ca)).await;
    assert_eq!(facts.registry, RegistryState::Unavailable);
    let why = why(&lookup);
    assert!(
        why.contains("invalid peer certificate: certificate not valid for name \"127.0.0.1\""),
        "{why}"
    );
}
