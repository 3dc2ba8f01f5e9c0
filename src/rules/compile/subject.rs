//! The check of a template's subject: what it puts before the original subject must fit on
//! a phone's mail list (issue #15). Where templates are read and other checks live is
//! `compile.rs`.

use super::Deployment;

/// Characters of a subject a phone's mail list shows before cutting it (RFC 5322 section
/// 2.1.1's recommended line length): what a template puts before the original subject
/// must fit, or the citizen sees only ticketgate's words (issue #15).
pub const SUBJECT_PREFIX_LIMIT: usize = 78;

/// The problem with a subject template whose text before `{subject}` (all of it when it
/// has none) can reach [`SUBJECT_PREFIX_LIMIT`]: desk placeholders count at the longest
/// desk name of the deployment, `{ticket}` at 20 characters, every other placeholder at
/// 30 (an address or a name). `None` when it fits.
pub(super) fn subject_prefix_too_long(subject: &str, deployment: &Deployment) -> Option<String> {
    let longest_desk = deployment
        .desks
        .iter()
        .map(|d| d.chars().count())
        .max()
        .unwrap_or(20);
    let found = crate::compose::placeholders(subject);
    let end = found
        .iter()
        .find(|(_, p)| *p == "subject")
        .map_or(subject.len(), |(at, _)| *at);
    let mut length = 0;
    let mut from = 0;
    for (at, p) in found.iter().filter(|(at, _)| *at < end) {
        length += subject[from..*at].chars().count();
        length += match *p {
            "desk" | "responsible_desk" | "suggested_desk" => longest_desk,
            "ticket" => 20,
            _ => 30,
        };
        from = at + p.len() + 2;
    }
    length += subject[from.min(end)..end].chars().count();
    (length >= SUBJECT_PREFIX_LIMIT).then(|| {
        format!(
            "the text before {{subject}} can be {length} characters long (desk names at their \
             longest, other placeholders at 30): a phone shows about {SUBJECT_PREFIX_LIMIT} \
             and the citizen would not see their own subject; shorten it"
        )
    })
}
