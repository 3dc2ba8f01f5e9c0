//! Tests of the TNEF reader: hand-built blobs (the builders live here) through the container,
//! property lists, limits and hostile input.
//!
//! Not here: LZFu and RTF to text (`rtf.rs`), the real-world blobs of the shared corpus
//! (`corpus.rs`).

use super::rtf::{LZFU, MELA, lzfu};
use super::*;

mod corpus;
mod rtf;

const BIG: usize = 1 << 20;

/// A TNEF stream built by hand: signature, key, attTnefVersion, attOemCodepage (1252).
struct Blob(Vec<u8>);

impl Blob {
    fn new() -> Blob {
        let mut b = Blob(SIGNATURE.to_vec());
        b.0.extend_from_slice(&[0x01, 0x00]);
        b.attr(1, 0x0008_9006, &[0, 0, 1, 0]);
        b.attr(1, ATT_OEM_CODEPAGE, &[0xE4, 0x04, 0, 0, 0, 0, 0, 0]);
        b
    }

    fn attr(&mut self, level: u8, id: u32, data: &[u8]) -> &mut Blob {
        self.0.push(level);
        self.0.extend_from_slice(&id.to_le_bytes());
        self.0.extend_from_slice(&(data.len() as u32).to_le_bytes());
        self.0.extend_from_slice(data);
        let sum = data.iter().fold(0u16, |s, &b| s.wrapping_add(u16::from(b)));
        self.0.extend_from_slice(&sum.to_le_bytes());
        self
    }

    fn bytes(&self) -> Vec<u8> {
        self.0.clone()
    }
}

/// A property list: count, then the encoded properties.
fn plist(props: &[Vec<u8>]) -> Vec<u8> {
    let mut v = (props.len() as u32).to_le_bytes().to_vec();
    for p in props {
        v.extend_from_slice(p);
    }
    v
}

fn pad(v: &mut Vec<u8>) {
    while !v.len().is_multiple_of(4) {
        v.push(0);
    }
}

/// A variable-length property (PT_STRING8, PT_UNICODE, PT_BINARY, PT_OBJECT).
fn var(ty: u16, id: u16, values: &[&[u8]]) -> Vec<u8> {
    let mut v = ty.to_le_bytes().to_vec();
    v.extend_from_slice(&id.to_le_bytes());
    v.extend_from_slice(&(values.len() as u32).to_le_bytes());
    for value in values {
        v.extend_from_slice(&(value.len() as u32).to_le_bytes());
        v.extend_from_slice(value);
        pad(&mut v);
    }
    v
}

fn long(id: u16, value: u32) -> Vec<u8> {
    let mut v = PT_LONG.to_le_bytes().to_vec();
    v.extend_from_slice(&id.to_le_bytes());
    v.extend_from_slice(&value.to_le_bytes());
    v
}

fn utf16z(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain([0])
        .flat_map(u16::to_le_bytes)
        .collect()
}

fn string8z(s: &[u8]) -> Vec<u8> {
    let mut v = s.to_vec();
    v.push(0);
    v
}

const RTF: &str = "{\\rtf1\\ansi\\ansicpg1252\\deff0{\\fonttbl{\\f0\\fswiss Arial;}}\
        {\\colortbl;\\red0\\green0\\blue0;}{\\*\\generator Riched20 10.0;}\
        \\pard\\f0\\fs20 Dear desk,\\par Ticket No: 2024-7654321\\par caf\\'e9 \\u8364? \\{ok\\}}";

fn rtf_compressed() -> Vec<u8> {
    compressed_rtf::compress_rtf(RTF).unwrap_or_default()
}

