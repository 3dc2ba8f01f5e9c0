//! An [imap] or [smtp] section checked into a [`Server`]: default ports by security, plain
//! only to a loopback host, IMAP-only keys refused under [smtp], the CA file present.
//!
//! Not here: the IMAP watch settings (`config.rs` reads them off the raw section), desks.

use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::Server;
use super::raw::RawServer;
use crate::problem::{Problem, Source};
use crate::tls::Security;
pub(super) fn server(
    src: &Source<'_>,
    v: Spanned<toml::Value>,
    what: &str,
    (tls_port, starttls_port): (u16, u16),
    base: &Path,
    offline: bool,
    problems: &mut Vec<Problem>,
) -> Option<(Server, RawServer)> {
    let start = v.span().start;
    let r = src
        .section::<RawServer>(v, what)
        .map_err(|p| problems.push(p))
        .ok()?;
    let port = r.port.unwrap_or(match r.security {
        Security::Tls => tls_port,
        Security::StartTls | Security::Plain => starttls_port,
    });
    if r.security == Security::Plain && !is_loopback(&r.host) {
        problems.push(src.problem_at_key(
            start,
            "security",
            format!("{what}: security = \"plain\" is only allowed for a loopback host, not `{}`; use \"tls\" or \"starttls\"", r.host),
        ));
        return None;
    }
    if what == "[imap]" && r.connections.is_some() {
        problems.push(src.problem_at_key(
            start,
            "connections",
            "[imap]: `connections` is an [smtp] setting (each desk keeps one IMAP connection); move it to [smtp] or remove it".to_string(),
        ));
    }
    if what == "[smtp]"
        && let Some(n) = r.connections
        && !super::SMTP_CONNECTIONS.contains(&n)
    {
        let (low, high) = super::SMTP_CONNECTIONS.into_inner();
        let default = super::DEFAULT_SMTP_CONNECTIONS;
        problems.push(src.problem_at_key(
            start,
            "connections",
            format!("[smtp]: connections = {n}: give {low} to {high} (mails sent at once, each on its own connection; default {default})"),
        ));
    }
    if what == "[smtp]" {
        for (key, set) in [
            ("idle_refresh_minutes", r.idle_refresh_minutes.is_some()),
            ("poll_seconds", r.poll_seconds.is_some()),
            ("batch_size", r.batch_size.is_some()),
            ("file_group", r.file_group.is_some()),
        ] {
            if set {
                problems.push(src.problem_at_key(
                    start,
                    key,
                    format!("[smtp]: `{key}` is an [imap] setting; move it to [imap] or remove it"),
                ));
            }
        }
    }
    let ca_file = r.ca_file.as_ref().map(|f| base.join(f));
    if let Some(f) = &ca_file
        && !offline
        && !f.is_file()
    {
        problems.push(src.problem_at_key(
            start,
            "ca_file",
            format!("{what}: CA file {} does not exist", f.display()),
        ));
        return None;
    }
    let server = Server {
        host: r.host.clone(),
        port,
        security: r.security,
        ca_file,
        timeout: Duration::from_secs(r.timeout_seconds.max(1)),
    };
    Some((server, r))
}

/// True for 127.0.0.0/8, ::1 and `localhost`.
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
