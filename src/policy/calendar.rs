//! R1's business days: weekends and configured holidays are skipped, counted in the business's
//! time zone (a holiday is a local date; a due time keeps its local time of day across a DST
//! change, so its UTC time may move by an hour).

use chrono::{Datelike, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Weekday};
use chrono_tz::Tz;

/// Where and when the business works.
#[derive(Debug, Clone)]
pub struct BusinessCalendar {
    pub time_zone: Tz,
    /// Local dates on which nobody works (besides Saturdays and Sundays).
    pub holidays: Vec<NaiveDate>,
}

impl BusinessCalendar {
    pub fn is_business_day(&self, date: NaiveDate) -> bool {
        !matches!(date.weekday(), Weekday::Sat | Weekday::Sun) && !self.holidays.contains(&date)
    }

    fn next_business_day(&self, after: NaiveDate) -> NaiveDate {
        let mut date = after;
        // A configured list cannot hold a year of holidays in a row; the bound keeps a bad
        // configuration from looping forever.
        for _ in 0..400 {
            date = date.succ_opt().unwrap_or(date);
            if self.is_business_day(date) {
                return date;
            }
        }
        date
    }

    /// `days` business days after `start` (UTC). Filed on a business day, it is due at the
    /// same local time `days` business days later (Friday 15:00 + 3 = Wednesday 15:00); filed
    /// on a weekend or holiday, the count starts at the next business day's midnight (Saturday
    /// + 3 = Thursday 00:00, the end of Wednesday).
    pub fn add_business_days(&self, start: NaiveDateTime, days: u32) -> NaiveDateTime {
        let local = self.time_zone.from_utc_datetime(&start).naive_local();
        let mut date = local.date();
        for _ in 0..days {
            date = self.next_business_day(date);
        }
        let due_local = if self.is_business_day(local.date()) {
            date.and_time(local.time())
        } else {
            // The end of the last business day counted.
            date.succ_opt().unwrap_or(date).and_time(NaiveTime::MIN)
        };
        self.to_utc(due_local)
    }

    /// A local time as UTC: an ambiguous time (clocks going back) takes the earlier instant,
    /// a time that does not exist (clocks going forward) the instant an hour later.
    fn to_utc(&self, local: NaiveDateTime) -> NaiveDateTime {
        match self.time_zone.from_local_datetime(&local) {
            LocalResult::Single(t) => t.naive_utc(),
            LocalResult::Ambiguous(earlier, _) => earlier.naive_utc(),
            LocalResult::None => {
                let later = local + chrono::TimeDelta::hours(1);
                self.time_zone
                    .from_local_datetime(&later)
                    .earliest()
                    .map_or(later, |t| t.naive_utc())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
    }

    fn calendar(tz: Tz, holidays: &[&str]) -> BusinessCalendar {
        BusinessCalendar {
            time_zone: tz,
            holidays: holidays
                .iter()
                .map(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap())
                .collect(),
        }
    }

    #[test]
    fn r1_three_business_days_skip_the_weekend() {
        let cal = calendar(Tz::UTC, &[]);
        // Friday 2026-12-04 15:00 → Wednesday 2026-12-09 15:00.
        assert_eq!(
            cal.add_business_days(utc("2026-12-04 15:00"), 3),
            utc("2026-12-09 15:00")
        );
        // Tuesday → Friday.
        assert_eq!(
            cal.add_business_days(utc("2026-12-01 09:30"), 3),
            utc("2026-12-04 09:30")
        );
    }

    #[test]
    fn r1_filed_on_a_weekend_the_count_starts_monday() {
        let cal = calendar(Tz::UTC, &[]);
        // Saturday → the end of Wednesday.
        assert_eq!(
            cal.add_business_days(utc("2026-12-05 11:00"), 3),
            utc("2026-12-10 00:00")
        );
    }

    #[test]
    fn r1_holidays_are_skipped_in_the_configured_zone() {
        let cal = calendar(Tz::UTC, &["2026-12-24", "2026-12-25"]);
        // Wednesday 23rd + 3: Thu 24 and Fri 25 are holidays, so Mon 28, Tue 29, Wed 30.
        assert_eq!(
            cal.add_business_days(utc("2026-12-23 10:00"), 3),
            utc("2026-12-30 10:00")
        );
        // In Berlin (UTC+1), Friday 23:30 UTC is already Saturday: the count starts Monday.
        let berlin = calendar(Tz::Europe__Berlin, &[]);
        assert_eq!(
            berlin.add_business_days(utc("2026-12-04 23:30"), 3),
            // Thursday 00:00 Berlin = Wednesday 23:00 UTC.
            utc("2026-12-09 23:00")
        );
    }

    #[test]
    fn r1_a_due_time_keeps_its_local_hour_across_dst() {
        let ny = calendar(Tz::America__New_York, &[]);
        // Friday 2026-10-30 14:00 UTC is 10:00 EDT; the clocks go back on Sunday 1 November,
        // so Wednesday 4 November 10:00 EST is 15:00 UTC.
        assert_eq!(
            ny.add_business_days(utc("2026-10-30 14:00"), 3),
            utc("2026-11-04 15:00")
        );
    }
}
