//! Header values from untrusted input: text with controls removed and bounded, message ids,
//! addresses. Nothing from a mail can add a header through these.
//!
//! Not here: the mail's structure (`compose.rs`, `attach.rs`).

use lettre::Address;

use super::ComposeError;

/// Header text from untrusted input: control characters (CR, LF, NUL, ...) become spaces,
/// runs of space collapse, length is bounded. No header can be smuggled in.
pub fn header_text(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    let mut space = false;
    for c in s.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if c == ' ' {
            if space {
                continue;
            }
            space = true;
        } else {
            space = false;
        }
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out.trim().to_string()
}

/// A message id safe to put in a header: printable ASCII without `<>`, spaces or controls.
pub(super) fn msg_id(s: &str) -> Option<String> {
    let id: String = s
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_string();
    let ok = !id.is_empty()
        && id.len() <= 250
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>');
    ok.then(|| format!("<{id}>"))
}

pub(super) fn address(a: &str) -> Result<Address, ComposeError> {
    a.trim()
        .parse::<Address>()
        .map_err(|_| ComposeError::Address(header_text(a, 200)))
}
