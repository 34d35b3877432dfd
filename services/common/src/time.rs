//! Time as the programs count it: calendar days in Asia/Shanghai (UTC+8, no daylight saving).

use chrono::{DateTime, FixedOffset, NaiveDate};

/// Asia/Shanghai's offset from UTC, in seconds (China Standard Time has no daylight saving).
pub const SHANGHAI_OFFSET_SECONDS: i32 = 8 * 3600;

/// The Asia/Shanghai offset.
pub fn shanghai() -> FixedOffset {
    FixedOffset::east_opt(SHANGHAI_OFFSET_SECONDS).expect("UTC+8 is a valid offset")
}

/// The Asia/Shanghai calendar day of an instant given in microseconds since the epoch.
pub fn shanghai_date_of_us(us: i64) -> NaiveDate {
    DateTime::from_timestamp_micros(us)
        .expect("stored instants are in range")
        .with_timezone(&shanghai())
        .date_naive()
}

/// Microseconds since the Unix epoch by this process's clock (for records that need a time
/// of their own, such as the audit trail; money decisions use the database's clock).
pub fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_in_shanghai_starts_at_16_00_utc_the_day_before() {
        // 2025-01-01T16:00:00Z is 2025-01-02 00:00 in Shanghai; a microsecond earlier is the 1st.
        let us = 1_735_747_200_000_000;
        assert_eq!(shanghai_date_of_us(us).to_string(), "2025-01-02");
        assert_eq!(shanghai_date_of_us(us - 1).to_string(), "2025-01-01");
    }
}
