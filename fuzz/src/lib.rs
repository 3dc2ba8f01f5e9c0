//! The checks of the fuzz targets, shared with the stable-toolchain run in tests/fuzz.rs
//! (which includes this file as a module): they panic on a property violation, which is
//! what libFuzzer and the test report.
//!
//! - [`extract_and_redirect`]: any bytes as a mail in a desk: `facts::extract` and
//!   `classify_bytes` never panic; the redirect composed from the facts (sender in Cc, the
//!   mail's subject in the template, the mail attached) is sent to the helpdesk and that
//!   sender only, and its header has no Bcc and one To and at most one Cc.
//! - [`compose_fields`]: the same properties for arbitrary field values.
#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "a violated property must stop the fuzzer"
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use ticketgate::compose::{self, Kind, OutgoingSpec};
use ticketgate::facts::{self, Directory};
use ticketgate::rules::Rules;

/// The GeM desk fixture shared with the tests and benches.
#[path = "../../tests/support/gem.rs"]
mod gem;

pub const HELPDESK: &str = gem::HELPDESK;
pub const DESK_ADDRESS: &str = "bid.ra@gem.gov.in";

/// The shipped rules and desks, as the daemon would load them.
#[derive(Debug)]
pub struct Setup {
    pub rules: Rules,
    pub dir: Directory,
}

struct Env;

impl ticketgate::config::Environment for Env {
    fn var(&self, _: &str) -> Option<String> {
        Some("password".into())
    }
}

/// Loads config and the shipped rules/gem.toml of the checkout at `repo`.
pub fn setup(repo: &Path) -> Setup {
    let text = gem::offline_config(repo);
    let cfg =
        ticketgate::config::parse(&repo.join("config.toml"), &text, &Env).expect("fuzz config");
    let rules = ticketgate::rules::load(&cfg.rules_files, &cfg.deployment()).expect("rules");
    let dir = Directory::new(&cfg, &rules);
    Setup { rules, dir }
}

/// [`setup`] of the checkout this crate is in (fuzz/..), loaded once.
#[allow(dead_code, reason = "used by the fuzz targets, not by tests/fuzz.rs")]
pub fn setup_here() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| setup(&Path::new(env!("CARGO_MANIFEST_DIR")).join("..")))
}

/// Any bytes as a mail of the bid-ra desk.
pub fn extract_and_redirect(s: &Setup, data: &[u8]) {
    let _ = ticketgate::classify::classify_bytes("fuzz", data, None, &s.dir, &s.rules);
    let Ok(f) = facts::extract(data, "bid-ra", &s.dir, &s.rules) else {
        return;
    };
    let mut vars = BTreeMap::new();
    vars.insert("subject".to_string(), f.subject.clone());
    vars.insert("sender".to_string(), f.sender.clone().unwrap_or_default());
    let t = s
        .rules
        .templates
        .get("redirect")
        .expect("redirect template");
    let subject = compose::render(&t.subject, &vars);
    let body = compose::render(&t.body, &vars);
    check_composed(&OutgoingSpec {
        kind: Kind::Redirect,
        from: DESK_ADDRESS,
        from_name: Some(&f.subject),
        to: HELPDESK,
        cc: f.sender.as_deref(),
        subject: &subject,
        body: &body,
        original: data,
        message_id: "0123456789ab.ticketgate@gem.gov.in",
        date_unix: 1_795_305_600,
        marker: "bid-ra",
        // Fixed, so the fuzzer can plant the very boundary: it must still be avoided.
        boundary_seed: 0,
    });
}

/// Fields separated by NUL: sender name, Cc address, subject, body, original mail.
pub fn compose_fields(data: &[u8]) {
    let mut parts = data.splitn(5, |b| *b == 0);
    let mut next = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let (name, cc, subject, body) = (next(), next(), next(), next());
    let original = data
        .splitn(5, |b| *b == 0)
        .nth(4)
        .unwrap_or_default()
        .to_vec();
    for kind in [Kind::Redirect, Kind::Reply] {
        check_composed(&OutgoingSpec {
            kind,
            from: DESK_ADDRESS,
            from_name: Some(&name),
            to: if kind == Kind::Reply { &cc } else { HELPDESK },
            cc: (kind == Kind::Redirect && !cc.is_empty()).then_some(cc.as_str()),
            subject: &subject,
            body: &body,
            original: &original,
            message_id: "0123456789ab.ticketgate@gem.gov.in",
            date_unix: 1_795_305_600,
            marker: "bid-ra",
            boundary_seed: 0,
        });
    }
}

/// Composes `spec`; if it is accepted, the mail goes to `to` and `cc` only and its header
/// names no other recipient.
pub fn check_composed(spec: &OutgoingSpec<'_>) {
    let Ok(out) = compose::compose(spec) else {
        // An unusable address: the pipeline logs it and sends nothing.
        return;
    };
    let wanted: Vec<String> = std::iter::once(spec.to)
        .chain(spec.cc)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect();
    for r in &out.recipients {
        assert!(
            wanted.contains(&r.to_ascii_lowercase()),
            "recipient {r:?} was not asked for (to {:?}, cc {:?})",
            spec.to,
            spec.cc
        );
    }
    assert!(out.recipients.len() <= wanted.len(), "{:?}", out.recipients);
    let text = String::from_utf8_lossy(&out.bytes);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut to = 0;
    let mut cc = 0;
    for line in head.split("\r\n") {
        assert!(line.len() <= 998, "header line over 998 octets");
        let lower = line.to_ascii_lowercase();
        assert!(
            !lower.starts_with("bcc:") && !lower.starts_with("resent-"),
            "injected header line {line:?}"
        );
        to += usize::from(lower.starts_with("to:"));
        cc += usize::from(lower.starts_with("cc:"));
    }
    assert_eq!(to, 1, "one To header:\n{head}");
    assert!(cc <= 1, "at most one Cc header:\n{head}");
    let parsed = mail_parser::MessageParser::default()
        .parse(&out.bytes)
        .expect("the composed mail parses");
    let count = |addrs: Option<&mail_parser::Address<'_>>| addrs.map_or(0, |a| a.iter().count());
    assert_eq!(count(parsed.to()), 1, "one To address:\n{head}");
    assert!(count(parsed.cc()) <= 1, "at most one Cc address:\n{head}");
    assert!(parsed.bcc().is_none(), "no Bcc:\n{head}");
}
