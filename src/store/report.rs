//! The daily report's rows and their text table, as printed by `ticketgate report`.
//! The query that produces the rows is [`Store::report`], here too.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Store, StoreError, get, get_u64, query_error};

/// Counts for one desk on one day (in the rules' time zone), by the time each mail was
/// first journaled.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReportRow {
    pub desk: String,
    /// Day in the rules' `time_zone`, `YYYY-MM-DD`.
    pub day: String,
    /// Mails journaled (decided or set aside).
    pub mails: u64,
    /// Mails with a ticket number.
    pub tickets: u64,
    /// Mails redirected to the helpdesk.
    pub redirected: u64,
    /// Mails recognised as broadcast.
    pub broadcast: u64,
    /// Automatic mail (auto-replies, bounces, lists).
    pub automatic: u64,
    /// Mails set aside after an error.
    pub errors: u64,
}

/// Formats rows as an aligned text table (day, desk, counts) with a final totals line.
pub fn format_report(rows: &[ReportRow]) -> String {
    const HEADERS: [&str; 8] = [
        "day",
        "desk",
        "mails",
        "tickets",
        "redirected",
        "broadcast",
        "automatic",
        "errors",
    ];
    let counts = |r: &ReportRow| {
        [
            r.mails,
            r.tickets,
            r.redirected,
            r.broadcast,
            r.automatic,
            r.errors,
        ]
    };
    let mut totals = [0u64; 6];
    let mut lines: Vec<[String; 8]> = Vec::with_capacity(rows.len() + 1);
    for row in rows {
        let c = counts(row);
        for (total, n) in totals.iter_mut().zip(c) {
            *total = total.saturating_add(n);
        }
        lines.push(cells(&row.day, &row.desk, c));
    }
    let total_line = cells("total", "", totals);

    let mut widths = HEADERS.map(str::len);
    for line in lines.iter().chain(std::iter::once(&total_line)) {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }

    let mut out = String::new();
    let header = HEADERS.map(str::to_owned);
    push_line(&mut out, &header, &widths);
    let rule_len = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
    out.push_str(&"-".repeat(rule_len));
    out.push('\n');
    for line in &lines {
        push_line(&mut out, line, &widths);
    }
    out.push_str(&"-".repeat(rule_len));
    out.push('\n');
    push_line(&mut out, &total_line, &widths);
    out
}

impl Store {
    /// Counts per desk and day in `tz` of the mails journaled since `since` (Unix seconds),
    /// ordered by day and desk. The database groups by quarter hour (every time zone's
    /// offset is a multiple of 15 minutes); the days are made here.
    pub async fn report(
        &self,
        since: i64,
        tz: &jiff::tz::TimeZone,
    ) -> Result<Vec<ReportRow>, StoreError> {
        let op = "compute the report";
        // COUNT, not SUM: PostgreSQL's SUM(bigint) is numeric, which `Any` cannot decode.
        let rows = sqlx::query(
            "SELECT desk, decided_at / 900 AS quarter, COUNT(*) AS mails, \
             COUNT(ticket) AS tickets, \
             COUNT(CASE WHEN redirected = 1 THEN 1 END) AS redirected, \
             COUNT(CASE WHEN broadcast = 1 THEN 1 END) AS broadcast, \
             COUNT(CASE WHEN automatic = 1 THEN 1 END) AS automatic, \
             COUNT(CASE WHEN status = 'failed' THEN 1 END) AS errors \
             FROM journal WHERE decided_at >= $1 \
             GROUP BY desk, decided_at / 900",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await
        .map_err(query_error(op))?;
        let mut days: BTreeMap<(String, String), ReportRow> = BTreeMap::new();
        for r in &rows {
            let desk: String = get(r, "desk", op)?;
            let quarter: i64 = get(r, "quarter", op)?;
            let day = crate::clock::local_day(quarter * 900, tz);
            let row = days
                .entry((day.clone(), desk.clone()))
                .or_insert_with(|| ReportRow {
                    desk,
                    day,
                    ..ReportRow::default()
                });
            row.mails += get_u64(r, "mails", op)?;
            row.tickets += get_u64(r, "tickets", op)?;
            row.redirected += get_u64(r, "redirected", op)?;
            row.broadcast += get_u64(r, "broadcast", op)?;
            row.automatic += get_u64(r, "automatic", op)?;
            row.errors += get_u64(r, "errors", op)?;
        }
        Ok(days.into_values().collect())
    }
}

fn cells(day: &str, desk: &str, counts: [u64; 6]) -> [String; 8] {
    let [a, b, c, d, e, f] = counts.map(|n| n.to_string());
    [day.to_owned(), desk.to_owned(), a, b, c, d, e, f]
}

/// Text columns (day, desk) are left-aligned, counts right-aligned, two spaces apart.
fn push_line(out: &mut String, cells: &[String; 8], widths: &[usize; 8]) {
    let mut line = String::new();
    for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
        if i > 0 {
            line.push_str("  ");
        }
        // Writing to a String cannot fail.
        let _ = if i < 2 {
            write!(line, "{cell:<width$}")
        } else {
            write!(line, "{cell:>width$}")
        };
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    fn row(day: &str, desk: &str, n: u64) -> ReportRow {
        ReportRow {
            desk: desk.into(),
            day: day.into(),
            mails: n,
            tickets: n / 2,
            redirected: 1,
            broadcast: 0,
            automatic: 2,
            errors: 0,
        }
    }

    #[test]
    fn table_is_aligned_with_totals() {
        let rows = [
            row("2025-01-01", "works", 12),
            row("2025-01-01", "finance-and-accounts", 3),
        ];
        let text = format_report(&rows);
        let expected = "\
day         desk                  mails  tickets  redirected  broadcast  automatic  errors
------------------------------------------------------------------------------------------
2025-01-01  works                    12        6           1          0          2       0
2025-01-01  finance-and-accounts      3        1           1          0          2       0
------------------------------------------------------------------------------------------
total                                15        7           2          0          4       0
";
        assert_eq!(text, expected, "\n{text}");
    }

    #[test]
    fn empty_report_still_has_totals() {
        let text = format_report(&[]);
        assert!(text.starts_with("day"), "{text}");
        assert!(text.lines().last().unwrap().starts_with("total"), "{text}");
        assert!(text.lines().last().unwrap().ends_with(" 0"), "{text}");
    }
}
