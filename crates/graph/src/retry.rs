//! When to try again: `Retry-After` parsing and jittered exponential backoff.

use std::time::Duration;

/// Parses a `Retry-After` value: whole or fractional seconds (Graph's documented sample is
/// `2.128`), or an HTTP date. `None` for anything else, including negative or absurd values.
pub fn parse_retry_after(value: &str, now: time::OffsetDateTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && (0.0..=86_400.0).contains(&seconds))
            .then(|| Duration::from_secs_f64(seconds));
    }
    let at =
        time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822).ok()?;
    let wait = at - now;
    Some(if wait.is_negative() {
        Duration::ZERO
    } else {
        wait.try_into().ok()?
    })
    .filter(|d| *d <= Duration::from_secs(86_400))
}

/// Full-jitter exponential backoff for attempt `n` (1-based): uniform in `[0, min(cap, base·2ⁿ⁻¹)]`,
/// never below a small floor so a retry never fires instantly (Graph: "avoid immediate retries").
pub fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let exponent = attempt.saturating_sub(1).min(16);
    let ceiling = base.saturating_mul(1u32 << exponent).min(cap);
    let floor = Duration::from_millis(50).min(ceiling);
    let jitter = rand::random::<f64>();
    floor + (ceiling - floor).mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn integer_fractional_and_date_forms_parse() {
        let now = datetime!(2026-11-22 10:00:00 UTC);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("2.128", now),
            Some(Duration::from_millis(2128))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 22 Nov 2026 10:00:05 GMT", now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse_retry_after("Sun, 22 Nov 2026 09:00:00 GMT", now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn nonsense_is_ignored() {
        let now = datetime!(2026-11-22 10:00:00 UTC);
        for value in ["", "soon", "-1", "NaN", "inf", "1e9", "Sun, 99 Nov 2026"] {
            assert_eq!(parse_retry_after(value, now), None, "{value:?}");
        }
    }

    #[test]
    fn backoff_grows_within_the_cap_and_is_never_instant() {
        let base = Duration::from_millis(200);
        let cap = Duration::from_secs(5);
        for attempt in 1..40 {
            let wait = backoff(attempt, base, cap);
            assert!(
                wait >= Duration::from_millis(50) && wait <= cap,
                "{attempt}: {wait:?}"
            );
        }
        assert!(backoff(1, base, cap) <= base);
    }
}
