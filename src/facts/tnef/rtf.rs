//! The RTF body of a TNEF blob: PR_RTF_COMPRESSED decompression ([MS-OXRTFCP] LZFu, or
//! "MELA" uncompressed) and RTF reduced to plain text in one bounded pass.
//!
//! Not here: finding the property in the attribute stream (`mod.rs`), code page tables
//! (`decode.rs`).
//!
//! [MS-OXRTFCP]: https://learn.microsoft.com/en-us/openspecs/exchange_server_protocols/ms-oxrtfcp/

use super::decode::{codepage_decoder, cut};
use super::props::Cursor;

/// The dictionary's initial contents (MS-OXRTFCP 2.1.2.1); writing starts after it.
const LZFU_DICTIONARY: &[u8] = b"{\\rtf1\\ansi\\mac\\deff0\\deftab720{\\fonttbl;}{\\f0\\fnil \\froman \\fswiss \\fmodern \\fscript \\fdecor MS Sans SerifSymbolArialTimes New RomanCourier{\\colortbl\\red0\\green0\\blue0\r\n\\par \\pard\\plain\\f0\\fs20\\b\\i\\u\\tab\\tx";
pub(super) const LZFU: u32 = 0x7546_5A4C;
pub(super) const MELA: u32 = 0x414C_454D;

/// PR_RTF_COMPRESSED (MS-OXRTFCP 2.1.3.1): header COMPSIZE, RAWSIZE, COMPTYPE, CRC (u32 each),
/// then LZFu data or, for "MELA", the RTF as is. Returns the RTF with each byte as the char of
/// the same value (RTF is 7-bit; stray 8-bit bytes are resolved by [`rtf_to_text`]), up to the
/// first NUL and at most `max` bytes; `None` when the header is missing or of an unknown type.
/// The CRC is not checked and a stream that ends early gives what was decoded.
pub(super) fn decompress_rtf(v: &[u8], max: usize) -> Option<String> {
    let mut c = Cursor(v);
    let comp_size = c.len32()?;
    let raw_size = c.len32()?;
    let comp_type = c.u32()?;
    c.u32()?;
    let data = c.take_at_most(comp_size.saturating_sub(12));
    let bytes = match comp_type {
        MELA => data
            .get(..raw_size.min(max).min(data.len()))
            .unwrap_or_default()
            .to_vec(),
        LZFU => lzfu(data, max),
        _ => return None,
    };
    Some(
        bytes
            .iter()
            .take_while(|&&b| b != 0)
            .map(|&b| char::from(b))
            .collect(),
    )
}

/// LZFu decompression (MS-OXRTFCP 2.1.3.1.2): a control byte, then per bit (low first) a
/// literal byte (0) or a big-endian reference (1) of 12-bit dictionary offset and 4-bit
/// length - 2; a reference to the write position ends the stream. At most `max` bytes.
pub(super) fn lzfu(data: &[u8], max: usize) -> Vec<u8> {
    const MASK: usize = 0x0FFF;
    let mut dict = [0u8; MASK + 1];
    for (d, s) in dict.iter_mut().zip(LZFU_DICTIONARY) {
        *d = *s;
    }
    let mut write = LZFU_DICTIONARY.len();
    let mut out = Vec::new();
    let mut input = data.iter().copied();
    'run: while let Some(control) = input.next() {
        for bit in 0..8 {
            if out.len() >= max {
                break 'run;
            }
            if control & (1 << bit) == 0 {
                let Some(b) = input.next() else { break 'run };
                // Index masked to the 4096-byte dictionary: cannot be out of bounds.
                dict[write & MASK] = b;
                write = (write + 1) & MASK;
                out.push(b);
            } else {
                let (Some(hi), Some(lo)) = (input.next(), input.next()) else {
                    break 'run;
                };
                let reference = u16::from_be_bytes([hi, lo]);
                let offset = usize::from(reference >> 4);
                if offset == write {
                    break 'run;
                }
                let len = usize::from(reference & 0x0F) + 2;
                for k in 0..len.min(max - out.len()) {
                    let b = dict[(offset + k) & MASK];
                    dict[write & MASK] = b;
                    write = (write + 1) & MASK;
                    out.push(b);
                }
            }
        }
    }
    out
}

/// Groups nested deeper than this share the state of the deepest one (hostile nesting).
const RTF_MAX_DEPTH: usize = 256;

