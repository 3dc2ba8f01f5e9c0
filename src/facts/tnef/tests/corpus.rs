//! Tests over real-world TNEF blobs: the mail fixtures and the shared corpus beside the
//! checkout (mimekit, tnefparse), skipped by `test_skip::skip` when that is absent.
//!
//! Not here: hand-built blobs (`mod.rs`), LZFu and RTF (`rtf.rs`).

use super::*;

/// The base64 winmail.dat part of a mail file.
fn tnef_part_of(eml: &str) -> Vec<u8> {
    use base64::Engine;
    let b64: String = eml
        .lines()
        .skip_while(|l| !l.starts_with("Content-Type: application/ms-tnef"))
        .skip_while(|l| !l.trim().is_empty())
        .skip(1)
        .take_while(|l| !l.starts_with("--"))
        .map(str::trim)
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap_or_default()
}

#[test]
fn realworld_tnef_only_body() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/cases/realworld/b14-tnef-only-body.eml"
    );
    let Ok(eml) = std::fs::read_to_string(path) else {
        crate::test_skip::skip(&format!("{path} is absent (../shared beside the checkout)"));
        return;
    };
    let data = tnef_part_of(&eml);
    assert!(is_tnef(&data));
    let t = read(&data, 256 * 1024, 32);
    assert_eq!(
        t.body.len(),
        1,
        "attBody and PR_BODY are the same text: {:?}",
        t.body
    );
    assert!(
        t.body[0].contains("Ticket No: 2024-1122334"),
        "{:?}",
        t.body
    );
    for n in 0..data.len() {
        check_bounds(&read(&data[..n], 64, 2), 64, 2);
    }
}

fn corpus_files() -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for dir in [
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/corpus/mimekit/UnitTests/TestData/tnef"
        ),
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/corpus/registry/pypi-tnefparse/tests/examples"
        ),
    ] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            crate::test_skip::skip(&format!("{dir} is absent (../shared beside the checkout)"));
            continue;
        };
        let mut found: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "tnef" || e == "dat"))
            .collect();
        found.sort();
        files.extend(found);
    }
    files
}

fn short(s: &str) -> String {
    let s: String = s.chars().take(160).collect();
    s.replace('\r', "").replace('\n', " | ")
}

#[test]
fn corpus_blobs() {
    let mut by_name = std::collections::BTreeMap::new();
    for path in corpus_files() {
        let Ok(data) = std::fs::read(&path) else {
            continue;
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let t = read(&data, 256 * 1024, 32);
        check_bounds(&t, 256 * 1024, 32);
        eprintln!("== {} ({} bytes)", path.display(), data.len());
        for b in &t.body {
            eprintln!("   body ({}): {}", b.len(), short(b));
        }
        for h in &t.html {
            eprintln!("   html ({}): {}", h.len(), short(h));
        }
        for r in &t.rtf {
            eprintln!("   rtf  ({}): {}", r.len(), short(r));
        }
        for (n, a) in &t.attachments {
            eprintln!(
                "   attachment {:?} ({} bytes){}",
                n,
                a.len(),
                if is_tnef(a) { " [TNEF]" } else { "" }
            );
        }
        // Our LZFu agrees with the compressed-rtf crate on every RTF body there is.
        let mut rtfs = 0;
        let msg_props = Attributes::new(data.get(6..).unwrap_or_default())
            .filter(|&(_, id, _)| id == ATT_MSG_PROPS)
            .map(|(_, _, v)| v);
        for list in msg_props {
            for p in Props::new(list).filter(|p| p.id == PR_RTF_COMPRESSED && p.ty == PT_BINARY) {
                for v in p.values().filter(|v| v.len() >= 16) {
                    rtfs += 1;
                    let theirs = compressed_rtf::decompress_rtf(v).ok();
                    assert_eq!(decompress_rtf(v, usize::MAX), theirs, "{}", path.display());
                }
            }
        }
        assert!(
            rtfs == 0 || !t.rtf.is_empty(),
            "{}: RTF body gave no text",
            path.display()
        );
        // Every property list is read to its declared end.
        for (_, id, list) in Attributes::new(data.get(6..).unwrap_or_default()) {
            if id == ATT_MSG_PROPS || id == ATT_ATTACHMENT {
                let declared = Cursor(list).len32().unwrap_or(0);
                let mut props = Props::new(list);
                let parsed = props.by_ref().count();
                assert_eq!(parsed, declared, "{}: attribute {id:08x}", path.display());
                assert!(
                    props.c.0.is_empty(),
                    "{}: {} bytes after the list",
                    path.display(),
                    props.c.0.len()
                );
            }
        }
        for (n, a) in t.attachments.iter().filter(|(_, a)| is_tnef(a)) {
            let inner = read(a, 256 * 1024, 32);
            eprintln!(
                "   embedded {:?}: body {:?} rtf {:?}",
                n,
                inner.body.first().map(|b| short(b)),
                inner.rtf.first().map(|r| short(r))
            );
        }
        by_name.insert(name, t);
    }
    let Some(rtf) = by_name.get("rtf.tnef") else {
        return;
    };
    eprintln!("rtf.tnef RTF text:\n{}", rtf.rtf.join("\n----\n"));
    assert!(
        rtf.rtf.iter().any(|r| r.split_whitespace().count() > 5),
        "{:?}",
        rtf.rtf
    );
}
