//! Tests of the `[registry]` section: each source's keys, defaults, and the problems
//! `check` reports with their place.

use super::*;

struct Env;
impl Environment for Env {
    fn var(&self, name: &str) -> Option<String> {
        (name == "CRM_TOKEN").then(|| "s3cret-token".into())
    }
}

fn parse(body: &str) -> Result<RegistryConfig, String> {
    parse_config(&format!("[registry]\n{body}"), &Env)
}

#[test]
fn a_csv_export_as_before() {
    let c =
        parse("csv = \"tickets.csv\"\nticket_column = \"No\"\ncreated_column = \"On\"\n").unwrap();
    let RegistryConfig::Csv { path, columns } = c else {
        panic!("csv")
    };
    assert_eq!(path, Path::new("/etc/ticketgate/tickets.csv"));
    assert_eq!(columns.ticket, "No");
}

#[test]
fn exactly_one_source_with_file_line_and_column() {
    assert_eq!(
        parse("timeout_seconds = 3\n").unwrap_err(),
        "/etc/ticketgate/config.toml:4:1: [registry]: set exactly one source: csv = PATH, postgres = URL (with query) or http = URL-TEMPLATE"
    );
    assert_eq!(
        parse("csv = \"t.csv\"\nticket_column = \"No\"\ncreated_column = \"On\"\nhttp = \"https://crm.example/t/{ticket}\"\n")
            .unwrap_err(),
        "/etc/ticketgate/config.toml:8:1: [registry]: set exactly one source, not `csv` and `http`"
    );
    let e = parse("http = \"https://crm.example/t/{ticket}\"\ncreated_pointer = \"/c\"\nquery = \"SELECT 1\"\n")
        .unwrap_err();
    assert!(
        e.contains(":7:1: [registry]: `query` is a setting of `postgres`, not of `http`"),
        "{e}"
    );
}

#[test]
fn postgres_takes_its_password_from_a_secret_never_the_url() {
    let e = parse("postgres = \"postgres://crm:hunter2@db.example/crm\"\nquery = \"SELECT $1\"\n")
        .unwrap_err();
    assert!(
        e.contains(":5:1: [registry]: the URL holds a password"),
        "{e}"
    );
    assert!(!e.contains("hunter2"), "{e}");
    let e = parse("postgres = \"postgres://crm@db.example/crm\"\n").unwrap_err();
    assert!(e.contains("needs `query`"), "{e}");
    let e =
        parse("postgres = \"postgres://crm@db.example/crm\"\nquery = \"SELECT 1\"\n").unwrap_err();
    assert!(e.contains(":6:1: [registry]: the query must use $1"), "{e}");
    let e = parse("postgres = \"postgres://crm@db.example/crm\"\nquery = \"SELECT $1\"\npassword_env = \"NOPE\"\n")
        .unwrap_err();
    assert!(
        e.contains(":7:1: [registry]: environment variable NOPE is not set"),
        "{e}"
    );
    let c = parse("postgres = \"postgres://crm@db.example/crm?sslmode=verify-full\"\nquery = \"SELECT $1\"\npassword_env = \"CRM_TOKEN\"\ntimeout_seconds = 2\n")
        .unwrap();
    let RegistryConfig::Postgres(p) = c else {
        panic!("postgres")
    };
    assert_eq!(
        p.password.as_ref().map(Secret::expose),
        Some("s3cret-token")
    );
    assert_eq!(p.timeout, Duration::from_secs(2));
    assert!(!format!("{p:?}").contains("s3cret"), "{p:?}");
}

#[test]
fn http_templates_pointers_and_tokens() {
    let e = parse("http = \"https://crm.example/t\"\ncreated_pointer = \"/c\"\n").unwrap_err();
    assert!(e.contains("has no {ticket}"), "{e}");
    let e =
        parse("http = \"http://crm.example/t/{ticket}\"\ncreated_pointer = \"/c\"\n").unwrap_err();
    assert!(e.contains("only allowed for a loopback host"), "{e}");
    let e =
        parse("http = \"https://crm.example/t/{ticket}\"\ncreated_pointer = \"c\"\n").unwrap_err();
    assert!(
        e.contains(":6:1: [registry]: `c` is not a JSON pointer"),
        "{e}"
    );
    let e = parse("http = \"https://crm.example/t/{ticket}\"\ncreated_pointer = \"/c\"\ntoken_env = \"CRM_TOKEN\"\ntoken_file = \"t\"\n")
        .unwrap_err();
    assert!(
        e.contains("set at most one of token_file, token_env or token_credential"),
        "{e}"
    );
    let c = parse("http = \"http://127.0.0.1:8080/t/{ticket}\"\ncreated_pointer = \"/c\"\ntoken_env = \"CRM_TOKEN\"\n")
        .unwrap();
    let RegistryConfig::Http(h) = c else {
        panic!("http")
    };
    assert_eq!(h.cache, Duration::from_secs(300));
    assert_eq!(h.timeout, Duration::from_secs(5));
    assert_eq!(h.token.as_ref().map(Secret::expose), Some("s3cret-token"));
}
