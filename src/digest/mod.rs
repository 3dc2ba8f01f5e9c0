//! The supervisors' daily digest (issue #17 point 4): for a group of desks and one local
//! day, per desk the mails received, tickets, redirected and broadcast mail, the clocks
//! overdue now (subject, sender, age, the ticket number to search for) and the share of
//! clocks answered within the limit; as text here and as HTML (`digest::html`, a bar chart
//! made of table cells, what Outlook's, Thunderbird's and webmail's renderers all draw).
//! Pure: the shell reads the store and queues the mail (`digest::send`); `[[digest]]` of
//! config.toml is read in `config::digest`.

mod html;
pub mod send;

use std::fmt::Write as _;

use crate::store::{ClockRow, ReportRow, StoppedClock};

pub use crate::config::digest::DigestGroup;
pub use html::{BAR_COLOUR, BAR_PIXELS, bar_width, html};

/// One desk's line of the digest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeskDay {
    pub desk: String,
    pub mails: u64,
    pub tickets: u64,
    pub redirected: u64,
    pub broadcast: u64,
    /// Clocks stopped during the day, and of those within their limit.
    pub answered: u64,
    pub answered_in_time: u64,
    /// Clocks past their limit now, most overdue first.
    pub overdue: Vec<Overdue>,
}

/// A ticket mail past the desk's limit, as the supervisor reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overdue {
    /// What the officer searches for in their mail client.
    pub ticket: String,
    pub subject: String,
    pub sender: String,
    /// Hours since the first mail on the ticket reached the desk.
    pub age_hours: i64,
}

/// A group's digest for one day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub group: String,
    /// `YYYY-MM-DD`, local.
    pub day: String,
    pub desks: Vec<DeskDay>,
}

/// The digest of `group` for local `day` from the store's day rows (`ReportRow`s of any
/// days: only `day`'s count), the open clocks (overdue ones are those due before `now`)
/// and the clocks stopped during the day.
pub fn build(
    group: &DigestGroup,
    day: &str,
    rows: &[ReportRow],
    open: &[ClockRow],
    stopped: &[StoppedClock],
    now: i64,
) -> Digest {
    let desks = group
        .desks
        .iter()
        .map(|desk| {
            let mut d = DeskDay {
                desk: desk.clone(),
                ..DeskDay::default()
            };
            for r in rows.iter().filter(|r| r.desk == *desk && r.day == day) {
                d.mails += r.mails;
                d.tickets += r.tickets;
                d.redirected += r.redirected;
                d.broadcast += r.broadcast;
            }
            for s in stopped.iter().filter(|s| s.desk == *desk) {
                d.answered += 1;
                d.answered_in_time += u64::from(s.stopped_at <= s.due);
            }
            let mut overdue: Vec<&ClockRow> = open
                .iter()
                .filter(|c| c.desk == *desk && c.due <= now)
                .collect();
            overdue.sort_by_key(|c| (c.started, c.ticket.clone()));
            d.overdue = overdue
                .into_iter()
                .map(|c| Overdue {
                    ticket: c.ticket.clone(),
                    subject: c.subject.clone(),
                    sender: c.sender.clone().unwrap_or_default(),
                    age_hours: (now - c.started) / 3_600,
                })
                .collect();
            d
        })
        .collect();
    Digest {
        group: group.name.clone(),
        day: day.to_string(),
        desks,
    }
}

impl DeskDay {
    /// "answered in time" as a whole percentage; `None` when nothing was answered.
    pub fn in_time_percent(&self) -> Option<u64> {
        (self.answered > 0).then(|| self.answered_in_time * 100 / self.answered)
    }
}

/// The most mails a desk of the digest received (at least 1): the full bar.
fn busiest(d: &Digest) -> u64 {
    d.desks.iter().map(|x| x.mails).max().unwrap_or(0).max(1)
}

/// Every overdue clock of the digest with its desk, in desk order.
fn overdue_of(d: &Digest) -> Vec<(&str, &Overdue)> {
    d.desks
        .iter()
        .flat_map(|x| x.overdue.iter().map(move |o| (x.desk.as_str(), o)))
        .collect()
}

/// The subject line (under 78 characters for the usual group names).
pub fn subject(d: &Digest) -> String {
    let overdue: usize = d.desks.iter().map(|x| x.overdue.len()).sum();
    format!("[Digest {}] {}: {overdue} overdue", d.day, d.group)
}

