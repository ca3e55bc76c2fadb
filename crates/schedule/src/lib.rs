//! Schedule arithmetic: when a reconcile that runs daily, weekly (on a weekday), monthly or
//! quarterly (on a day of the month) at a time of day in an IANA time zone is due.
//!
//! The calendar and the zones are `jiff`'s (its bundled copy of the IANA time zone database):
//! this crate only says which civil dates a schedule falls on, and `jiff` turns "that date at
//! that time in that zone" into an instant. Across daylight-saving changes that instant is
//! Temporal's and RFC 5545's "compatible" choice, so every schedule day has exactly one
//! occurrence:
//!
//! - a time the spring-forward skips (02:30 in Berlin on the last Sunday of March) runs that
//!   much later, at 03:30 summer time;
//! - a time the fall-back repeats (01:30 in New York on the first Sunday of November) runs once,
//!   at the first of the two (01:30 summer time).
//!
//! A monthly or quarterly schedule on a day that a month lacks (the 31st in April, the 29th to
//! 31st in February) runs on that month's last day. Quarterly means January, April, July and
//! October.

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use std::fmt;
use time::OffsetDateTime;

/// How often a schedule runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cadence {
    /// Every day.
    Daily,
    /// Once a week, on a weekday.
    Weekly,
    /// Once a month, on a day of the month.
    Monthly,
    /// In January, April, July and October, on a day of the month.
    Quarterly,
}

impl Cadence {
    /// Every cadence, in order.
    pub const ALL: [Cadence; 4] = [
        Cadence::Daily,
        Cadence::Weekly,
        Cadence::Monthly,
        Cadence::Quarterly,
    ];

    /// Its stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Cadence::Daily => "daily",
            Cadence::Weekly => "weekly",
            Cadence::Monthly => "monthly",
            Cadence::Quarterly => "quarterly",
        }
    }

    /// The cadence of a name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|cadence| cadence.as_str() == name)
    }
}

/// A day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Weekday {
    /// Monday (ISO day 1).
    Monday,
    /// Tuesday.
    Tuesday,
    /// Wednesday.
    Wednesday,
    /// Thursday.
    Thursday,
    /// Friday.
    Friday,
    /// Saturday.
    Saturday,
    /// Sunday (ISO day 7).
    Sunday,
}

impl Weekday {
    /// Monday to Sunday.
    pub const ALL: [Weekday; 7] = [
        Weekday::Monday,
        Weekday::Tuesday,
        Weekday::Wednesday,
        Weekday::Thursday,
        Weekday::Friday,
        Weekday::Saturday,
        Weekday::Sunday,
    ];

    /// Its lowercase English name.
    pub fn as_str(self) -> &'static str {
        match self {
            Weekday::Monday => "monday",
            Weekday::Tuesday => "tuesday",
            Weekday::Wednesday => "wednesday",
            Weekday::Thursday => "thursday",
            Weekday::Friday => "friday",
            Weekday::Saturday => "saturday",
            Weekday::Sunday => "sunday",
        }
    }

    /// The weekday of a lowercase English name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|day| day.as_str() == name)
    }

    /// ISO 8601's number: Monday 1 to Sunday 7.
    pub fn number(self) -> u8 {
        match self {
            Weekday::Monday => 1,
            Weekday::Tuesday => 2,
            Weekday::Wednesday => 3,
            Weekday::Thursday => 4,
            Weekday::Friday => 5,
            Weekday::Saturday => 6,
            Weekday::Sunday => 7,
        }
    }

    /// The weekday of ISO 8601's number.
    pub fn from_number(number: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|day| day.number() == number)
    }

    fn of(date: Date) -> Self {
        use jiff::civil::Weekday as W;
        match date.weekday() {
            W::Monday => Weekday::Monday,
            W::Tuesday => Weekday::Tuesday,
            W::Wednesday => Weekday::Wednesday,
            W::Thursday => Weekday::Thursday,
            W::Friday => Weekday::Friday,
            W::Saturday => Weekday::Saturday,
            W::Sunday => Weekday::Sunday,
        }
    }
}

