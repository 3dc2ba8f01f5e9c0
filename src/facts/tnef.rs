//! Searchable text out of a TNEF blob (`winmail.dat`, `application/ms-tnef`, [MS-OXTNEF]) as
//! Outlook and Exchange attach it: the plain body (attBody, PR_BODY), the HTML body
//! (PR_BODY_HTML / PR_HTML), the text of the compressed RTF body (PR_RTF_COMPRESSED,
//! [MS-OXRTFCP] LZFu, then RTF reduced to plain text) and the attachments inside.
//!
//! Pure functions over bytes; everything is bounded by the caller's `max_bytes` / `max_items`
//! and hostile input is read as far as it makes sense, never trusted for sizes.
//!
//! Not here: finding the TNEF part in a MIME message and decoding its transfer encoding (the
//! caller does that), converting HTML to text (the caller does that too), ticket search, the
//! subject, addresses, dates and the recipient table (the MIME headers carry those), and
//! writing TNEF. An embedded Outlook message (an attached mail) is handed back as an attachment
//! holding its own TNEF stream ([`is_tnef`]), not read recursively.
//!
//! The attribute stream is walked here rather than with the `tnef` crate: that crate stops
//! at the first attribute id it does not know (attBody 0x0002800C among them) and at the first
//! checksum mismatch, both of which real Outlook blobs have. LZFu is decompressed here rather
//! than with `compressed_rtf::decompress_rtf`, which can panic on short or lying headers and
//! has no output bound.
//!
//! [MS-OXTNEF]: https://learn.microsoft.com/en-us/openspecs/exchange_server_protocols/ms-oxtnef/
//! [MS-OXRTFCP]: https://learn.microsoft.com/en-us/openspecs/exchange_server_protocols/ms-oxrtfcp/

use mail_parser::decoders::charsets::map::charset_decoder;

/// What a TNEF blob (MS-OXTNEF) holds that a person could have written in: the plain, HTML and
/// RTF bodies of the message and the files attached to it. Each text is cut at `max_bytes`
/// (on a UTF-8 character boundary). Each of `body`, `html` and `rtf` holds at most `max_bytes`
/// bytes in all and at most [`MAX_TEXTS`] entries, and an entry equal to an earlier one is
/// not repeated (Outlook writes the plain body both as attBody and as PR_BODY).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TnefText {
    /// Plain body text: attBody, and PR_BODY (0x1000, PT_STRING8 / PT_UNICODE) from attMsgProps.
    pub body: Vec<String>,
    /// HTML bodies: PR_BODY_HTML (0x1013, PT_BINARY or PT_STRING8) / PR_HTML, as HTML source (caller converts).
    pub html: Vec<String>,
    /// Text of the RTF body (PR_RTF_COMPRESSED 0x1009, LZFu-decompressed, then RTF converted to plain text).
    pub rtf: Vec<String>,
    /// Attachments inside: (file name if any, raw bytes), from attAttachData (+ attAttachTitle / PR_ATTACH_LONG_FILENAME).
    ///
    /// The name is PR_ATTACH_LONG_FILENAME, else attAttachTitle, else PR_ATTACH_FILENAME, else
    /// PR_DISPLAY_NAME. The bytes are attAttachData, or PR_ATTACH_DATA_BIN from the attachment's
    /// properties when attAttachData is missing; for an OLE object or an embedded message
    /// (PR_ATTACH_DATA_OBJ, PT_OBJECT) they are the object's data after its 16-byte interface
    /// id: an embedded message is a TNEF stream of its own ([`is_tnef`]; `read` reads it).
    /// Bytes are cut at `max_bytes`, so a larger file comes back incomplete.
    pub attachments: Vec<(Option<String>, Vec<u8>)>,
}

/// At most this many entries in each of [`TnefText`]'s `body`, `html` and `rtf`.
pub const MAX_TEXTS: usize = 16;

