//! The journal's action records: how a mail's planned [`Action`]s are stored and read back.
//! Since release 0.7 they are one JSON array in `journal.actions`
//! (`[{"kind":"forward","arg":{"kind":"desk","name":"bid-ra"}}]`, the serde form documented
//! on [`Action`]). Before, each was a row of `journal_action`: JSON since release 0.3, before
//! that the rules' text form (`forward:desk:bid-ra`, `redirect:x@y.in`, `seen`); those rows
//! are still read.
//! Which actions a mail gets is decided elsewhere (`decide`); writing the records is in
//! `record`, reading them in `journal` (one mail) and `known` (a batch, for crash recovery).

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

/// The `journal.actions` record for a mail's planned `actions`: a JSON array.
pub(super) fn encode_all(actions: &[Action]) -> Result<String, StoreError> {
    serde_json::to_string(actions).map_err(|e| StoreError::Corrupt {
        what: "planned actions",
        value: e.to_string(),
    })
}

/// The actions of mail `key`'s `journal.actions` record, each read on its own: the first
/// that cannot be read comes back with its position and its text as stored; a record that
/// is no JSON array as position 0 and the whole record.
pub(super) fn decode_all(key: &MailKey, record: &str) -> Result<Vec<Action>, UnreadableAction> {
    let unreadable = |position: usize, record: &str, reason: serde_json::Error| UnreadableAction {
        key: key.clone(),
        position: u32::try_from(position).unwrap_or(u32::MAX),
        record: record.to_string(),
        reason: reason.to_string(),
    };
    let items: Vec<&serde_json::value::RawValue> =
        serde_json::from_str(record).map_err(|e| unreadable(0, record, e))?;
    items
        .into_iter()
        .enumerate()
        .map(|(position, item)| {
            serde_json::from_str(item.get()).map_err(|e| unreadable(position, item.get(), e))
        })
        .collect()
}

/// The action a stored `journal_action` record names: JSON (starts with `{`), else the
/// legacy text form.
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
        let all = every_action();
        let record = encode_all(&all).unwrap();
        assert_eq!(decode_all(&mail(), &record), Ok(all.clone()), "{record}");
        // Each element is the record a journal_action row held since release 0.3.
        let items: Vec<serde_json::Value> = serde_json::from_str(&record).unwrap();
        for (item, action) in items.iter().zip(&all) {
            assert_eq!(decode(&item.to_string()), Ok(action.clone()), "{item}");
        }
        assert_eq!(
            encode_all(&[
                Action::Forward(Target::Desk("bid-ra".into())),
                Action::Redirect(Target::SuggestedDesk),
                Action::MarkSeen,
                Action::Tag("$Ticket".into()),
            ])
            .unwrap(),
            r#"[{"kind":"forward","arg":{"kind":"desk","name":"bid-ra"}},{"kind":"redirect","arg":{"kind":"suggested"}},{"kind":"seen"},{"kind":"tag","arg":"$Ticket"}]"#
        );
        assert_eq!(encode_all(&[]).unwrap(), "[]");
        assert_eq!(decode_all(&mail(), "[]"), Ok(Vec::new()));
    }

    /// The journaled mail the records belong to.
    fn mail() -> MailKey {
        MailKey {
            desk: "bid-ra".into(),
            uidvalidity: 7,
            uid: 42,
        }
    }

    #[test]
    fn an_unreadable_element_is_named_by_its_position() {
        let read = |record: &str| {
            let e = decode_all(&mail(), record).unwrap_err();
            assert_eq!(e.key, mail());
            (e.position, e.record, e.reason)
        };
        let (position, record, _) =
            read(r#"[{"kind":"seen"},{"kind":"explode"},{"kind":"record"}]"#);
        assert_eq!((position, record.as_str()), (1, r#"{"kind":"explode"}"#));
        // The element as stored, not re-serialised (keys in their order, spacing kept).
        let stored = r#"{"kind": "forward", "arg": {"kind": "nowhere"}}"#;
        let (position, record, _) = read(&format!("[{stored}]"));
        assert_eq!((position, record.as_str()), (0, stored));
        let (position, record, reason) = read("tag:$Ticket");
        assert_eq!((position, record.as_str()), (0, "tag:$Ticket"));
        assert!(!reason.is_empty());
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