/// A time of day, to the minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeOfDay {
    minute_of_day: u16,
}

impl TimeOfDay {
    /// 00:00.
    pub const MIDNIGHT: TimeOfDay = TimeOfDay { minute_of_day: 0 };

    /// `hour`:`minute`, when both are in range.
    pub fn new(hour: u8, minute: u8) -> Option<Self> {
        (hour < 24 && minute < 60).then(|| Self {
            minute_of_day: u16::from(hour) * 60 + u16::from(minute),
        })
    }

    /// `HH:MM` on the 24-hour clock, both with two digits (`07:05`, `23:59`).
    pub fn parse(text: &str) -> Option<Self> {
        let (hour, minute) = text.split_once(':')?;
        let two_digits = |part: &str| part.len() == 2 && part.bytes().all(|b| b.is_ascii_digit());
        if !two_digits(hour) || !two_digits(minute) {
            return None;
        }
        Self::new(hour.parse().ok()?, minute.parse().ok()?)
    }

    /// Minutes since midnight, 0 to 1439.
    pub fn minute_of_day(self) -> u16 {
        self.minute_of_day
    }

    /// The time `minutes` after midnight, when below 1440.
    pub fn from_minute_of_day(minutes: u16) -> Option<Self> {
        (minutes < 24 * 60).then_some(Self {
            minute_of_day: minutes,
        })
    }

    fn hour(self) -> i8 {
        // Below 24 by construction.
        i8::try_from(self.minute_of_day / 60).unwrap_or(0)
    }

    fn minute(self) -> i8 {
        i8::try_from(self.minute_of_day % 60).unwrap_or(0)
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.hour(), self.minute())
    }
}

/// What a schedule says, not yet checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// How often.
    pub cadence: Cadence,
    /// The weekday of a weekly schedule (none for the others).
    pub weekday: Option<Weekday>,
    /// The day of the month of a monthly or quarterly schedule, 1 to 31 (none for the others).
    pub day_of_month: Option<u8>,
    /// The local time of day.
    pub at: TimeOfDay,
    /// An IANA time zone name (`UTC`, `Europe/Berlin`).
    pub time_zone: String,
}

/// The longest time zone name accepted (the database's longest is about 30 characters).
const MAX_ZONE_NAME: usize = 64;

impl Spec {
    /// Every tenant's schedule unless it has its own: daily at 00:00 UTC.
    pub fn nightly() -> Self {
        Self {
            cadence: Cadence::Daily,
            weekday: None,
            day_of_month: None,
            at: TimeOfDay::MIDNIGHT,
            time_zone: "UTC".to_owned(),
        }
    }

    /// Checks the spec: the fields its cadence needs and no others, a day of the month from 1
    /// to 31, a time zone the database knows (its name comes back as the database spells it).
    pub fn check(&self) -> Result<Schedule, Invalid> {
        let needs_weekday = self.cadence == Cadence::Weekly;
        let needs_day = matches!(self.cadence, Cadence::Monthly | Cadence::Quarterly);
        match (needs_weekday, self.weekday) {
            (true, None) => return Err(Invalid::new("weekday", "a weekly schedule needs one")),
            (false, Some(_)) => {
                return Err(Invalid::new(
                    "weekday",
                    format!("a {} schedule takes none", self.cadence.as_str()),
                ));
            }
            _ => {}
        }
        match (needs_day, self.day_of_month) {
            (true, None) => {
                return Err(Invalid::new(
                    "day_of_month",
                    format!("a {} schedule needs one", self.cadence.as_str()),
                ));
            }
            (true, Some(day)) if !(1..=31).contains(&day) => {
                return Err(Invalid::new("day_of_month", "must be from 1 to 31"));
            }
            (false, Some(_)) => {
                return Err(Invalid::new(
                    "day_of_month",
                    format!("a {} schedule takes none", self.cadence.as_str()),
                ));
            }
            _ => {}
        }
        let zone = zone(&self.time_zone)?;
        let mut spec = self.clone();
        if let Some(name) = zone.iana_name() {
            name.clone_into(&mut spec.time_zone);
        }
        Ok(Schedule { spec, zone })
    }
}

