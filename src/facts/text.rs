//! Text as a reader sees it, before any pattern runs (SPEC 3, issue #12): the normalisation
//! of dashes, digits and fullwidth forms that every ticket pattern and `when.text` condition
//! gets; HTML turned into text with the boundaries a browser shows; the subject decoded with
//! adjacent RFC 2047 encoded-words joined. Which parts of a mail are searched is `ticket`'s.

use std::borrow::Cow;

use mail_parser::decoders::{base64::base64_decode, charsets::map::charset_decoder};
use mail_parser::{Message, PartType};

/// The first code point (digit zero) of every run of ten Unicode decimal digits (general
/// category Nd, Unicode 14; each run holds 0–9 in order), ASCII excluded.
const DIGIT_ZEROS: [u32; 65] = [
    0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66, 0xDE6,
    0xE50, 0xED0, 0xF20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90, 0x1B50,
    0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0xFF10,
    0x104A0, 0x10D30, 0x11066, 0x110F0, 0x11136, 0x111D0, 0x112F0, 0x11450, 0x114D0, 0x11650,
    0x116C0, 0x11730, 0x118E0, 0x11950, 0x11C50, 0x11D50, 0x11DA0, 0x16A60, 0x16AC0, 0x16B50,
    0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E140, 0x1E2F0, 0x1E950, 0x1FBF0,
];

/// What one character becomes in [`normalize`]: `None` drops it.
fn fold(c: char) -> Option<Fold> {
    let u = c as u32;
    Some(match c {
        // Latin-1 letters and Devanagari other than its digits (most of Hindi mail): as is.
        '\u{00C0}'..='\u{024F}' | '\u{0900}'..='\u{0965}' | '\u{0970}'..='\u{097F}' => {
            Fold::Char(c)
        }
        // Hyphens and dashes (U+2010–U+2015, incl. the non-breaking hyphen), minus sign,
        // small and fullwidth hyphen-minus.
        '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{FE58}' | '\u{FE63}' | '\u{FF0D}' => {
            Fold::Char('-')
        }
        // Spaces of other widths, and the ideographic space.
        '\u{00A0}' | '\u{2000}'..='\u{200A}' | '\u{202F}' | '\u{205F}' | '\u{3000}' => {
            Fold::Char(' ')
        }
        // Invisible: soft hyphen, zero-width space/joiners, word joiner, BOM.
        '\u{00AD}' | '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}' => return None,
        '\u{2116}' => Fold::Str("No"),
        // Fullwidth ASCII forms.
        '\u{FF01}'..='\u{FF5E}' => Fold::Char(char::from_u32(u - 0xFEE0).unwrap_or(c)),
        _ => {
            // The last run starting at or before `u` (the table is sorted).
            let i = DIGIT_ZEROS.partition_point(|&z| z <= u);
            match i.checked_sub(1).and_then(|i| DIGIT_ZEROS.get(i)) {
                Some(&z) if u - z < 10 => Fold::Char(char::from(b'0' + (u - z) as u8)),
                _ => Fold::Char(c),
            }
        }
    })
}

enum Fold {
    Char(char),
    Str(&'static str),
}

/// `text` as ticket patterns and `when.text` conditions see it: every dash-like character
/// is `-`, every Unicode decimal digit (Devanagari ४, Arabic-Indic, fullwidth …) its ASCII
/// digit, fullwidth forms their ASCII letters, `№` is `No`, other spaces a space, and
/// invisible characters (soft hyphen, zero-width) are gone. Text that none of this changes
/// (all ASCII text, most Hindi text without digits) is returned as it is, without a copy.
pub fn normalize(text: &str) -> Cow<'_, str> {
    if text.is_ascii() {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    // `text[..copied]` is in `out` already (or unchanged, while `out` is None).
    let mut copied = 0;
    let mut at = 0;
    // Only characters outside ASCII are looked at; runs of unchanged ones are copied whole.
    while let Some(skip) = bytes[at..].iter().position(|b| !b.is_ascii()) {
        let start = at + skip;
        let Some(c) = text[start..].chars().next() else {
            break;
        };
        at = start + c.len_utf8();
        let folded = fold(c);
        if matches!(folded, Some(Fold::Char(f)) if f == c) {
            continue;
        }
        let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
        o.push_str(&text[copied..start]);
        match folded {
            Some(Fold::Char(f)) => o.push(f),
            Some(Fold::Str(s)) => o.push_str(s),
            None => {}
        }
        copied = at;
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut o) => {
            o.push_str(&text[copied..]);
            Cow::Owned(o)
        }
    }
}