/// Body as attBody, PR_BODY (UNICODE), RTF, HTML and one attachment.
fn sample() -> Vec<u8> {
    let mut b = Blob::new();
    b.attr(1, 0x0007_8008, b"IPM.Microsoft Mail.Note\0");
    b.attr(1, ATT_BODY, b"Hello from attBody\r\n\0");
    let html = b"<html><body><p>Gr\xc3\xbc\xc3\x9fe</p></body></html>";
    b.attr(
        1,
        ATT_MSG_PROPS,
        &plist(&[
            long(PR_INTERNET_CPID, 65001),
            var(
                PT_UNICODE,
                PR_BODY,
                &[&utf16z("Hello from PR_BODY \u{20ac}")],
            ),
            var(PT_BINARY, PR_RTF_COMPRESSED, &[&rtf_compressed()]),
            var(PT_BINARY, PR_BODY_HTML, &[html]),
        ]),
    );
    b.attr(
        2,
        ATT_ATTACH_REND_DATA,
        &[1, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x20, 0, 0x20, 0, 0, 0, 0, 0],
    );
    b.attr(2, ATT_ATTACH_TITLE, b"NOTES~1.TXT\0");
    b.attr(2, ATT_ATTACH_DATA, b"attached text 2024-1111111");
    b.attr(
        2,
        ATT_ATTACHMENT,
        &plist(&[
            long(0x0E20, 26),
            var(
                PT_STRING8,
                PR_ATTACH_LONG_FILENAME,
                &[&string8z(b"Meeting notes.txt")],
            ),
        ]),
    );
    b.bytes()
}

fn check_bounds(t: &TnefText, max_bytes: usize, max_items: usize) {
    for texts in [&t.body, &t.html, &t.rtf] {
        assert!(texts.len() <= MAX_TEXTS);
        assert!(used(texts) <= max_bytes, "{} > {max_bytes}", used(texts));
    }
    assert!(t.attachments.len() <= max_items);
    for (name, bytes) in &t.attachments {
        assert!(bytes.len() <= max_bytes);
        assert!(name.as_ref().is_none_or(|n| n.len() <= max_bytes));
    }
}

#[test]
fn sample_gives_every_kind_of_text() {
    let t = read(&sample(), BIG, 10);
    assert_eq!(
        t.body,
        vec![
            "Hello from attBody\r\n".to_string(),
            "Hello from PR_BODY \u{20ac}".to_string()
        ]
    );
    assert_eq!(
        t.html,
        vec!["<html><body><p>Grüße</p></body></html>".to_string()]
    );
    assert_eq!(
        t.rtf,
        vec!["Dear desk,\nTicket No: 2024-7654321\ncafé € {ok}".to_string()]
    );
    assert_eq!(
        t.attachments,
        vec![(
            Some("Meeting notes.txt".to_string()),
            b"attached text 2024-1111111".to_vec()
        )]
    );
}

#[test]
fn att_body_and_string8_pr_body_in_oem_codepage_are_deduplicated() {
    let mut b = Blob::new();
    b.attr(1, ATT_BODY, b"Caf\xe9 \x80 5\r\n\0");
    b.attr(
        1,
        ATT_MSG_PROPS,
        &plist(&[var(PT_STRING8, PR_BODY, &[b"Caf\xe9 \x80 5\r\n\0"])]),
    );
    let t = read(&b.bytes(), BIG, 10);
    assert_eq!(t.body, vec!["Café € 5\r\n".to_string()]);

    // UTF-8 is taken as UTF-8 whatever the code page.
    let mut b = Blob::new();
    b.attr(
        1,
        ATT_MSG_PROPS,
        &plist(&[var(PT_STRING8, PR_BODY, &[&string8z("Grüße".as_bytes())])]),
    );
    assert_eq!(read(&b.bytes(), BIG, 10).body, vec!["Grüße".to_string()]);

    // Another OEM code page (Windows-1251).
    let mut b = Blob(SIGNATURE.to_vec());
    b.0.extend_from_slice(&[0, 0]);
    b.attr(1, ATT_OEM_CODEPAGE, &[0xE3, 0x04, 0, 0, 0, 0, 0, 0]);
    b.attr(1, ATT_BODY, b"\xcf\xf0\xe8\xe2\xe5\xf2\0");
    assert_eq!(read(&b.bytes(), BIG, 10).body, vec!["Привет".to_string()]);
}

#[test]
fn unicode_pr_body_and_html_in_string8_and_unicode() {
    let mut b = Blob::new();
    b.attr(
        1,
        ATT_MSG_PROPS,
        &plist(&[
            var(
                PT_UNICODE,
                PR_BODY,
                &[&utf16z("Ticket No: 2024-1234567 \u{1F600}")],
            ),
            var(PT_STRING8, PR_BODY_HTML, &[b"<p>caf\xe9</p>\0"]),
            var(
                PT_UNICODE,
                PR_BODY_HTML,
                &[&utf16z("<p>\u{4e2d}\u{6587}</p>")],
            ),
        ]),
    );
    let t = read(&b.bytes(), BIG, 10);
    assert_eq!(
        t.body,
        vec!["Ticket No: 2024-1234567 \u{1F600}".to_string()]
    );
    assert_eq!(
        t.html,
        vec![
            "<p>café</p>".to_string(),
            "<p>\u{4e2d}\u{6587}</p>".to_string()
        ]
    );
}