fn zone(name: &str) -> Result<TimeZone, Invalid> {
    let plausible = (1..=MAX_ZONE_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'+'));
    if !plausible {
        return Err(Invalid::new(
            "time_zone",
            "must be an IANA time zone name such as Europe/Berlin or UTC",
        ));
    }
    TimeZone::get(name).map_err(|_| {
        Invalid::new(
            "time_zone",
            format!("{name:?} is not a time zone of the IANA database (e.g. Europe/Berlin, UTC)"),
        )
    })
}

/// Why a spec is refused: the field at fault and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    /// The field (`cadence`, `weekday`, `day_of_month`, `time`, `time_zone`).
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl Invalid {
    /// `field` is wrong: `message`.
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// A checked schedule: its occurrences can be computed.
#[derive(Debug, Clone)]
pub struct Schedule {
    spec: Spec,
    zone: TimeZone,
}

/// The most days searched for an occurrence: a quarter is at most 92 days, plus slack for the
/// day before and after a zone's date.
const SEARCH_DAYS: usize = 100;

impl Schedule {
    /// The default schedule: daily at 00:00 UTC.
    pub fn nightly() -> Self {
        Self {
            spec: Spec::nightly(),
            zone: TimeZone::UTC,
        }
    }

    /// What it says.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// The latest occurrence at or before `now` (what is due at `now`).
    pub fn latest_at_or_before(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        let now = to_jiff(now)?;
        // Start a day after now's local date: around a fall-back at midnight, the next date's
        // first minutes can come before the end of now's local date.
        let mut date = now
            .to_zoned_datetime(self.zone.clone())
            .date()
            .tomorrow()
            .ok()?;
        for _ in 0..SEARCH_DAYS {
            if let Some(at) = self.occurrence_on(date)
                && at <= now
            {
                return from_jiff(at);
            }
            date = date.yesterday().ok()?;
        }
        None
    }

    /// The first occurrence after `now` (the next run time).
    pub fn next_after(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        let now = to_jiff(now)?;
        let mut date = now
            .to_zoned_datetime(self.zone.clone())
            .date()
            .yesterday()
            .ok()?;
        for _ in 0..SEARCH_DAYS {
            if let Some(at) = self.occurrence_on(date)
                && at > now
            {
                return from_jiff(at);
            }
            date = date.tomorrow().ok()?;
        }
        None
    }

    /// The instant the schedule runs on `date`, if it runs that day: the time of day in the
    /// zone, "compatible" across daylight-saving changes (see the crate's documentation).
    fn occurrence_on(&self, date: Date) -> Option<Timestamp> {
        if !self.falls_on(date) {
            return None;
        }
        date.at(self.spec.at.hour(), self.spec.at.minute(), 0, 0)
            .to_zoned_datetime(self.zone.clone())
            .ok()
            .map(|zoned| zoned.timestamp())
    }

    fn falls_on(&self, date: Date) -> bool {
        // The schedule's day, or the month's last day when the month is shorter.
        let day_of_month = |day: u8| {
            let last = date.days_in_month();
            date.day() == i8::try_from(day).unwrap_or(i8::MAX).min(last)
        };
        match self.spec.cadence {
            Cadence::Daily => true,
            Cadence::Weekly => self.spec.weekday == Some(Weekday::of(date)),
            Cadence::Monthly => self.spec.day_of_month.is_some_and(day_of_month),
            Cadence::Quarterly => {
                matches!(date.month(), 1 | 4 | 7 | 10)
                    && self.spec.day_of_month.is_some_and(day_of_month)
            }
        }
    }
}

fn to_jiff(at: OffsetDateTime) -> Option<Timestamp> {
    Timestamp::from_nanosecond(at.unix_timestamp_nanos()).ok()
}

fn from_jiff(at: Timestamp) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(at.as_nanosecond()).ok()
}

#[cfg(test)]
mod tests;
