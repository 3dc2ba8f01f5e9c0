//! MAPI property lists inside TNEF attributes (attMsgProps, attAttachment; MS-OXTNEF
//! 2.1.3.4): a bounded byte cursor and the walk over encoded properties.
//!
//! Not here: what the reader keeps of each property (`mod.rs`), text decoding (`decode.rs`).

use super::{MV_FLAG, PT_BINARY, PT_OBJECT, PT_STRING8, PT_UNICODE};

/// A forward reader over bytes; every read checks the length left.
pub(super) struct Cursor<'a>(pub(super) &'a [u8]);

impl<'a> Cursor<'a> {
    pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let head = self.0.get(..n)?;
        self.0 = self.0.get(n..)?;
        Some(head)
    }

    pub(super) fn take_at_most(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }

    pub(super) fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    pub(super) fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }

    pub(super) fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    pub(super) fn len32(&mut self) -> Option<usize> {
        usize::try_from(self.u32()?).ok()
    }

    /// `n` bytes and the padding to a multiple of 4 after them (missing padding at the very
    /// end is forgiven).
    pub(super) fn padded(&mut self, n: usize) -> Option<&'a [u8]> {
        let v = self.take(n)?;
        self.take_at_most((4 - n % 4) % 4);
        Some(v)
    }
}

/// One MAPI property of a property list (MS-OXTNEF 2.1.3.4).
pub(super) struct Prop<'a> {
    /// Property type without the multi-value flag.
    pub(super) ty: u16,
    pub(super) id: u16,
    pub(super) mv: bool,
    /// Single fixed-width value (PT_LONG etc.), padded to 4 bytes.
    pub(super) fixed: &'a [u8],
    /// Variable-length values: `count` × (length u32, data padded to 4), already checked.
    pub(super) count: usize,
    pub(super) vars: &'a [u8],
}

impl<'a> Prop<'a> {
    /// The variable-length values (PT_STRING8, PT_UNICODE, PT_BINARY, PT_OBJECT).
    pub(super) fn values(&self) -> impl Iterator<Item = &'a [u8]> + use<'a> {
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
pub(super) struct Props<'a> {
    pub(super) c: Cursor<'a>,
    pub(super) left: usize,
}

impl<'a> Props<'a> {
    pub(super) fn new(list: &'a [u8]) -> Self {
        let mut c = Cursor(list);
        let left = c.len32().unwrap_or(0);
        Props { c, left }
    }

    pub(super) fn parse(&mut self) -> Option<Prop<'a>> {
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
