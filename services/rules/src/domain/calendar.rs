//! The working-day calendar of mainland China and the publicity period (公示期) counted on it.
//!
//! A day is a working day when it is Monday to Friday and not a public holiday, or when it is an
//! adjusted working weekend (调休上班). The holidays and adjusted weekends are data: the State
//! Council announces them each year, so the service ships the 2025 and 2026 schedules
//! (`calendar/cn-working-days.json`) and an operator replaces the file (`rules.calendar_file`).
//! A year the calendar does not cover counts Monday to Friday, and the answer says so.
//!
//! The publicity period of an award made at an instant opens then and ends at 24:00
//! Asia/Shanghai of the Nth working day after that instant's day (the day of the award itself
//! does not count, whether or not it is a working day); with N = 0 it ends at once.

use std::collections::{BTreeSet, HashSet};

use chrono::{DateTime, Datelike, Days, NaiveDate, Utc, Weekday};
use serde::Deserialize;
use subsidy_common::time::shanghai;

use super::shanghai_date;

/// The shipped calendar: the State Council's 2025 and 2026 schedules.
pub const SHIPPED_JSON: &str = include_str!("../../calendar/cn-working-days.json");
/// The default publicity length of a policy version, in working days.
pub const PUBLICITY_WORKING_DAYS_DEFAULT: u32 = 5;
/// The longest publicity length a policy version may set, in working days.
pub const PUBLICITY_WORKING_DAYS_MAX: u32 = 30;
/// The most years one calendar file may cover.
const CALENDAR_YEARS_MAX: usize = 100;
/// The most holiday ranges or adjusted weekends one calendar file may list.
const CALENDAR_ENTRIES_MAX: usize = 2_000;
/// The longest one holiday range may be, in days.
const HOLIDAY_DAYS_MAX: u64 = 31;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CalendarFile {
    #[serde(default)]
    #[allow(dead_code)]
    description: String,
    years: Vec<i32>,
    holidays: Vec<HolidayFile>,
    working_weekends: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HolidayFile {
    #[allow(dead_code)]
    name: String,
    from: String,
    to: String,
}

/// The working-day calendar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Calendar {
    years: BTreeSet<i32>,
    holidays: HashSet<NaiveDate>,
    working_weekends: HashSet<NaiveDate>,
}

/// The publicity period of an award.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicityPeriod {
    /// When it opens.
    pub start: DateTime<Utc>,
    /// When it ends (exclusive).
    pub end: DateTime<Utc>,
    /// The last working day counted; `None` for a period of 0 working days.
    pub last_working_day: Option<NaiveDate>,
    /// Whether every day counted lies in a year the calendar covers.
    pub covered: bool,
}

fn day(text: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| format!("{text:?} is not a date like 2025-01-31"))
}

fn is_weekend(day: NaiveDate) -> bool {
    matches!(day.weekday(), Weekday::Sat | Weekday::Sun)
}

impl Calendar {
    /// The shipped calendar.
    pub fn shipped() -> Calendar {
        Calendar::from_json(SHIPPED_JSON).expect("the shipped calendar is valid")
    }

    /// Reads a calendar file: `years` it covers, `holidays` as named ranges `from`..=`to`,
    /// `working_weekends` as dates. Every date must lie in a listed year, a range must not end
    /// before it starts nor be longer than a month, an adjusted working day must be a Saturday
    /// or Sunday and not also a holiday.
    pub fn from_json(text: &str) -> Result<Calendar, String> {
        let file: CalendarFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if file.years.is_empty() || file.years.len() > CALENDAR_YEARS_MAX {
            return Err(format!("years: 1 to {CALENDAR_YEARS_MAX} years"));
        }
        if file.holidays.len() > CALENDAR_ENTRIES_MAX
            || file.working_weekends.len() > CALENDAR_ENTRIES_MAX
        {
            return Err(format!(
                "at most {CALENDAR_ENTRIES_MAX} holidays and {CALENDAR_ENTRIES_MAX} working weekends"
            ));
        }
        let years: BTreeSet<i32> = file.years.into_iter().collect();
        let listed = |d: NaiveDate| -> Result<NaiveDate, String> {
            if years.contains(&d.year()) {
                Ok(d)
            } else {
                Err(format!("{d} is not in a year the calendar lists"))
            }
        };
        let mut holidays = HashSet::new();
        for holiday in &file.holidays {
            let from = listed(day(&holiday.from)?)?;
            let to = listed(day(&holiday.to)?)?;
            if to < from || (to - from).num_days() as u64 >= HOLIDAY_DAYS_MAX {
                return Err(format!(
                    "holiday {}..{}: must not end before it starts nor last over {HOLIDAY_DAYS_MAX} days",
                    holiday.from, holiday.to
                ));
            }
            let mut d = from;
            while d <= to {
                holidays.insert(d);
                d = d + Days::new(1);
            }
        }
        let mut working_weekends = HashSet::new();
        for text in &file.working_weekends {
            let d = listed(day(text)?)?;
            if !is_weekend(d) {
                return Err(format!("working weekend {d} is not a Saturday or Sunday"));
            }
            if holidays.contains(&d) {
                return Err(format!("{d} is both a holiday and a working weekend"));
            }
            working_weekends.insert(d);
        }
        Ok(Calendar {
            years,
            holidays,
            working_weekends,
        })
    }

