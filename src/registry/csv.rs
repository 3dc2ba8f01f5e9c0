//! The ticket registry from a CSV export of the helpdesk's CRM (issue #17): a header line,
//! then one ticket per line; which column holds what is configured (`[registry] columns`).
//! The file is read again when its modification time or size changes, so a nightly or
//! hourly export needs no restart. A file that cannot be read makes every lookup
//! `Unavailable` (the last good copy is kept and used when there is one); a line that
//! cannot be read is skipped and counted, never the whole file.
//!
//! Not here: the facts from an answer (`registry`), the other sources (`postgres`, `http`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use jiff::civil::DateTime;
use jiff::tz::TimeZone;

use super::{Answers, Lookup, TicketRecord, ticket_key};

/// Which column holds what, by the header line's names (compared without case and
/// surrounding spaces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    pub ticket: String,
    pub created: String,
    pub requester: Option<String>,
    pub state: Option<String>,
    /// strftime format of `created` (`%d-%m-%Y %H:%M`), read as local time in the rules'
    /// time zone unless it has an offset; `None`: RFC 3339, or `YYYY-MM-DD[ HH:MM[:SS]]`.
    pub created_format: Option<String>,
}

/// Why an export cannot be used at all.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: the header line has no column `{column}` (it has: {found})")]
    Column {
        path: PathBuf,
        column: String,
        found: String,
    },
    #[error("{path}: {source}")]
    Csv { path: PathBuf, source: ::csv::Error },
}

/// One load of the export.
#[derive(Debug, Default)]
pub struct Table {
    pub tickets: HashMap<String, TicketRecord>,
    /// Lines skipped (no ticket number, or a creation time that does not parse).
    pub skipped: usize,
    /// The first few skipped lines: (line number, why), for the log and `check`.
    pub problems: Vec<(u64, String)>,
}

/// Problems kept per load; the rest are only counted.
const PROBLEMS_KEPT: usize = 5;

/// Reads an export from `bytes` (`path` only names it in errors). A later line of the same
/// ticket replaces an earlier one (exports list updates last).
pub fn parse(
    path: &Path,
    bytes: &[u8],
    columns: &Columns,
    zone: &TimeZone,
) -> Result<Table, CsvError> {
    // Spreadsheets save CSV with a UTF-8 byte order mark before the first column's name.
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let mut reader = ::csv::ReaderBuilder::new()
        .flexible(true)
        .trim(::csv::Trim::All)
        .from_reader(bytes);
    let csv_error = |source| CsvError::Csv {
        path: path.to_path_buf(),
        source,
    };
    let header = reader.headers().map_err(csv_error)?.clone();
    let index = |name: &str| {
        header
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| CsvError::Column {
                path: path.to_path_buf(),
                column: name.to_string(),
                found: header.iter().collect::<Vec<_>>().join(", "),
            })
    };
    let ticket = index(&columns.ticket)?;
    let created = index(&columns.created)?;
    let requester = columns.requester.as_deref().map(index).transpose()?;
    let state = columns.state.as_deref().map(index).transpose()?;
    let mut table = Table::default();
    let skip = |table: &mut Table, line: u64, why: String| {
        table.skipped += 1;
        if table.problems.len() < PROBLEMS_KEPT {
            table.problems.push((line, why));
        }
    };
    for row in reader.records() {
        let row = match row {
            Ok(row) => row,
            Err(e) => {
                let line = e.position().map_or(0, ::csv::Position::line);
                skip(&mut table, line, e.to_string());
                continue;
            }
        };
        let line = row.position().map_or(0, ::csv::Position::line);
        let field = |i: usize| row.get(i).map(str::trim).filter(|v| !v.is_empty());
        let Some(number) = field(ticket) else {
            skip(&mut table, line, format!("no `{}`", columns.ticket));
            continue;
        };
        let Some(when) = field(created) else {
            skip(&mut table, line, format!("no `{}`", columns.created));
            continue;
        };
        let created = match parse_time(when, columns.created_format.as_deref(), zone) {
            Ok(t) => t,
            Err(why) => {
                skip(&mut table, line, why);
                continue;
            }
        };
        table.tickets.insert(
            ticket_key(number),
            TicketRecord {
                created,
                requester: requester.and_then(field).map(str::to_string),
                state: state.and_then(field).map(str::to_string),
            },
        );
    }
    Ok(table)
}

