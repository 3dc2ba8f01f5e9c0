//! Classify throughput over ../shared/corpus next to mail-parser's bare parse of the same
//! files: the decision should cost little beyond parsing. Prints figures; asserts nothing.
//! Run: `cargo bench --bench classify` (TICKETGATE_CORPUS=DIR to use another corpus).

#[path = "../tests/support/gem.rs"]
mod gem;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mail_parser::MessageParser;
use ticketgate::classify::classify_bytes;
use ticketgate::facts::{Directory, text};
use ticketgate::rules::{self, Deployment};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if p.is_file() {
            out.push(p);
        }
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    // `cargo test --all-targets` runs bench targets too: only measure under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("classify benchmark: run it with `cargo bench --bench classify`");
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let corpus = std::env::var_os("TICKETGATE_CORPUS")
        .map_or_else(|| root.join("../shared/corpus"), PathBuf::from);
    let mut paths = Vec::new();
    files(&corpus, &mut paths);
    paths.sort();
    let mails: Vec<Vec<u8>> = paths.iter().filter_map(|p| std::fs::read(p).ok()).collect();
    if mails.is_empty() {
        eprintln!("no files under {}", corpus.display());
        return;
    }
    let bytes: usize = mails.iter().map(Vec::len).sum();
    let deployment = Deployment {
        desks: gem::desk_names(),
    };
    let rules = match rules::load(&[gem::rules_file(&root)], &deployment) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return;
        }
    };
    let dir = Directory {
        desks: gem::addresses(gem::DOMAIN),
        helpdesk: gem::HELPDESK.into(),
        own: Vec::new(),
        contacts: Vec::new(),
        subaddress_delimiter: "+".into(),
        ..Directory::default()
    };
    let runs = 5;
    let mut parse = Vec::new();
    let mut classify = Vec::new();
    let mut tickets = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let mut n = 0usize;
        for m in &mails {
            if let Some(msg) = MessageParser::default().parse(m) {
                n += msg.parts.len();
            }
        }
        std::hint::black_box(n);
        parse.push(t.elapsed());
        let t = Instant::now();
        tickets = 0;
        for m in &mails {
            let c = classify_bytes("bench", m, None, &dir, &rules);
            tickets += usize::from(c.ticket.is_some());
        }
        classify.push(t.elapsed());
    }
    // What the text normalisation (issue #12) costs: the subject and every body text of each
    // mail, collected beforehand, normalised as `classify` does.
    let texts: Vec<String> = mails
        .iter()
        .filter_map(|m| MessageParser::default().parse(m))
        .flat_map(|msg| {
            let mut t: Vec<String> = text::subject(&msg).into_iter().collect();
            let mut parts: Vec<u32> = msg
                .text_body
                .iter()
                .chain(&msg.html_body)
                .copied()
                .collect();
            parts.sort_unstable();
            parts.dedup();
            for i in parts {
                // Cut as `classify` cuts them (Limits::max_scan_bytes).
                t.extend(text::part_text(&msg, i).map(|s| {
                    ticketgate::facts::truncate(&s, rules.limits.max_scan_bytes).to_string()
                }));
            }
            t
        })
        .collect();
    let mut normalise = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let n: usize = texts.iter().map(|s| text::normalize(s).len()).sum();
        std::hint::black_box(n);
        normalise.push(t.elapsed());
    }
    let (p, c) = (median(parse), median(classify));
    let nt = median(normalise);
    let rate = |d: Duration| mails.len() as f64 / d.as_secs_f64();
    println!(
        "corpus: {} files, {:.1} MB ({})",
        mails.len(),
        bytes as f64 / 1e6,
        corpus.display()
    );
    println!(
        "mail-parser parse : {:>8.0} mails/s  ({:.3} s, median of {runs})",
        rate(p),
        p.as_secs_f64()
    );
    println!(
        "ticketgate classify: {:>8.0} mails/s  ({:.3} s, median of {runs})",
        rate(c),
        c.as_secs_f64()
    );
    println!(
        "classify / parse time: {:.2}x; files with a ticket: {tickets}",
        c.as_secs_f64() / p.as_secs_f64()
    );
    println!(
        "text normalisation : {:.3} s for {} texts = {:.1} % of classify time",
        nt.as_secs_f64(),
        texts.len(),
        100.0 * nt.as_secs_f64() / c.as_secs_f64()
    );
}
