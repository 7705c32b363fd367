//! Wall-clock time in the two text forms mail needs: RFC 3339 for metadata and
//! RFC 5322 for `Received:` headers, both by `jiff`. Always UTC, so no
//! time-zone database.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

/// Microseconds since the Unix epoch (0 if the clock is before 1970).
pub fn unix_micros(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The time `micros` microseconds after the epoch.
pub fn from_unix_micros(micros: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(micros)
}

/// The time to the second, in UTC (the epoch for a clock before 1970).
fn utc_seconds(time: SystemTime) -> Zoned {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Timestamp::from_second(seconds)
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .to_zoned(TimeZone::UTC)
}

/// `2026-11-22T19:20:32Z`
pub fn rfc3339(time: SystemTime) -> String {
    utc_seconds(time).timestamp().to_string()
}

/// `Sun, 22 Nov 2026 19:20:32 +0000` (RFC 5322 section 3.3).
pub fn rfc5322(time: SystemTime) -> String {
    // Years beyond 9999 cannot be written in RFC 5322 dates; the clock
    // would have to be very wrong for that.
    jiff::fmt::rfc2822::to_string(&utc_seconds(time))
        .unwrap_or_else(|_| "Thu, 1 Jan 1970 00:00:00 +0000".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn formats_the_epoch() {
        assert_eq!(rfc3339(at(0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc5322(at(0)), "Thu, 1 Jan 1970 00:00:00 +0000");
    }

    #[test]
    fn formats_a_leap_day_and_a_year_end() {
        assert_eq!(rfc3339(at(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(at(1_798_761_599)), "2026-12-31T23:59:59Z");
        assert_eq!(
            rfc5322(at(1_795_375_232)),
            "Sun, 22 Nov 2026 19:20:32 +0000"
        );
    }

    #[test]
    fn micros_round_trip() {
        let t = from_unix_micros(1_795_375_232_123_456);
        assert_eq!(unix_micros(t), 1_795_375_232_123_456);
    }
}