/// Tags a browser shows as a line or cell boundary (HTML Living Standard's block-level and
/// table elements), lower-case. `<br>` and `</p>` are already newlines in mail-parser's
/// converter.
const BLOCK_TAGS: [&str; 38] = [
    "address",
    "article",
    "aside",
    "blockquote",
    "caption",
    "center",
    "dd",
    "div",
    "dl",
    "dt",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hr",
    "li",
    "main",
    "nav",
    "ol",
    "p",
    "pre",
    "section",
    "table",
    "tbody",
    "td",
    "tfoot",
    "th",
    "thead",
    "tr",
    "ul",
];

/// Whether `rest`, the text after a `<`, opens or closes a block tag: an optional `/`, then
/// a name of [`BLOCK_TAGS`] in any case that the next character does not continue as a
/// word (a Unicode word character, as the regex `\b` sees it). LATIN SMALL LETTER LONG S
/// and KELVIN SIGN count as `s` and `k`, as they do in case-insensitive regexes.
fn block_tag_at(rest: &str) -> bool {
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    // Every name starts with one of these letters (the long s and Kelvin sign start with a
    // byte outside ASCII): most tags are let go here.
    let starts = |b: u8| {
        !b.is_ascii()
            || matches!(
                b.to_ascii_lowercase(),
                b'a' | b'b'
                    | b'c'
                    | b'd'
                    | b'f'
                    | b'h'
                    | b'l'
                    | b'm'
                    | b'n'
                    | b'o'
                    | b'p'
                    | b's'
                    | b't'
                    | b'u'
            )
    };
    if !rest.bytes().next().is_some_and(starts) {
        return false;
    }
    let mut name = [0u8; 10];
    let mut len = 0;
    for c in rest.chars() {
        let folded = if c.is_ascii() {
            if !(c.is_ascii_alphanumeric() || c == '_') {
                break;
            }
            c.to_ascii_lowercase() as u8
        } else if !regex_syntax::is_word_character(c) {
            break;
        } else {
            match c {
                '\u{17F}' => b's',
                '\u{212A}' => b'k',
                _ => return false,
            }
        };
        let Some(slot) = name.get_mut(len) else {
            return false;
        };
        *slot = folded;
        len += 1;
    }
    BLOCK_TAGS.iter().any(|t| t.as_bytes() == &name[..len])
}

/// `html` as text with the boundaries a reader sees: block elements, table cells and rows,
/// list items and `<br>` become line breaks, so a number and the next cell's text never
/// merge. Entities are decoded and `<head>`, `<style>` and `<script>` dropped
/// (mail-parser's converter does that part).
pub fn html_to_text(html: &str) -> String {
    mail_parser::decoders::html::html_to_text(&mark_blocks(html))
}

/// `html` with a `<br>` before every block tag, in one pass that copies the runs between
/// them.
fn mark_blocks(html: &str) -> Cow<'_, str> {
    let mut marked = String::new();
    let mut from = 0;
    for lt in memchr::memchr_iter(b'<', html.as_bytes()) {
        if html.get(lt + 1..).is_some_and(block_tag_at) {
            if marked.is_empty() {
                marked.reserve(html.len() + html.len() / 8);
            }
            marked.push_str(&html[from..lt]);
            marked.push_str("<br>");
            from = lt;
        }
    }
    if from == 0 && marked.is_empty() {
        return Cow::Borrowed(html);
    }
    marked.push_str(&html[from..]);
    Cow::Owned(marked)
}

