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
    /// carries as its own Message-ID or names in In-Reply-To or References, and how many
    /// mails were looked at. The caller selects its own mailbox again afterwards. Which
    /// mails: [`reply_search`] of what this session saw of the folder last time, mails
    /// since `since_unix` at most; `now` (Unix seconds) is kept for the next search. Their
    /// headers are fetched 500 at a time.
    pub async fn message_ids_in(
        &mut self,
        folder: &str,
        wanted: impl Fn(&str) -> bool,
        since_unix: i64,
        now: i64,
    ) -> Result<(HashSet<String>, usize), ImapError> {
        let t = self.timeout;
        let opened = timed(t, "EXAMINE", self.s()?.examine(folder))
            .await?
            .map_err(proto("open a folder read-only"))?;
        self.mailbox = folder.to_string();
        let last = self.looked.get(folder).copied();
        let (criteria, full) = reply_search(last.as_ref(), opened.uid_validity, since_unix, now);
        let found = timed(t, "UID SEARCH", self.s()?.uid_search(criteria))
            .await?
            .map_err(proto("search a folder"))?;
        // Marked only once searched: mail that arrives from here on has a UID at least
        // UIDNEXT (RFC 3501 2.3.1.1), whatever date its client gave it.
        match (opened.uid_validity, opened.uid_next) {
            (Some(uidvalidity), Some(uid_next)) => {
                self.looked.insert(
                    folder.to_string(),
                    FolderMark {
                        uidvalidity,
                        uid_next,
                        at: now,
                        full_at: match last {
                            Some(mark) if !full => mark.full_at,
                            _ => now,
                        },
                    },
                );
            }
            _ => {
                self.looked.remove(folder);
            }
        }
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
        Ok((hits, uids.len()))
    }
}

/// What a session saw of a folder when the desk clocks' review last searched it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FolderMark {
    /// The folder's UIDVALIDITY then.
    pub uidvalidity: u32,
    /// Its UIDNEXT then: every mail that came after has a UID at least this.
    pub uid_next: u32,
    /// When (Unix seconds).
    pub at: i64,
    /// When the folder was last searched in full (Unix seconds).
    pub full_at: i64,
}

/// How often the review searches a folder in full even when it could search only what
/// came since (seconds): a reply older than a day before the last search, to mail the
/// desk got only since (moved back into its mailbox, say), is found within this time.
pub const FULL_SEARCH_EVERY: i64 = 3_600;

/// The UID SEARCH criteria for replies in a folder at `now`, and whether they are the full
/// search: mails since `since_unix` (SINCE, the internal date, a day's precision). When
/// this session searched the folder before, less than [`FULL_SEARCH_EVERY`] after its last
/// full search, and its UIDVALIDITY is unchanged (`uidvalidity`, from EXAMINE), only what
/// came since: mails from the UIDNEXT seen then, and mails dated since a day before then
/// (mail decided just after that search may have been answered just before it). A desk
/// with an open clock months old searched months of its Sent folder every round: 20,000
/// mails took 178 ms of each review (issue #16, session 12).
pub fn reply_search(
    last: Option<&FolderMark>,
    uidvalidity: Option<u32>,
    since_unix: i64,
    now: i64,
) -> (String, bool) {
    let date = |unix: i64| {
        jiff::Timestamp::from_second(unix.max(0))
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
            .strftime("%d-%b-%Y")
            .to_string()
    };
    match last {
        Some(mark)
            if Some(mark.uidvalidity) == uidvalidity
                && (0..FULL_SEARCH_EVERY).contains(&(now - mark.full_at)) =>
        {
            let since = since_unix.max(mark.at - 86_400);
            (
                format!("OR UID {}:* SINCE {}", mark.uid_next, date(since)),
                false,
            )
        }
        _ => (format!("SINCE {}", date(since_unix)), true),
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

    /// 2026-11-30 12:00:00 UTC.
    const NOON: i64 = 1_796_040_000;
    const DAY: i64 = 86_400;

    #[test]
    fn a_folder_is_searched_in_full_then_for_what_came_since_and_in_full_each_hour() {
        let oldest = NOON - 90 * DAY;
        // First search of the session: everything since a day before the oldest clock.
        assert_eq!(
            reply_search(None, Some(7), oldest - DAY, NOON),
            ("SINCE 31-Aug-2026".to_string(), true)
        );
        let mark = FolderMark {
            uidvalidity: 7,
            uid_next: 120,
            at: NOON,
            full_at: NOON,
        };
        // A minute later: mail from UIDNEXT on (whatever its date), or dated since a day
        // before the last search.
        assert_eq!(
            reply_search(Some(&mark), Some(7), oldest - DAY, NOON + 60),
            ("OR UID 120:* SINCE 29-Nov-2026".to_string(), false)
        );
        // The oldest clock is younger than that day: its own start bounds the dates.
        assert_eq!(
            reply_search(Some(&mark), Some(7), NOON - 3_600, NOON + 60),
            ("OR UID 120:* SINCE 30-Nov-2026".to_string(), false)
        );
        // In full again: an hour after the last full search; another UIDVALIDITY (the
        // folder recreated); none reported; a clock set back.
        let full = ("SINCE 31-Aug-2026".to_string(), true);
        let late = FolderMark {
            at: NOON + FULL_SEARCH_EVERY - 10,
            ..mark
        };
        assert_eq!(
            reply_search(Some(&late), Some(7), oldest - DAY, NOON + FULL_SEARCH_EVERY),
            full
        );
        assert_eq!(
            reply_search(Some(&mark), Some(8), oldest - DAY, NOON + 60),
            full
        );
        assert_eq!(
            reply_search(Some(&mark), None, oldest - DAY, NOON + 60),
            full
        );
        assert_eq!(
            reply_search(Some(&mark), Some(7), oldest - DAY, NOON - 60),
            full
        );
    }
}