#[test]
fn uncompressed_mela_rtf() {
    let mela = compressed_rtf::encode_rtf("{\\rtf1 plain \\b bold\\b0  text}").unwrap_or_default();
    let mut b = Blob::new();
    b.attr(
        1,
        ATT_MSG_PROPS,
        &plist(&[var(PT_BINARY, PR_RTF_COMPRESSED, &[&mela])]),
    );
    assert_eq!(
        read(&b.bytes(), BIG, 10).rtf,
        vec!["plain bold text".to_string()]
    );
}

#[test]
fn attachment_data_from_properties_and_embedded_messages() {
    let mut inner = Blob::new();
    inner.attr(1, ATT_BODY, b"forwarded 2024-2222222\0");
    let inner = inner.bytes();
    let mut object = vec![
        0x07, 0x03, 0x02, 0x00, 0, 0, 0, 0, 0xC0, 0, 0, 0, 0, 0, 0, 0x46,
    ];
    object.extend_from_slice(&inner);

    let mut b = Blob::new();
    // Attachment 1: data only in PR_ATTACH_DATA_BIN, name in PR_ATTACH_FILENAME.
    b.attr(2, ATT_ATTACH_REND_DATA, &[0; 14]);
    b.attr(
        2,
        ATT_ATTACHMENT,
        &plist(&[
            var(PT_UNICODE, PR_ATTACH_FILENAME, &[&utf16z("report.csv")]),
            var(PT_BINARY, PR_ATTACH_DATA, &[b"a,b\n1,2\n"]),
        ]),
    );
    // Attachment 2: an embedded message with a placeholder in attAttachData.
    b.attr(2, ATT_ATTACH_REND_DATA, &[0; 14]);
    b.attr(2, ATT_ATTACH_TITLE, b"Untitled Attachment\0");
    b.attr(
        2,
        ATT_ATTACH_DATA,
        b"This attachment is a MAPI 1.0 embedded message and is not supported by this mail system.",
    );
    b.attr(
        2,
        ATT_ATTACHMENT,
        &plist(&[
            var(PT_STRING8, PR_DISPLAY_NAME, &[b"RE: order\0"]),
            var(PT_OBJECT, PR_ATTACH_DATA, &[&object]),
        ]),
    );
    // Attachment 3: no name at all.
    b.attr(2, ATT_ATTACH_REND_DATA, &[0; 14]);
    b.attr(2, ATT_ATTACH_DATA, b"\x89PNG");
    let t = read(&b.bytes(), BIG, 10);
    assert_eq!(t.attachments.len(), 3);
    assert_eq!(
        t.attachments[0],
        (Some("report.csv".to_string()), b"a,b\n1,2\n".to_vec())
    );
    assert_eq!(t.attachments[1].0.as_deref(), Some("Untitled Attachment"));
    assert_eq!(t.attachments[1].1, inner);
    assert!(is_tnef(&t.attachments[1].1));
    assert_eq!(
        read(&t.attachments[1].1, BIG, 10).body,
        vec!["forwarded 2024-2222222".to_string()]
    );
    assert_eq!(t.attachments[2], (None, b"\x89PNG".to_vec()));
    assert!(t.body.is_empty());
}

