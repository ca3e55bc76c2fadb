//! The simulator's clock: wall time plus an adjustable offset, and a time scale for long waits.
//!
//! Token lifetimes, subscription expiry and delta-token age are judged against [`SimClock::now`], so tests can
//! jump forward (`POST /control/clock/advance`) instead of waiting. Delivery back-off and the slow/drop windows
//! are real sleeps divided by the time scale, so "4 hours" of retries can pass in seconds.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use time::OffsetDateTime;

/// Wall-clock time shifted by an offset that only moves forward.
#[derive(Debug)]
pub struct SimClock {
    offset_ms: AtomicI64,
    time_scale: f64,
}

impl SimClock {
    /// A clock at wall time that compresses simulated waits by `time_scale` (1.0 = real time).
    pub fn new(time_scale: f64) -> Self {
        let time_scale = if time_scale.is_finite() && time_scale > 0.0 {
            time_scale
        } else {
            1.0
        };
        Self {
            offset_ms: AtomicI64::new(0),
            time_scale,
        }
    }

    /// The simulator's idea of "now".
    pub fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
            + time::Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Moves the clock forward; returns the new "now".
    pub fn advance(&self, by: Duration) -> OffsetDateTime {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX / 2);
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
        self.now()
    }

    /// How long to really wait for a simulated duration (the duration divided by the time scale).
    pub fn scaled(&self, simulated: Duration) -> Duration {
        simulated.div_f64(self.time_scale)
    }

    /// The configured time scale.
    pub fn time_scale(&self) -> f64 {
        self.time_scale
    }
}

/// Formats a timestamp the way Graph does (`2024-05-01T10:11:12.1234567Z` style, here with 7 fraction digits).
pub fn graph_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:07}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond() / 100
    )
}

/// Formats a unix time the way Graph's `createdDateTime` properties read (`2021-03-12T10:36:14Z`, whole seconds).
pub fn graph_date_time(unix_secs: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp(unix_secs).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Formats a timestamp the way Entra's token errors do (`2016-01-09 02:02:12Z`).
pub fn entra_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Parses an ISO 8601 / RFC 3339 timestamp as sent by clients (`expirationDateTime`).
pub fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_moves_now_forward_by_the_given_amount() {
        let clock = SimClock::new(1.0);
        let before = clock.now();
        let after = clock.advance(Duration::from_secs(3600));
        assert!(after - before >= time::Duration::seconds(3600));
    }

    #[test]
    fn graph_time_round_trips_through_the_parser() {
        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("valid timestamp");
        assert_eq!(graph_time(t), "2023-11-14T22:13:20.0000000Z");
        assert_eq!(parse_time(&graph_time(t)), Some(t));
    }

    #[test]
    fn scaled_waits_are_divided_by_the_time_scale() {
        let clock = SimClock::new(3600.0);
        assert_eq!(
            clock.scaled(Duration::from_secs(3600)),
            Duration::from_secs(1)
        );
    }
}