/// Decompressed RTF source is cut at this many times `max_bytes` before it is reduced to text
/// (RTF markup and embedded pictures outweigh the text they carry).
const RTF_SOURCE_FACTOR: usize = 8;

/// TNEF stream signature (MS-OXTNEF 2.1.3.1), little-endian 0x223E9F78.
const SIGNATURE: [u8; 4] = [0x78, 0x9F, 0x3E, 0x22];

// Attribute ids (MS-OXTNEF 2.1.3.3 / 2.1.4): attribute type in the high word, id in the low.
const ATT_BODY: u32 = 0x0002_800C;
const ATT_OEM_CODEPAGE: u32 = 0x0006_9007;
const ATT_MSG_PROPS: u32 = 0x0006_9003;
const ATT_ATTACH_REND_DATA: u32 = 0x0006_9002;
const ATT_ATTACH_TITLE: u32 = 0x0001_8010;
const ATT_ATTACH_DATA: u32 = 0x0006_800F;
const ATT_ATTACHMENT: u32 = 0x0006_9005;

// MAPI property ids (MS-OXPROPS).
const PR_BODY: u16 = 0x1000;
const PR_RTF_COMPRESSED: u16 = 0x1009;
const PR_BODY_HTML: u16 = 0x1013;
const PR_INTERNET_CPID: u16 = 0x3FDE;
const PR_DISPLAY_NAME: u16 = 0x3001;
const PR_ATTACH_DATA: u16 = 0x3701;
const PR_ATTACH_FILENAME: u16 = 0x3704;
const PR_ATTACH_LONG_FILENAME: u16 = 0x3707;

// MAPI property types (MS-OXCDATA 2.11.1).
const PT_LONG: u16 = 0x0003;
const PT_OBJECT: u16 = 0x000D;
const PT_STRING8: u16 = 0x001E;
const PT_UNICODE: u16 = 0x001F;
const PT_BINARY: u16 = 0x0102;
const MV_FLAG: u16 = 0x1000;

/// Whether `data` starts with the TNEF signature (MS-OXTNEF 2.1.3.1): what an embedded
/// message in [`TnefText::attachments`] looks like, and what `read` accepts.
pub fn is_tnef(data: &[u8]) -> bool {
    data.starts_with(&SIGNATURE)
}

/// Reads `data`; never panics, never allocates more than a bounded multiple of `max_bytes`
/// (texts are cut at `max_bytes` each; at most `max_items` attachments). Broken or truncated
/// blobs give what could be read before the damage (possibly empty).
///
/// `data` is the decoded TNEF stream (MS-OXTNEF 2.1.3): signature, key, then attributes. There
/// is no error: data without the signature gives an empty [`TnefText`]; a record with an
/// invalid level or a length past the end ends the walk (the record's available bytes still
/// count); attribute checksums are not checked (Outlook writes wrong ones); a MAPI property
/// list (MS-OXTNEF 2.1.3.4) is read up to the first property that cannot be parsed; LZFu
/// (MS-OXRTFCP 2.1.3.1) is decompressed without checking the CRC, up to the end marker or the
/// end of the data. PT_STRING8 and attribute strings are read as UTF-8 when valid, else in the
/// code page of attOemCodepage (Windows-1252 when absent; UTF-8 with replacement characters for
/// code pages without a decoder); the HTML body in PR_INTERNET_CPID first.
///
/// Memory: about 3 × `max_bytes` for the texts, `max_items` × `max_bytes` for attachments,
/// and transiently 8 × `max_bytes` of decompressed RTF source (`RTF_SOURCE_FACTOR`).
pub fn read(data: &[u8], max_bytes: usize, max_items: usize) -> TnefText {
    let mut r = Reader {
        out: TnefText::default(),
        max_bytes,
        max_items,
        oem_cp: 1252,
        attachment: None,
    };
    if !is_tnef(data) {
        return r.out;
    }
    for (level, id, value) in Attributes::new(data.get(6..).unwrap_or_default()) {
        r.attribute(level, id, value);
    }
    r.finish_attachment();
    r.out
}