#[test]
fn named_multivalued_and_fixed_properties_are_stepped_over() {
    let guid = [7u8; 16];
    let mut named_num = 0x0003u16.to_le_bytes().to_vec();
    named_num.extend_from_slice(&0x8001u16.to_le_bytes());
    named_num.extend_from_slice(&guid);
    named_num.extend_from_slice(&0u32.to_le_bytes());
    named_num.extend_from_slice(&0x8520u32.to_le_bytes());
    named_num.extend_from_slice(&5u32.to_le_bytes());
    let mut named_str = 0x001Fu16.to_le_bytes().to_vec();
    named_str.extend_from_slice(&0x8002u16.to_le_bytes());
    named_str.extend_from_slice(&guid);
    named_str.extend_from_slice(&1u32.to_le_bytes());
    let name = utf16z("Keywords");
    named_str.extend_from_slice(&(name.len() as u32).to_le_bytes());
    named_str.extend_from_slice(&name);
    pad(&mut named_str);
    named_str.extend_from_slice(&var(0, 0, &[&utf16z("not a body")])[4..]);
    let mv_string = var(PT_STRING8 | MV_FLAG, 0x3A40, &[b"one\0", b"three\0"]);
    let mut mv_long = (PT_LONG | MV_FLAG).to_le_bytes().to_vec();
    mv_long.extend_from_slice(&0x3A41u16.to_le_bytes());
    mv_long.extend_from_slice(&3u32.to_le_bytes());
    mv_long.extend_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0]);
    let mut fixed = Vec::new();
    for (ty, width) in [
        (0x0002u16, 4usize),
        (0x000B, 4),
        (0x0005, 8),
        (0x0040, 8),
        (0x0048, 16),
        (0x0014, 8),
    ] {
        fixed.extend_from_slice(&ty.to_le_bytes());
        fixed.extend_from_slice(&0x0E07u16.to_le_bytes());
        fixed.extend(std::iter::repeat_n(0xAB, width));
    }
    // `fixed` holds 6 properties: the list has 11.
    let mut list = 11u32.to_le_bytes().to_vec();
    for p in [
        named_num,
        named_str,
        mv_string,
        mv_long,
        fixed,
        var(PT_STRING8, PR_BODY, &[b"found\0"]),
    ] {
        list.extend_from_slice(&p);
    }
    let mut b = Blob::new();
    b.attr(1, ATT_MSG_PROPS, &list);
    let t = read(&b.bytes(), BIG, 10);
    assert_eq!(t.body, vec!["found".to_string()]);
}

#[test]
fn limits_cut_texts_and_attachments() {
    let long = "x".repeat(100);
    let mut b = Blob::new();
    b.attr(1, ATT_BODY, long.as_bytes());
    b.attr(
        1,
        ATT_MSG_PROPS,
        &plist(&[var(PT_UNICODE, PR_BODY, &[&utf16z(&"\u{e9}".repeat(100))])]),
    );
    for i in 0..5u8 {
        b.attr(2, ATT_ATTACH_REND_DATA, &[0; 14]);
        b.attr(2, ATT_ATTACH_TITLE, &[b'a' + i, 0]);
        b.attr(2, ATT_ATTACH_DATA, long.as_bytes());
    }
    let t = read(&b.bytes(), 11, 3);
    check_bounds(&t, 11, 3);
    // The first body takes the whole budget of 11 bytes.
    assert_eq!(t.body, vec!["x".repeat(11)]);
    assert_eq!(t.attachments.len(), 3);
    assert_eq!(t.attachments[2], (Some("c".to_string()), b"x".repeat(11)));
    // Cut on a character boundary.
    let mut b = Blob::new();
    b.attr(
        1,
        ATT_MSG_PROPS,
        &plist(&[var(PT_UNICODE, PR_BODY, &[&utf16z(&"\u{e9}".repeat(100))])]),
    );
    assert_eq!(read(&b.bytes(), 11, 3).body, vec!["\u{e9}".repeat(5)]);
    let t = read(&sample(), 0, 0);
    assert_eq!(t, TnefText::default());
}

#[test]
fn not_tnef_gives_nothing() {
    for data in [
        &b""[..],
        b"\x78\x9f\x3e",
        b"\x78\x9f\x3e\x22",
        b"%PDF-1.4 hello",
        b"\x89PNG\r\n\x1a\n0000000000",
    ] {
        assert_eq!(read(data, BIG, 10), TnefText::default());
    }
}

#[test]
fn every_prefix_reads_without_panic() {
    let full = sample();
    let whole = read(&full, BIG, 10);
    for n in 0..=full.len() {
        let t = read(&full[..n], BIG, 10);
        check_bounds(&t, BIG, 10);
        // What a prefix gives is never more than the whole blob gives.
        assert!(t.body.len() <= whole.body.len() && t.attachments.len() <= whole.attachments.len());
    }
    // A blob cut inside the HTML property still gives the bodies before it.
    let cut_at = full.len() - 200;
    assert_eq!(read(&full[..cut_at], BIG, 10).body, whole.body);
}

