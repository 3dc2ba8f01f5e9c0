//! Ground truth from ../shared/mailstack/load.py (the benchmark's mail generator): a sample
//! of its mails, one of every kind (ticket in subject, RFC 2047 subject, text, base64 text,
//! HTML only, quoted reply; near misses; broadcasts), with the ticket and where it is.
//! `TICKETGATE_LOADGEN=DIR` checks a bigger dump with the same manifest format.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed expectation is a failed test"
)]

use std::path::{Path, PathBuf};

use mail_parser::MessageParser;
use ticketgate::facts::ticket::find_ticket;
use ticketgate::rules::{self, Deployment, TicketSource};

#[test]
fn shipped_patterns_find_exactly_the_generated_tickets() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::var_os("TICKETGATE_LOADGEN")
        .map_or_else(|| root.join("tests/fixtures/loadgen"), PathBuf::from);
    let rules = rules::load(&[root.join("rules/gem.toml")], &Deployment::default()).expect("rules");
    let manifest: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest"))
            .expect("json");
    let mut wrong = Vec::new();
    for entry in &manifest {
        let file = entry["file"].as_str().expect("file");
        let raw = std::fs::read(dir.join(file)).expect("mail");
        let msg = MessageParser::default().parse(&raw[..]).expect("parse");
        let expected = entry["ticket"].as_str().map(|number| {
            let source = match entry["where"].as_str().expect("where") {
                "subject" | "subject_2047" => TicketSource::Subject,
                "body" | "body_base64" => TicketSource::Body,
                "html_only" => TicketSource::Html,
                "quoted" => TicketSource::Quoted,
                other => panic!("{file}: unknown where {other:?}"),
            };
            (number.to_owned(), source)
        });
        let found =
            find_ticket(&msg, &rules.ticket_patterns, &rules.limits).map(|t| (t.number, t.source));
        if found != expected {
            wrong.push(format!(
                "{file} ({}): expected {expected:?}, found {found:?}",
                entry["category"]
            ));
        }
    }
    println!(
        "loadgen {}: {} mails, {} wrong",
        dir.display(),
        manifest.len(),
        wrong.len()
    );
    assert!(
        wrong.is_empty(),
        "{} of {} wrong:\n{}",
        wrong.len(),
        manifest.len(),
        wrong.join("\n")
    );
}
