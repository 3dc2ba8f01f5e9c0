//! Working time for the escalation matrix's 48-hour limits (seed 000; SPEC 1 rules 1 and 3;
//! issue #17): how much of a limit has run between two instants, and when a limit falls
//! due, counted either in plain hours or on a calendar of working days, office hours and
//! holidays in the desks' time zone. Pure: every instant comes in as Unix seconds; reading
//! the clock is the shell's, days and zones are `clock`'s (jiff).
//!
//! Not here: which mails start or stop a clock (the desk clock), the limits themselves (the
//! rules' `[sla]`).

use std::collections::BTreeSet;

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

/// Days a calendar looks ahead for a due instant before it gives up: ten years. A calendar
/// with no working day at all never falls due ([`Calendar::due`] gives `i64::MAX`).
const HORIZON_DAYS: i64 = 3_660;

/// How hours are counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Calendar {
    /// Every hour counts: 48 hours are two days, nights and weekends included.
    Plain,
    /// Only the hours of working days that are not holidays count, in `zone`.
    Working(WorkingCalendar),
}

/// Working days, office hours and holidays in one time zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkingCalendar {
    pub zone: TimeZone,
    /// Working weekdays, Monday first (`Weekday::to_monday_zero_offset`): Monday to Friday
    /// is `[true, true, true, true, true, false, false]`, as India's central government offices.
    pub days: [bool; 7],
    /// Office hours `[start, end)` in local time; `None`: the whole day counts.
    pub hours: Option<(Time, Time)>,
    /// Local dates that do not count (gazetted holidays).
    pub holidays: BTreeSet<Date>,
}

impl Calendar {
    /// Seconds of counted time in `[from, to)` (Unix seconds); 0 when `to <= from`.
    pub fn elapsed(&self, from: i64, to: i64) -> i64 {
        if to <= from {
            return 0;
        }
        match self {
            Calendar::Plain => to - from,
            Calendar::Working(w) => {
                let mut total = 0;
                let mut day = w.local_date(from);
                let last = w.local_date(to);
                let mut days = 0;
                while day <= last && days <= HORIZON_DAYS {
                    if let Some((start, end)) = w.window(day) {
                        total += (end.min(to) - start.max(from)).max(0);
                    }
                    day = match day.tomorrow() {
                        Ok(d) => d,
                        Err(_) => break,
                    };
                    days += 1;
                }
                total
            }
        }
    }

    /// The instant (Unix seconds) at which `limit` seconds of counted time have run since
    /// `from`: `from + limit` on plain hours; on a working calendar, inside the working day
    /// that completes it. `i64::MAX` when no working day comes within ten years.
    pub fn due(&self, from: i64, limit: i64) -> i64 {
        match self {
            Calendar::Plain => from.saturating_add(limit.max(0)),
            Calendar::Working(w) => {
                let mut left = limit.max(0);
                let mut day = w.local_date(from);
                for _ in 0..=HORIZON_DAYS {
                    if let Some((start, end)) = w.window(day) {
                        let start = start.max(from);
                        let available = (end - start).max(0);
                        if available > 0 && left <= available {
                            return start + left;
                        }
                        left -= available;
                    }
                    day = match day.tomorrow() {
                        Ok(d) => d,
                        Err(_) => break,
                    };
                }
                i64::MAX
            }
        }
    }
}

impl WorkingCalendar {
    fn local_date(&self, unix: i64) -> Date {
        let ts = Timestamp::from_second(unix).unwrap_or(if unix < 0 {
            Timestamp::MIN
        } else {
            Timestamp::MAX
        });
        ts.to_zoned(self.zone.clone()).date()
    }

