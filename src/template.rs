//! Placeholders left from the production template that the Debian package installs as
//! /etc/ticketgate/config.toml (`packaging/config.toml`): a string value beginning with
//! `CHANGE-ME` is one, and each is reported with file:line:column and what to put there.
//! The rest of config.toml's validation is in `config`; this module only finds placeholders.

use crate::problem::{Problem, Source};

/// What a placeholder value starts with; the text after `CHANGE-ME:` says what belongs there.
pub const MARK: &str = "CHANGE-ME";

/// Every placeholder value in the file, one problem each, in file order: `[imap] host: ...`.
/// Comments are skipped; a value is a placeholder when its string starts with [`MARK`].
pub fn placeholders(src: &Source<'_>) -> Vec<Problem> {
    let quoted = format!("\"{MARK}");
    let mut section = String::new();
    let mut offset = 0;
    let mut found = Vec::new();
    for line in src.text.split_inclusive('\n') {
        let t = line.trim_start();
        if t.starts_with('[') {
            section = t.split('#').next().unwrap_or("").trim().to_string();
        } else if !t.starts_with('#')
            && let Some(at) = line.find(&quoted)
            && line.get(..at).is_some_and(|before| !before.contains('#'))
        {
            let key = line
                .get(..at)
                .and_then(|b| b.split('=').next())
                .unwrap_or("")
                .trim();
            let value = line.get(at + 1..).unwrap_or("");
            let value = value.split('"').next().unwrap_or(value);
            let hint = value
                .trim_start_matches(MARK)
                .trim_start_matches([':', ' '])
                .trim();
            let what = if hint.is_empty() {
                "a value of your deployment".to_string()
            } else {
                hint.to_string()
            };
            found.push(src.problem_at(
                offset + at,
                format!("{section} {key} is still the template's placeholder: set {what}"),
            ));
        }
        offset += line.len();
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn each_placeholder_is_named_with_its_place_and_what_to_set() {
        let text = "# host = \"CHANGE-ME: not this one, a comment\"\n[imap]\nhost = \"CHANGE-ME: the IMAP server's host name\"\nport = 993\n\n[desk.bid-ra]\nlogin = \"CHANGE-ME\"\naddress = \"bid.ra@gem.gov.in\" # \"CHANGE-ME\" in a comment\n";
        let src = Source {
            path: Path::new("/etc/ticketgate/config.toml"),
            text,
        };
        let found: Vec<String> = placeholders(&src).iter().map(|p| p.to_string()).collect();
        assert_eq!(
            found,
            [
                "/etc/ticketgate/config.toml:3:8: [imap] host is still the template's placeholder: set the IMAP server's host name",
                "/etc/ticketgate/config.toml:7:9: [desk.bid-ra] login is still the template's placeholder: set a value of your deployment",
            ]
        );
    }

    #[test]
    fn the_shipped_template_has_placeholders_and_the_demo_config_none() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for (file, want_some) in [("packaging/config.toml", true), ("config.toml", false)] {
            let text = std::fs::read_to_string(root.join(file)).unwrap_or_default();
            assert!(!text.is_empty(), "{file} is missing");
            let src = Source {
                path: Path::new(file),
                text: &text,
            };
            assert_eq!(!placeholders(&src).is_empty(), want_some, "{file}");
        }
    }
}
