//! Where the state database lives: parsing `sqlite:`/`postgres:` URLs, preparing the SQLite
//! file's directory, and hiding passwords in messages. No database access happens here.

use std::path::{Path, PathBuf};

use super::StoreError;

/// A parsed database URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    /// `sqlite::memory:`: private to this process, gone when the store is dropped.
    SqliteMemory,
    /// A SQLite file, created if missing.
    SqliteFile(PathBuf),
    /// `postgres://…` or `postgresql://…`, handed to sqlx unchanged.
    Postgres(String),
}

impl Location {
    /// Accepts `sqlite:///abs/path.db`, `sqlite://rel.db`, `sqlite:rel.db`, `sqlite::memory:`,
    /// `postgres://…` and `postgresql://…`. A relative SQLite path is taken relative to the
    /// current directory. Query parameters are not accepted for SQLite: the store chooses its
    /// own (create if missing, WAL, synchronous=FULL).
    pub(crate) fn parse(url: &str) -> Result<Location, StoreError> {
        let bad = |reason: &str| StoreError::BadUrl {
            url: redact(url),
            reason: reason.to_owned(),
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Location::Postgres(url.to_owned()));
        }
        let Some(rest) = url.strip_prefix("sqlite:") else {
            return Err(bad(
                "expected sqlite:///abs/path.db, sqlite://rel.db, sqlite::memory: or postgres://…",
            ));
        };
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        if rest.contains('?') || rest.contains('#') {
            return Err(bad(
                "SQLite URL parameters are not supported (write a literal ? or # as %3F or %23)",
            ));
        }
        if rest == ":memory:" {
            return Ok(Location::SqliteMemory);
        }
        if rest.is_empty() {
            return Err(bad("the SQLite file name is missing"));
        }
        let path = percent_decode(rest).ok_or_else(|| bad("invalid %-escape in the path"))?;
        if path.ends_with('/') {
            return Err(bad("the SQLite path names a directory, not a file"));
        }
        Ok(Location::SqliteFile(PathBuf::from(path)))
    }

    /// The URL handed to sqlx. For a SQLite file: the absolute path, %-encoded, `mode=rwc`.
    pub(crate) fn sqlx_url(&self) -> Result<String, StoreError> {
        match self {
            Location::SqliteMemory => Ok("sqlite::memory:".to_owned()),
            Location::Postgres(url) => Ok(url.clone()),
            Location::SqliteFile(path) => {
                let absolute = std::path::absolute(path).map_err(|source| StoreError::Path {
                    path: path.clone(),
                    what: "resolve",
                    source,
                })?;
                let text = absolute.to_str().ok_or_else(|| StoreError::BadUrl {
                    url: absolute.display().to_string(),
                    reason: "the path is not valid UTF-8".to_owned(),
                })?;
                Ok(format!("sqlite://{}?mode=rwc", percent_encode(text)))
            }
        }
    }

    /// Text naming the database in messages, without any password.
    pub(crate) fn describe(&self) -> String {
        match self {
            Location::SqliteMemory => "sqlite::memory:".to_owned(),
            Location::SqliteFile(path) => path.display().to_string(),
            Location::Postgres(url) => redact(url),
        }
    }

    pub(crate) fn is_sqlite(&self) -> bool {
        !matches!(self, Location::Postgres(_))
    }

    /// For a SQLite file: creates the parent directory if missing and checks that an existing
    /// file can be written, so that the error names the path rather than saying "unable to
    /// open database file".
    pub(crate) fn prepare(&self) -> Result<(), StoreError> {
        let Location::SqliteFile(path) = self else {
            return Ok(());
        };
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty())
            && !dir.exists()
        {
            // Owner and group only, as the unit's StateDirectoryMode=0750 makes it: the
            // journal holds senders' addresses and subjects, the outbox whole mails; the
            // group (ticketgate's, under the unit) lets supervisors run `report`.
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(dir)
                .map_err(|source| StoreError::Path {
                    path: dir.to_path_buf(),
                    what: "create the database directory",
                    source,
                })?;
        }
        if path.exists() {
            check_writable(path)?;
        } else {
            // Created here, owner read-write and group read-only, before SQLite opens it
            // (SQLite would use 0644); SQLite gives its -wal and -shm files the same mode.
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o640)
                .open(path)
                .map(drop)
                .or_else(|e| {
                    if e.kind() == std::io::ErrorKind::AlreadyExists {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .map_err(|source| StoreError::Path {
                    path: path.to_path_buf(),
                    what: "create the database file",
                    source,
                })?;
        }
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            check_dir_writable(dir)?;
        }
        Ok(())
    }
}