    /// The counted interval of local date `day` in Unix seconds, or `None` for a day off.
    fn window(&self, day: Date) -> Option<(i64, i64)> {
        let weekday = usize::try_from(day.weekday().to_monday_zero_offset()).unwrap_or(0);
        if !self.days[weekday % 7] || self.holidays.contains(&day) {
            return None;
        }
        let at = |t: Time| -> Option<i64> {
            day.to_datetime(t)
                .to_zoned(self.zone.clone())
                .ok()
                .map(|z: Zoned| z.timestamp().as_second())
        };
        match self.hours {
            Some((start, end)) => Some((at(start)?, at(end)?)),
            None => {
                let start = at(Time::midnight())?;
                let end = day
                    .tomorrow()
                    .ok()?
                    .to_datetime(Time::midnight())
                    .to_zoned(self.zone.clone())
                    .ok()?
                    .timestamp()
                    .as_second();
                Some((start, end))
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;
    use jiff::civil::date;

    const HOUR: i64 = 3_600;

    fn ist() -> TimeZone {
        TimeZone::get("Asia/Kolkata").unwrap()
    }

    /// Unix seconds of a local IST wall time.
    fn at(y: i16, m: i8, d: i8, h: i8, min: i8) -> i64 {
        date(y, m, d)
            .at(h, min, 0, 0)
            .to_zoned(ist())
            .unwrap()
            .timestamp()
            .as_second()
    }

    /// GeM's desks: Monday to Friday, 09:30 to 18:00 IST, Republic Day off.
    fn gem(hours: bool) -> Calendar {
        Calendar::Working(WorkingCalendar {
            zone: ist(),
            days: [true, true, true, true, true, false, false],
            hours: hours.then(|| (Time::constant(9, 30, 0, 0), Time::constant(18, 0, 0, 0))),
            holidays: [date(2027, 1, 26)].into(),
        })
    }

    #[test]
    fn plain_hours_count_everything() {
        let from = at(2026, 11, 27, 17, 0); // a Friday
        assert_eq!(
            Calendar::Plain.due(from, 48 * HOUR),
            at(2026, 11, 29, 17, 0)
        );
        assert_eq!(Calendar::Plain.elapsed(from, from + 5 * HOUR), 5 * HOUR);
        assert_eq!(Calendar::Plain.elapsed(from, from - 1), 0);
    }

    #[test]
    fn whole_working_days_skip_the_weekend() {
        let c = gem(false);
        // Friday 17:00 IST: 7 hours of Friday, then Monday and Tuesday count.
        let from = at(2026, 11, 27, 17, 0);
        assert_eq!(c.due(from, 48 * HOUR), at(2026, 12, 1, 17, 0));
        assert_eq!(c.elapsed(from, at(2026, 11, 30, 0, 0)), 7 * HOUR);
        // A mail that arrives on Saturday starts counting on Monday at midnight IST.
        assert_eq!(
            c.due(at(2026, 11, 28, 10, 0), 48 * HOUR),
            at(2026, 12, 2, 0, 0)
        );
    }

    #[test]
    fn office_hours_count_only_the_office_day() {
        let c = gem(true);
        // 8.5 h a day: 48 h is 5 days and 5.5 h. Monday 09:30 → next Monday 15:00.
        let from = at(2026, 11, 30, 9, 30);
        assert_eq!(c.due(from, 48 * HOUR), at(2026, 12, 7, 15, 0));
        // Before office hours counts from 09:30, after them from the next working day.
        assert_eq!(
            c.due(at(2026, 11, 30, 7, 0), HOUR),
            at(2026, 11, 30, 10, 30)
        );
        assert_eq!(
            c.due(at(2026, 11, 30, 19, 0), HOUR),
            at(2026, 12, 1, 10, 30)
        );
        assert_eq!(
            c.elapsed(at(2026, 11, 30, 17, 0), at(2026, 12, 1, 10, 0)),
            HOUR + HOUR / 2
        );
    }

    #[test]
    fn a_holiday_does_not_count() {
        let c = gem(false);
        // Monday 25 January 2027 12:00; Tuesday the 26th is Republic Day.
        let from = at(2027, 1, 25, 12, 0);
        assert_eq!(c.due(from, 24 * HOUR), at(2027, 1, 27, 12, 0));
        assert_eq!(c.elapsed(from, at(2027, 1, 27, 0, 0)), 12 * HOUR);
    }

    #[test]
    fn days_turn_at_midnight_in_india_not_in_utc() {
        let c = gem(false);
        // Friday 23:59 IST is 18:29 UTC: one minute of Friday, then Monday.
        let from = at(2026, 11, 27, 23, 59);
        assert_eq!(c.due(from, 2 * 60), at(2026, 11, 30, 0, 1));
    }

    #[test]
    fn a_calendar_without_working_days_never_falls_due() {
        let c = Calendar::Working(WorkingCalendar {
            zone: ist(),
            days: [false; 7],
            hours: None,
            holidays: BTreeSet::new(),
        });
        assert_eq!(c.due(0, HOUR), i64::MAX);
        assert_eq!(c.elapsed(0, 10 * HOUR), 0);
    }

    #[test]
    fn elapsed_and_due_agree() {
        for c in [gem(true), gem(false), Calendar::Plain] {
            let from = at(2026, 12, 24, 16, 45);
            for hours in [1, 5, 9, 24, 48, 100] {
                let due = c.due(from, hours * HOUR);
                assert_eq!(c.elapsed(from, due), hours * HOUR, "{c:?} {hours}");
            }
        }
    }
}
