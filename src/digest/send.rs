//! The digest's shell: reads a day's counts and clocks from the store, composes the mail
//! (text/plain and text/html alternatives, sent as the group's `from_desk`) and queues it
//! in the outbox under the id `digest:GROUP:DAY`, so that it goes out once per day
//! whichever process, restart or `ticketgate digest --send` queues it; and the daemon's
//! task that does so each day at the group's time.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use tokio_util::sync::CancellationToken;

use super::{Digest, DigestGroup, build, html, subject, text};
use crate::config::Config;
use crate::rules::Rules;
use crate::store::{NewOutgoing, Store, StoreError};

/// The local day a digest sent at `now` covers: the day before (complete), `YYYY-MM-DD`.
pub fn covered_day(now: i64, zone: &jiff::tz::TimeZone) -> String {
    crate::clock::local_day(now - 86_400, zone)
}

/// Start and end (Unix seconds) of local `day` in `zone`.
fn day_bounds(day: &str, zone: &jiff::tz::TimeZone) -> Option<(i64, i64)> {
    let date: jiff::civil::Date = day.parse().ok()?;
    let start = date.to_zoned(zone.clone()).ok()?;
    let end = date.tomorrow().ok()?.to_zoned(zone.clone()).ok()?;
    Some((start.timestamp().as_second(), end.timestamp().as_second()))
}

/// The digest of `group` for local `day`, from the store, at `now`.
///
/// # Errors
/// Store errors; a `day` that is not a date gives an empty day.
pub async fn gather(
    store: &Store,
    group: &DigestGroup,
    rules: &Rules,
    day: &str,
    now: i64,
) -> Result<Digest, StoreError> {
    let zone = &rules.time_zone;
    let (from, to) = day_bounds(day, zone).unwrap_or((now, now));
    // The report counts from `since` on; two days back covers the whole local day.
    let rows = store.report(from - 86_400, zone).await?;
    let open = store.clocks_due_before(now).await?;
    let stopped = store.clocks_stopped_between(from, to).await?;
    Ok(build(group, day, &rows, &open, &stopped, now))
}

/// The digest as a mail from the group's `from_desk` to its supervisors, with the outbox id
/// that makes it once per day.
///
/// # Errors
/// An address lettre refuses (config has checked them) or a desk that is gone.
pub fn mail(
    cfg: &Config,
    group: &DigestGroup,
    d: &Digest,
    now: i64,
) -> Result<NewOutgoing, String> {
    let desk = cfg
        .desk(&group.from_desk)
        .ok_or_else(|| format!("no desk `{}`", group.from_desk))?;
    let from: lettre::Address = desk.address.parse().map_err(|e| format!("{e}"))?;
    let id = format!("digest:{}:{}", group.name, d.day);
    let domain = desk.address.rsplit('@').next().unwrap_or("localhost");
    let mut b = lettre::Message::builder()
        .from(Mailbox::new(desk.display_name.clone(), from.clone()))
        .subject(subject(d))
        .date(std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(now).unwrap_or(0)))
        .message_id(Some(format!(
            "<digest.{}.{}@{domain}>",
            d.day,
            group
                .name
                .replace(|c: char| !c.is_ascii_alphanumeric(), "-")
        )));
    for s in &group.supervisors {
        b = b.to(Mailbox::new(
            None,
            s.parse().map_err(|e| format!("{s}: {e}"))?,
        ));
    }
    let message = b
        .raw_header(lettre::message::header::HeaderValue::new(
            lettre::message::header::HeaderName::new_from_ascii_str("Auto-Submitted"),
            "auto-generated".to_string(),
        ))
        .multipart(MultiPart::alternative_plain_html(text(d), html(d)))
        .map_err(|e| e.to_string())?;
    Ok(NewOutgoing {
        id,
        desk: desk.name.clone(),
        envelope_from: from.to_string(),
        recipients: group.supervisors.clone(),
        bytes: message.formatted(),
        reply_claim: None,
    })
}

/// Queues every group's digest of the day before, if its time of day has passed (local, in
/// the rules' time zone) and it was not queued yet. Returns the names queued now.
///
/// # Errors
/// Store errors; a digest that cannot be composed is logged and skipped.
pub async fn queue_due(
    store: &Store,
    cfg: &Config,
    rules: &Rules,
    now: i64,
) -> Result<Vec<String>, StoreError> {
    let zone = &rules.time_zone;
    let local = jiff::Timestamp::from_second(now)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_zoned(zone.clone());
    let mut queued = Vec::new();
    for group in &cfg.digests {
        if local.time() < group.time {
            continue;
        }
        let day = covered_day(now, zone);
        let d = gather(store, group, rules, &day, now).await?;
        match mail(cfg, group, &d, now) {
            Ok(out) => {
                if store.queue_once(&out, now).await? {
                    tracing::info!(digest = %group.name, %day, supervisors = group.supervisors.len(), "digest queued");
                    queued.push(group.name.clone());
                }
            }
            Err(e) => tracing::warn!(digest = %group.name, error = %e, "cannot compose the digest"),
        }
    }
    Ok(queued)
}

/// Seconds from `now` until the next digest time of any group (at least 1).
pub fn until_next(cfg: &Config, zone: &jiff::tz::TimeZone, now: i64) -> Option<u64> {
    let local = jiff::Timestamp::from_second(now)
        .ok()?
        .to_zoned(zone.clone());
    cfg.digests
        .iter()
        .filter_map(|g| {
            let today = local
                .date()
                .to_datetime(g.time)
                .to_zoned(zone.clone())
                .ok()?;
            let next = if today.timestamp().as_second() > now {
                today
            } else {
                local
                    .date()
                    .tomorrow()
                    .ok()?
                    .to_datetime(g.time)
                    .to_zoned(zone.clone())
                    .ok()?
            };
            u64::try_from(next.timestamp().as_second() - now).ok()
        })
        .min()
        .map(|s| s.max(1))
}

/// The daemon's digest task: queues what is due now (a daemon started after the hour
/// catches up), then sleeps until the next group's time, until `cancel`.
pub async fn run(shared: std::sync::Arc<crate::shared::Shared>, cancel: CancellationToken) {
    if shared.config.digests.is_empty() {
        return;
    }
    loop {
        let policy = shared.policy();
        let now = crate::clock::unix_now();
        let wait = match queue_due(&shared.store, &shared.config, &policy.rules, now).await {
            Ok(q) => {
                if !q.is_empty() {
                    shared.outbox_wake.notify_one();
                }
                until_next(
                    &shared.config,
                    &policy.rules.time_zone,
                    crate::clock::unix_now(),
                )
                .unwrap_or(3_600)
            }
            Err(e) => {
                tracing::warn!(error = %e, "digest not queued; trying again in 5 minutes");
                300
            }
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(wait)) => {}
        }
    }
}