/// Destinations whose text is not the document's text (besides any `{\*...}` group).
const RTF_SKIPPED: &[&[u8]] = &[
    b"fonttbl",
    b"colortbl",
    b"stylesheet",
    b"info",
    b"pict",
    b"listtable",
    b"listoverridetable",
    b"revtbl",
    b"rsidtbl",
    b"filetbl",
    b"generator",
    b"xmlnstbl",
    b"themedata",
    b"colorschememapping",
    b"datastore",
    b"latentstyles",
    b"objdata",
    b"fldinst",
    b"nonshppict",
];

#[derive(Clone, Copy)]
struct RtfGroup {
    /// Inside a destination whose text is skipped.
    skip: bool,
    /// `\ucN`: replacement characters after `\uN`.
    uc: usize,
}

/// Text out of RTF, in one pass and at most `max_bytes` bytes: groups starting with `\*` and
/// the destinations of [`RTF_SKIPPED`] are dropped (so is the HTML markup in `\*\htmltag`
/// groups of RTF that encapsulates HTML, `\fromhtml1`), `\par`, `\line`, `\row`, `\sect`,
/// `\page` become a newline and `\cell`, `\tab` a tab, `\'hh` is a byte in the code page of
/// `\ansicpg` (Windows-1252 when absent or unknown), `\uN` a UTF-16 code unit followed by
/// `\ucN` replacement characters (default 1) that are skipped, `\{ \} \\` are the characters,
/// `\binN` skips N bytes and other control words are dropped. Never fails; broken RTF gives
/// what its characters say.
pub(super) fn rtf_to_text(rtf: &str, max_bytes: usize) -> String {
    let b = rtf.as_bytes();
    let mut sink = RtfSink {
        out: String::new(),
        pending: Vec::new(),
        decoder: codepage_decoder(1252),
        high: None,
        max: max_bytes,
        done: false,
    };
    let mut stack: Vec<RtfGroup> = Vec::new();
    let mut overflow = 0usize;
    let mut g = RtfGroup { skip: false, uc: 1 };
    // Replacement characters still to skip after a `\uN`.
    let mut to_skip = 0usize;
    let mut i = 0usize;
    while i < b.len() && !sink.full() {
        let Some(&c) = b.get(i) else { break };
        match c {
            b'{' => {
                if stack.len() < RTF_MAX_DEPTH {
                    stack.push(g);
                } else {
                    overflow += 1;
                }
                to_skip = 0;
                i += 1;
            }
            b'}' => {
                if overflow > 0 {
                    overflow -= 1;
                } else if let Some(outer) = stack.pop() {
                    g = outer;
                }
                to_skip = 0;
                i += 1;
            }
            b'\r' | b'\n' => i += 1,
            b'\\' => {
                let next = b.get(i + 1).copied();
                match next {
                    Some(l) if l.is_ascii_alphabetic() => {
                        let start = i + 1;
                        let mut j = start;
                        while b.get(j).is_some_and(u8::is_ascii_alphabetic) {
                            j += 1;
                        }
                        let word = b.get(start..j).unwrap_or_default();
                        let negative =
                            b.get(j) == Some(&b'-') && b.get(j + 1).is_some_and(u8::is_ascii_digit);
                        if negative {
                            j += 1;
                        }
                        let mut param: Option<i64> = None;
                        while let Some(d) = b.get(j).filter(|d| d.is_ascii_digit()) {
                            let v = param.unwrap_or(0);
                            param = Some(if v > 1 << 40 {
                                v
                            } else {
                                v * 10 + i64::from(d - b'0')
                            });
                            j += 1;
                        }
                        let param = param.map(|p| if negative { -p } else { p });
                        if b.get(j) == Some(&b' ') {
                            j += 1;
                        }
                        i = j;
                        if word == b"bin" {
                            // Raw binary data follows, whatever the group.
                            let n =
                                usize::try_from(param.unwrap_or(0).max(0)).unwrap_or(usize::MAX);
                            i = i.saturating_add(n);
                            continue;
                        }
                        if g.skip {
                            continue;
                        }
                        if RTF_SKIPPED.contains(&word) {
                            g.skip = true;
                            continue;
                        }
                        if to_skip > 0 {
                            to_skip -= 1;
                            continue;
                        }
                        match word {
                            b"par" | b"line" | b"row" | b"sect" | b"page" => sink.push('\n'),
                            b"cell" | b"nestcell" | b"tab" => sink.push('\t'),
                            b"emspace" | b"enspace" | b"qmspace" => sink.push(' '),
                            b"emdash" => sink.push('\u{2014}'),
                            b"endash" => sink.push('\u{2013}'),
                            b"bullet" => sink.push('\u{2022}'),
                            b"lquote" => sink.push('\u{2018}'),
                            b"rquote" => sink.push('\u{2019}'),
                            b"ldblquote" => sink.push('\u{201C}'),
                            b"rdblquote" => sink.push('\u{201D}'),
                            b"u" => {
                                if let Some(p) = param {
                                    sink.unit(u16::try_from(p.rem_euclid(65536)).unwrap_or(0xFFFD));
                                }
                                to_skip = g.uc;
                            }
                            b"uc" => {
                                g.uc =
                                    usize::try_from(param.unwrap_or(1).clamp(0, 16)).unwrap_or(1);
                            }
                            b"ansicpg" => {
                                let cp = param.and_then(|p| u32::try_from(p).ok()).unwrap_or(1252);
                                sink.set_codepage(cp);
                            }
                            b"mac" => sink.set_codepage(10000),
                            b"pca" => sink.set_codepage(850),
                            _ => {}
                        }
                    }
                    Some(b'\'') => {
                        let hex = b
                            .get(i + 2..i + 4)
                            .and_then(|h| std::str::from_utf8(h).ok());
                        let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
                        i += if byte.is_some() { 4 } else { 2 };
                        if let Some(byte) = byte.filter(|_| !g.skip) {
                            if to_skip > 0 {
                                to_skip -= 1;
                            } else {
                                sink.byte(byte);
                            }
                        }
                    }
                    Some(sym) => {
                        i += 2;
                        if sym == b'*' {
                            g.skip = true;
                            continue;
                        }
                        if g.skip {
                            continue;
                        }
                        if to_skip > 0 {
                            to_skip -= 1;
                            continue;
                        }
                        match sym {
                            b'{' | b'}' | b'\\' => sink.push(char::from(sym)),
                            b'~' => sink.push('\u{A0}'),
                            b'_' => sink.push('-'),
                            b'\r' | b'\n' => sink.push('\n'),
                            _ => {}
                        }
                    }
                    None => i += 1,
                }
            }
            _ => {
                // `\bin` or a control symbol may have left `i` inside a character: resync.
                let Some(ch) = rtf.get(i..).and_then(|s| s.chars().next()) else {
                    i += 1;
                    continue;
                };
                i += ch.len_utf8();
                if g.skip {
                    continue;
                }
                if to_skip > 0 {
                    to_skip -= 1;
                    continue;
                }
                match u8::try_from(u32::from(ch)) {
                    // A raw 8-bit byte of the document's code page (see `decompress_rtf`).
                    Ok(byte) if byte >= 0x80 => sink.byte(byte),
                    _ => sink.push(ch),
                }
            }
        }
    }
    sink.flush();
    let text = sink.out.trim();
    text.to_string()
}