    /// Whether `day` lies in a year the calendar covers.
    pub fn covers(&self, day: NaiveDate) -> bool {
        self.years.contains(&day.year())
    }

    /// Whether `day` is a working day.
    pub fn is_working_day(&self, day: NaiveDate) -> bool {
        if self.working_weekends.contains(&day) {
            return true;
        }
        !is_weekend(day) && !self.holidays.contains(&day)
    }

    /// The publicity period of `working_days` working days of an award made at `start`.
    pub fn publicity_period(&self, start: DateTime<Utc>, working_days: u32) -> PublicityPeriod {
        assert!(
            working_days <= PUBLICITY_WORKING_DAYS_MAX,
            "policies bound the publicity length"
        );
        let mut day = shanghai_date(start);
        let mut covered = true;
        let mut counted = 0;
        let mut last_working_day = None;
        while counted < working_days {
            day = day + Days::new(1);
            covered &= self.covers(day);
            if self.is_working_day(day) {
                counted += 1;
                last_working_day = Some(day);
            }
        }
        let end = match last_working_day {
            None => start,
            Some(last) => {
                let midnight = (last + Days::new(1))
                    .and_hms_opt(0, 0, 0)
                    .expect("midnight exists")
                    .and_local_timezone(shanghai())
                    .single()
                    .expect("Asia/Shanghai has a fixed offset");
                midnight.with_timezone(&Utc)
            }
        };
        PublicityPeriod {
            start,
            end,
            last_working_day,
            covered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn d(text: &str) -> NaiveDate {
        day(text).unwrap()
    }

    #[test]
    fn an_ordinary_week_counts_five_weekdays() {
        // Proves weekends are skipped and the period ends at 24:00 Shanghai of the fifth working
        // day after the award's day (Monday 2025-03-03 → Monday 2025-03-10, 16:00 UTC).
        let calendar = Calendar::shipped();
        let period = calendar.publicity_period(at("2025-03-03T02:00:00Z"), 5);
        assert_eq!(period.last_working_day, Some(d("2025-03-10")));
        assert_eq!(period.end, at("2025-03-10T16:00:00Z"));
        assert!(period.covered);
    }

    #[test]
    fn the_shanghai_day_of_the_award_decides_where_counting_starts() {
        // Proves 23:30 Shanghai on a Friday (15:30 UTC) counts from Saturday, and 00:30 Shanghai
        // on the Saturday (16:30 UTC on Friday) does too.
        let calendar = Calendar::shipped();
        let friday_evening = calendar.publicity_period(at("2025-03-07T15:30:00Z"), 1);
        assert_eq!(friday_evening.last_working_day, Some(d("2025-03-10")));
        let saturday_night = calendar.publicity_period(at("2025-03-07T16:30:00Z"), 1);
        assert_eq!(saturday_night.last_working_day, Some(d("2025-03-10")));
    }

    #[test]
    fn a_period_started_before_the_spring_festival_skips_it_and_counts_its_working_saturday() {
        // Proves the 2025 Spring Festival (01-28..02-04) is skipped and the adjusted working
        // Sunday 01-26 counts: an award on Friday 01-24 counts 01-26, 01-27, then 02-05..02-07.
        let calendar = Calendar::shipped();
        let period = calendar.publicity_period(at("2025-01-24T04:00:00Z"), 5);
        assert_eq!(period.last_working_day, Some(d("2025-02-07")));
        assert_eq!(period.end, at("2025-02-07T16:00:00Z"));
        // Saturday 2025-02-08 is a working day, so a sixth day ends there.
        let six = calendar.publicity_period(at("2025-01-24T04:00:00Z"), 6);
        assert_eq!(six.last_working_day, Some(d("2025-02-08")));
    }

    #[test]
    fn a_period_started_before_national_day_skips_the_golden_week() {
        // Proves 2025-10-01..08 is skipped and the working Sunday 09-28 and Saturday 10-11 count:
        // an award on Friday 09-26 counts 09-28, 09-29, 09-30, 10-09, 10-10.
        let calendar = Calendar::shipped();
        let period = calendar.publicity_period(at("2025-09-26T08:00:00Z"), 5);
        assert_eq!(period.last_working_day, Some(d("2025-10-10")));
        let seven = calendar.publicity_period(at("2025-09-26T08:00:00Z"), 7);
        assert_eq!(seven.last_working_day, Some(d("2025-10-13")));
        assert_eq!(
            calendar
                .publicity_period(at("2025-09-26T08:00:00Z"), 6)
                .last_working_day,
            Some(d("2025-10-11"))
        );
    }

    #[test]
    fn the_2026_spring_festival_and_its_working_saturdays_are_known() {
        // Proves the 2026 schedule: 02-15..23 off, Saturdays 02-14 and 02-28 worked.
        let calendar = Calendar::shipped();
        let period = calendar.publicity_period(at("2026-02-12T04:00:00Z"), 3);
        // 02-13 (Fri), 02-14 (working Saturday), 02-24 (Tue).
        assert_eq!(period.last_working_day, Some(d("2026-02-24")));
        assert!(calendar.is_working_day(d("2026-02-28")));
        assert!(!calendar.is_working_day(d("2026-10-07")));
    }

    #[test]
    fn zero_working_days_end_at_the_award() {
        // Proves a length of 0 closes the period at once.
        let start = at("2025-05-01T01:00:00Z");
        let period = Calendar::shipped().publicity_period(start, 0);
        assert_eq!(period.end, start);
        assert_eq!(period.last_working_day, None);
    }

    #[test]
    fn a_year_the_calendar_does_not_cover_counts_weekdays_and_says_so() {
        // Proves 2027 is counted Monday to Friday and reported as not covered.
        let calendar = Calendar::shipped();
        let period = calendar.publicity_period(at("2026-12-30T04:00:00Z"), 3);
        // 12-31 (Thu, 2026), 2027-01-01 (Fri, no holiday known), 2027-01-04 (Mon).
        assert_eq!(period.last_working_day, Some(d("2027-01-04")));
        assert!(!period.covered);
    }

    #[test]
    fn the_shipped_adjusted_days_are_weekends_and_bad_files_are_refused() {
        // Proves the shipped file passes its own checks and each refusal names the problem.
        let calendar = Calendar::shipped();
        assert!(calendar.working_weekends.iter().all(|d| is_weekend(*d)));
        assert_eq!(calendar.working_weekends.len(), 11);
        let weekday = r#"{"years":[2025],"holidays":[],"working_weekends":["2025-01-27"]}"#;
        assert!(
            Calendar::from_json(weekday)
                .unwrap_err()
                .contains("not a Saturday")
        );
        let outside = r#"{"years":[2025],"holidays":[{"name":"x","from":"2024-12-31","to":"2025-01-01"}],"working_weekends":[]}"#;
        assert!(
            Calendar::from_json(outside)
                .unwrap_err()
                .contains("2024-12-31")
        );
        let backwards = r#"{"years":[2025],"holidays":[{"name":"x","from":"2025-01-02","to":"2025-01-01"}],"working_weekends":[]}"#;
        assert!(Calendar::from_json(backwards).is_err());
        let both = r#"{"years":[2025],"holidays":[{"name":"x","from":"2025-01-25","to":"2025-01-26"}],"working_weekends":["2025-01-26"]}"#;
        assert!(Calendar::from_json(both).unwrap_err().contains("both"));
    }
}
