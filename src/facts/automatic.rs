//! Recognising automatic mail: auto-replies, bounces, lists, bulk. Stub: being written.

use mail_parser::Message;

/// Why `msg` is automatic (e.g. "Auto-Submitted: auto-replied"), or `None` for a person's mail.
pub fn automatic_reason(_msg: &Message<'_>) -> Option<String> {
    None
}