/// Where [`rtf_to_text`] writes: code-page bytes are collected and decoded in runs (so double
/// byte code pages work when there is a decoder), UTF-16 surrogate pairs joined.
struct RtfSink {
    out: String,
    pending: Vec<u8>,
    decoder: Option<fn(&[u8]) -> String>,
    high: Option<u16>,
    max: usize,
    /// Something did not fit: nothing more is written.
    done: bool,
}

impl RtfSink {
    fn full(&self) -> bool {
        self.done || self.out.len() >= self.max
    }

    fn push_str(&mut self, s: &str) {
        if self.done {
            return;
        }
        let room = self.max.saturating_sub(self.out.len());
        let fits = cut(s, room);
        self.done = fits.len() < s.len();
        self.out.push_str(fits);
    }

    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let text = match self.decoder {
            Some(decode) => decode(&self.pending),
            None => self.pending.iter().map(|&b| char::from(b)).collect(),
        };
        self.pending.clear();
        self.push_str(&text);
    }

    fn push(&mut self, c: char) {
        self.flush();
        self.high = None;
        let mut buf = [0u8; 4];
        self.push_str(c.encode_utf8(&mut buf));
    }

    fn byte(&mut self, b: u8) {
        self.high = None;
        self.pending.push(b);
        if self.pending.len() >= 1024 {
            self.flush();
        }
    }

    fn unit(&mut self, u: u16) {
        match u {
            0xD800..=0xDBFF => {
                self.flush();
                self.high = Some(u);
            }
            0xDC00..=0xDFFF => {
                if let Some(h) = self.high.take() {
                    let c = 0x10000 + ((u32::from(h) - 0xD800) << 10) + (u32::from(u) - 0xDC00);
                    if let Some(c) = char::from_u32(c) {
                        self.push(c);
                    }
                }
            }
            _ => {
                if let Some(c) = char::from_u32(u32::from(u)) {
                    self.push(c);
                }
            }
        }
    }

    fn set_codepage(&mut self, cp: u32) {
        self.flush();
        self.decoder = codepage_decoder(cp).or_else(|| codepage_decoder(1252));
    }
}
