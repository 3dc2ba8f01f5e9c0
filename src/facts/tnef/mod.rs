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
//!
//! This file holds the container: the attribute walk and the reader that sorts attributes
//! into [`TnefText`]. MAPI property lists are in `props.rs`, code pages and UTF-16 in
//! `decode.rs`, compressed RTF and RTF to text in `rtf.rs`, the tests in `tests/`.

mod decode;
mod props;
mod rtf;
#[cfg(test)]
mod tests;

use decode::{cut, decode_codepage, decode_utf16le};
use props::{Cursor, Props};
use rtf::{decompress_rtf, rtf_to_text};

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
