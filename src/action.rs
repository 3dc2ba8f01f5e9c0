//! Actions a rule can ask for, as plain data. Parsing them from the rules' `"kind:arg"`
//! strings lives here, and their serde form (the journal's action records, written and read
//! by `store`); carrying them out lives in the shell (`pipeline`, `imap`, `smtp`).

use std::fmt;

/// Placeholder in a keyword, replaced by the suggested desk's name (`tag:$To-{suggested_desk}`).
pub const SUGGESTED_DESK: &str = "{suggested_desk}";

/// Who receives a redirect or forward.
///
/// Serialized (the journal's records) as `{"kind":"helpdesk"}`, `{"kind":"desk","name":"bid-ra"}`,
/// `{"kind":"suggested"}`, `{"kind":"address","name":"x@y.in"}`: these names are stored and
/// must not change.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Target {
    /// The helpdesk address from config.toml.
    Helpdesk,
    /// A desk by its name in config.toml.
    Desk(String),
    /// The desk suggested by the nature of issue (for misrouted mail).
    #[serde(rename = "suggested")]
    SuggestedDesk,
    /// A literal mail address.
    Address(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Helpdesk => f.write_str("helpdesk"),
            Target::Desk(d) => write!(f, "desk:{d}"),
            Target::SuggestedDesk => f.write_str("suggested"),
            Target::Address(a) => f.write_str(a),
        }
    }
}

/// One step of a decision. The order of a decision's actions is the order of execution.
///
/// Serialized (the journal's records) as `{"kind":KIND}` or `{"kind":KIND,"arg":ARG}` with
/// KIND as [`Action::kind`] names it (`{"kind":"redirect","arg":{"kind":"helpdesk"}}`,
/// `{"kind":"tag","arg":"$Ticket"}`, `{"kind":"seen"}`): these names are stored and must not
/// change.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "arg", rename_all = "snake_case")]
pub enum Action {
    /// New mail from the desk to the target, Cc the sender, original attached (SPEC 4).
    Redirect(Target),
    /// Like redirect, without Cc to the sender: hands misrouted mail to another desk.
    Forward(Target),
    /// Reply to the sender with the named template, at most once per sender and period.
    Reply(String),
    /// Store an IMAP keyword or system flag (`$Ticket`, `\Flagged`).
    Tag(String),
    /// Move into a folder (created if missing).
    File(String),
    /// Set `\Seen`.
    #[serde(rename = "seen")]
    MarkSeen,
    /// Write the ticket and the mail into the state database for reports.
    Record,
    /// Start the desk's clock on the mail's ticket (seed 000: the desk has `[matrix]
    /// desk_hours` to answer), or add the mail to the clock already running on it.
    Clock,
}

impl Action {
    /// Short kind name, used in logs, metrics and the journal.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Redirect(_) => "redirect",
            Action::Forward(_) => "forward",
            Action::Reply(_) => "reply",
            Action::Tag(_) => "tag",
            Action::File(_) => "file",
            Action::MarkSeen => "seen",
            Action::Record => "record",
            Action::Clock => "clock",
        }
    }

    /// True for actions that send mail: never allowed for automatic or own mail.
    pub fn sends_mail(&self) -> bool {
        matches!(
            self,
            Action::Redirect(_) | Action::Forward(_) | Action::Reply(_)
        )
    }

    /// Parses `"kind"` or `"kind:argument"` as written in rules files.
    pub fn parse(text: &str) -> Result<Action, String> {
        let (kind, arg) = match text.split_once(':') {
            Some((k, a)) => (k.trim(), Some(a.trim())),
            None => (text.trim(), None),
        };
        let need = |what: &str| -> Result<String, String> {
            match arg {
                Some(a) if !a.is_empty() => Ok(a.to_string()),
                _ => Err(format!(
                    "`{kind}` needs {what}, as in `{kind}:{}`",
                    example(kind)
                )),
            }
        };
        let no_arg = |a: Action| -> Result<Action, String> {
            match arg {
                None => Ok(a),
                Some(_) => Err(format!("`{kind}` takes no argument")),
            }
        };
        match kind {
            "redirect" => Ok(Action::Redirect(parse_target(&need("a target")?))),
            "forward" => Ok(Action::Forward(parse_target(&need("a target")?))),
            "reply" => Ok(Action::Reply(need("a template name")?)),
            "tag" => {
                let kw = need("a keyword")?;
                check_keyword(&kw.replace(SUGGESTED_DESK, "desk"))?;
                Ok(Action::Tag(kw))
            }
            "flag" => no_arg(Action::Tag("\\Flagged".into())),
            "file" => {
                let folder = need("a folder")?;
                if folder
                    .chars()
                    .any(|c| c.is_control() || c == '"' || c == '\\')
                {
                    return Err(format!(
                        "folder `{folder}` may not contain control characters, quotes or backslashes"
                    ));
                }
                Ok(Action::File(folder))
            }
            "seen" => no_arg(Action::MarkSeen),
            "record" => no_arg(Action::Record),
            "clock" => no_arg(Action::Clock),
            other => Err(format!(
                "unknown action `{other}`; expected one of redirect, forward, reply, tag, flag, file, seen, record, clock"
            )),
        }
    }
}

