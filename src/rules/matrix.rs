//! `[matrix]` of a rules file: the escalation matrix's time limits (seed 000: 48 hours at
//! the helpdesk before a desk takes a ticket up, 48 hours for the desk) and the calendar
//! they are counted on (issue #17). Checked here with file:line:column problems; the
//! counting itself is `worktime`'s.

use std::collections::BTreeSet;

use jiff::civil::{Date, Time};
use serde::Deserialize;

use super::schema::{Problem, Source};
use crate::worktime::{Calendar, WorkingCalendar};

/// `[matrix]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatrix {
    /// Hours a ticket spends at the helpdesk before a desk takes it up.
    #[serde(default = "default_hours")]
    pub helpdesk_hours: u64,
    /// Hours a desk has to answer a ticket mail (fractions allowed: 0.5 is 30 minutes).
    #[serde(default = "default_desk_hours")]
    pub desk_hours: f64,
    /// `"plain"` (every hour counts) or `"working"` (working days, office hours, holidays).
    #[serde(default = "default_calendar")]
    pub calendar: String,
    /// Working weekdays: `mon` ... `sun`.
    #[serde(default = "default_days")]
    pub working_days: Vec<String>,
    /// Office hours, `"09:30-18:00"`; absent: whole working days count.
    pub working_hours: Option<String>,
    /// Days off, `"2027-01-26"`.
    #[serde(default)]
    pub holidays: Vec<String>,
    /// The desk's Sent folder: a reply there to a clock's mail stops the clock.
    pub sent_folder: Option<String>,
    /// Where officers move mail they have dealt with: a clock's mail there stops it.
    pub done_folder: Option<String>,
    /// A template sent to the user once when a clock runs out (seed 000: they may now
    /// write to the concerned officer, level 3); none when left out.
    pub overdue_notice: Option<String>,
}

fn default_hours() -> u64 {
    48
}
fn default_desk_hours() -> f64 {
    48.0
}
fn default_calendar() -> String {
    "plain".into()
}
fn default_days() -> Vec<String> {
    ["mon", "tue", "wed", "thu", "fri"]
        .map(String::from)
        .to_vec()
}

/// A working calendar's days (Monday first), office hours and holidays, zone to come.
pub type WorkingDays = ([bool; 7], Option<(Time, Time)>, BTreeSet<Date>);

/// The checked matrix, its calendar still without a time zone (the rules' `[settings]
/// time_zone`, which a later file may set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedMatrix {
    pub helpdesk_hours: u64,
    /// `desk_hours` in seconds.
    pub desk_secs: i64,
    /// `None`: plain hours.
    pub working: Option<WorkingDays>,
    pub sent_folder: Option<String>,
    pub done_folder: Option<String>,
    /// The notice's template, and where it is named (for "no such template").
    pub overdue_notice: Option<(String, Problem)>,
}

impl Default for CheckedMatrix {
    fn default() -> Self {
        CheckedMatrix {
            helpdesk_hours: default_hours(),
            desk_secs: 48 * 3_600,
            working: None,
            sent_folder: None,
            done_folder: None,
            overdue_notice: None,
        }
    }
}

impl CheckedMatrix {
    /// The calendar in the deployment's time zone.
    pub fn calendar(&self, zone: &jiff::tz::TimeZone) -> Calendar {
        match &self.working {
            None => Calendar::Plain,
            Some((days, hours, holidays)) => Calendar::Working(WorkingCalendar {
                zone: zone.clone(),
                days: *days,
                hours: *hours,
                holidays: holidays.clone(),
            }),
        }
    }
}

