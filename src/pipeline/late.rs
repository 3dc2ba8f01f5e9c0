//! The late-broadcast correction: copies a desk handled before later copies in other desks
//! revealed a broadcast are read again where they now are and get the keywords and folder
//! the rules give a broadcast copy. Nothing is sent here. Deciding and filing a fresh batch
//! is the parent module's (`pipeline.rs`).

use std::sync::Arc;

use super::PipelineError;
use crate::action::Action;
use crate::clock::unix_now;
use crate::config::Desk;
use crate::decide::{Known, decide};
use crate::facts;
use crate::imap::DeskSession;
use crate::shared::Shared;

/// Corrects the copies this desk handled before later copies elsewhere revealed a
/// broadcast (mail sent to many desks in Bcc arrives everywhere at once, or across a
/// restart): each is read again where it now is (the desk's mailbox or the folder a rule
/// filed it in) and gets the keywords and folder the rules give a broadcast copy, as if it
/// had been known from the start. Nothing is sent: the mail it queued, if any, is keyed by
/// the message and already counts as the broadcast's one redirect.
pub async fn tag_late_broadcasts(
    session: &mut DeskSession,
    shared: &Shared,
    desk: &Desk,
) -> Result<(), PipelineError> {
    let policy = shared.policy();
    let rules = &policy.rules;
    let since = unix_now() - i64::try_from(rules.broadcast_window_secs).unwrap_or(i64::MAX / 4);
    let late = shared
        .store
        .late_broadcasts(&desk.name, since, rules.broadcast_threshold)
        .await?;
    if late.is_empty() {
        return Ok(());
    }
    let max_bytes = rules.limits.fetch_limit();
    for entry in late {
        let folder = entry
            .actions
            .iter()
            .flatten()
            .filter_map(|a| match a {
                Action::File(folder) => Some(folder.as_str()),
                _ => None,
            })
            .next_back()
            .unwrap_or(&desk.mailbox)
            .to_string();
        let mut applied = Vec::new();
        if let Some(id) = &entry.message_id {
            // The folder as the server names it (under a namespace prefix, maybe).
            let on_server = if folder == desk.mailbox {
                Some(folder.clone())
            } else {
                session.existing_folder(&folder).await?
            };
            let selected = match on_server {
                Some(name) => session.select(&name).await.is_ok(),
                None => false,
            };
            if !selected {
                // The folder is gone (an officer deleted it): nothing left to correct.
                session.select(&desk.mailbox).await?;
                shared.store.mark_broadcast(&entry.key).await?;
                continue;
            }
            let uids = session.search_message_id(id).await?;
            let holders: Vec<String> = shared
                .store
                .sightings(&entry.group_key)
                .await?
                .into_iter()
                .map(|k| k.desk)
                .collect();
            // One copy at a time, within the memory budget: a sender can put one Message-ID
            // on many large mails (issue #13).
            for &uid in &uids {
                let (mut mails, _reserved) = session
                    .fetch(&[uid], max_bytes, u64::MAX, &shared.memory)
                    .await?;
                let Some(mail) = mails.pop() else { continue };
                let Some(raw) = mail.raw else { continue };
                // Parsing runs on the blocking pool, never on the runtime's worker: a crafted
                // mail must not stall the other desks, the outbox or the watchdog (issue #13).
                let extracted = {
                    let (name, policy) = (desk.name.clone(), Arc::clone(&policy));
                    tokio::task::spawn_blocking(move || {
                        facts::extract(&raw, &name, &policy.dir, &policy.rules)
                    })
                    .await?
                };
                let Ok(facts) = extracted else {
                    continue;
                };
                let facts = facts.with_copies(&holders, &policy.dir, rules);
                // Replies and redirects were dealt with when the copy was first decided.
                let mut known = Known::default();
                known
                    .replied_recently
                    .extend(rules.templates.keys().cloned());
                let decision = decide(&facts, rules, &known);
                let mut flags: Vec<String> = decision
                    .actions()
                    .filter_map(|a| match a {
                        Action::Tag(k) => Some(k.clone()),
                        Action::MarkSeen => Some("\\Seen".to_string()),
                        _ => None,
                    })
                    .collect();
                if !flags.contains(&rules.broadcast_keyword) {
                    flags.push(rules.broadcast_keyword.clone());
                }
                session.add_flags(&[mail.uid], &flags).await?;
                applied.extend(flags.iter().map(|f| format!("tag:{f}")));
                let target = decision.actions().find_map(|a| match a {
                    Action::File(f) => Some(f.clone()),
                    _ => None,
                });
                if let Some(target) = target.filter(|t| *t != folder) {
                    session.ensure_folder(&target).await?;
                    session.move_to(&[mail.uid], &target).await?;
                    applied.push(format!("file:{target}"));
                }
            }
            session.select(&desk.mailbox).await?;
        }
        shared.store.mark_broadcast(&entry.key).await?;
        tracing::info!(
            desk = %desk.name,
            uid = entry.key.uid,
            message_id = entry.message_id.as_deref().unwrap_or("-"),
            folder = %folder,
            actions = %applied.join(" "),
            "copy found to be part of a broadcast after it was handled"
        );
    }
    Ok(())
}
