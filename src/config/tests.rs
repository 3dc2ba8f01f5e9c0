//! Tests of config.toml parsing: a good config, every problem with its line, plain to a
//! remote host, the systemd credentials directory.
use super::*;

struct Env(Vec<(&'static str, String)>);
impl Environment for Env {
    fn var(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    }
}

const GOOD: &str = r#"
[imap]
host = "127.0.0.1"
port = 10143
security = "plain"

[smtp]
host = "127.0.0.1"
port = 10025
security = "plain"

[helpdesk]
address = "helpdesk@gem.test"

[desk.bid-ra]
address = "bid.ra@gem.test"
login = "bid.ra"
password_env = "BID_PW"
"#;

#[test]
fn good_config_loads_and_hides_the_password() {
    let env = Env(vec![("BID_PW", "s3cret".into())]);
    let c = parse(Path::new("/etc/tg/config.toml"), GOOD, &env).map_err(|e| e.to_string());
    let c = c.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.desks.len(), 1);
    assert_eq!(c.desks[0].password.expose(), "s3cret");
    assert!(!format!("{c:?}").contains("s3cret"));
    assert_eq!(c.rules_files, vec![PathBuf::from("/etc/tg/rules/gem.toml")]);
    assert_eq!(c.imap.idle_refresh, Duration::from_secs(600));
}

#[test]
fn every_problem_is_reported_with_its_line() {
    let text = GOOD
        .replace("port = 10025\n", "port = 10025\nprot = 1\n")
        .replace(
            "[helpdesk]\naddress = \"helpdesk@gem.test\"",
            "[helpdesk]\naddress = \"nobody\"",
        )
        + "\n[desk.order]\naddress = \"order.process@gem.test\"\nlogin = \"o\"\n";
    let env = Env(vec![("BID_PW", "x".into())]);
    let err = parse(Path::new("c.toml"), &text, &env)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("c.toml:10:1: in [smtp]: unknown field `prot`"),
        "{err}"
    );
    assert!(err.contains("`nobody` is not a mail address"), "{err}");
    assert!(err.contains("set exactly one of password_file"), "{err}");
    assert_eq!(err.lines().count(), 3, "{err}");
}

#[test]
fn plain_is_refused_for_a_remote_host() {
    let text = GOOD.replacen("host = \"127.0.0.1\"", "host = \"mail.gem.gov.in\"", 1);
    let env = Env(vec![("BID_PW", "x".into())]);
    let err = parse(Path::new("c.toml"), &text, &env)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains(
            "c.toml:5:1: [imap]: security = \"plain\" is only allowed for a loopback host"
        ),
        "{err}"
    );
}

#[test]
fn credentials_directory_is_used() {
    let dir = tempfile::tempdir().map_err(|e| e.to_string());
    let dir = dir.unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("bid.ra"), "pw-from-cred\n").ok();
    let text = GOOD.replace(
        "password_env = \"BID_PW\"",
        "password_credential = \"bid.ra\"",
    );
    let env = Env(vec![(
        "CREDENTIALS_DIRECTORY",
        dir.path().display().to_string(),
    )]);
    let c = parse(Path::new("c.toml"), &text, &env).map_err(|e| e.to_string());
    assert_eq!(
        c.map(|c| c.desks[0].password.expose().to_string()),
        Ok("pw-from-cred".into())
    );
    let err = parse(Path::new("c.toml"), &text, &Env(vec![]))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("CREDENTIALS_DIRECTORY is not set"), "{err}");
}

#[test]
fn smtp_connections_default_to_four_and_are_refused_out_of_range_or_in_imap() {
    let env = Env(vec![("BID_PW", "x".into())]);
    let c = parse(Path::new("c.toml"), GOOD, &env).map_err(|e| e.to_string());
    assert_eq!(c.unwrap_or_else(|e| panic!("{e}")).smtp.connections, 4);
    let text = GOOD.replace("port = 10025\n", "port = 10025\nconnections = 2\n");
    let c = parse(Path::new("c.toml"), &text, &env).map_err(|e| e.to_string());
    assert_eq!(c.unwrap_or_else(|e| panic!("{e}")).smtp.connections, 2);
    for (bad, line, says) in [
        (
            GOOD.replace("port = 10025\n", "port = 10025\nconnections = 0\n"),
            10,
            "[smtp]: connections = 0: give 1 to 16",
        ),
        (
            GOOD.replace("port = 10025\n", "port = 10025\nconnections = 40\n"),
            10,
            "[smtp]: connections = 40: give 1 to 16",
        ),
        (
            GOOD.replace("port = 10143\n", "port = 10143\nconnections = 2\n"),
            5,
            "[imap]: `connections` is an [smtp] setting",
        ),
    ] {
        let err = parse(Path::new("c.toml"), &bad, &env)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains(&format!("c.toml:{line}:1: {says}")), "{err}");
    }
}
