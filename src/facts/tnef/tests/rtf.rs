//! Tests of LZFu decompression against the `compressed_rtf` crate and of RTF to text.
//!
//! Not here: the TNEF container (`mod.rs`) and the corpus blobs (`corpus.rs`).

use super::*;
#[test]
fn lzfu_matches_the_compressed_rtf_crate() {
    // MS-OXRTFCP 4.1: Example 1.
    let example: &[u8] = &[
        0x2d, 0x00, 0x00, 0x00, 0x2b, 0x00, 0x00, 0x00, 0x4c, 0x5a, 0x46, 0x75, 0xf1, 0xc5, 0xc7,
        0xa7, 0x03, 0x00, 0x0a, 0x00, 0x72, 0x63, 0x70, 0x67, 0x31, 0x32, 0x35, 0x42, 0x32, 0x0a,
        0xf3, 0x20, 0x68, 0x65, 0x6c, 0x09, 0x00, 0x20, 0x62, 0x77, 0x05, 0xb0, 0x6c, 0x64, 0x7d,
        0x0a, 0x80, 0x0f, 0xa0,
    ];
    assert_eq!(
        decompress_rtf(example, BIG).as_deref(),
        Some("{\\rtf1\\ansi\\ansicpg1252\\pard hello world}\r\n")
    );
    let long: String = (0..3000).map(|i| format!("word{} ", i % 97)).collect();
    for rtf in [
        RTF,
        "{\\rtf1 WXYZWXYZWXYZWXYZWXYZ}",
        "",
        "{",
        &long,
        &"a".repeat(10_000),
    ] {
        let compressed = compressed_rtf::compress_rtf(rtf).unwrap_or_default();
        assert_eq!(decompress_rtf(&compressed, BIG).as_deref(), Some(rtf));
        let theirs = compressed_rtf::decompress_rtf(&compressed).ok();
        assert_eq!(theirs.as_deref(), Some(rtf));
        // The cap holds, and a cut stream gives a prefix.
        let capped = decompress_rtf(&compressed, 100).unwrap_or_default();
        assert!(capped.len() <= 100 && rtf.starts_with(&capped));
        let half = &compressed[..compressed.len() / 2 + 8];
        let partial = decompress_rtf(half, BIG).unwrap_or_default();
        assert!(rtf.starts_with(&partial));
    }
    assert_eq!(decompress_rtf(b"short", BIG), None);
    assert_eq!(decompress_rtf(&[0u8; 16], BIG), None);
}

#[test]
fn rtf_to_text_skips_destinations_and_decodes_characters() {
    let t = |s: &str| rtf_to_text(s, BIG);
    assert_eq!(t(RTF), "Dear desk,\nTicket No: 2024-7654321\ncafé € {ok}");
    assert_eq!(
        t(
            "{\\rtf1{\\info{\\title Secret}{\\author Me}}{\\stylesheet{\\s0 Normal;}}a\\tab b\\cell c\\row\\line d}"
        ),
        "a\tb\tc\n\nd"
    );
    assert_eq!(
        t("{\\rtf1 x{\\pict\\wmetafile8 0102ABCDEF}y{\\*\\unknown z}w}"),
        "xyw"
    );
    assert_eq!(
        t("{\\rtf1 a\\\\b\\{c\\}d\\~e\\_f\\-g}"),
        "a\\b{c}d\u{a0}e-fg"
    );
    // \uN with \ucN replacements, negative N, surrogate pairs, replacement counted per \'hh.
    assert_eq!(
        t("{\\rtf1\\uc2 \\u1055\\'cf\\'cf\\u-3913??x}"),
        "П\u{f0b7}x"
    );
    assert_eq!(t("{\\rtf1 \\u-10179?\\u-8704?}"), "\u{1F600}");
    assert_eq!(t("{\\rtf1{\\uc0 \\u1087}\\u1088 ?}"), "пр");
    // The document code page.
    assert_eq!(
        t("{\\rtf1\\ansi\\ansicpg1251 \\'cf\\'f0\\'e8\\'e2\\'e5\\'f2}"),
        "Привет"
    );
    assert_eq!(t("{\\rtf1\\ansi \\'80 \\'e9}"), "€ é");
    // HTML encapsulated in RTF (MS-OXRTFEX): markup in \*\htmltag groups is dropped.
    let html = "{\\rtf1\\ansi\\ansicpg1252\\fromhtml1 \\deff0{\\fonttbl{\\f0\\fswiss Arial;}}\r\n\
            {\\*\\htmltag19 <html>}{\\*\\htmltag34 <head>}{\\*\\htmltag2 \\par }\r\n\
            {\\*\\htmltag64 <p class=MsoNormal>}\\htmlrtf {\\htmlrtf0 Ticket\r\n\
            {\\*\\htmltag84 &nbsp;}\\htmlrtf \\'a0\\htmlrtf0 2024-3333333\r\n\
            {\\*\\htmltag72 </p>}\\htmlrtf \\par }\\htmlrtf0}";
    assert_eq!(t(html), "Ticket\u{a0}2024-3333333");
    // \bin data is skipped, even when it looks like RTF.
    assert_eq!(t("{\\rtf1 a{\\*\\blob\\bin5 }}}}}b}c}"), "ac");
    // Cut at max_bytes on a character boundary.
    assert_eq!(rtf_to_text("{\\rtf1 abc\\u233?def}", 4), "abc");
    assert_eq!(rtf_to_text("{\\rtf1 abc\\u233?def}", 5), "abcé");
    // Broken RTF.
    for s in [
        "",
        "{",
        "}",
        "\\",
        "{\\",
        "\\'",
        "\\'4",
        "\\'zz",
        "\\u",
        "\\u-",
        "\\bin99999999999",
        "}}}{{{\\*",
    ] {
        let _ = t(s);
    }
}

#[test]
fn rtf_to_text_is_linear_on_deep_nesting() {
    let n = 200_000;
    let deep = format!("{{\\rtf1 {}x{}y}}", "{".repeat(n), "}".repeat(n));
    let started = std::time::Instant::now();
    assert_eq!(rtf_to_text(&deep, BIG), "xy");
    let skipped = format!(
        "{{\\rtf1 {}{{\\*{}x{}}}y}}",
        "{".repeat(n),
        "{".repeat(n),
        "}".repeat(2 * n)
    );
    assert_eq!(rtf_to_text(&skipped, BIG), "y");
    let words = "\\par".repeat(n);
    assert_eq!(rtf_to_text(&words, 10), "");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}