/// Unix seconds of a creation time as the export writes it.
pub(super) fn parse_time(text: &str, format: Option<&str>, zone: &TimeZone) -> Result<i64, String> {
    let local = |dt: DateTime| {
        dt.to_zoned(zone.clone())
            .map(|z| z.timestamp().as_second())
            .map_err(|e| format!("`{text}`: {e}"))
    };
    match format {
        Some(format) => {
            let tm = jiff::fmt::strtime::BrokenDownTime::parse(format, text)
                .map_err(|e| format!("`{text}` does not match `{format}`: {e}"))?;
            if tm.offset().is_some() {
                return tm
                    .to_timestamp()
                    .map(|t| t.as_second())
                    .map_err(|e| format!("`{text}`: {e}"));
            }
            let dt = match tm.to_datetime() {
                Ok(dt) => dt,
                // A format with a date only.
                Err(_) => tm
                    .to_date()
                    .map_err(|e| format!("`{text}`: {e}"))?
                    .to_datetime(jiff::civil::Time::midnight()),
            };
            local(dt)
        }
        None => {
            if let Ok(ts) = text.parse::<jiff::Timestamp>() {
                return Ok(ts.as_second());
            }
            if let Ok(dt) = text.parse::<DateTime>() {
                return local(dt);
            }
            if let Ok(d) = text.parse::<jiff::civil::Date>() {
                return local(d.to_datetime(jiff::civil::Time::midnight()));
            }
            Err(format!(
                "`{text}` is not a time (RFC 3339 or YYYY-MM-DD HH:MM; set created_format for others)"
            ))
        }
    }
}

/// A CSV export as a registry: loaded at the first lookup, loaded again when the file
/// changes. Shared by every desk (`Arc`); lookups read a snapshot.
#[derive(Debug)]
pub struct CsvRegistry {
    path: PathBuf,
    columns: Columns,
    zone: TimeZone,
    loaded: RwLock<Loaded>,
}

#[derive(Debug, Default)]
struct Loaded {
    /// Modification time and size of the file as last read.
    stamp: Option<(SystemTime, u64)>,
    table: Option<Arc<Table>>,
    /// Why the file could not be used last time (kept until it can).
    error: Option<String>,
}

/// What [`CsvRegistry::refresh`] did, for the log.
#[derive(Debug, PartialEq, Eq)]
pub enum Refresh {
    Unchanged,
    /// Read again: tickets and skipped lines.
    Loaded {
        tickets: usize,
        skipped: usize,
    },
    /// Could not be read (said once per new reason); the last good copy (if any) stays
    /// in use.
    Failed(String),
}

impl CsvRegistry {
    pub fn new(path: PathBuf, columns: Columns, zone: TimeZone) -> CsvRegistry {
        CsvRegistry {
            path,
            columns,
            zone,
            loaded: RwLock::new(Loaded::default()),
        }
    }

    /// The export's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file again if its modification time or size changed (blocking I/O: the
    /// shell calls it off the async runtime).
    pub fn refresh(&self) -> Refresh {
        let stamp = std::fs::metadata(&self.path)
            .and_then(|m| Ok((m.modified()?, m.len())))
            .map_err(|source| CsvError::Read {
                path: self.path.clone(),
                source,
            });
        let current = self.loaded.read().map(|l| l.stamp).unwrap_or(None);
        let result = match stamp {
            Ok(stamp) if Some(stamp) == current => return Refresh::Unchanged,
            Ok(stamp) => std::fs::read(&self.path)
                .map_err(|source| CsvError::Read {
                    path: self.path.clone(),
                    source,
                })
                .and_then(|bytes| parse(&self.path, &bytes, &self.columns, &self.zone))
                .map(|table| (stamp, table)),
            Err(e) => Err(e),
        };
        let Ok(mut loaded) = self.loaded.write() else {
            return Refresh::Failed("registry lock poisoned".into());
        };
        match result {
            Ok((stamp, table)) => {
                let r = Refresh::Loaded {
                    tickets: table.tickets.len(),
                    skipped: table.skipped,
                };
                loaded.stamp = Some(stamp);
                loaded.table = Some(Arc::new(table));
                loaded.error = None;
                r
            }
            Err(e) => {
                let error = e.to_string();
                loaded.stamp = None;
                if loaded.error.as_deref() == Some(error.as_str()) {
                    // Still failing the same way: not news.
                    return Refresh::Unchanged;
                }
                loaded.error = Some(error.clone());
                Refresh::Failed(error)
            }
        }
    }

