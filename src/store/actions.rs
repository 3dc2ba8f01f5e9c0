//! The journal's action records: how a planned [`Action`] is stored in `journal_action.action`
//! and read back. New rows hold JSON (`{"kind":"forward","arg":{"kind":"desk","name":"bid-ra"}}`,
//! the serde form documented on [`Action`]); rows written by releases before 0.3 hold the
//! rules' text form (`forward:desk:bid-ra`, `redirect:x@y.in`, `seen`), which is still read.
//! Which actions a mail gets is decided elsewhere (`decide`); writing and reading the rows is
//! in `record` and `journal`.

use crate::action::{Action, Target};

use super::{MailKey, StoreError};

/// A planned action in the journal that cannot be read back: written by a newer release,
/// or damaged. Crash recovery sets such a mail aside instead of guessing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("planned action {position} of mail {key} cannot be read ({reason}): record {record:?}")]
pub struct UnreadableAction {
    /// The journaled mail.
    pub key: MailKey,
    /// 0-based position among the mail's planned actions.
    pub position: u32,
    /// The stored record, as it is.
    pub record: String,
    /// Why it cannot be read.
    pub reason: String,
}

/// The record stored for `action`.
pub(super) fn encode(action: &Action) -> Result<String, StoreError> {
    serde_json::to_string(action).map_err(|e| StoreError::Corrupt {
        what: "planned action",
        value: e.to_string(),
    })
}

/// The action a stored record names: JSON (starts with `{`), else the legacy text form.
pub(super) fn decode(record: &str) -> Result<Action, String> {
    if record.starts_with('{') {
        serde_json::from_str(record).map_err(|e| e.to_string())
    } else {
        legacy(record)
    }
}

/// The text form that releases before 0.3 stored (`Action`'s `Display`): `kind` or
/// `kind:arg`, a target written `helpdesk`, `suggested`, `desk:NAME` or an address. Read as
/// written, without the rules' checks (they held when the action was decided).
fn legacy(record: &str) -> Result<Action, String> {
    let (kind, arg) = match record.split_once(':') {
        Some((kind, arg)) => (kind, Some(arg)),
        None => (record, None),
    };
    let arg = arg.filter(|a| !a.is_empty());
    let need = || {
        arg.map(str::to_owned)
            .ok_or_else(|| format!("`{kind}` without argument"))
    };
    let target = || -> Result<Target, String> {
        let arg = need()?;
        Ok(match arg.as_str() {
            "helpdesk" => Target::Helpdesk,
            "suggested" => Target::SuggestedDesk,
            a => match a.strip_prefix("desk:") {
                Some(desk) if !desk.is_empty() => Target::Desk(desk.to_owned()),
                Some(_) => return Err("`desk:` without a desk name".into()),
                None if a.contains('@') => Target::Address(arg),
                None => Target::Desk(arg),
            },
        })
    };
    let bare = |action: Action| match arg {
        None => Ok(action),
        Some(_) => Err(format!("`{kind}` with an argument")),
    };
    match kind {
        "redirect" => Ok(Action::Redirect(target()?)),
        "forward" => Ok(Action::Forward(target()?)),
        "reply" => Ok(Action::Reply(need()?)),
        "tag" => Ok(Action::Tag(need()?)),
        "file" => Ok(Action::File(need()?)),
        "seen" => bare(Action::MarkSeen),
        "record" => bare(Action::Record),
        "clock" => bare(Action::Clock),
        other => Err(format!("unknown action kind `{other}`")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
pub(super) mod tests {
    use super::*;

    /// Every kind of action and every kind of target, with awkward arguments.
    pub(crate) fn every_action() -> Vec<Action> {
        let targets = [
            Target::Helpdesk,
            Target::SuggestedDesk,
            Target::Desk("bid-ra".into()),
            Target::Desk("desk:odd".into()),
            Target::Address("x@y.in".into()),
        ];
        let mut all: Vec<Action> = targets.iter().cloned().map(Action::Redirect).collect();
        all.extend(targets.iter().cloned().map(Action::Forward));
        all.extend([
            Action::Reply("broadcast-advisory".into()),
            Action::Tag("$To-{suggested_desk}".into()),
            Action::Tag("\\Flagged".into()),
            Action::File("Redirected/Sub: \"x\"".into()),
            Action::MarkSeen,
            Action::Record,
            Action::Clock,
        ]);
        all
    }

    #[test]
    fn json_records_round_trip_and_keep_their_names() {
        for action in every_action() {
            let record = encode(&action).unwrap();
            assert_eq!(decode(&record), Ok(action.clone()), "{record}");
        }
        assert_eq!(
            encode(&Action::Forward(Target::Desk("bid-ra".into()))).unwrap(),
            r#"{"kind":"forward","arg":{"kind":"desk","name":"bid-ra"}}"#
        );
        assert_eq!(
            encode(&Action::Redirect(Target::SuggestedDesk)).unwrap(),
            r#"{"kind":"redirect","arg":{"kind":"suggested"}}"#
        );
        assert_eq!(encode(&Action::MarkSeen).unwrap(), r#"{"kind":"seen"}"#);
        assert_eq!(
            encode(&Action::Tag("$Ticket".into())).unwrap(),
            r#"{"kind":"tag","arg":"$Ticket"}"#
        );
    }

    #[test]
    fn legacy_text_records_are_read_with_their_targets() {
        // What releases before 0.3 stored: `Action`'s Display.
        for action in every_action() {
            if action == Action::Forward(Target::Desk("desk:odd".into()))
                || action == Action::Redirect(Target::Desk("desk:odd".into()))
            {
                continue; // "desk:desk:odd" is read below
            }
            let text = action.to_string();
            assert_eq!(decode(&text), Ok(action.clone()), "{text}");
        }
        assert_eq!(
            decode("forward:desk:bid-ra"),
            Ok(Action::Forward(Target::Desk("bid-ra".into())))
        );
        assert_eq!(
            decode("redirect:desk:desk:odd"),
            Ok(Action::Redirect(Target::Desk("desk:odd".into())))
        );
        assert_eq!(
            decode("redirect:x@y.in"),
            Ok(Action::Redirect(Target::Address("x@y.in".into())))
        );
        assert_eq!(decode("tag:\\Flagged"), Ok(Action::Tag("\\Flagged".into())));
    }

    #[test]
    fn unreadable_records_are_errors() {
        for record in [
            "",
            "delete",
            "tag",
            "tag:",
            "seen:now",
            "forward:desk:",
            "{",
            r#"{"kind":"explode"}"#,
            r#"{"kind":"tag"}"#,
        ] {
            assert!(decode(record).is_err(), "{record:?}");
        }
    }
}