/// SQLite needs to create its journal files beside the database: writes a byte to a probe
/// file there so that a read-only or full file system is reported as such, not as SQLite's
/// "unable to open database file".
fn check_dir_writable(dir: &Path) -> Result<(), StoreError> {
    use std::io::Write;
    let probe = dir.join(format!(".ticketgate-probe-{}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&probe)
        .and_then(|mut f| f.write_all(b"\n").and_then(|()| f.sync_all()));
    let _ = std::fs::remove_file(&probe);
    written.map_err(|source| StoreError::Path {
        path: dir.to_path_buf(),
        what: "write in the database directory",
        source,
    })
}

fn check_writable(path: &Path) -> Result<(), StoreError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map(drop)
        .map_err(|source| StoreError::Path {
            path: path.to_path_buf(),
            what: "open the database file for writing",
            source,
        })
}

/// Replaces the password of `scheme://user:password@host…`, and the value of a `password=`
/// query parameter (libpq's form), with `***`. Every message that names a database URL goes
/// through this: secrets never reach a log line or an error (issue #13).
pub(crate) fn redact(url: &str) -> String {
    let mut out = redact_userinfo(url);
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_owned(),
            })
            .collect();
        out = format!("{head}{}", query.join("&"));
    }
    out
}

fn redact_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let authority_start = scheme_end + 3;
    let authority_end = url[authority_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| authority_start + i);
    let authority = &url[authority_start..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let Some(colon) = authority[..at].find(':') else {
        return url.to_owned();
    };
    format!(
        "{}{}:***{}",
        &url[..authority_start],
        &authority[..colon],
        &url[authority_start + at..]
    )
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"/._-~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn sqlite_url_forms() {
        let cases = [
            (
                "sqlite:///abs/path.db",
                Location::SqliteFile("/abs/path.db".into()),
            ),
            ("sqlite://rel.db", Location::SqliteFile("rel.db".into())),
            (
                "sqlite:rel/dir.db",
                Location::SqliteFile("rel/dir.db".into()),
            ),
            ("sqlite::memory:", Location::SqliteMemory),
            ("sqlite://:memory:", Location::SqliteMemory),
            (
                "sqlite:///my%20dir/x.db",
                Location::SqliteFile("/my dir/x.db".into()),
            ),
            (
                "postgres://tg@127.0.0.1:5432/tg",
                Location::Postgres("postgres://tg@127.0.0.1:5432/tg".into()),
            ),
        ];
        for (url, expected) in cases {
            assert_eq!(Location::parse(url).unwrap(), expected, "{url}");
        }
    }

    #[test]
    fn bad_urls_are_rejected_with_reason() {
        for url in [
            "mysql://x/y",
            "/var/lib/x.db",
            "sqlite://",
            "sqlite:///dir/",
            "sqlite:///x.db?mode=ro",
            "sqlite:///x%zz.db",
        ] {
            let err = Location::parse(url).unwrap_err();
            assert!(matches!(err, StoreError::BadUrl { .. }), "{url}: {err}");
        }
    }

    #[test]
    fn sqlx_url_is_absolute_and_encoded() {
        let loc = Location::parse("sqlite:///srv/my dir/a#b.db").unwrap_err();
        assert!(matches!(loc, StoreError::BadUrl { .. }));
        let loc = Location::parse("sqlite:///srv/my dir/a%23b.db").unwrap();
        assert_eq!(
            loc.sqlx_url().unwrap(),
            "sqlite:///srv/my%20dir/a%23b.db?mode=rwc"
        );
        let rel = Location::parse("sqlite://state.db")
            .unwrap()
            .sqlx_url()
            .unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert!(rel.starts_with("sqlite:///"), "{rel}");
        assert!(rel.ends_with("/state.db?mode=rwc"), "{rel}");
        assert!(
            rel.contains(&percent_encode(cwd.to_str().unwrap())),
            "{rel}"
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://tg:s3cret@db.example:5432/tg?sslmode=require"),
            "postgres://tg:***@db.example:5432/tg?sslmode=require"
        );
        assert_eq!(redact("postgres://tg@db/tg"), "postgres://tg@db/tg");
        assert_eq!(redact("postgres://db/tg"), "postgres://db/tg");
        assert_eq!(
            redact("postgres://tg@db/tg?sslmode=require&password=s3cret"),
            "postgres://tg@db/tg?sslmode=require&password=***"
        );
        assert_eq!(
            redact("postgres://tg:p%40ss@db/tg?PASSWORD=x"),
            "postgres://tg:***@db/tg?PASSWORD=***"
        );
        let err = Location::parse("mysql://u:pw@h/d").unwrap_err().to_string();
        assert!(!err.contains("pw@"), "{err}");
    }

    #[test]
    fn a_new_database_and_its_directory_are_closed_to_others() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = tmp.path().join("state/sub/state.db");
        Location::SqliteFile(path.clone())
            .prepare()
            .unwrap_or_else(|e| panic!("{e}"));
        let mode = |p: &Path| {
            std::fs::metadata(p)
                .unwrap_or_else(|e| panic!("{e}"))
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(&path), 0o640);
        assert_eq!(mode(&tmp.path().join("state/sub")), 0o750);
        assert_eq!(mode(&tmp.path().join("state")), 0o750);
    }
}