/// The text/plain part: a table, `#` bars of mails per desk, then the overdue list.
pub fn text(d: &Digest) -> String {
    let mut out = format!("{} — {}\n\n", d.group, d.day);
    let _ = writeln!(
        out,
        "{:<20} {:>6} {:>7} {:>10} {:>9} {:>7} {:>8}",
        "desk", "mails", "tickets", "redirected", "broadcast", "overdue", "in time"
    );
    for x in &d.desks {
        let _ = writeln!(
            out,
            "{:<20} {:>6} {:>7} {:>10} {:>9} {:>7} {:>8}",
            x.desk,
            x.mails,
            x.tickets,
            x.redirected,
            x.broadcast,
            x.overdue.len(),
            x.in_time_percent()
                .map_or_else(|| "-".to_string(), |p| format!("{p} %"))
        );
    }
    let most = busiest(d);
    out.push_str("\nMails received\n");
    for x in &d.desks {
        let bar = "#".repeat(usize::try_from(x.mails * 30 / most).unwrap_or(30));
        let _ = writeln!(out, "{:<20} {bar} {}", x.desk, x.mails);
    }
    let overdue = overdue_of(d);
    if overdue.is_empty() {
        out.push_str("\nNo ticket mail is overdue.\n");
    } else {
        out.push_str("\nOverdue (search the ticket number in the desk's mailbox)\n");
        for (desk, o) in overdue {
            let _ = writeln!(
                out,
                "{desk}: ticket {} — {} h — {} — {}",
                o.ticket, o.age_hours, o.sender, o.subject
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group() -> DigestGroup {
        DigestGroup {
            name: "GeM escalation desks".into(),
            desks: vec!["bid-ra".into(), "payment-process".into()],
            supervisors: vec!["supervisor@gem.gov.in".into()],
            time: jiff::civil::Time::constant(9, 0, 0, 0),
            from_desk: "bid-ra".into(),
        }
    }

    fn row(desk: &str, day: &str, mails: u64) -> ReportRow {
        ReportRow {
            desk: desk.into(),
            day: day.into(),
            mails,
            tickets: mails / 2,
            redirected: 1,
            broadcast: 0,
            automatic: 0,
            errors: 0,
        }
    }

    #[test]
    fn a_day_per_desk_with_overdue_tickets_and_answers_in_time() {
        let now = 100 * 3_600;
        let rows = [
            row("bid-ra", "2026-11-29", 12),
            row("bid-ra", "2026-11-28", 50),
            row("payment-process", "2026-11-29", 3),
            row("order-process", "2026-11-29", 9),
        ];
        let open = [
            ClockRow {
                desk: "bid-ra".into(),
                ticket: "2026-2000004".into(),
                started: now - 60 * 3_600,
                due: now - 12 * 3_600,
                sender: Some("meena@rites.co.in".into()),
                subject: "Bid <corrigendum> & more".into(),
                overdue_at: Some(now - 11 * 3_600),
            },
            ClockRow {
                desk: "bid-ra".into(),
                ticket: "2026-2000005".into(),
                started: now - 3_600,
                due: now + 47 * 3_600,
                sender: None,
                subject: "not yet due".into(),
                overdue_at: None,
            },
        ];
        let stopped = [
            StoppedClock {
                desk: "bid-ra".into(),
                stopped_at: 10,
                due: 20,
            },
            StoppedClock {
                desk: "bid-ra".into(),
                stopped_at: 30,
                due: 20,
            },
            StoppedClock {
                desk: "bid-ra".into(),
                stopped_at: 5,
                due: 20,
            },
        ];
        let d = build(&group(), "2026-11-29", &rows, &open, &stopped, now);
        assert_eq!(d.desks.len(), 2, "only the group's desks");
        let bid = &d.desks[0];
        assert_eq!((bid.mails, bid.tickets, bid.redirected), (12, 6, 1));
        assert_eq!(bid.in_time_percent(), Some(66));
        assert_eq!(bid.overdue.len(), 1);
        assert_eq!(bid.overdue[0].age_hours, 60);
        assert_eq!(d.desks[1].in_time_percent(), None);
        assert_eq!(
            subject(&d),
            "[Digest 2026-11-29] GeM escalation desks: 1 overdue"
        );
        let t = text(&d);
        assert!(
            t.contains("bid-ra: ticket 2026-2000004 — 60 h — meena@rites.co.in"),
            "{t}"
        );
        assert!(
            t.contains(&format!("bid-ra               {} 12", "#".repeat(30))),
            "{t}"
        );
        let h = html(&d);
        assert!(h.contains("Bid &lt;corrigendum&gt; &amp; more"), "{h}");
        assert!(
            h.contains("width=\"200\""),
            "the busiest desk's bar is full: {h}"
        );
        assert!(h.contains("width=\"50\""), "3 of 12 is a quarter: {h}");
        assert!(
            !h.contains("<a ") && !h.contains("<img"),
            "link-free, no images"
        );
    }
}
