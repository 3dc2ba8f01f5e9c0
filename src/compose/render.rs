//! Templates of the desk's notes: the placeholders a template may use, splitting a template
//! into text and placeholders, rendering it with values, and flowing its paragraphs for
//! phones (issue #15).
//!
//! Not here: which values the placeholders get (the caller's), headers (`headers.rs`),
//! building the mail (`compose.rs`).

use std::collections::BTreeMap;
/// Every placeholder a template may use (README, "rules reference"); `check` refuses others,
/// so a typo such as `{responsable_desk}` never reaches a citizen verbatim.
pub const PLACEHOLDERS: [&str; 21] = [
    "desk",
    "desk_name",
    "desk_address",
    "helpdesk",
    "helpdesk_name",
    "helpdesk_phone",
    "helpdesk_web",
    "sender",
    "subject",
    "message_id",
    "date",
    "ticket",
    "ticket_created",
    "ticket_ready",
    "helpdesk_hours",
    "responsible_desk",
    "responsible_address",
    "responsible_nature",
    "suggested_desk",
    "suggested_address",
    "suggested_nature",
];

/// A piece of a template, as [`pieces`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'t> {
    /// Literal text (`{{` and `}}` already stand for one brace).
    Text(&'t str),
    /// A `{name}` placeholder starting at byte `at` of the template.
    Placeholder { at: usize, name: &'t str },
}

/// The template read once, left to right, into literal text and `{name}` placeholders (a
/// name is ASCII letters, digits, `_` and `-`); `{{` and `}}` are literal braces, any other
/// brace is text. [`render`] and [`placeholders`] both read templates through this.
pub fn pieces(template: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let (mut text, mut at) = (0, 0);
    while let Some(i) = template[at..].find(['{', '}']) {
        let i = at + i;
        let tail = &template[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push(Piece::Text(&template[text..=i]));
            (text, at) = (i + 2, i + 2);
            continue;
        }
        if tail.starts_with('{')
            && let Some(end) = tail.find('}')
        {
            let name = &tail[1..end];
            if !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                if text < i {
                    out.push(Piece::Text(&template[text..i]));
                }
                out.push(Piece::Placeholder { at: i, name });
                (text, at) = (i + end + 1, i + end + 1);
                continue;
            }
        }
        at = i + 1;
    }
    if text < template.len() {
        out.push(Piece::Text(&template[text..]));
    }
    out
}

/// The `{name}` placeholders of `template` as [`render`] reads them (`{{` and `}}` are
/// literal braces): (byte offset of the `{`, name).
pub fn placeholders(template: &str) -> Vec<(usize, &str)> {
    pieces(template)
        .into_iter()
        .filter_map(|p| match p {
            Piece::Placeholder { at, name } => Some((at, name)),
            Piece::Text(_) => None,
        })
        .collect()
}

/// Fills `{name}` placeholders from `vars`; unknown names stay as written; `{{` and `}}`
/// stand for literal braces.
pub fn render(template: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    for piece in pieces(template) {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Placeholder { name, .. } => match vars.get(name) {
                Some(v) => out.push_str(v),
                None => {
                    out.push('{');
                    out.push_str(name);
                    out.push('}');
                }
            },
        }
    }
    out
}

/// The note's text as a phone shows it well: the lines of each paragraph (paragraphs are
/// separated by blank lines) joined into one line, so that every client wraps it to its own
/// width, instead of a template's 72-90 column lines breaking again in the middle of a
/// phone's narrower screen (issue #15). A line that starts with white space, a list mark
/// (`-`, `*`, `•`) or a number followed by `.` or `)` keeps its own line. Long lines are
/// the transfer encoding's business (lettre chooses quoted-printable or base64).
pub fn flow(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_paragraph = false;
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            if in_paragraph {
                out.push('\n');
            }
            out.push('\n');
            in_paragraph = false;
            continue;
        }
        if in_paragraph && !starts_own_line(line) {
            out.push(' ');
        } else if in_paragraph {
            out.push('\n');
        }
        out.push_str(line);
        in_paragraph = true;
    }
    if in_paragraph {
        out.push('\n');
    }
    out
}

/// A line that [`flow`] never joins to the one before: indented, or a list item.
pub(super) fn starts_own_line(line: &str) -> bool {
    if line.starts_with(char::is_whitespace) || line.starts_with(['-', '*', '•']) {
        return true;
    }
    let digits = line.chars().take_while(char::is_ascii_digit).count();
    digits > 0 && line[digits..].starts_with(['.', ')'])
}