    /// The registry's answers for `numbers` from the last good load: `Unavailable` for each
    /// when the file was never read successfully.
    pub fn lookup(&self, numbers: &[&str]) -> Answers {
        let (table, error) = match self.loaded.read() {
            Ok(l) => (l.table.clone(), l.error.clone()),
            Err(_) => (None, Some("registry lock poisoned".into())),
        };
        numbers
            .iter()
            .map(|n| {
                let key = ticket_key(n);
                let answer = match &table {
                    Some(t) => t
                        .tickets
                        .get(&key)
                        .cloned()
                        .map_or(Lookup::Unknown, Lookup::Known),
                    None => {
                        Lookup::Unavailable(error.clone().unwrap_or_else(|| "not read yet".into()))
                    }
                };
                (key, answer)
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    fn columns(format: Option<&str>) -> Columns {
        Columns {
            ticket: "Ticket No".into(),
            created: "Created On".into(),
            requester: Some("Email".into()),
            state: Some("Status".into()),
            created_format: format.map(str::to_string),
        }
    }

    fn ist() -> TimeZone {
        TimeZone::get("Asia/Kolkata").unwrap()
    }

    /// 2024-11-28 10:15 IST = 04:45 UTC.
    const CREATED: i64 = 1_732_769_100;

    #[test]
    fn an_export_as_the_crm_writes_it() {
        let text = "\u{feff}Ticket No , Created On,Email,Status,Subject\n\
                    2024-1234567,28-11-2024 10:15,meena@rites.co.in,Open,\"Payment, pending\"\n\
                    2024-7654321,29-11-2024 09:00,,Resolved,x\n\
                    ,29-11-2024 09:00,a@b.in,Open,no number\n\
                    2024-1111111,yesterday,a@b.in,Open,bad time\n";
        let t = parse(
            Path::new("t.csv"),
            text.as_bytes(),
            &columns(Some("%d-%m-%Y %H:%M")),
            &ist(),
        )
        .unwrap();
        assert_eq!(t.tickets.len(), 2);
        let r = &t.tickets["2024-1234567"];
        assert_eq!(r.created, CREATED);
        assert_eq!(r.requester.as_deref(), Some("meena@rites.co.in"));
        assert_eq!(r.state.as_deref(), Some("Open"));
        assert_eq!(t.tickets["2024-7654321"].requester, None);
        assert_eq!(t.skipped, 2);
        assert_eq!(t.problems[0].0, 4, "line numbers count the header");
        assert!(t.problems[1].1.contains("yesterday"), "{:?}", t.problems);
    }

    #[test]
    fn times_without_a_format() {
        for (text, want) in [
            ("2024-11-28T04:45:00Z", CREATED),
            ("2024-11-28T10:15:00+05:30", CREATED),
            ("2024-11-28 10:15", CREATED),
            ("2024-11-28 10:15:00", CREATED),
            ("2024-11-28", CREATED - (10 * 3_600 + 15 * 60)),
        ] {
            assert_eq!(parse_time(text, None, &ist()), Ok(want), "{text}");
        }
        assert!(parse_time("28/11/2024", None, &ist()).is_err());
    }

    #[test]
    fn a_missing_column_is_named_with_the_columns_there_are() {
        let e = parse(
            Path::new("/srv/crm/tickets.csv"),
            b"Ticket,Date\n2024-1234567,2024-11-28\n",
            &columns(None),
            &ist(),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "/srv/crm/tickets.csv: the header line has no column `Ticket No` (it has: Ticket, Date)"
        );
    }

    #[test]
    fn the_file_is_read_again_when_it_changes_and_kept_when_it_breaks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tickets.csv");
        let registry = CsvRegistry::new(path.clone(), columns(None), ist());
        assert!(matches!(registry.refresh(), Refresh::Failed(_)));
        assert_eq!(
            registry.refresh(),
            Refresh::Unchanged,
            "the same failure once"
        );
        assert!(matches!(
            registry.lookup(&["2024-1234567"])["2024-1234567"],
            Lookup::Unavailable(_)
        ));
        std::fs::write(
            &path,
            "Ticket No,Created On,Email,Status\n2024-1234567,2024-11-28 10:15,a@b.in,Open\n",
        )
        .unwrap();
        assert_eq!(
            registry.refresh(),
            Refresh::Loaded {
                tickets: 1,
                skipped: 0
            }
        );
        assert_eq!(registry.refresh(), Refresh::Unchanged);
        let a = registry.lookup(&["2024-1234567", "2024-0000000"]);
        assert!(matches!(a["2024-1234567"], Lookup::Known(_)));
        assert_eq!(a["2024-0000000"], Lookup::Unknown);
        // A new export (another size) with the ticket resolved.
        std::fs::write(
            &path,
            "Ticket No,Created On,Email,Status\n2024-1234567,2024-11-28 10:15,a@b.in,Resolved\n",
        )
        .unwrap();
        assert!(matches!(registry.refresh(), Refresh::Loaded { .. }));
        let Lookup::Known(r) = &registry.lookup(&["2024-1234567"])["2024-1234567"] else {
            panic!("known")
        };
        assert_eq!(r.state.as_deref(), Some("Resolved"));
        // The export replaced by one without the ticket column: the last good copy stays.
        std::fs::write(&path, "Number,Created On\n").unwrap();
        assert!(matches!(registry.refresh(), Refresh::Failed(_)));
        assert!(matches!(
            registry.lookup(&["2024-1234567"])["2024-1234567"],
            Lookup::Known(_)
        ));
    }
}