/// Checks `[matrix]` (starting at byte `start` of `src`); every problem at its key.
pub fn check(src: &Source<'_>, start: usize, m: RawMatrix) -> Result<CheckedMatrix, Vec<Problem>> {
    let mut problems = Vec::new();
    #[allow(clippy::cast_precision_loss, reason = "whole hours below 2^53")]
    for (key, hours) in [
        ("helpdesk_hours", m.helpdesk_hours as f64),
        ("desk_hours", m.desk_hours),
    ] {
        if !(hours * 3_600.0 >= 1.0 && hours <= 8_760.0) {
            problems.push(src.problem_at_key(
                start,
                key,
                format!("{key} = {hours}: expected 1 to 8760 hours (seed 000: 48)"),
            ));
        }
    }
    let working = match m.calendar.as_str() {
        "plain" => None,
        "working" => {
            let mut days = [false; 7];
            const NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
            for d in &m.working_days {
                match NAMES
                    .iter()
                    .position(|n| d.trim().to_ascii_lowercase().starts_with(n))
                {
                    Some(i) => days[i] = true,
                    None => problems.push(src.problem_at_key(
                        start,
                        "working_days",
                        format!(
                            "`{d}` is not a weekday; expected mon, tue, wed, thu, fri, sat, sun"
                        ),
                    )),
                }
            }
            let hours = m.working_hours.as_deref().and_then(|h| {
                let parsed = h.split_once('-').and_then(|(a, b)| {
                    Some((
                        a.trim().parse::<Time>().ok()?,
                        b.trim().parse::<Time>().ok()?,
                    ))
                });
                match parsed {
                    Some((a, b)) if a < b => Some((a, b)),
                    _ => {
                        problems.push(src.problem_at_key(
                            start,
                            "working_hours",
                            format!(
                                "`{h}`: expected office hours as \"09:30-18:00\" (start before end)"
                            ),
                        ));
                        None
                    }
                }
            });
            let mut holidays = BTreeSet::new();
            for h in &m.holidays {
                match h.trim().parse::<Date>() {
                    Ok(d) => {
                        holidays.insert(d);
                    }
                    Err(_) => problems.push(src.problem_at_key(
                        start,
                        "holidays",
                        format!("`{h}` is not a date; expected \"YYYY-MM-DD\""),
                    )),
                }
            }
            Some((days, hours, holidays))
        }
        other => {
            problems.push(src.problem_at_key(
                start,
                "calendar",
                format!("calendar `{other}`: expected \"plain\" or \"working\""),
            ));
            None
        }
    };
    if problems.is_empty() {
        Ok(CheckedMatrix {
            helpdesk_hours: m.helpdesk_hours,
            #[allow(clippy::cast_possible_truncation, reason = "checked: 1 s to a year")]
            desk_secs: (m.desk_hours * 3_600.0).round() as i64,
            working,
            sent_folder: m.sent_folder.filter(|f| !f.trim().is_empty()),
            done_folder: m.done_folder.filter(|f| !f.trim().is_empty()),
            overdue_notice: m.overdue_notice.map(|t| {
                (
                    t,
                    src.problem_at_key(start, "overdue_notice", String::new()),
                )
            }),
        })
    } else {
        Err(problems)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use std::path::Path;

    use crate::rules::{Deployment, compile::compile_str};
    use crate::worktime::Calendar;

    #[test]
    fn a_working_calendar_in_the_rules_time_zone() {
        let text = "[matrix]\ncalendar = \"working\"\nworking_days = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\", \"sat\"]\nworking_hours = \"09:30-18:00\"\nholidays = [\"2027-01-26\"]\nhelpdesk_hours = 72\n\n[settings]\ntime_zone = \"Asia/Kolkata\"\n\n[[ticket_pattern]]\nname = \"t\"\nregex = '(?P<ticket>T-[0-9]+)'\n";
        let r = compile_str(Path::new("m.toml"), text, &Deployment::default()).unwrap();
        assert_eq!(
            (r.matrix.helpdesk_hours, r.matrix.desk_secs),
            (72, 48 * 3_600)
        );
        let Calendar::Working(w) = &r.matrix.calendar else {
            panic!("working calendar")
        };
        assert_eq!(w.days, [true, true, true, true, true, true, false]);
        assert_eq!(w.zone, r.time_zone);
        assert_eq!(w.holidays.len(), 1);
        let plain = compile_str(
            Path::new("m.toml"),
            "[[ticket_pattern]]\nname = \"t\"\nregex = '(?P<ticket>T-[0-9]+)'\n",
            &Deployment::default(),
        )
        .unwrap();
        assert_eq!(plain.matrix.calendar, Calendar::Plain);
        assert_eq!(plain.matrix.helpdesk_hours, 48);
    }

    #[test]
    fn each_wrong_value_is_named_at_its_line() {
        let text = "[matrix]\ncalendar = \"working\"\nworking_days = [\"monday\", \"someday\"]\nworking_hours = \"18:00-09:30\"\nholidays = [\"26-01-2027\"]\ndesk_hours = 0.0\n";
        let e = compile_str(Path::new("m.toml"), text, &Deployment::default())
            .unwrap_err()
            .to_string();
        for want in [
            "m.toml:6:1: desk_hours = 0",
            "m.toml:3:1: `someday` is not a weekday",
            "m.toml:4:1: `18:00-09:30`: expected office hours",
            "m.toml:5:1: `26-01-2027` is not a date",
        ] {
            assert!(e.contains(want), "{want} in:\n{e}");
        }
        assert!(!e.contains("monday"), "{e}");
        let e = compile_str(
            Path::new("m.toml"),
            "[matrix]\ncalendar = \"lunar\"\n",
            &Deployment::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("m.toml:2:1: calendar `lunar`"), "{e}");
    }
}
