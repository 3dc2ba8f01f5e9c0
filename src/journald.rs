//! Log records to journald over its native protocol (systemd.io/JOURNAL_NATIVE_PROTOCOL),
//! one datagram per event: MESSAGE is the same text as the plain log line ("mail decided
//! desk=bid-ra uid=7 ..."), so `journalctl -u ticketgate` reads as before, and every field
//! of the event is a journal field of its own (DESK=bid-ra, UID=7, ACTIONS=..., RULES=...),
//! so `journalctl -u ticketgate DESK=bid-ra` selects a desk. Which layer logs where is
//! decided in `logging::init_logging`; this module only speaks the protocol.
//!
//! Not tracing-journald: that crate puts only the event's message in MESSAGE, so the plain
//! `journalctl` view would lose the desk, the UID and the actions of every decision.

use std::fmt::Write as _;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::layer::Context;

/// journald's socket for native messages.
pub const SOCKET: &str = "/run/systemd/journal/socket";

/// Field names journald gives a meaning of its own; an event field of that name is sent
/// with `MAIL_` in front (`message_id`, the mail's Message-ID, becomes MAIL_MESSAGE_ID).
const RESERVED: [&str; 9] = [
    "MESSAGE",
    "MESSAGE_ID",
    "PRIORITY",
    "CODE_FILE",
    "CODE_LINE",
    "CODE_FUNC",
    "ERRNO",
    "SYSLOG_IDENTIFIER",
    "SYSLOG_FACILITY",
];

/// A tracing layer that sends each event to journald with its fields.
#[derive(Debug)]
pub struct JournalLayer {
    socket: UnixDatagram,
    path: PathBuf,
}

impl JournalLayer {
    /// A layer sending to the journal socket at `path`; fails when nothing listens there.
    pub fn connect(path: impl AsRef<Path>) -> io::Result<JournalLayer> {
        let socket = UnixDatagram::unbound()?;
        // journald discards an empty datagram: this only checks that it is there.
        socket.send_to(&[], path.as_ref())?;
        Ok(JournalLayer {
            socket,
            path: path.as_ref().to_path_buf(),
        })
    }
}

/// The syslog priority journald files an event under.
fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// Appends `NAME=value` in the protocol's binary form (name, newline, 64-bit little-endian
/// length, value, newline), which allows any byte in the value, newlines included.
fn put(buf: &mut Vec<u8>, name: &str, value: &[u8]) {
    buf.extend_from_slice(name.as_bytes());
    buf.push(b'\n');
    buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
    buf.extend_from_slice(value);
    buf.push(b'\n');
}

/// A field name as journald accepts it: upper case letters, digits and `_`, not starting
/// with `_` or a digit, and not one of journald's own names.
fn journal_name(field: &str) -> String {
    let mut name: String = field
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.starts_with(['_', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9'])
    {
        name.insert(0, 'F');
    }
    if RESERVED.contains(&name.as_str()) {
        name.insert_str(0, "MAIL_");
    }
    name
}

/// Collects an event's fields other than its message.
struct Fields<'a>(&'a mut Vec<u8>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() != "message" {
            put(self.0, &journal_name(field.name()), value.as_bytes());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() != "message" {
            let mut text = String::new();
            let _ = write!(text, "{value:?}");
            put(self.0, &journal_name(field.name()), text.as_bytes());
        }
    }
}

/// The datagram for one event: MESSAGE as the plain log line, PRIORITY, the identifier,
/// the target, and one field per event field.
fn entry(event: &Event<'_>) -> (Vec<u8>, String, u8) {
    let mut text = String::new();
    let _ = DefaultFields::new().format_fields(Writer::new(&mut text), event);
    let meta = event.metadata();
    let prio = priority(*meta.level());
    let mut buf = Vec::with_capacity(256 + text.len() * 2);
    put(&mut buf, "MESSAGE", text.as_bytes());
    put(&mut buf, "PRIORITY", &[b'0' + prio]);
    put(&mut buf, "SYSLOG_IDENTIFIER", b"ticketgate");
    put(&mut buf, "TARGET", meta.target().as_bytes());
    event.record(&mut Fields(&mut buf));
    (buf, text, prio)
}

impl<S: Subscriber> Layer<S> for JournalLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let (buf, text, prio) = entry(event);
        // Too large for one datagram (hundreds of KB; not a log line of ours) or journald
        // gone: the line goes to stderr, which systemd also sends to the journal.
        if self.socket.send_to(&buf, &self.path).is_err() {
            eprintln!("<{prio}>{text}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::prelude::*;

    /// Splits a datagram in the binary form back into (name, value) pairs.
    fn fields(mut d: &[u8]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while let Some(nl) = d.iter().position(|b| *b == b'\n') {
            let name = String::from_utf8_lossy(&d[..nl]).into_owned();
            let len = u64::from_le_bytes(d[nl + 1..nl + 9].try_into().unwrap_or([0; 8]));
            let start = nl + 9;
            let end = start + len as usize;
            out.push((name, String::from_utf8_lossy(&d[start..end]).into_owned()));
            d = &d[end + 1..];
        }
        out
    }

    #[test]
    fn an_event_reaches_the_socket_with_its_fields_and_readable_message() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("socket");
        let listener = UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("{e}"));
        let layer = JournalLayer::connect(&path).unwrap_or_else(|e| panic!("{e}"));
        let mut probe = [0u8; 16];
        assert_eq!(listener.recv(&mut probe).ok(), Some(0), "the empty probe");
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(desk = %"bid-ra", uid = 7u32, message_id = "<a@b>", actions = "tag:$Ticket\nfile:X", "mail decided");
        });
        let mut buf = vec![0u8; 65536];
        let n = listener.recv(&mut buf).unwrap_or_else(|e| panic!("{e}"));
        let got = fields(&buf[..n]);
        let get = |k: &str| {
            got.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("no {k} in {got:?}"))
        };
        assert_eq!(get("DESK"), "bid-ra");
        assert_eq!(get("UID"), "7");
        assert_eq!(get("MAIL_MESSAGE_ID"), "<a@b>");
        assert_eq!(get("ACTIONS"), "tag:$Ticket\nfile:X");
        assert_eq!(get("PRIORITY"), "4");
        assert_eq!(get("SYSLOG_IDENTIFIER"), "ticketgate");
        let message = get("MESSAGE");
        assert!(
            message.starts_with("mail decided") && message.contains("desk=bid-ra uid=7"),
            "{message}"
        );
        assert!(!got.iter().any(|(n, _)| n == "MESSAGE_ID"), "{got:?}");
    }

    #[test]
    fn connecting_to_no_journal_fails() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        assert!(JournalLayer::connect(dir.path().join("none")).is_err());
    }
}
