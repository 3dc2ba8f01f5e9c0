//! Folders of a desk's session: making sure a folder exists (and is subscribed), finding
//! an existing one, under the personal namespace prefix (`INBOX.`) where the server has one.
//!
//! Not here: moving mail into a folder (`commands.rs`), connecting (`connection.rs`).

use super::{DeskSession, ImapError, proto, timed};

impl DeskSession {
    /// Creates `folder` unless it exists (or was created earlier in this session), and
    /// subscribes it (RFC 3501 6.3.6), once per session. A server whose personal namespace
    /// has a prefix (Courier, Cyrus: `INBOX.` with `.` as separator) refuses a top-level
    /// name: the folder is then made under `INBOX` with the server's separator, where
    /// officers' clients look (RFC 2342). Returns the server's name of the folder.
    pub async fn ensure_folder(&mut self, folder: &str) -> Result<String, ImapError> {
        if let Some(name) = self.folders.get(folder) {
            return Ok(name.clone());
        }
        let name = match self.create(folder).await {
            Ok(()) => folder.to_string(),
            Err(first) => {
                let Some(prefixed) = self.under_inbox(folder).await? else {
                    return Err(first);
                };
                self.create(&prefixed).await.map_err(|_| first)?;
                prefixed
            }
        };
        // Subscribed too: Thunderbird and most clients show only subscribed folders (LSUB),
        // so mail filed into an unsubscribed folder looks lost to the officer (issue #15).
        // SUBSCRIBE is idempotent; a server that refuses it still gets the mail filed.
        let t = self.timeout;
        match timed(t, "SUBSCRIBE", self.s()?.subscribe(&name)).await? {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(folder = %name, error = %e, "cannot subscribe the folder; officers' clients may not show it")
            }
        }
        self.folders.insert(folder.to_string(), name.clone());
        Ok(name)
    }

    /// The server's name of an existing `folder` (as named in the rules or under the
    /// personal namespace prefix), or `None` when neither exists.
    pub async fn existing_folder(&mut self, folder: &str) -> Result<Option<String>, ImapError> {
        if let Some(name) = self.folders.get(folder) {
            return Ok(Some(name.clone()));
        }
        let mut candidates = vec![folder.to_string()];
        candidates.extend(self.under_inbox(folder).await?);
        for c in candidates {
            if !self.list(&c).await?.is_empty() {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    /// CREATE, where an existing folder counts as created.
    async fn create(&mut self, name: &str) -> Result<(), ImapError> {
        let t = self.timeout;
        match timed(t, "CREATE", self.s()?.create(name)).await? {
            Ok(()) => Ok(()),
            Err(async_imap::error::Error::No(text))
                if text.to_ascii_uppercase().contains("ALREADYEXISTS")
                    || text.to_ascii_lowercase().contains("exists") =>
            {
                Ok(())
            }
            Err(e) => Err(ImapError::Protocol {
                op: "create a folder",
                source: e,
            }),
        }
    }

    /// Names matching `pattern` exactly (LIST "" pattern).
    async fn list(&mut self, pattern: &str) -> Result<Vec<String>, ImapError> {
        use futures_util::TryStreamExt;
        let t = self.timeout;
        let quoted = format!("\"{}\"", pattern.replace(['\\', '"'], ""));
        timed(t, "LIST", async {
            self.s()?
                .list(Some(""), Some(&quoted))
                .await
                .map_err(proto("list folders"))?
                .try_collect::<Vec<_>>()
                .await
                .map_err(proto("list folders"))
        })
        .await?
        .map(|names| names.iter().map(|n| n.name().to_string()).collect())
    }

    /// `folder` under INBOX with the server's hierarchy separator (`LIST "" ""`), unless it
    /// already is there or the server has no hierarchy.
    async fn under_inbox(&mut self, folder: &str) -> Result<Option<String>, ImapError> {
        use futures_util::TryStreamExt;
        let t = self.timeout;
        let root = timed(t, "LIST", async {
            self.s()?
                .list(Some(""), Some("\"\""))
                .await
                .map_err(proto("list the hierarchy separator"))?
                .try_collect::<Vec<_>>()
                .await
                .map_err(proto("list the hierarchy separator"))
        })
        .await??;
        let Some(sep) = root
            .first()
            .and_then(|n| n.delimiter())
            .map(|d| d.to_string())
        else {
            return Ok(None);
        };
        let prefix = format!("INBOX{sep}");
        Ok((!folder
            .to_ascii_uppercase()
            .starts_with(&prefix.to_ascii_uppercase()))
        .then(|| format!("{prefix}{folder}")))
    }
}