/// The attribute records after signature and key: (level, id, data). Ends at the first
/// record whose level is neither 1 (message) nor 2 (attachment); a record running past the
/// end yields the bytes there are and ends the walk.
struct Attributes<'a> {
    rest: &'a [u8],
}

impl<'a> Attributes<'a> {
    fn new(rest: &'a [u8]) -> Self {
        Attributes { rest }
    }
}

impl<'a> Iterator for Attributes<'a> {
    type Item = (u8, u32, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let mut c = Cursor(self.rest);
        self.rest = &[];
        let level = c.u8()?;
        if level != 1 && level != 2 {
            return None;
        }
        let id = c.u32()?;
        let len = c.len32()?;
        let value = c.take_at_most(len);
        if value.len() == len {
            // The checksum (u16) is not checked: Outlook writes wrong ones.
            c.take_at_most(2);
            self.rest = c.0;
        }
        Some((level, id, value))
    }
}

/// The attachment being read: everything from one attAttachRendData to the next.
#[derive(Default)]
struct Pending<'a> {
    title: Option<&'a [u8]>,
    data: Option<&'a [u8]>,
    props: Option<&'a [u8]>,
}

struct Reader<'a> {
    out: TnefText,
    max_bytes: usize,
    max_items: usize,
    oem_cp: u32,
    attachment: Option<Pending<'a>>,
}

impl<'a> Reader<'a> {
    fn attribute(&mut self, level: u8, id: u32, value: &'a [u8]) {
        match id {
            ATT_OEM_CODEPAGE => {
                if let Some(cp) = Cursor(value).u32() {
                    self.oem_cp = cp;
                }
            }
            ATT_BODY => {
                let text = self.decode_8bit(value, &[self.oem_cp]);
                push_text(&mut self.out.body, text, self.max_bytes);
            }
            ATT_MSG_PROPS => self.message_props(value),
            ATT_ATTACH_REND_DATA => {
                self.finish_attachment();
                self.attachment = Some(Pending::default());
            }
            ATT_ATTACH_TITLE | ATT_ATTACH_DATA | ATT_ATTACHMENT if level == 2 => {
                let a = self.attachment.get_or_insert_with(Pending::default);
                let slot = match id {
                    ATT_ATTACH_TITLE => &mut a.title,
                    ATT_ATTACH_DATA => &mut a.data,
                    _ => &mut a.props,
                };
                slot.get_or_insert(value);
            }
            _ => {}
        }
    }

