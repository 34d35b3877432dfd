//! Rules domain: policy versions and their validation, the decision graph run by the ZEN engine,
//! the typed checks and money invariants applied after it, the selection-round ranking, the
//! denylist. Pure: no wire types, no database, no clock read (the day or instant is handed in).

pub mod calendar;
pub mod canonical;
pub mod compute_voucher;
pub mod data_infra;
pub mod decision;
pub mod denylist;
pub mod graph;
pub mod policy;
pub mod ranking;
pub mod reasons;
pub mod registry;
pub mod replay;
pub mod simulation;

use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use subsidy_common::time::shanghai;

pub use graph::EngineFailure;

/// The highest rate any policy may apply: 5 % of the contract total, whatever a policy says.
pub const RATE_CEILING: Decimal = Decimal::from_parts(5, 0, 0, false, 2);

/// The calendar date of an instant in Asia/Shanghai (China has kept UTC+8 without daylight
/// saving time since 1991, so the fixed offset is exact for every date these programs concern).
pub fn shanghai_date(instant: DateTime<Utc>) -> NaiveDate {
    instant.with_timezone(&shanghai()).date_naive()
}

/// A subsidy program; each has one policy identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Program {
    /// AI compute vouchers (人工智能“算力券”奖补).
    ComputeVoucher,
    /// Data-infrastructure benchmark projects (数据基础设施标杆工程).
    DataInfra,
}

impl Program {
    /// Both programs, in policy-id order.
    pub const ALL: [Program; 2] = [Program::ComputeVoucher, Program::DataInfra];

    /// The policy identifier of the program.
    pub fn policy_id(self) -> &'static str {
        match self {
            Program::ComputeVoucher => "compute-voucher",
            Program::DataInfra => "data-infra",
        }
    }

    /// The program of a policy identifier.
    pub fn from_policy_id(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.policy_id() == text)
    }
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.policy_id())
    }
}

/// A closed range of calendar days, both ends included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DayRange {
    start: NaiveDate,
    end: NaiveDate,
}

impl DayRange {
    /// A range; `None` when `end` is before `start`.
    pub fn new(start: NaiveDate, end: NaiveDate) -> Option<Self> {
        (start <= end).then_some(DayRange { start, end })
    }

    /// The first day.
    pub fn start(self) -> NaiveDate {
        self.start
    }

    /// The last day, included.
    pub fn end(self) -> NaiveDate {
        self.end
    }

    /// Whether `day` is inside.
    pub fn contains(self, day: NaiveDate) -> bool {
        self.start <= day && day <= self.end
    }

    /// Days from `day` to the range: zero inside.
    pub fn distance_days(self, day: NaiveDate) -> i64 {
        if day < self.start {
            (self.start - day).num_days()
        } else if day > self.end {
            (day - self.end).num_days()
        } else {
            0
        }
    }
}

/// A date as the number `YYYYMMDD`, the form decision graphs compare dates in (numbers compare
/// exactly in the engine; its date values carry time zones).
pub fn day_number(day: NaiveDate) -> Decimal {
    use chrono::Datelike;
    Decimal::from(day.year() * 10_000 + day.month() as i32 * 100 + day.day() as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_minute_of_2025_in_shanghai_is_still_2025_12_31() {
        // Proves: 23:59 on 31 December in Asia/Shanghai (15:59 UTC) is that day, and midnight
        // (16:00 UTC) is already 1 January.
        let last_minute = DateTime::parse_from_rfc3339("2025-12-31T15:59:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let midnight = DateTime::parse_from_rfc3339("2025-12-31T16:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            shanghai_date(last_minute),
            NaiveDate::from_ymd_opt(2025, 12, 31).unwrap()
        );
        assert_eq!(
            shanghai_date(midnight),
            NaiveDate::from_ymd_opt(2026, 1, 1).unwrap()
        );
    }

    #[test]
    fn day_ranges_include_both_ends_and_measure_distance() {
        // Proves: a range contains its first and last day, and the distance outside counts days.
        let day = |m, d| NaiveDate::from_ymd_opt(2025, m, d).unwrap();
        let range = DayRange::new(day(1, 1), day(12, 31)).unwrap();
        assert!(range.contains(day(1, 1)) && range.contains(day(12, 31)));
        assert_eq!(range.distance_days(day(6, 1)), 0);
        assert_eq!(
            range.distance_days(NaiveDate::from_ymd_opt(2026, 1, 3).unwrap()),
            3
        );
        assert!(DayRange::new(day(2, 1), day(1, 31)).is_none());
        assert_eq!(day_number(day(12, 31)), Decimal::from(20_251_231));
    }
}
