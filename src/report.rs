//! `ticketgate report`: what the store's counts per desk and day and its outbox look like
//! as a table, CSV or JSON; with `--overdue`, the desk clocks past or near their limit
//! (issue #17). The counting itself is the store's (`store::report`, `store::clocks`).

use anyhow::Context;

use crate::config::Config;
use crate::rules::Rules;
use crate::store::Store;

/// How `ticketgate report` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// Aligned columns with totals, then the outbox.
    Table,
    /// One line per desk and day, with a header line (day,desk,mails,...).
    Csv,
    /// One JSON object: `days` (the rows), `outbox` (waiting, refused, partly refused).
    Json,
}

/// The state database of `cfg`, read-only; the error names it without its password.
async fn open(cfg: &Config) -> anyhow::Result<Store> {
    Store::open_read_only(&cfg.database).await.with_context(|| {
        format!(
            "cannot open state database {}",
            crate::store::redact_url(&cfg.database)
        )
    })
}

/// `ticketgate report --overdue`: the desks' running clocks past their limit or reaching it
/// within `within_hours`, most overdue first, times in the rules' time zone. Opens the
/// database read-only.
pub async fn overdue(
    cfg: &Config,
    rules: &Rules,
    within_hours: u32,
    format: ReportFormat,
) -> anyhow::Result<String> {
    let store = open(cfg).await?;
    let now = crate::clock::unix_now();
    let rows = store
        .clocks_due_before(now + i64::from(within_hours) * 3_600)
        .await?;
    let zone = &rules.time_zone;
    let when = |t: i64| crate::clock::local_minute(t, zone);
    let state = |due: i64| if due <= now { "overdue" } else { "due soon" };
    let hours = |due: i64| (now - due) / 3_600;
    Ok(match format {
        ReportFormat::Json => {
            let list: Vec<serde_json::Value> = rows
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "desk": r.desk, "ticket": r.ticket, "state": state(r.due),
                        "started": r.started, "due": r.due,
                        "hours_past_due": hours(r.due),
                        "sender": r.sender, "subject": r.subject,
                    })
                })
                .collect();
            format!("{}\n", serde_json::json!({ "clocks": list }))
        }
        ReportFormat::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            let _ = w.write_record([
                "desk", "ticket", "state", "started", "due", "sender", "subject",
            ]);
            for r in &rows {
                let _ = w.write_record([
                    r.desk.as_str(),
                    r.ticket.as_str(),
                    state(r.due),
                    &when(r.started),
                    &when(r.due),
                    r.sender.as_deref().unwrap_or(""),
                    r.subject.as_str(),
                ]);
            }
            String::from_utf8_lossy(&w.into_inner().unwrap_or_default()).into_owned()
        }
        ReportFormat::Table => {
            if rows.is_empty() {
                return Ok(format!(
                    "No desk clock is past its limit or due within {within_hours} hours.\n"
                ));
            }
            let mut out = format!(
                "{:<20} {:<14} {:<9} {:<22} {:<32} subject\n",
                "desk", "ticket", "state", "due", "sender"
            );
            for r in &rows {
                out.push_str(&format!(
                    "{:<20} {:<14} {:<9} {:<22} {:<32} {}\n",
                    r.desk,
                    r.ticket,
                    state(r.due),
                    when(r.due),
                    r.sender.as_deref().unwrap_or("-"),
                    r.subject
                ));
            }
            out
        }
    })
}

/// `ticketgate report`: counts per desk and day (in the rules' time zone) over the last
/// `days` days, and the outbox's state. Opens the database read-only.
pub async fn report(
    cfg: &Config,
    rules: &Rules,
    days: u32,
    format: ReportFormat,
) -> anyhow::Result<String> {
    let store = open(cfg).await?;
    let since = crate::clock::unix_now() - i64::from(days) * 86_400;
    let rows = store.report(since, &rules.time_zone).await?;
    // Outgoing mail the SMTP server refused for good is kept, never retried: listed here so
    // that it is not only in the log.
    let outbox = store.outbox_all().await?;
    let pending = outbox
        .iter()
        .filter(|r| r.status == crate::store::OutboxStatus::Pending)
        .count();
    let failed: Vec<_> = outbox
        .iter()
        .filter(|r| r.status == crate::store::OutboxStatus::Failed)
        .collect();
    // Sent, but refused for good for some recipients (the row keeps which and why).
    let partly: Vec<_> = outbox
        .iter()
        .filter(|r| r.status == crate::store::OutboxStatus::Sent && r.last_error.is_some())
        .collect();
    match format {
        ReportFormat::Csv => {
            // Desk names are letters, digits, '-', '_' and '.' (config checks it): no field
            // needs quoting.
            let mut out =
                String::from("day,desk,mails,tickets,redirected,broadcast,automatic,errors\n");
            for r in &rows {
                out.push_str(&format!(
                    "{},{},{},{},{},{},{},{}\n",
                    r.day,
                    r.desk,
                    r.mails,
                    r.tickets,
                    r.redirected,
                    r.broadcast,
                    r.automatic,
                    r.errors
                ));
            }
            Ok(out)
        }
        ReportFormat::Json => {
            let refused = |r: &&crate::store::OutboxRecord| {
                serde_json::json!({
                    "desk": r.desk, "mail": r.id, "attempts": r.attempts,
                    "error": r.last_error,
                })
            };
            let value = serde_json::json!({
                "time_zone": rules.time_zone.iana_name().unwrap_or("UTC"),
                "since_days": days,
                "days": rows,
                "outbox": {
                    "waiting": pending,
                    "refused": failed.iter().map(refused).collect::<Vec<_>>(),
                    "partly_refused": partly.iter().map(refused).collect::<Vec<_>>(),
                },
            });
            Ok(serde_json::to_string_pretty(&value)? + "\n")
        }
        ReportFormat::Table => {
            let mut out = crate::store::format_report(&rows);
            out.push_str(&format!(
                "\noutbox: {pending} waiting to be sent, {} refused permanently, {} sent to only some recipients\n",
                failed.len(),
                partly.len()
            ));
            for r in failed {
                out.push_str(&format!(
                    "  refused: desk {} mail {} ({} attempt(s)): {}\n",
                    r.desk,
                    r.id,
                    r.attempts,
                    r.last_error.as_deref().unwrap_or("-")
                ));
            }
            for r in partly {
                out.push_str(&format!(
                    "  partly refused: desk {} mail {}: {}\n",
                    r.desk,
                    r.id,
                    r.last_error.as_deref().unwrap_or("-")
                ));
            }
            Ok(out)
        }
    }
}