    /// attMsgProps: the message's MAPI properties (MS-OXTNEF 2.1.3.4).
    fn message_props(&mut self, list: &[u8]) {
        let cpid = Props::new(list)
            .find(|p| p.id == PR_INTERNET_CPID && p.ty == PT_LONG && !p.mv)
            .and_then(|p| Cursor(p.fixed).u32());
        for p in Props::new(list) {
            if p.mv {
                continue;
            }
            for v in p.values() {
                match (p.id, p.ty) {
                    (PR_BODY, PT_STRING8 | PT_UNICODE)
                        if has_room(&self.out.body, self.max_bytes) =>
                    {
                        let text = self.decode_string(p.ty, v, &[self.oem_cp]);
                        push_text(&mut self.out.body, text, self.max_bytes);
                    }
                    (PR_BODY_HTML, PT_BINARY | PT_STRING8 | PT_UNICODE)
                        if has_room(&self.out.html, self.max_bytes) =>
                    {
                        let cps = [cpid.unwrap_or(self.oem_cp), self.oem_cp];
                        let text = self.decode_string(p.ty, v, &cps);
                        push_text(&mut self.out.html, text, self.max_bytes);
                    }
                    (PR_RTF_COMPRESSED, PT_BINARY) => {
                        let room = self.max_bytes.saturating_sub(used(&self.out.rtf));
                        if room > 0 && self.out.rtf.len() < MAX_TEXTS {
                            let cap = self.max_bytes.saturating_mul(RTF_SOURCE_FACTOR);
                            if let Some(source) = decompress_rtf(v, cap) {
                                let text = rtf_to_text(&source, room);
                                push_text(&mut self.out.rtf, text, self.max_bytes);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn finish_attachment(&mut self) {
        let Some(a) = self.attachment.take() else {
            return;
        };
        if self.out.attachments.len() >= self.max_items
            || (a.title.is_none() && a.data.is_none() && a.props.is_none())
        {
            return;
        }
        let mut long_name = None;
        let mut short_name = None;
        let mut display_name = None;
        let mut binary = None;
        let mut object = None;
        for p in Props::new(a.props.unwrap_or_default()) {
            if p.mv {
                continue;
            }
            let first = p.values().next();
            match (p.id, p.ty) {
                (PR_ATTACH_LONG_FILENAME, PT_STRING8 | PT_UNICODE) => {
                    long_name = first.map(|v| (p.ty, v))
                }
                (PR_ATTACH_FILENAME, PT_STRING8 | PT_UNICODE) => {
                    short_name = first.map(|v| (p.ty, v))
                }
                (PR_DISPLAY_NAME, PT_STRING8 | PT_UNICODE) => {
                    display_name = first.map(|v| (p.ty, v))
                }
                (PR_ATTACH_DATA, PT_BINARY) => binary = first,
                // PT_OBJECT values start with the interface id (16 bytes; MS-OXTNEF 2.1.3.4).
                (PR_ATTACH_DATA, PT_OBJECT) => object = first.and_then(|v| v.get(16..)),
                _ => {}
            }
        }
        let name_max = self.max_bytes;
        let named = |(ty, v): (u16, &[u8])| {
            let s = self.decode_string(ty, v, &[self.oem_cp]);
            let s = s.trim();
            (!s.is_empty()).then(|| cut(s, name_max).to_string())
        };
        let name = long_name
            .and_then(named)
            .or_else(|| a.title.and_then(|t| named((PT_STRING8, t))))
            .or_else(|| short_name.and_then(named))
            .or_else(|| display_name.and_then(named));
        // An embedded message or OLE object has a placeholder text in attAttachData; its data
        // is the PT_OBJECT property.
        let bytes = object.or(a.data).or(binary).unwrap_or_default();
        let bytes = bytes.get(..self.max_bytes).unwrap_or(bytes).to_vec();
        self.out.attachments.push((name, bytes));
    }

    /// A PT_STRING8 / PT_BINARY (8-bit, in one of `cps`) or PT_UNICODE (UTF-16LE) value.
    fn decode_string(&self, ty: u16, v: &[u8], cps: &[u32]) -> String {
        if ty == PT_UNICODE {
            decode_utf16le(v, self.max_bytes)
        } else {
            self.decode_8bit(v, cps)
        }
    }

    /// 8-bit text up to its first NUL: UTF-8 if valid, else in the first of `cps` there is a
    /// decoder for, else UTF-8 with replacement characters. At most `max_bytes` bytes.
    fn decode_8bit(&self, v: &[u8], cps: &[u32]) -> String {
        let v = v.split(|&b| b == 0).next().unwrap_or_default();
        let v = v.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(v);
        let input = v.get(..self.max_bytes).unwrap_or(v);
        let text = match std::str::from_utf8(input) {
            Ok(s) => s.to_string(),
            // Cut inside a UTF-8 sequence by `max_bytes`: the part before is the text.
            Err(e) if e.error_len().is_none() && input.len() < v.len() => {
                String::from_utf8_lossy(input.get(..e.valid_up_to()).unwrap_or_default())
                    .into_owned()
            }
            Err(_) => decode_codepage(input, cps),
        };
        let n = cut(&text, self.max_bytes).len();
        let mut text = text;
        text.truncate(n);
        text
    }
}

/// `input` in the first of `cps` that is UTF-8 (65001) or has a decoder; else UTF-8 with
/// replacement characters.
fn decode_codepage(input: &[u8], cps: &[u32]) -> String {
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
fn decode_utf16le(v: &[u8], max: usize) -> String {
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
fn codepage_decoder(cp: u32) -> Option<fn(&[u8]) -> String> {
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

fn used(texts: &[String]) -> usize {
    texts.iter().map(String::len).sum()
}

fn has_room(texts: &[String], max: usize) -> bool {
    texts.len() < MAX_TEXTS && used(texts) < max
}

/// Adds `text` unless it is blank, repeats an earlier entry or there is no room; cut to the
/// room left of `max` bytes in all.
fn push_text(texts: &mut Vec<String>, mut text: String, max: usize) {
    if text.trim().is_empty() || texts.len() >= MAX_TEXTS {
        return;
    }
    let room = max.saturating_sub(used(texts));
    let n = cut(&text, room).len();
    text.truncate(n);
    let key = text.trim_end();
    if key.is_empty() || texts.iter().any(|t| t.trim_end() == key) {
        return;
    }
    texts.push(text);
}

/// The longest prefix of `s` of at most `max` bytes ending on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut i = max.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    s.get(..i).unwrap_or_default()
}

/// A forward reader over bytes; every read checks the length left.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let head = self.0.get(..n)?;
        self.0 = self.0.get(n..)?;
        Some(head)
    }

    fn take_at_most(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn len32(&mut self) -> Option<usize> {
        usize::try_from(self.u32()?).ok()
    }

    /// `n` bytes and the padding to a multiple of 4 after them (missing padding at the very
    /// end is forgiven).
    fn padded(&mut self, n: usize) -> Option<&'a [u8]> {
        let v = self.take(n)?;
        self.take_at_most((4 - n % 4) % 4);
        Some(v)
    }
}

/// One MAPI property of a property list (MS-OXTNEF 2.1.3.4).
struct Prop<'a> {
    /// Property type without the multi-value flag.
    ty: u16,
    id: u16,
    mv: bool,
    /// Single fixed-width value (PT_LONG etc.), padded to 4 bytes.
    fixed: &'a [u8],
    /// Variable-length values: `count` × (length u32, data padded to 4), already checked.
    count: usize,
    vars: &'a [u8],
}

impl<'a> Prop<'a> {
    /// The variable-length values (PT_STRING8, PT_UNICODE, PT_BINARY, PT_OBJECT).
    fn values(&self) -> impl Iterator<Item = &'a [u8]> + use<'a> {
        let mut c = Cursor(self.vars);
        (0..self.count).map_while(move |_| {
            let n = c.len32()?;
            c.padded(n)
        })
    }
}

/// The properties of a property list: count u32, then per property type u16, id u16, the
/// name for named properties (id ≥ 0x8000), then the value(s). Stops at the first property
/// that cannot be parsed (unknown type, data past the end).
struct Props<'a> {
    c: Cursor<'a>,
    left: usize,
}

impl<'a> Props<'a> {
    fn new(list: &'a [u8]) -> Self {
        let mut c = Cursor(list);
        let left = c.len32().unwrap_or(0);
        Props { c, left }
    }

    fn parse(&mut self) -> Option<Prop<'a>> {
        let c = &mut self.c;
        let raw_ty = c.u16()?;
        let id = c.u16()?;
        if id >= 0x8000 {
            // Named property: GUID, kind, then a number or a UTF-16LE name.
            c.take(16)?;
            match c.u32()? {
                0 => {
                    c.u32()?;
                }
                1 => {
                    let n = c.len32()?;
                    c.padded(n)?;
                }
                _ => return None,
            }
        }
        let mv = raw_ty & MV_FLAG != 0;
        let ty = raw_ty & !MV_FLAG;
        let mut prop = Prop {
            ty,
            id,
            mv,
            fixed: &[],
            count: 0,
            vars: &[],
        };
        match ty {
            0x0001 | 0x0002 | 0x0003 | 0x0004 | 0x000A | 0x000B | 0x0005 | 0x0006 | 0x0007
            | 0x0014 | 0x0040 | 0x0048 => {
                let width = match ty {
                    0x0001 => 0,
                    0x0002..=0x0004 | 0x000A | 0x000B => 4,
                    0x0048 => 16,
                    _ => 8,
                };
                let count = if mv { c.len32()? } else { 1 };
                prop.fixed = c.take(count.checked_mul(width)?)?;
            }
            PT_STRING8 | PT_UNICODE | PT_BINARY | PT_OBJECT | 0x00FB | 0x00FD | 0x00FE => {
                let count = c.len32()?;
                let start = c.0;
                // Each value takes at least 4 bytes, so this loop is bounded by the data.
                for _ in 0..count {
                    let n = c.len32()?;
                    c.padded(n)?;
                }
                prop.count = count;
                prop.vars = start.get(..start.len() - c.0.len())?;
            }
            _ => return None,
        }
        Some(prop)
    }
}

impl<'a> Iterator for Props<'a> {
    type Item = Prop<'a>;

    fn next(&mut self) -> Option<Prop<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let p = self.parse();
        if p.is_none() {
            self.left = 0;
        }
        p
    }
}

/// The dictionary's initial contents (MS-OXRTFCP 2.1.2.1); writing starts after it.
const LZFU_DICTIONARY: &[u8] = b"{\\rtf1\\ansi\\mac\\deff0\\deftab720{\\fonttbl;}{\\f0\\fnil \\froman \\fswiss \\fmodern \\fscript \\fdecor MS Sans SerifSymbolArialTimes New RomanCourier{\\colortbl\\red0\\green0\\blue0\r\n\\par \\pard\\plain\\f0\\fs20\\b\\i\\u\\tab\\tx";
const LZFU: u32 = 0x7546_5A4C;
const MELA: u32 = 0x414C_454D;

/// PR_RTF_COMPRESSED (MS-OXRTFCP 2.1.3.1): header COMPSIZE, RAWSIZE, COMPTYPE, CRC (u32 each),
/// then LZFu data or, for "MELA", the RTF as is. Returns the RTF with each byte as the char of
/// the same value (RTF is 7-bit; stray 8-bit bytes are resolved by [`rtf_to_text`]), up to the
/// first NUL and at most `max` bytes; `None` when the header is missing or of an unknown type.
/// The CRC is not checked and a stream that ends early gives what was decoded.
fn decompress_rtf(v: &[u8], max: usize) -> Option<String> {
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
fn lzfu(data: &[u8], max: usize) -> Vec<u8> {
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
fn rtf_to_text(rtf: &str, max_bytes: usize) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let mela =
            compressed_rtf::encode_rtf("{\\rtf1 plain \\b bold\\b0  text}").unwrap_or_default();
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
        b.attr(2, ATT_ATTACH_DATA, b"This attachment is a MAPI 1.0 embedded message and is not supported by this mail system.");
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
            assert!(
                t.body.len() <= whole.body.len() && t.attachments.len() <= whole.attachments.len()
            );
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

    #[test]
    fn lzfu_matches_the_compressed_rtf_crate() {
        // MS-OXRTFCP 4.1: Example 1.
        let example: &[u8] = &[
            0x2d, 0x00, 0x00, 0x00, 0x2b, 0x00, 0x00, 0x00, 0x4c, 0x5a, 0x46, 0x75, 0xf1, 0xc5,
            0xc7, 0xa7, 0x03, 0x00, 0x0a, 0x00, 0x72, 0x63, 0x70, 0x67, 0x31, 0x32, 0x35, 0x42,
            0x32, 0x0a, 0xf3, 0x20, 0x68, 0x65, 0x6c, 0x09, 0x00, 0x20, 0x62, 0x77, 0x05, 0xb0,
            0x6c, 0x64, 0x7d, 0x0a, 0x80, 0x0f, 0xa0,
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
                for p in Props::new(list).filter(|p| p.id == PR_RTF_COMPRESSED && p.ty == PT_BINARY)
                {
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
}
