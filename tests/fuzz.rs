//! The fuzz targets' checks (fuzz/src/lib.rs) on the stable toolchain, as CI runs them: a
//! fixed-seed mutator over the fixture mails and a sample of ../shared/corpus (byte flips,
//! CR/LF and encoded-word insertions, truncation, splices of two mails). Deterministic;
//! `TICKETGATE_FUZZ_ITERATIONS=N` runs longer, `TICKETGATE_FUZZ_SEED=S` varies the inputs.
//! Coverage-guided fuzzing is `cargo fuzz run extract` / `compose` (README, "Fuzzing").
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed expectation is a failed test"
)]

#[path = "../fuzz/src/lib.rs"]
mod fuzzcheck;
mod support {
    //! The part of tests/support this test uses.
    #[path = "skip.rs"]
    pub mod skip;
}

use std::path::{Path, PathBuf};

fn seeds() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("tests/fixtures/mail"))
        .expect("fixtures")
        .flatten()
        .map(|e| e.path())
        .collect();
    let corpus = root.join("../shared/corpus");
    if !corpus.is_dir() {
        support::skip::skip(&format!(
            "{} is not beside this checkout: fuzzing the fixture mails only",
            corpus.display()
        ));
    }
    let mut stack = vec![corpus];
    let mut found = Vec::new();
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_none_or(|x| x != "md") {
                found.push(p);
            }
        }
    }
    found.sort();
    files.extend(found.into_iter().step_by(40));
    files.sort();
    files
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .filter(|b| b.len() < 30_000)
        .collect()
}

const INSERTS: [&[u8]; 10] = [
    b"\r\n",
    b"\n",
    b"\r",
    b"\r\nBcc: evil@attacker.test\r\n",
    b"=?utf-8?b?SGVscA0KQmNjOiBldmlsQGF0dGFja2VyLnRlc3Q=?=",
    b"=?x-unknown?q?=C3=A9=00?=",
    b"Ticket No: 2025-1234567",
    b"\"a\r\nCc: evil@attacker.test\"@example.in",
    b"Content-Type: multipart/mixed; boundary=\"\"\r\n",
    b"\x00\xff\xfe",
];

fn mutate(rng: &mut fastrand::Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut m = seeds[rng.usize(..seeds.len())].clone();
    for _ in 0..rng.usize(1..6) {
        let at = rng.usize(..=m.len());
        match rng.u8(..5) {
            0 if !m.is_empty() => {
                let i = rng.usize(..m.len());
                m[i] = rng.u8(..);
            }
            1 => {
                let ins = INSERTS[rng.usize(..INSERTS.len())];
                m.splice(at..at, ins.iter().copied());
            }
            2 => m.truncate(at),
            3 => {
                let other = &seeds[rng.usize(..seeds.len())];
                let from = rng.usize(..=other.len());
                m.splice(at.., other[from..].iter().copied());
            }
            _ => {
                let end = (at + rng.usize(..64)).min(m.len());
                let chunk = m[at..end].to_vec();
                m.splice(at..at, chunk);
            }
        }
    }
    m
}

fn iterations() -> usize {
    std::env::var("TICKETGATE_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400)
}

fn rng() -> fastrand::Rng {
    fastrand::Rng::with_seed(
        std::env::var("TICKETGATE_FUZZ_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(7),
    )
}

#[test]
fn fuzz_extract_and_redirect_on_mutated_mail() {
    let setup = fuzzcheck::setup(Path::new(env!("CARGO_MANIFEST_DIR")));
    let seeds = seeds();
    assert!(seeds.len() > 40, "{} seeds", seeds.len());
    for s in &seeds {
        fuzzcheck::extract_and_redirect(&setup, s);
    }
    let mut rng = rng();
    for _ in 0..iterations() {
        fuzzcheck::extract_and_redirect(&setup, &mutate(&mut rng, &seeds));
    }
}

#[test]
fn fuzz_compose_on_hostile_fields() {
    let seeds: Vec<Vec<u8>> = [
        &b"Meena\0meena@example.in\0Bid query\0no ticket\0From: a@b\r\n\r\nx"[..],
        b"A\r\nBcc: evil@attacker.test\0x@example.in\r\nBcc: evil@attacker.test\0S\r\nCc: e@attacker.test\0body\r\n.\r\n\0",
        b"=?utf-8?b?QQ0KQmNjOiBl?=\0\"a\r\nb\"@example.in\0=?utf-8?q?a=0D=0ABcc:_e@x?=\0\0",
        b"\0a@example.in, evil@attacker.test\0s\0b\0o",
        b"\0<evil@attacker.test>\0s\0b\0o",
    ]
    .iter()
    .map(|s| s.to_vec())
    .collect();
    for s in &seeds {
        fuzzcheck::compose_fields(s);
    }
    let mut rng = rng();
    for _ in 0..iterations() {
        fuzzcheck::compose_fields(&mutate(&mut rng, &seeds));
    }
}
