//! Every file of ../shared/corpus (about 2,100 real-world mails: bounces, broken MIME,
//! nested and huge messages, odd charsets) through the real `ticketgate classify --json`:
//! no crash, no hang, one JSON object per file.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed expectation is a failed test"
)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read corpus dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if p.is_file() {
            out.push(p);
        }
    }
}

/// The shipped rules with the GeM fixture's offline deployment (classify touches no server):
/// the temporary directory (keep it alive) and the config file in it.
fn shipped_rules_config(root: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, support::gem::offline_config(root)).expect("config");
    (dir, config)
}

/// `ticketgate classify --json` on `files` (in chunks), one JSON object per file.
fn classify(config: &Path, files: &[PathBuf]) -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    for chunk in files.chunks(400) {
        let out = Command::new(env!("CARGO_BIN_EXE_ticketgate"))
            .arg("classify")
            .arg("--json")
            .arg("--config")
            .arg(config)
            .args(chunk)
            .env("TG_PW", "x")
            .output()
            .expect("run classify");
        assert!(
            out.status.success() || out.status.code() == Some(66),
            "classify crashed: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), chunk.len(), "one object per file");
        for l in lines {
            all.push(serde_json::from_str(l).expect("valid JSON"));
        }
    }
    all
}

/// The corpus folder beside this checkout; under CI (`CI` set) its absence fails the test.
fn corpus_dir(root: &Path) -> Option<PathBuf> {
    let corpus = root.join("../shared/corpus");
    if corpus.is_dir() {
        return Some(corpus);
    }
    support::skip::skip(&format!(
        "{} is not beside this checkout (the corpus tests need ../shared)",
        corpus.display()
    ));
    None
}

/// The peers' own labels as the oracle (issue #12): every bounce and feedback report of
/// sisimai's `maildir/bsd` and `maildir/dos` (709 mails from 77 MTAs) is automatic, and
/// every whole human reply of talon's `standard_replies` is a person's.
#[test]
fn peers_labelled_bounces_are_automatic_and_human_replies_are_not() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let Some(corpus) = corpus_dir(&root) else {
        return;
    };
    let (_dir, config) = shipped_rules_config(&root);
    let mut bounces = Vec::new();
    for sub in ["bsd", "dos"] {
        files(
            &corpus.join("sisimai-set-of-emails/maildir").join(sub),
            &mut bounces,
        );
    }
    bounces.sort();
    assert_eq!(bounces.len(), 709, "sisimai maildir/bsd + maildir/dos");
    let wrong: Vec<String> = classify(&config, &bounces)
        .iter()
        .filter(|v| v["automatic"] != true)
        .map(|v| format!("{} ({})", v["file"], v["subject"]))
        .collect();
    assert!(
        wrong.is_empty(),
        "bounces taken for a person's mail: {wrong:#?}"
    );

    let mut replies = Vec::new();
    files(
        &corpus.join("registry/pypi-talon/tests/fixtures/standard_replies"),
        &mut replies,
    );
    replies.retain(|p| p.extension().is_some_and(|e| e == "eml"));
    replies.sort();
    assert_eq!(replies.len(), 12, "talon standard_replies/*.eml");
    let wrong: Vec<String> = classify(&config, &replies)
        .iter()
        .filter(|v| v["automatic"] != false)
        .map(|v| format!("{} ({})", v["file"], v["automatic_reason"]))
        .collect();
    assert!(
        wrong.is_empty(),
        "human replies taken for automatic: {wrong:#?}"
    );
    println!(
        "oracle: {} sisimai bounces automatic, {} talon replies a person's",
        bounces.len(),
        replies.len()
    );
}

#[test]
fn the_whole_corpus_classifies_without_a_crash() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let Some(corpus) = corpus_dir(&root) else {
        return;
    };
    let mut all = Vec::new();
    files(&corpus, &mut all);
    all.sort();
    assert!(
        all.len() > 2000,
        "corpus looks incomplete: {} files",
        all.len()
    );
    let (_dir, config) = shipped_rules_config(&root);
    let started = Instant::now();
    let (mut objects, mut errors, mut tickets, mut automatic) = (0, 0, 0, 0);
    for v in classify(&config, &all) {
        objects += 1;
        if v["error"].is_string() {
            errors += 1;
            assert_eq!(
                v["actions"],
                serde_json::json!([]),
                "no actions for unreadable input: {v}"
            );
        }
        tickets += usize::from(v["ticket"].is_string());
        automatic += usize::from(v["automatic"] == true);
        if v["automatic"] == true || v["own"] == true {
            let acts = v["actions"].as_array().expect("actions");
            assert!(
                acts.iter()
                    .all(|a| !a.as_str().unwrap_or("").starts_with("redirect")
                        && !a.as_str().unwrap_or("").starts_with("reply")),
                "automatic mail must not be answered: {v}"
            );
        }
    }
    println!(
        "corpus: {objects} files classified in {:.2} s: {errors} not mail, {automatic} automatic, {tickets} with a ticket",
        started.elapsed().as_secs_f64()
    );
}

/// ticketgate's parser (`facts::parser`) reads every mail of the corpus exactly as
/// mail-parser's default does, each header and part alike, except that `Received` headers
/// are left unparsed; so the facts cannot differ from what the default parse would give.
#[test]
fn ticketgate_parses_each_corpus_mail_as_the_default_parser_except_received() {
    use mail_parser::{HeaderName, HeaderValue, Message, MessageParser, PartType};
    fn without_received(m: &mut Message<'_>) -> usize {
        let mut n = 0;
        for part in &mut m.parts {
            for h in &mut part.headers {
                if h.name == HeaderName::Received {
                    h.value = HeaderValue::Empty;
                    n += 1;
                }
            }
            if let PartType::Message(inner) = &mut part.body {
                n += without_received(inner);
            }
        }
        n
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let Some(corpus) = corpus_dir(&root) else {
        return;
    };
    let mut paths = Vec::new();
    files(&corpus, &mut paths);
    let (mut compared, mut received) = (0, 0);
    for p in &paths {
        let raw = std::fs::read(p).expect("read");
        let ours = ticketgate::facts::parser().parse(&raw);
        let mut default = MessageParser::default().parse(&raw);
        if let Some(m) = default.as_mut() {
            received += without_received(m);
        }
        assert!(ours == default, "{} parses differently", p.display());
        compared += 1;
    }
    println!("{compared} mails compared, {received} Received headers among them");
    assert!(compared > 2000 && received > 1000, "{compared} {received}");
}
