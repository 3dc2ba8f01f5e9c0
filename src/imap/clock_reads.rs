//! What the desk's clocks (issue #17) read on the IMAP server: whether a clock's mails are
//! still there and `\Answered`, and in another folder (Sent, the done folder) the mails
//! that reply to them or are them, found by Message-ID. Deciding what that means is
//! `deskclock`'s.

use std::collections::{HashMap, HashSet};

use futures_util::TryStreamExt;

use async_imap::types::Flag;

use super::{DeskSession, ImapError, proto, timed, uid_set};

impl DeskSession {
    /// Which of `uids` are still in the selected mailbox, each with whether it carries
    /// `\Answered`; a UID that is gone (expunged, moved) is absent from the map. One bool
    /// per mail rather than its flags as text.
    pub async fn answered_of(&mut self, uids: &[u32]) -> Result<HashMap<u32, bool>, ImapError> {
        if uids.is_empty() {
            return Ok(HashMap::new());
        }
        let t = self.timeout;
        let set = uid_set(uids);
        let wanted: HashSet<u32> = uids.iter().copied().collect();
        let mut flags = HashMap::with_capacity(uids.len());
        // Each answer is read as it arrives and dropped: collecting them first held about
        // 6 KB per mail (async-imap keeps each response in its own buffer), 40 MB for the
        // 6,000 open clocks of a 10,000-mail backlog (issue #16).
        timed(t, "UID FETCH FLAGS", async {
            let mut answers = self
                .s()?
                .uid_fetch(&set, "(UID FLAGS)")
                .await
                .map_err(proto("fetch flags"))?;
            while let Some(f) = answers.try_next().await.map_err(proto("fetch flags"))? {
                if let Some(uid) = f.uid.filter(|u| wanted.contains(u)) {
                    flags.insert(uid, f.flags().any(|f| matches!(f, Flag::Answered)));
                }
            }
            Ok::<_, ImapError>(())
        })
        .await??;
        Ok(flags)
    }

    /// In `folder` (opened read-only with EXAMINE, so nothing there changes), the bare
    /// Message-IDs (without angle brackets) for which `wanted` holds that a mail there
    /// carries as its own Message-ID or names in In-Reply-To or References. The caller
    /// selects its own mailbox again afterwards. Mails since `since_unix` only (IMAP SEARCH
    /// SINCE, a day's precision), their headers fetched 500 at a time.
    pub async fn message_ids_in(
        &mut self,
        folder: &str,
        wanted: impl Fn(&str) -> bool,
        since_unix: i64,
    ) -> Result<HashSet<String>, ImapError> {
        let t = self.timeout;
        timed(t, "EXAMINE", self.s()?.examine(folder))
            .await?
            .map_err(proto("open a folder read-only"))?;
        self.mailbox = folder.to_string();
        let since = jiff::Timestamp::from_second(since_unix.max(0))
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
            .strftime("%d-%b-%Y")
            .to_string();
        let found = timed(
            t,
            "UID SEARCH",
            self.s()?.uid_search(format!("SINCE {since}")),
        )
        .await?
        .map_err(proto("search a folder"))?;
        let mut uids: Vec<u32> = found.into_iter().collect();
        uids.sort_unstable();
        let mut hits = HashSet::new();
        for chunk in uids.chunks(500) {
            let set = uid_set(chunk);
            let fetched: Vec<_> = timed(t, "UID FETCH HEADER.FIELDS", async {
                self.s()?
                    .uid_fetch(
                        &set,
                        "(UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID IN-REPLY-TO REFERENCES)])",
                    )
                    .await
                    .map_err(proto("fetch reply headers"))?
                    .try_collect::<Vec<_>>()
                    .await
                    .map_err(proto("fetch reply headers"))
            })
            .await??;
            for f in &fetched {
                let Some(head) = f.header() else { continue };
                for id in referenced_ids(head) {
                    if wanted(&id) {
                        hits.insert(id);
                    }
                }
            }
        }
        Ok(hits)
    }
}

/// A Message-ID without angle brackets and surrounding space.
pub fn bare(id: &str) -> String {
    id.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_string()
}

/// Every `<id>` in the Message-ID, In-Reply-To and References fields of `head` (unfolded
/// or not), bare.
fn referenced_ids(head: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(head);
    let mut out = Vec::new();
    let mut rest = text.as_ref();
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>') else {
            break;
        };
        let id = &rest[open + 1..open + close];
        if !id.is_empty() && !id.contains(char::is_whitespace) {
            out.push(id.to_string());
        }
        rest = &rest[open + close + 1..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_read_from_every_reply_header() {
        let head = b"Message-ID: <r1@desk.in>\r\nIn-Reply-To: <a@x.in>\r\nReferences: <z@x.in>\r\n <a@x.in> <b@x.in>\r\n\r\n";
        assert_eq!(
            referenced_ids(head),
            ["r1@desk.in", "a@x.in", "z@x.in", "a@x.in", "b@x.in"]
        );
        assert_eq!(bare(" <a@x.in> "), "a@x.in");
        assert!(referenced_ids(b"Subject: a < b\r\n").is_empty());
    }
}
