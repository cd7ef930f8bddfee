//! When a five-field cron schedule (UTC) next fires, and how old a scheduled result may get.
//!
//! Pure: every function takes the current time as an argument, so the controllers pass the real
//! clock and the tests a fixed one. Expressions are first normalized by
//! [`homelab_render::cron::to_cnpg_schedule`] (the same validation CloudNativePG's schedule gets),
//! which leaves only `*`, numbers, ranges `a-b`, steps `*/n` and `a-b/n`, and lists.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};

/// A parsed schedule: which minutes, hours, days of month, months and weekdays match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    /// Whether day-of-month or day-of-week is `*`: then a day must match both fields;
    /// otherwise either (the rule of cron and of robfig/cron, which CloudNativePG uses).
    any_day_wildcard: bool,
}

/// Why a schedule cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("{0}")]
    Invalid(String),
    #[error("the schedule {0:?} never fires (no such date in the next eight years)")]
    Never(String),
}

impl Schedule {
    /// Parses a five-field expression (or a macro such as `@daily`).
    pub fn parse(expression: &str) -> Result<Self, ScheduleError> {
        let six = homelab_render::cron::to_cnpg_schedule(expression)
            .map_err(|e| ScheduleError::Invalid(e.to_string()))?;
        let fields: Vec<&str> = six.split_whitespace().collect();
        let [_, minute, hour, day, month, weekday] = fields.as_slice() else {
            return Err(ScheduleError::Invalid(format!(
                "{expression:?} did not normalize to six fields"
            )));
        };
        Ok(Self {
            minutes: bits(minute, 0, 59)?,
            hours: u32::try_from(bits(hour, 0, 23)?).unwrap_or(u32::MAX),
            days: u32::try_from(bits(day, 1, 31)?).unwrap_or(u32::MAX),
            months: u16::try_from(bits(month, 1, 12)?).unwrap_or(u16::MAX),
            weekdays: u8::try_from(bits(weekday, 0, 6)?).unwrap_or(u8::MAX),
            any_day_wildcard: day.starts_with('*') || weekday.starts_with('*'),
        })
    }

    fn day_matches(&self, date: Date) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let dom = self.days & (1 << date.day()) != 0;
        let dow = self.weekdays & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        if self.any_day_wildcard {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first firing strictly after `after` (whole minutes, UTC).
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let utc = after.to_zoned(TimeZone::UTC).datetime();
        // Start at the next whole minute.
        let start = utc
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(1.minute())
            .ok()?;
        let mut date = start.date();
        let mut first_day = true;
        for _ in 0..(366 * 8) {
            if self.day_matches(date) {
                let (from_hour, from_minute) = if first_day {
                    (start.hour(), start.minute())
                } else {
                    (0, 0)
                };
                for hour in from_hour..24 {
                    if self.hours & (1 << hour) == 0 {
                        continue;
                    }
                    let minute_start = if hour == from_hour { from_minute } else { 0 };
                    for minute in minute_start..60 {
                        if self.minutes & (1 << minute) != 0 {
                            let at =
                                DateTime::from_parts(date, Time::new(hour, minute, 0, 0).ok()?);
                            return at.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp());
                        }
                    }
                }
            }
            first_day = false;
            date = date.tomorrow().ok()?;
        }
        None
    }

    /// The gap between the firing after `after` and the one after it: the interval the schedule
    /// promises around that moment.
    pub fn interval_after(&self, after: Timestamp) -> Option<SignedDuration> {
        let first = self.next_after(after)?;
        let second = self.next_after(first)?;
        Some(second.duration_since(first))
    }
}

/// Bitmask of the values a normalized cron field matches.
fn bits(field: &str, min: u8, max: u8) -> Result<u64, ScheduleError> {
    let invalid = || ScheduleError::Invalid(format!("cannot read the cron field {field:?}"));
    let number = |s: &str| s.parse::<u8>().map_err(|_| invalid());
    let mut mask = 0u64;
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, number(step)?.max(1)),
            None => (item, 1),
        };
        let (low, high) = if range == "*" {
            (min, max)
        } else if let Some((low, high)) = range.split_once('-') {
            (number(low)?, number(high)?)
        } else {
            let value = number(range)?;
            (value, value)
        };
        if low < min || high > max || low > high {
            return Err(invalid());
        }
        let mut value = low;
        while value <= high {
            mask |= 1 << value;
            value = match value.checked_add(step) {
                Some(v) => v,
                None => break,
            };
        }
    }
    Ok(mask)
}

