//! Text decoding for the TNEF reader: 8-bit text in a Windows code page, UTF-16LE, and
//! cutting text on a character boundary.
//!
//! Not here: which property holds which text (the reader in `mod.rs`), property lists
//! (`props.rs`), and the code page of RTF text (`rtf.rs` asks [`codepage_decoder`]).

use mail_parser::decoders::charsets::map::charset_decoder;

/// `input` in the first of `cps` that is UTF-8 (65001) or has a decoder; else UTF-8 with
/// replacement characters.
pub(super) fn decode_codepage(input: &[u8], cps: &[u32]) -> String {
    for &cp in cps {
        if cp == 65001 {
            break;
        }
        if let Some(decode) = codepage_decoder(cp) {
            return decode(input);
        }
    }
    String::from_utf8_lossy(input).into_owned()
}

/// UTF-16LE up to the first NUL unit, unpaired surrogates replaced; at most `max` bytes.
pub(super) fn decode_utf16le(v: &[u8], max: usize) -> String {
    let units = v
        .chunks_exact(2)
        .map(|p| {
            u16::from_le_bytes([
                p.first().copied().unwrap_or(0),
                p.get(1).copied().unwrap_or(0),
            ])
        })
        .take_while(|&u| u != 0);
    let mut out = String::new();
    for c in char::decode_utf16(units) {
        let c = c.unwrap_or(char::REPLACEMENT_CHARACTER);
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

/// The decoder for a Windows code page number, if mail-parser has one.
pub(super) fn codepage_decoder(cp: u32) -> Option<fn(&[u8]) -> String> {
    let name = match cp {
        874 => "windows-874".to_string(),
        1250..=1258 => format!("windows-{cp}"),
        850 | 866 => format!("cp{cp}"),
        28591..=28599 => format!("iso-8859-{}", cp - 28590),
        28603 => "iso-8859-13".to_string(),
        28605 => "iso-8859-15".to_string(),
        20866 => "koi8-r".to_string(),
        21866 => "koi8-u".to_string(),
        10000 => "macintosh".to_string(),
        10007 => "x-mac-cyrillic".to_string(),
        932 => "shift_jis".to_string(),
        936 => "gbk".to_string(),
        949 => "euc-kr".to_string(),
        950 => "big5".to_string(),
        51932 => "euc-jp".to_string(),
        54936 => "gb18030".to_string(),
        _ => return None,
    };
    charset_decoder(name.as_bytes())
}

/// The longest prefix of `s` of at most `max` bytes ending on a character boundary.
pub(super) fn cut(s: &str, max: usize) -> &str {
    let mut i = max.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    s.get(..i).unwrap_or_default()
}
