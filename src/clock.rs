//! Calendar days in the deployment's time zone (`[settings] time_zone` of the rules, e.g.
//! Asia/Kolkata for GeM): the day a report row counts and the `{date}` of templates. Time
//! zone data comes from jiff (the system's zoneinfo, or its bundled copy). Also the one
//! place that reads the wall clock ([`unix_now`], [`Clock`]); the core takes `now` as an
//! argument and never reads it.

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// Seconds since the Unix epoch, from the system clock (0 before 1970).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Where a long-running task reads Unix time (seconds): the system clock in the daemon, or,
/// in tests, a fixed start plus the time elapsed on tokio's clock, so that
/// `tokio::time::pause()` and `advance()` move it too.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// [`unix_now`].
    System,
    /// `start` Unix seconds at tokio's instant `at`, advancing with tokio's clock.
    Tokio {
        start: i64,
        at: tokio::time::Instant,
    },
}

impl Clock {
    /// A tokio-driven clock reading `start` now.
    pub fn tokio(start: i64) -> Clock {
        Clock::Tokio {
            start,
            at: tokio::time::Instant::now(),
        }
    }

    /// Unix seconds now.
    pub fn now(&self) -> i64 {
        match self {
            Clock::System => unix_now(),
            Clock::Tokio { start, at } => {
                start.saturating_add(i64::try_from(at.elapsed().as_secs()).unwrap_or(i64::MAX / 2))
            }
        }
    }
}

/// `YYYY-MM-DD HH:MM ZONE` of Unix time `unix` (seconds) in `tz`, as a citizen reads a
/// time in a mail (`2026-12-02 15:00 IST`); the zone's abbreviation, or its offset when it
/// has none. Out-of-range times as [`local_day`].
pub fn local_minute(unix: i64, tz: &TimeZone) -> String {
    let ts = Timestamp::from_second(unix).unwrap_or(if unix < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    });
    let z = ts.to_zoned(tz.clone());
    let abbreviation = tz.to_offset_info(ts).abbreviation().to_string();
    let zone = if abbreviation.is_empty() || abbreviation.starts_with(['+', '-']) {
        z.offset().to_string()
    } else {
        abbreviation
    };
    format!("{} {zone}", z.strftime("%Y-%m-%d %H:%M"))
}

/// `YYYY-MM-DD` of Unix time `unix` (seconds) in `tz`. Out-of-range times give the UTC
/// day of the Unix epoch's range ends.
pub fn local_day(unix: i64, tz: &TimeZone) -> String {
    let ts = Timestamp::from_second(unix).unwrap_or(if unix < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    });
    ts.to_zoned(tz.clone()).date().to_string()
}

/// The time zone named `name` (IANA, e.g. `Asia/Kolkata`, or `UTC`); the error says what
/// is wrong in words for `check`.
pub fn time_zone(name: &str) -> Result<TimeZone, String> {
    TimeZone::get(name).map_err(|e| {
        format!(
            "unknown time zone `{name}` ({e}); use an IANA name such as \"Asia/Kolkata\" or \"UTC\""
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_name_their_zone() {
        let ist = time_zone("Asia/Kolkata").unwrap_or_else(|e| panic!("{e}"));
        // 2026-11-29 18:29 UTC.
        assert_eq!(local_minute(1_795_976_940, &ist), "2026-11-29 23:59 IST");
        assert_eq!(
            local_minute(1_795_976_940, &TimeZone::UTC),
            "2026-11-29 18:29 UTC"
        );
        let fixed = TimeZone::fixed(jiff::tz::offset(3));
        assert_eq!(local_minute(0, &fixed), "1970-01-01 03:00 +03");
    }

    #[test]
    fn days_follow_the_zone() {
        let ist = time_zone("Asia/Kolkata").unwrap_or_else(|e| panic!("{e}"));
        // 2026-11-29 18:29:59 UTC is 23:59:59 IST; one second later it is the 30th in India.
        let t = 1_795_976_999;
        assert_eq!(local_day(t, &TimeZone::UTC), "2026-11-29");
        assert_eq!(local_day(t, &ist), "2026-11-29");
        assert_eq!(local_day(t + 1, &ist), "2026-11-30");
        assert_eq!(local_day(t + 1, &TimeZone::UTC), "2026-11-29");
        assert!(time_zone("Mars/Olympus").is_err());
        // Known UTC dates (the one calendar of the daemon).
        assert_eq!(local_day(0, &TimeZone::UTC), "1970-01-01");
        assert_eq!(local_day(951_782_400, &TimeZone::UTC), "2000-02-29");
        assert_eq!(local_day(1_795_305_600, &TimeZone::UTC), "2026-11-22");
    }
}