/// When a result produced by a schedule (a base backup) counts as stale: the next firing after
/// it, plus the time that run may take, plus slack. Slack is a twenty-fourth of the interval,
/// between ten minutes and one hour, so a daily schedule allows 25 hours and an hourly one 70
/// minutes.
pub fn stale_at(schedule: &Schedule, last: Timestamp) -> Option<Timestamp> {
    let next = schedule.next_after(last)?;
    let interval = schedule.interval_after(last)?;
    let slack = (interval / 24).clamp(SignedDuration::from_mins(10), SignedDuration::from_hours(1));
    next.checked_add(slack).ok()
}

/// When the next drill is due: the first firing after the newest of `anchor` (the last drill's
/// start, or when drills became possible).
pub fn next_due(schedule: &Schedule, anchor: Timestamp) -> Option<Timestamp> {
    schedule.next_after(anchor)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(expr: &str, after: &str) -> String {
        Schedule::parse(expr)
            .unwrap()
            .next_after(t(after))
            .unwrap()
            .to_string()
    }

    #[test]
    fn daily_and_weekly() {
        assert_eq!(
            next("0 1 * * *", "2026-11-26T00:59:59Z"),
            "2026-11-26T01:00:00Z"
        );
        assert_eq!(
            next("0 1 * * *", "2026-11-26T01:00:00Z"),
            "2026-11-27T01:00:00Z"
        );
        // 2026-11-26 is a Thursday; the next Sunday is the 29th.
        assert_eq!(
            next("0 4 * * 0", "2026-11-26T07:00:00Z"),
            "2026-11-29T04:00:00Z"
        );
        assert_eq!(
            next("@weekly", "2026-11-26T07:00:00Z"),
            "2026-11-29T00:00:00Z"
        );
    }

    #[test]
    fn steps_ranges_lists_and_month_ends() {
        assert_eq!(
            next("*/15 * * * *", "2026-11-26T10:14:30Z"),
            "2026-11-26T10:15:00Z"
        );
        assert_eq!(
            next("* * * * *", "2026-11-26T10:14:30Z"),
            "2026-11-26T10:15:00Z"
        );
        assert_eq!(
            next("0 9-17/4 * * *", "2026-11-26T13:00:00Z"),
            "2026-11-26T17:00:00Z"
        );
        assert_eq!(
            next("30 2 31 * *", "2026-11-26T00:00:00Z"),
            "2026-12-31T02:30:00Z"
        );
        assert_eq!(
            next("0 0 29 feb *", "2026-03-01T00:00:00Z"),
            "2028-02-29T00:00:00Z"
        );
        assert_eq!(
            next("0 12 1,15 * *", "2026-11-15T12:00:00Z"),
            "2026-12-01T12:00:00Z"
        );
        assert_eq!(
            next("59 23 31 12 *", "2026-12-31T23:59:00Z"),
            "2027-12-31T23:59:00Z"
        );
    }

    #[test]
    fn day_of_month_or_day_of_week_when_both_are_restricted() {
        // The 1st of the month or any Monday; 2026-11-30 is a Monday.
        assert_eq!(
            next("0 0 1 * 1", "2026-11-26T00:00:00Z"),
            "2026-11-30T00:00:00Z"
        );
        assert_eq!(
            next("0 0 1 * 1", "2026-11-30T00:00:00Z"),
            "2026-12-01T00:00:00Z"
        );
        // With one of them `*`, both must hold: Mondays in any month.
        assert_eq!(
            next("0 0 * 12 1", "2026-11-26T00:00:00Z"),
            "2026-12-07T00:00:00Z"
        );
    }

    #[test]
    fn impossible_dates_never_fire() {
        assert!(
            Schedule::parse("0 0 31 2 *")
                .unwrap()
                .next_after(t("2026-01-01T00:00:00Z"))
                .is_none()
        );
        assert!(Schedule::parse("0 0 0 * *").is_err());
    }

    #[test]
    fn staleness_follows_the_schedule() {
        let daily = Schedule::parse("0 1 * * *").unwrap();
        assert_eq!(
            stale_at(&daily, t("2026-11-26T01:05:00Z"))
                .unwrap()
                .to_string(),
            "2026-11-27T02:00:00Z"
        );
        let hourly = Schedule::parse("0 * * * *").unwrap();
        assert_eq!(
            stale_at(&hourly, t("2026-11-26T10:01:00Z"))
                .unwrap()
                .to_string(),
            "2026-11-26T11:10:00Z"
        );
        let weekly = Schedule::parse("0 4 * * 0").unwrap();
        assert_eq!(
            stale_at(&weekly, t("2026-11-22T04:30:00Z"))
                .unwrap()
                .to_string(),
            "2026-11-29T05:00:00Z"
        );
    }
}