/// The text of the body part `i` of `msg` (plain as is, HTML through [`html_to_text`]).
pub fn part_text(msg: &Message<'_>, i: u32) -> Option<String> {
    match &msg.parts.get(i as usize)?.body {
        PartType::Text(t) => Some(t.to_string()),
        PartType::Html(h) => Some(html_to_text(h)),
        _ => None,
    }
}

/// The first text body of `msg` as a reader sees it (see [`part_text`]).
pub fn body_text(msg: &Message<'_>) -> Option<String> {
    first_body(msg).map(Cow::into_owned)
}

/// [`body_text`] without a copy of a plain text body.
pub fn first_body<'m>(msg: &'m Message<'_>) -> Option<Cow<'m, str>> {
    let i = *msg.text_body.first()?;
    match &msg.parts.get(i as usize)?.body {
        PartType::Text(t) => Some(Cow::Borrowed(t.as_ref())),
        PartType::Html(h) => Some(Cow::Owned(html_to_text(h))),
        _ => None,
    }
}

/// The subject of `msg`, decoded. Adjacent RFC 2047 encoded-words of the same charset and
/// encoding are joined before the charset is decoded (RFC 2047 section 5 forbids splitting
/// a character between words, but mailers do: a Hindi subject then shows U+FFFD).
pub fn subject(msg: &Message<'_>) -> Option<String> {
    let parsed = msg.subject()?;
    let Some(raw) = msg.header_raw("Subject") else {
        return Some(parsed.to_string());
    };
    if !parsed.contains('\u{FFFD}') || !raw.contains("=?") {
        return Some(parsed.to_string());
    }
    Some(decode_joined(raw).unwrap_or_else(|| parsed.to_string()))
}

/// One `=?charset?enc?text?=` word: (charset, encoding, decoded bytes).
fn encoded_word(w: &str) -> Option<(String, char, Vec<u8>)> {
    let inner = w.strip_prefix("=?")?.strip_suffix("?=")?;
    let mut it = inner.splitn(3, '?');
    let charset = it.next()?.split('*').next()?.to_ascii_lowercase();
    let enc = it.next()?.chars().next()?.to_ascii_lowercase();
    let text = it.next()?;
    let bytes = match enc {
        'b' => base64_decode(text.as_bytes())?,
        'q' => q_decode(text.as_bytes()),
        _ => return None,
    };
    Some((charset, enc, bytes))
}