fn example(kind: &str) -> &'static str {
    match kind {
        "redirect" | "forward" => "helpdesk",
        "reply" => "broadcast-advisory",
        "tag" => "$Ticket",
        "file" => "Redirected",
        _ => "...",
    }
}

fn parse_target(arg: &str) -> Target {
    match arg {
        "helpdesk" => Target::Helpdesk,
        "suggested" => Target::SuggestedDesk,
        a if a.contains('@') => Target::Address(a.to_string()),
        a => Target::Desk(a.to_string()),
    }
}

/// IMAP keywords are atoms (RFC 3501 §9 `flag-keyword`); system flags start with `\`.
fn check_keyword(kw: &str) -> Result<(), String> {
    const SYSTEM: [&str; 5] = ["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"];
    if kw.starts_with('\\') {
        if kw == "\\Deleted" {
            return Err("`\\Deleted` cannot be set by rules: ticketgate never deletes mail".into());
        }
        return if SYSTEM.contains(&kw) {
            Ok(())
        } else {
            Err(format!("`{kw}` is not an IMAP system flag"))
        };
    }
    let bad = kw.chars().find(|c| {
        c.is_control() || c.is_whitespace() || !c.is_ascii() || "(){%*\"\\]".contains(*c)
    });
    match bad {
        Some(c) => Err(format!(
            "keyword `{kw}` contains `{c}`; IMAP keywords are ASCII atoms such as `$NoTicket`"
        )),
        None if kw.is_empty() => Err("empty keyword".into()),
        None => Ok(()),
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Redirect(t) => write!(f, "redirect:{t}"),
            Action::Forward(t) => write!(f, "forward:{t}"),
            Action::Reply(t) => write!(f, "reply:{t}"),
            Action::Tag(k) => write!(f, "tag:{k}"),
            Action::File(d) => write!(f, "file:{d}"),
            Action::MarkSeen => f.write_str("seen"),
            Action::Record => f.write_str("record"),
            Action::Clock => f.write_str("clock"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_round_trip() {
        for text in [
            "redirect:helpdesk",
            "forward:suggested",
            "forward:desk:bid-ra",
            "reply:broadcast-advisory",
            "tag:$NoTicket",
            "tag:\\Flagged",
            "file:Redirected",
            "seen",
            "record",
        ] {
            let a = Action::parse(
                text.strip_prefix("forward:desk:")
                    .map_or(text, |_| "forward:bid-ra"),
            );
            assert!(a.is_ok(), "{text}: {a:?}");
        }
        assert_eq!(
            Action::parse("redirect:helpdesk").map(|a| a.to_string()),
            Ok("redirect:helpdesk".into())
        );
        assert_eq!(
            Action::parse("redirect:x@y.in"),
            Ok(Action::Redirect(Target::Address("x@y.in".into())))
        );
        assert_eq!(Action::parse("flag"), Ok(Action::Tag("\\Flagged".into())));
    }

    #[test]
    fn rejects_bad_actions_with_a_hint() {
        for (text, hint) in [
            ("redirect", "needs a target"),
            ("tag:bad word", "ASCII atoms"),
            ("tag:\\Deleted", "never deletes"),
            ("tag:\\Bogus", "system flag"),
            ("seen:now", "no argument"),
            ("delete", "unknown action"),
            ("file:a\"b", "quotes"),
        ] {
            let err = Action::parse(text).err().unwrap_or_default();
            assert!(err.contains(hint), "{text}: {err}");
        }
    }
}
