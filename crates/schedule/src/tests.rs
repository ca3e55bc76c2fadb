//! The arithmetic against real zones: Berlin and New York on their 2026 daylight-saving days
//! (Europe: 29 March and 25 October; the United States: 8 March and 1 November).

use super::*;
use std::collections::BTreeMap;
use time::macros::datetime;

fn schedule(cadence: Cadence, at: &str, zone: &str) -> Spec {
    Spec {
        cadence,
        weekday: None,
        day_of_month: None,
        at: TimeOfDay::parse(at).expect("a valid time"),
        time_zone: zone.to_owned(),
    }
}

fn daily(at: &str, zone: &str) -> Schedule {
    schedule(Cadence::Daily, at, zone).check().expect("valid")
}

/// Every distinct occurrence a `due` job running every 15 minutes from `from` to `to` finds
/// due, by the UTC date of the pass that first saw it.
fn seen_by_passes(
    schedule: &Schedule,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Vec<OffsetDateTime> {
    let mut seen = Vec::new();
    let mut now = from;
    while now <= to {
        if let Some(due) = schedule.latest_at_or_before(now)
            && seen.last() != Some(&due)
        {
            seen.push(due);
        }
        now += time::Duration::minutes(15);
    }
    seen
}

#[test]
fn a_time_skipped_by_spring_forward_runs_once_that_much_later() {
    let berlin = daily("02:30", "Europe/Berlin");
    // 29 March 2026: 02:00 CET becomes 03:00 CEST; 02:30 does not exist, 03:30 CEST is 01:30 UTC.
    assert_eq!(
        berlin.next_after(datetime!(2026-03-28 12:00 UTC)),
        Some(datetime!(2026-03-29 01:30 UTC))
    );
    assert_eq!(
        berlin.next_after(datetime!(2026-03-29 01:30 UTC)),
        Some(datetime!(2026-03-30 00:30 UTC)),
        "the day after, 02:30 CEST"
    );
    let new_york = daily("02:30", "America/New_York");
    // 8 March 2026: 02:00 EST becomes 03:00 EDT; 03:30 EDT is 07:30 UTC.
    assert_eq!(
        new_york.latest_at_or_before(datetime!(2026-03-08 12:00 UTC)),
        Some(datetime!(2026-03-08 07:30 UTC))
    );
    assert_eq!(
        new_york.latest_at_or_before(datetime!(2026-03-08 07:29 UTC)),
        Some(datetime!(2026-03-07 07:30 UTC)),
        "the day before, 02:30 EST"
    );
}

#[test]
fn a_time_repeated_by_fall_back_runs_once_at_its_first_occurrence() {
    let new_york = daily("01:30", "America/New_York");
    // 1 November 2026: 02:00 EDT becomes 01:00 EST, so 01:30 comes at 05:30 UTC (EDT) and again
    // at 06:30 UTC (EST). The first is the occurrence; at the second nothing new is due.
    assert_eq!(
        new_york.next_after(datetime!(2026-10-31 12:00 UTC)),
        Some(datetime!(2026-11-01 05:30 UTC))
    );
    assert_eq!(
        new_york.latest_at_or_before(datetime!(2026-11-01 06:45 UTC)),
        Some(datetime!(2026-11-01 05:30 UTC))
    );
    assert_eq!(
        new_york.next_after(datetime!(2026-11-01 05:30 UTC)),
        Some(datetime!(2026-11-02 06:30 UTC)),
        "the next day, 01:30 EST"
    );
    let berlin = daily("02:30", "Europe/Berlin");
    // 25 October 2026: 03:00 CEST becomes 02:00 CET; 02:30 CEST is 00:30 UTC.
    assert_eq!(
        berlin.latest_at_or_before(datetime!(2026-10-25 01:45 UTC)),
        Some(datetime!(2026-10-25 00:30 UTC))
    );
}

#[test]
fn a_daily_schedule_is_due_once_per_local_day_across_both_changes() {
    for (zone, at, from, to) in [
        (
            "Europe/Berlin",
            "02:30",
            datetime!(2026-03-26 00:00 UTC),
            datetime!(2026-04-01 00:00 UTC),
        ),
        (
            "Europe/Berlin",
            "02:30",
            datetime!(2026-10-22 00:00 UTC),
            datetime!(2026-10-28 00:00 UTC),
        ),
        (
            "America/New_York",
            "01:30",
            datetime!(2026-10-29 00:00 UTC),
            datetime!(2026-11-04 00:00 UTC),
        ),
        (
            "America/New_York",
            "02:30",
            datetime!(2026-03-05 00:00 UTC),
            datetime!(2026-03-11 00:00 UTC),
        ),
    ] {
        let schedule = daily(at, zone);
        let tz = TimeZone::get(zone).expect("zone");
        let mut per_day: BTreeMap<Date, usize> = BTreeMap::new();
        for due in seen_by_passes(&schedule, from, to) {
            let local = to_jiff(due)
                .expect("in range")
                .to_zoned_datetime(tz.clone())
                .date();
            *per_day.entry(local).or_default() += 1;
        }
        assert_eq!(per_day.len(), 7, "{zone} {at}: {per_day:?}");
        assert!(
            per_day.values().all(|&runs| runs == 1),
            "{zone} {at}: {per_day:?}"
        );
    }
}

#[test]
fn the_occurrence_itself_is_due_at_that_instant_and_not_before() {
    let nightly = Schedule::nightly();
    assert_eq!(
        nightly.latest_at_or_before(datetime!(2026-12-06 00:00 UTC)),
        Some(datetime!(2026-12-06 00:00 UTC))
    );
    assert_eq!(
        nightly.latest_at_or_before(datetime!(2026-12-05 23:59:59.999 UTC)),
        Some(datetime!(2026-12-05 00:00 UTC))
    );
    assert_eq!(
        nightly.next_after(datetime!(2026-12-06 00:00 UTC)),
        Some(datetime!(2026-12-07 00:00 UTC))
    );
}

#[test]
fn a_weekly_schedule_runs_on_its_weekday() {
    let mut spec = schedule(Cadence::Weekly, "09:00", "Europe/Berlin");
    spec.weekday = Some(Weekday::Monday);
    let weekly = spec.check().expect("valid");
    // Wednesday 2 December 2026 → Monday 7 December, 09:00 CET (08:00 UTC).
    assert_eq!(
        weekly.next_after(datetime!(2026-12-02 10:00 UTC)),
        Some(datetime!(2026-12-07 08:00 UTC))
    );
    assert_eq!(
        weekly.latest_at_or_before(datetime!(2026-12-02 10:00 UTC)),
        Some(datetime!(2026-11-30 08:00 UTC))
    );
}

#[test]
fn a_monthly_schedule_on_the_31st_runs_on_the_last_day_of_shorter_months() {
    let mut spec = schedule(Cadence::Monthly, "00:00", "UTC");
    spec.day_of_month = Some(31);
    let monthly = spec.check().expect("valid");
    let mut now = datetime!(2026-01-01 00:00 UTC);
    let mut runs = Vec::new();
    for _ in 0..5 {
        now = monthly.next_after(now).expect("a next run");
        runs.push(now);
    }
    assert_eq!(
        runs,
        [
            datetime!(2026-01-31 00:00 UTC),
            datetime!(2026-02-28 00:00 UTC),
            datetime!(2026-03-31 00:00 UTC),
            datetime!(2026-04-30 00:00 UTC),
            datetime!(2026-05-31 00:00 UTC),
        ]
    );
    // A leap year's February has a 29th.
    assert_eq!(
        monthly.next_after(datetime!(2028-02-01 00:00 UTC)),
        Some(datetime!(2028-02-29 00:00 UTC))
    );
}

#[test]
fn a_quarterly_schedule_runs_in_january_april_july_and_october() {
    let mut spec = schedule(Cadence::Quarterly, "06:00", "America/New_York");
    spec.day_of_month = Some(15);
    let quarterly = spec.check().expect("valid");
    assert_eq!(
        quarterly.next_after(datetime!(2026-04-16 00:00 UTC)),
        Some(datetime!(2026-07-15 10:00 UTC)),
        "06:00 EDT"
    );
    assert_eq!(
        quarterly.next_after(datetime!(2026-10-15 10:00 UTC)),
        Some(datetime!(2027-01-15 11:00 UTC)),
        "06:00 EST"
    );
    assert_eq!(
        quarterly.latest_at_or_before(datetime!(2026-06-30 00:00 UTC)),
        Some(datetime!(2026-04-15 10:00 UTC))
    );
}

#[test]
fn a_spec_is_refused_naming_the_field_at_fault() {
    let field = |spec: Spec| spec.check().expect_err("refused").field;
    let weekly = schedule(Cadence::Weekly, "09:00", "UTC");
    assert_eq!(field(weekly.clone()), "weekday");
    let mut daily_with_day = schedule(Cadence::Daily, "09:00", "UTC");
    daily_with_day.day_of_month = Some(3);
    assert_eq!(field(daily_with_day), "day_of_month");
    for day in [0, 32] {
        let mut monthly = schedule(Cadence::Monthly, "09:00", "UTC");
        monthly.day_of_month = Some(day);
        assert_eq!(field(monthly), "day_of_month");
    }
    assert_eq!(
        field(schedule(Cadence::Quarterly, "09:00", "UTC")),
        "day_of_month"
    );
    for zone in ["Mars/Olympus", "", "Europe/../Berlin x", "+01:00"] {
        assert_eq!(field(schedule(Cadence::Daily, "09:00", zone)), "time_zone");
    }
    for time in ["24:00", "7:05", "07:60", "0700", "07:05:00", ""] {
        assert_eq!(TimeOfDay::parse(time), None, "{time:?}");
    }
    assert_eq!(
        TimeOfDay::parse("23:59").map(|t| t.to_string()),
        Some("23:59".into())
    );
}

#[test]
fn a_zone_name_comes_back_as_the_database_spells_it() {
    let checked = schedule(Cadence::Daily, "00:00", "europe/berlin")
        .check()
        .expect("valid");
    assert_eq!(checked.spec().time_zone, "Europe/Berlin");
}

#[test]
fn names_and_numbers_read_back() {
    for cadence in Cadence::ALL {
        assert_eq!(Cadence::parse(cadence.as_str()), Some(cadence));
    }
    for day in Weekday::ALL {
        assert_eq!(Weekday::parse(day.as_str()), Some(day));
        assert_eq!(Weekday::from_number(day.number()), Some(day));
    }
    assert_eq!(Cadence::parse("hourly"), None);
    assert_eq!(Weekday::from_number(0), None);
}
