//! Golden-file tests of the decision core: each `tests/golden/*.json` names a mail (one of
//! ours under tests/fixtures or a real one under ../shared/corpus) and the classification
//! `ticketgate classify --json` must print for it with the shipped config and GeM rules.
//! Each file is its own test case. `TICKETGATE_BLESS=1` rewrites the expectations (review
//! the diff before committing).
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed expectation is a failed test"
)]

#[path = "support/skip.rs"]
mod skip;

use std::path::{Path, PathBuf};

use ticketgate::classify::classify_bytes;
use ticketgate::config::{self, Environment};
use ticketgate::facts::Directory;
use ticketgate::rules::{self, Rules};

struct TestEnv;
impl Environment for TestEnv {
    fn var(&self, name: &str) -> Option<String> {
        (name == "TG_TEST_PW").then(|| "secret".to_string())
    }
}

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shipped config.toml and rules, with secrets and the demo CA taken out.
fn shipped() -> (Directory, Rules) {
    let path = manifest().join("config.toml");
    let text = std::fs::read_to_string(&path).expect("config.toml");
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("ca_file"))
        .map(|l| {
            if l.starts_with("password_credential") {
                "password_env = \"TG_TEST_PW\""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let cfg = config::parse(&path, &text, &TestEnv).expect("shipped config parses");
    let rules = rules::load(&cfg.rules_files, &cfg.deployment()).expect("shipped rules compile");
    let dir = Directory::new(&cfg, &rules);
    (dir, rules)
}

fn golden(path: &Path) -> datatest_stable::Result<()> {
    let expected: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let source = expected["source"]
        .as_str()
        .ok_or("golden file needs \"source\"")?;
    let mail = manifest().join(source);
    if !mail.exists() && source.starts_with("../shared/") {
        skip::skip(&format!("{source} is not beside this checkout (../shared)"));
        return Ok(());
    }
    let raw = std::fs::read(&mail)?;
    let desk = expected["desk_arg"].as_str();
    let (dir, rules) = shipped();
    let got = classify_bytes(source, &raw, desk, &dir, &rules);
    let mut got = serde_json::to_value(&got)?;
    if let Some(o) = got.as_object_mut() {
        o.insert("source".into(), source.into());
        o.remove("file");
        if let Some(d) = desk {
            o.insert("desk_arg".into(), d.into());
        }
    }
    if let (Some(o), Some(note)) = (got.as_object_mut(), expected.get("note")) {
        o.insert("note".into(), note.clone());
    }
    if std::env::var_os("TICKETGATE_BLESS").is_some() {
        std::fs::write(path, serde_json::to_string_pretty(&got)? + "\n")?;
        return Ok(());
    }
    let want = &expected;
    if &got != want {
        return Err(format!(
            "classification of {source} differs\n--- expected\n{}\n--- got\n{}",
            serde_json::to_string_pretty(&want)?,
            serde_json::to_string_pretty(&got)?
        )
        .into());
    }
    Ok(())
}

datatest_stable::harness! {
    { test = golden, root = "tests/golden", pattern = r"\.json$" },
}
