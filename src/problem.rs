//! Located problems in config.toml and the rules files: [`Problem`] (file, line, column,
//! message), [`Source`] (a file's text, turning byte offsets and TOML/serde errors into
//! problems) and [`read_file`]. Shared by `config`, `rules`, `registry` and `template`, which
//! is why it sits below all of them.
//!
//! Not here: the shapes of the files (`rules::schema`, `config`), what is checked in them.
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

/// One thing wrong in a config or rules file, with where it is and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// A file's text with the ability to turn byte offsets into line and column (1-based).
#[derive(Debug)]
pub struct Source<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

impl Source<'_> {
    pub fn problem_at(&self, offset: usize, message: impl Into<String>) -> Problem {
        let offset = offset.min(self.text.len());
        let before = self.text.get(..offset).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Problem {
            file: self.path.to_path_buf(),
            line,
            column,
            message: message.into(),
        }
    }

    /// Where `key = ...` is first written at or after `from` (the start of its table), so a
    /// problem with one field points at that field's line, not just the table's.
    pub fn key_offset(&self, from: usize, key: &str) -> usize {
        let rest = self.text.get(from..).unwrap_or("");
        let mut pos = from;
        for line in rest.split_inclusive('\n') {
            let t = line.trim_start();
            if let Some(after) = t.strip_prefix(key)
                && after.trim_start().starts_with('=')
            {
                return pos + (line.len() - t.len());
            }
            pos += line.len();
        }
        // Inside an inline table: `when = { ..., key = ... }`.
        for pat in [format!("{key} ="), format!("{key}=")] {
            if let Some(i) = rest.find(&pat) {
                return from + i;
            }
        }
        from
    }

    pub fn problem_at_key(&self, from: usize, key: &str, message: impl Into<String>) -> Problem {
        self.problem_at(self.key_offset(from, key), message)
    }

    /// Parses the whole file into `T`; a syntax or shape error becomes one located problem.
    pub fn parse<T: for<'de> Deserialize<'de>>(&self) -> Result<T, Problem> {
        toml::from_str(self.text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            self.problem_at(offset, e.message().trim().to_string())
        })
    }

    /// Deserializes one section that was kept as a raw value, so that every section's errors
    /// are reported, not only the first one's.
    pub fn section<T: for<'de> Deserialize<'de>>(
        &self,
        raw: Spanned<toml::Value>,
        what: &str,
    ) -> Result<T, Problem> {
        let start = raw.span().start;
        T::deserialize(raw.into_inner()).map_err(|e| {
            let msg = e.message().trim().to_string();
            // Point at the offending key when serde names it; else (a wrongly typed value)
            // parse the section's own lines again, which locates the value.
            let offset = named_field(&msg)
                .map(|k| self.key_offset(start, k))
                .or_else(|| self.value_offset::<T>(start))
                .unwrap_or(start);
            self.problem_at(offset, format!("in {what}: {msg}"))
        })
    }

    /// Where the value that `T` cannot take is, for a `[header]` section starting at
    /// `start`: its lines (up to the next header) parsed on their own. `None` for inline
    /// tables and when that parse finds no error.
    fn value_offset<T: for<'de> Deserialize<'de>>(&self, start: usize) -> Option<usize> {
        let rest = self.text.get(start..)?;
        if !rest.starts_with('[') {
            return None;
        }
        let body_start = start + rest.find('\n')? + 1;
        let body = self.text.get(body_start..)?;
        let mut end = body.len();
        let mut pos = 0;
        for line in body.split_inclusive('\n') {
            if line.trim_start().starts_with('[') {
                end = pos;
                break;
            }
            pos += line.len();
        }
        let err = toml::from_str::<T>(body.get(..end)?).err()?;
        err.span().map(|s| body_start + s.start)
    }
}

/// Extracts `x` from serde messages like "unknown field `x`, expected ..." or "missing field `x`".
fn named_field(msg: &str) -> Option<&str> {
    let rest = msg.split_once("field `")?.1;
    Some(rest.split_once('`')?.0)
}

pub fn read_file(path: &Path) -> Result<String, Problem> {
    std::fs::read_to_string(path).map_err(|e| Problem {
        file: path.to_path_buf(),
        line: 0,
        column: 0,
        message: if e.kind() == std::io::ErrorKind::PermissionDenied {
            // The packaged service runs as a dynamic user, not root.
            format!(
                "cannot read file: {e}; the service's user must be able to read it \
                 (config.toml and the rules hold no secrets: chmod 644 it)"
            )
        } else {
            format!("cannot read file: {e}")
        },
    })
}