#[test]
fn flipped_bytes_read_without_panic() {
    let full = sample();
    for i in 0..full.len() {
        for f in [
            |b: u8| b ^ 0xFF,
            |b: u8| b ^ 0x80,
            |b: u8| b ^ 0x01,
            |_| 0xFF,
            |_| 0x00,
        ] {
            let mut d = full.clone();
            d[i] = f(d[i]);
            check_bounds(&read(&d, BIG, 10), BIG, 10);
            check_bounds(&read(&d, 7, 1), 7, 1);
        }
    }
}

#[test]
fn huge_declared_lengths_are_not_trusted() {
    let max = 64;
    let huge = u32::MAX.to_le_bytes();
    // An attribute longer than the blob: what is there is read.
    let mut b = Blob::new().bytes();
    b.push(1);
    b.extend_from_slice(&ATT_BODY.to_le_bytes());
    b.extend_from_slice(&huge);
    b.extend_from_slice(b"partial body");
    assert_eq!(read(&b, max, 4).body, vec!["partial body".to_string()]);

    let mut cases: Vec<Vec<u8>> = Vec::new();
    // Property count, value count and value length of u32::MAX.
    cases.push(huge.to_vec());
    let mut p = plist(&[var(PT_BINARY, PR_RTF_COMPRESSED, &[b"x"])]);
    p[8..12].copy_from_slice(&huge);
    cases.push(p);
    let mut p = plist(&[var(PT_BINARY, PR_RTF_COMPRESSED, &[b"x"])]);
    p[12..16].copy_from_slice(&huge);
    cases.push(p);
    // Multi-valued fixed-width property with u32::MAX values.
    let mut p = 1u32.to_le_bytes().to_vec();
    p.extend_from_slice(&(PT_LONG | MV_FLAG).to_le_bytes());
    p.extend_from_slice(&0x3A41u16.to_le_bytes());
    p.extend_from_slice(&huge);
    cases.push(p);
    // Named property with a name of u32::MAX bytes.
    let mut p = 1u32.to_le_bytes().to_vec();
    p.extend_from_slice(&PT_STRING8.to_le_bytes());
    p.extend_from_slice(&0x8000u16.to_le_bytes());
    p.extend_from_slice(&[0; 16]);
    p.extend_from_slice(&1u32.to_le_bytes());
    p.extend_from_slice(&huge);
    cases.push(p);
    // Compressed RTF headers claiming 4 GiB (COMPSIZE and RAWSIZE), for LZFu and MELA.
    for ty in [LZFU, MELA] {
        let mut rtf = huge.to_vec();
        rtf.extend_from_slice(&huge);
        rtf.extend_from_slice(&ty.to_le_bytes());
        rtf.extend_from_slice(&[0; 4]);
        rtf.extend_from_slice(&[b'A'; 64]);
        cases.push(plist(&[var(PT_BINARY, PR_RTF_COMPRESSED, &[&rtf])]));
    }
    // An LZFu stream that expands well past the cap: runs of 17-byte references.
    let run: Vec<u8> = std::iter::once(0xFF)
        .chain([0x00, 0x0F].repeat(8))
        .collect();
    let rtf = run.repeat(10_000);
    let mut header = ((rtf.len() + 12) as u32).to_le_bytes().to_vec();
    header.extend_from_slice(&huge);
    header.extend_from_slice(&LZFU.to_le_bytes());
    header.extend_from_slice(&[0; 4]);
    header.extend_from_slice(&rtf);
    assert!(lzfu(&rtf, max * RTF_SOURCE_FACTOR).len() <= max * RTF_SOURCE_FACTOR);
    cases.push(plist(&[var(PT_BINARY, PR_RTF_COMPRESSED, &[&header])]));

    for props in cases {
        let mut b = Blob::new();
        b.attr(1, ATT_MSG_PROPS, &props);
        b.attr(2, ATT_ATTACH_REND_DATA, &[0; 14]);
        b.attr(2, ATT_ATTACHMENT, &props);
        let t = read(&b.bytes(), max, 4);
        check_bounds(&t, max, 4);
    }
}
