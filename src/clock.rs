//! Calendar days in the deployment's time zone (`[settings] time_zone` of the rules, e.g.
//! Asia/Kolkata for GeM): the day a report row counts and the `{date}` of templates. Time
//! zone data comes from jiff (the system's zoneinfo, or its bundled copy). Reading the
//! clock itself is the shell's (`daemon::unix_now`).

use jiff::Timestamp;
use jiff::tz::TimeZone;

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