fn q_decode(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'_' => out.push(b' '),
            b'=' if i + 2 < text.len() => {
                let hex = std::str::from_utf8(&text[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'='),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// Decodes an unfolded raw header value, joining runs of encoded-words that share charset
/// and encoding. `None` when a word cannot be decoded (the caller keeps mail-parser's
/// reading).
fn decode_joined(raw: &str) -> Option<String> {
    let raw: String = raw.replace(['\r', '\n'], "");
    let mut out = String::new();
    let mut run: Option<(String, char, Vec<u8>)> = None;
    let flush = |run: &mut Option<(String, char, Vec<u8>)>, out: &mut String| -> Option<()> {
        if let Some((cs, _, bytes)) = run.take() {
            let text = match charset_decoder(cs.as_bytes()) {
                Some(decode) => decode(&bytes),
                None => String::from_utf8_lossy(&bytes).into_owned(),
            };
            out.push_str(&text);
        }
        Some(())
    };
    let mut rest = raw.as_str();
    while !rest.is_empty() {
        let start = rest.find("=?");
        let Some(start) = start else {
            flush(&mut run, &mut out)?;
            out.push_str(rest);
            break;
        };
        let between = &rest[..start];
        let after = &rest[start + 2..];
        // The word ends at the `?=` after charset and encoding.
        let end = after
            .match_indices('?')
            .nth(1)
            .and_then(|(q, _)| after[q + 1..].find("?=").map(|e| q + 1 + e))
            .map(|e| start + 2 + e + 2);
        let Some(end) = end else {
            flush(&mut run, &mut out)?;
            out.push_str(rest);
            break;
        };
        let word = &rest[start..end];
        match encoded_word(word) {
            Some((cs, enc, bytes)) => {
                if between.trim().is_empty() && run.is_some() {
                    // Whitespace between two encoded-words is dropped (RFC 2047 section 6.2).
                    let same = run.as_ref().is_some_and(|(c, e, _)| *c == cs && *e == enc);
                    if same {
                        if let Some((_, _, b)) = run.as_mut() {
                            b.extend_from_slice(&bytes);
                        }
                    } else {
                        flush(&mut run, &mut out)?;
                        run = Some((cs, enc, bytes));
                    }
                } else {
                    flush(&mut run, &mut out)?;
                    out.push_str(between);
                    run = Some((cs, enc, bytes));
                }
            }
            None => return None,
        }
        rest = &rest[end..];
        if rest.trim().is_empty() {
            break;
        }
    }
    flush(&mut run, &mut out)?;
    Some(out.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::MessageParser;

    #[test]
    fn dashes_digits_and_fullwidth_fold() {
        for (input, want) in [
            ("2024\u{2013}1234567", "2024-1234567"),
            ("2024\u{2011}1234567", "2024-1234567"),
            ("2024\u{2212}1234567", "2024-1234567"),
            ("2024\u{FF0D}1234567", "2024-1234567"),
            ("2024\u{FE63}1234567", "2024-1234567"),
            ("२०२४-१२३४५६७", "2024-1234567"),
            ("٢٠٢٤-١٢٣٤٥٦٧", "2024-1234567"),
            ("２０２４－１２３４５６７", "2024-1234567"),
            ("Ｔｉｃｋｅｔ　Ｎｏ：", "Ticket No:"),
            (
                "Ticket №\u{00A0}2024-12\u{00AD}34567",
                "Ticket No 2024-1234567",
            ),
            ("टिकट संख्या", "टिकट संख्या"),
            ("टिकट २४ ok\u{200B}!", "टिकट 24 ok!"),
            ("\u{2013}टि\u{00AD}", "-टि"),
        ] {
            assert_eq!(normalize(input), want, "{input}");
        }
        // Text that does not change is not copied.
        assert!(matches!(normalize("plain ascii"), Cow::Borrowed(_)));
        assert!(matches!(normalize("टिकट संख्या é"), Cow::Borrowed(_)));
    }

    #[test]
    fn every_digit_run_maps_to_ascii() {
        for z in DIGIT_ZEROS {
            for d in 0..10u32 {
                let c = char::from_u32(z + d).unwrap_or_else(|| panic!("{z:x}"));
                assert_eq!(normalize(&c.to_string()), d.to_string(), "U+{:X}", z + d);
            }
        }
    }

    #[test]
    fn html_keeps_the_boundaries_a_reader_sees() {
        for (html, want) in [
            (
                "<table><tr><td>Ticket No</td><td>2024-1234567</td><td>5</td></tr></table>",
                "2024-1234567\n",
            ),
            (
                "<div>2024-1234567</div><div>Pending</div>",
                "2024-1234567\n",
            ),
            ("<ul><li>2024-1234567<li>7 days</ul>", "2024-1234567\n"),
            ("<p>2024-1234567</p>8 items", "2024-1234567\n"),
            ("2024-1234567<br/>99", "2024-1234567\n"),
            ("<TD>2024-1234567</TD ><TH>42</TH>", "2024-1234567\n"),
        ] {
            let text = html_to_text(html);
            assert!(text.contains(want), "{html} -> {text:?}");
        }
        // Inline elements stay inline.
        let inline = html_to_text("Ticket <b>No</b>: <span>2024-1234567</span>");
        assert!(!inline.contains('\n'), "{inline:?}");
    }

    /// The regex the block-tag scanner replaced: both must mark the same tags.
    fn marked_by_regex(html: &str) -> String {
        let re = regex::Regex::new(
            r"(?i)<(/?)(address|article|aside|blockquote|caption|center|dd|div|dl|dt|fieldset|figcaption|figure|footer|form|h[1-6]|header|hr|li|main|nav|ol|p|pre|section|table|tbody|td|tfoot|th|thead|tr|ul)\b",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        re.replace_all(html, "<br><$1$2").into_owned()
    }

    #[test]
    fn block_tags_are_found_as_the_regex_found_them() {
        let mut cases: Vec<String> = [
            "<div>a</div><DIV class=x>b</Div ><p>c<pre>d</pre><P/>",
            "<th>1<thead><tbody><TBODY><td_x><td1><h1>t</h1><h7><hr/><header>",
            "<blockquote><BLOCKQUOTE><bloc\u{212A}quote><\u{17F}ection><sectioné>",
            "<d\u{300}iv><div\u{300}><li>x<lI>y<ol><ul><nav><main><form><footer>",
            "< div><//div></ div><<div><figcaption><figcaptions><a href=x>",
            "<tr>\u{4E00}<td>\u{4E00}</td><td>\u{0664}",
            "<",
            "</",
            "<p",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for t in BLOCK_TAGS {
            for (i, c) in t.char_indices() {
                // Every letter of every name, in upper case and followed by all kinds of
                // characters.
                let up = format!("{}{}{}", &t[..i], c.to_ascii_uppercase(), &t[i + 1..]);
                for next in [">", " ", "/", "x", "_", "1", "\u{300}", "\u{4E00}", "é", ""] {
                    cases.push(format!("<{up}{next}"));
                    cases.push(format!("a</{up}{next}b"));
                }
            }
        }
        for html in &cases {
            assert_eq!(mark_blocks(html), marked_by_regex(html), "{html}");
        }
        // The only characters outside ASCII that a case-insensitive letter matches.
        let letter = regex::Regex::new("(?i)^[a-z]$").unwrap_or_else(|e| panic!("{e}"));
        let folding: Vec<char> = (0..=0x10FFFF_u32)
            .filter_map(char::from_u32)
            .filter(|c| !c.is_ascii() && letter.is_match(&c.to_string()))
            .collect();
        assert_eq!(folding, ['\u{17F}', '\u{212A}']);
    }

    fn parse_subject(header: &str) -> Option<String> {
        let raw = format!("From: a@example.in\r\nSubject: {header}\r\n\r\nx\r\n");
        let msg = MessageParser::default()
            .parse(raw.as_bytes())
            .unwrap_or_else(|| panic!("parse"));
        subject(&msg)
    }

    #[test]
    fn split_encoded_words_join() {
        // "भुगतान 2024-1234567" in UTF-8, base64 split inside the third character.
        let s = "भुगतान 2024-1234567".as_bytes();
        let b64 = |b: &[u8]| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(b)
        };
        let header = format!(
            "=?UTF-8?B?{}?=\r\n =?UTF-8?B?{}?=",
            b64(&s[..7]),
            b64(&s[7..])
        );
        assert_eq!(
            parse_subject(&header).as_deref(),
            Some("भुगतान 2024-1234567")
        );
        // Quoted-printable, split inside a character, with text around.
        let q: String = s[..8].iter().map(|b| format!("={b:02X}")).collect();
        let q2: String = s[8..18].iter().map(|b| format!("={b:02X}")).collect();
        let header = format!("Re: =?utf-8?q?{q}?= =?utf-8?q?{q2}?= 2024-1234567");
        let want = format!("Re: {} 2024-1234567", String::from_utf8_lossy(&s[..18]));
        assert_eq!(parse_subject(&header), Some(want));
        // Words of one charset that decode alone are left as mail-parser reads them.
        assert_eq!(
            parse_subject("=?utf-8?q?Ticket_?= =?utf-8?q?2024-1234567?=").as_deref(),
            Some("Ticket 2024-1234567")
        );
    }
}
