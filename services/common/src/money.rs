//! Money in CNY, exact to the fen, never a float.
//!
//! `Money` keeps a `rust_decimal::Decimal` of scale 2 that is never negative and never above
//! [`Money::MAX`]. The database stores it as integer fen; the wire carries `google.type.Money`.
//! Turning a rate times an amount into money is one explicit function that rounds down.

use std::fmt;
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use subsidy_proto::google::r#type::Money as ProtoMoney;

/// The only currency of the programs.
pub const CURRENCY_CODE: &str = "CNY";

/// Nanos in one fen: `google.type.Money` counts 10^-9 units.
const NANOS_PER_FEN: i32 = 10_000_000;
/// Fen in one yuan.
const FEN_PER_YUAN: i64 = 100;

/// Why a value is not money this system accepts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The currency is not CNY.
    #[error("currency must be CNY, got {0:?}")]
    WrongCurrency(String),
    /// The amount is below zero.
    #[error("amount must not be negative")]
    Negative,
    /// The amount has a part smaller than one fen.
    #[error("amount must be exact to the fen (0.01)")]
    SubFen,
    /// The amount is above [`Money::MAX`].
    #[error("amount must not exceed 1,000,000,000,000.00 CNY")]
    TooLarge,
    /// `units` and `nanos` disagree in sign, or `nanos` is out of range.
    #[error("units and nanos are inconsistent")]
    Malformed,
    /// The text is not a decimal amount.
    #[error("not a decimal amount")]
    NotANumber,
}

/// A non-negative amount of CNY with exactly two decimal places.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Money(Decimal);

impl Default for Money {
    /// Zero yuan, with scale 2 like every other amount.
    fn default() -> Self {
        Money::ZERO
    }
}

impl Money {
    /// Zero yuan.
    pub const ZERO: Money = Money(Decimal::from_parts(0, 0, 0, false, 2));
    /// The largest amount accepted anywhere: 10^12 CNY (10^14 fen fits an `i64` with room).
    pub const FEN_MAX: i64 = 100_000_000_000_000;
    /// The largest amount as money.
    pub const MAX: Money = Money(Decimal::from_parts(
        0x5AF3_107A_4000u64 as u32,
        0x5AF3,
        0,
        false,
        2,
    ));

    /// Builds money from integer fen.
    pub fn from_fen(fen: i64) -> Result<Self, MoneyError> {
        if fen < 0 {
            return Err(MoneyError::Negative);
        }
        if fen > Self::FEN_MAX {
            return Err(MoneyError::TooLarge);
        }
        Ok(Money(Decimal::new(fen, 2)))
    }

    /// Builds money from a whole number of yuan.
    pub fn from_yuan(yuan: i64) -> Result<Self, MoneyError> {
        Self::from_fen(yuan.checked_mul(FEN_PER_YUAN).ok_or(MoneyError::TooLarge)?)
    }

    /// Builds money from a decimal that must already be exact to the fen.
    pub fn from_decimal(value: Decimal) -> Result<Self, MoneyError> {
        if value.is_sign_negative() && !value.is_zero() {
            return Err(MoneyError::Negative);
        }
        #[allow(
            clippy::disallowed_methods,
            reason = "the check that the value is exact"
        )]
        let rounded = value.round_dp_with_strategy(2, RoundingStrategy::ToZero);
        if rounded != value {
            return Err(MoneyError::SubFen);
        }
        let mut exact = rounded;
        exact.rescale(2);
        let fen = exact.mantissa();
        if fen > i128::from(Self::FEN_MAX) {
            return Err(MoneyError::TooLarge);
        }
        Ok(Money(exact))
    }

    /// Builds money from a decimal, rounding down to the fen. This is the one place where a
    /// computed amount (a rate times a total) becomes money.
    pub fn round_down(value: Decimal) -> Result<Self, MoneyError> {
        #[allow(
            clippy::disallowed_methods,
            reason = "the one door from a computed amount"
        )]
        let rounded = value.round_dp_with_strategy(2, RoundingStrategy::ToZero);
        Self::from_decimal(rounded)
    }

    /// The amount in integer fen.
    pub fn fen(self) -> i64 {
        let fen = self.0.mantissa();
        debug_assert_eq!(self.0.scale(), 2, "Money keeps scale 2");
        i64::try_from(fen).expect("Money is at most FEN_MAX")
    }

    /// The amount as a decimal of scale 2.
    pub fn decimal(self) -> Decimal {
        self.0
    }

    /// Whether the amount is zero.
    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }

    /// `self + other`, or `None` above [`Money::MAX`].
    pub fn checked_add(self, other: Money) -> Option<Money> {
        Money::from_fen(self.fen().checked_add(other.fen())?).ok()
    }

    /// `self - other`, or `None` below zero.
    pub fn checked_sub(self, other: Money) -> Option<Money> {
        Money::from_fen(self.fen().checked_sub(other.fen())?).ok()
    }

    /// `self - other`, or zero when `other` is larger.
    pub fn saturating_sub(self, other: Money) -> Money {
        self.checked_sub(other).unwrap_or(Money::ZERO)
    }

    /// Parses `google.type.Money`: currency CNY, not negative, exact to the fen.
    pub fn from_proto(value: &ProtoMoney) -> Result<Self, MoneyError> {
        if value.currency_code != CURRENCY_CODE {
            return Err(MoneyError::WrongCurrency(value.currency_code.clone()));
        }
        if !(-999_999_999..=999_999_999).contains(&value.nanos)
            || (value.units > 0 && value.nanos < 0)
            || (value.units < 0 && value.nanos > 0)
        {
            return Err(MoneyError::Malformed);
        }
        if value.units < 0 || value.nanos < 0 {
            return Err(MoneyError::Negative);
        }
        if value.nanos % NANOS_PER_FEN != 0 {
            return Err(MoneyError::SubFen);
        }
        let fen = value
            .units
            .checked_mul(FEN_PER_YUAN)
            .and_then(|fen| fen.checked_add(i64::from(value.nanos / NANOS_PER_FEN)))
            .ok_or(MoneyError::TooLarge)?;
        Self::from_fen(fen)
    }

    /// The `google.type.Money` form.
    pub fn to_proto(self) -> ProtoMoney {
        let fen = self.fen();
        ProtoMoney {
            currency_code: CURRENCY_CODE.to_owned(),
            units: fen / FEN_PER_YUAN,
            nanos: i32::try_from(fen % FEN_PER_YUAN).expect("fen remainder < 100") * NANOS_PER_FEN,
        }
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Money({})", self.0)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Money {
    /// The amount with thousands separators, as people read it: `30,000,000.00`.
    pub fn grouped(self) -> String {
        let text = self.to_string();
        let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
        let mut grouped = String::with_capacity(text.len() + int.len() / 3);
        for (i, c) in int.chars().enumerate() {
            if i > 0 && (int.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        if !frac.is_empty() {
            grouped.push('.');
            grouped.push_str(frac);
        }
        grouped
    }
}

impl FromStr for Money {
    type Err = MoneyError;

    /// Parses a plain decimal such as `12345.67`. Thousands separators (`,` or `_`) are
    /// allowed only where they group the integer digits by three (`30,000,000.00`), so that a
    /// decimal comma (`8000000,00`) is refused instead of read as a hundred times the amount.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let cleaned = ungrouped(text.trim()).ok_or(MoneyError::NotANumber)?;
        let value = Decimal::from_str_exact(&cleaned).map_err(|_| MoneyError::NotANumber)?;
        Self::from_decimal(value)
    }
}

/// `text` without its thousands separators, or `None` when a separator stands anywhere but
/// between groups of three integer digits (or the separators are mixed).
fn ungrouped(text: &str) -> Option<String> {
    let is_separator = |c: char| c == ',' || c == '_';
    if !text.contains(is_separator) {
        return Some(text.to_owned());
    }
    let (int, frac) = match text.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (text, None),
    };
    if frac.is_some_and(|frac| frac.contains(is_separator))
        || (text.contains(',') && text.contains('_'))
    {
        return None;
    }
    let digits = int.trim_start_matches(['-', '+']);
    let mut groups = digits.split(is_separator);
    let first = groups.next()?;
    let first_ok = (1..=3).contains(&first.len()) && first.bytes().all(|b| b.is_ascii_digit());
    let rest_ok = groups.all(|group| group.len() == 3 && group.bytes().all(|b| b.is_ascii_digit()));
    (first_ok && rest_ok).then(|| text.chars().filter(|c| !is_separator(*c)).collect())
}

/// A subsidy rate between 0 and 1 inclusive, such as 0.05.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rate(Decimal);

impl Rate {
    /// Builds a rate; `None` outside `[0, 1]`.
    pub fn new(value: Decimal) -> Option<Self> {
        (value >= Decimal::ZERO && value <= Decimal::ONE).then_some(Rate(value))
    }

    /// The rate as a decimal.
    pub fn decimal(self) -> Decimal {
        self.0
    }

    /// `rate × amount`, rounded down to the fen. Never more than `amount`.
    pub fn apply_round_down(self, amount: Money) -> Money {
        let product = self.0 * amount.decimal();
        let result = Money::round_down(product).expect("rate ≤ 1 keeps the product within Money");
        debug_assert!(result <= amount);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn grouped_amounts_carry_thousands_separators() {
        let grouped = |fen| Money::from_fen(fen).unwrap().grouped();
        assert_eq!(grouped(3_000_000_000), "30,000,000.00");
        assert_eq!(grouped(99_999), "999.99");
        assert_eq!(grouped(100_000), "1,000.00");
        assert_eq!(grouped(0), "0.00");
    }

    fn proto(units: i64, nanos: i32) -> ProtoMoney {
        ProtoMoney {
            currency_code: "CNY".into(),
            units,
            nanos,
        }
    }

    #[test]
    fn the_default_is_zero_with_scale_two() {
        assert_eq!(Money::default().fen(), 0);
        assert_eq!(Money::default().decimal().scale(), 2);
    }

    #[test]
    fn the_max_constant_equals_max_fen() {
        assert_eq!(Money::MAX.fen(), Money::FEN_MAX);
        assert_eq!(Money::MAX.decimal().scale(), 2);
    }

    #[test]
    fn proto_round_trip_is_exact() {
        let money = Money::from_proto(&proto(12_345, 670_000_000)).unwrap();
        assert_eq!(money.fen(), 1_234_567);
        assert_eq!(money.to_proto(), proto(12_345, 670_000_000));
    }

    #[test]
    fn sub_fen_negative_and_foreign_amounts_are_rejected() {
        assert_eq!(
            Money::from_proto(&proto(1, 5_000_000)),
            Err(MoneyError::SubFen)
        );
        assert_eq!(Money::from_proto(&proto(-1, 0)), Err(MoneyError::Negative));
        assert_eq!(
            Money::from_proto(&proto(1, -10_000_000)),
            Err(MoneyError::Malformed)
        );
        assert_eq!(
            Money::from_proto(&proto(i64::MAX, 0)),
            Err(MoneyError::TooLarge)
        );
        let usd = ProtoMoney {
            currency_code: "USD".into(),
            units: 1,
            nanos: 0,
        };
        assert!(matches!(
            Money::from_proto(&usd),
            Err(MoneyError::WrongCurrency(_))
        ));
    }

    #[test]
    fn five_percent_of_12345_67_rounds_down_to_617_28() {
        let rate = Rate::new(dec!(0.05)).unwrap();
        let total: Money = "12345.67".parse().unwrap();
        assert_eq!(rate.apply_round_down(total), "617.28".parse().unwrap());
    }

    #[test]
    fn parsing_rejects_more_than_two_decimals() {
        assert_eq!("1.001".parse::<Money>(), Err(MoneyError::SubFen));
        assert_eq!("1,000.10".parse::<Money>().unwrap().fen(), 100_010);
        assert_eq!(
            "30,000,000.00".parse::<Money>().unwrap().fen(),
            3_000_000_000
        );
        assert_eq!("1_500_000".parse::<Money>().unwrap().fen(), 150_000_000);
        // A decimal comma or a misplaced separator is refused, never read as another amount.
        for text in [
            "8000000,00",
            "1,00",
            "1,0000.00",
            ",100",
            "1,000.0,0",
            "1,000_000",
        ] {
            assert_eq!(text.parse::<Money>(), Err(MoneyError::NotANumber), "{text}");
        }
        assert_eq!("1.5".parse::<Money>().unwrap().to_string(), "1.50");
    }

    proptest::proptest! {
        #[test]
        fn rate_application_never_exceeds_the_exact_product(fen in 0i64..=Money::FEN_MAX, bp in 0u32..=10_000) {
            let rate = Rate::new(Decimal::new(i64::from(bp), 4)).unwrap();
            let amount = Money::from_fen(fen).unwrap();
            let result = rate.apply_round_down(amount);
            proptest::prop_assert!(result.decimal() <= rate.decimal() * amount.decimal());
            proptest::prop_assert!(rate.decimal() * amount.decimal() - result.decimal() < dec!(0.01));
            proptest::prop_assert_eq!(result.decimal().scale(), 2);
        }
    }

    /// The amount nearest the top of the range a test may take.
    const NEAR_MAX: std::ops::RangeInclusive<i64> = (Money::FEN_MAX - 1_000_000)..=Money::FEN_MAX;

    proptest::proptest! {
        #[test]
        fn rates_near_five_percent_at_the_top_of_the_range_round_down_within_one_fen(
            fen in NEAR_MAX,
            // 0.04999000 to 0.05001000 with eight decimals, and finer: up to 28 decimals.
            near in 4_999_000i64..=5_001_000,
            extra in 0i64..=99_999_999,
            scale in 8u32..=16,
        ) {
            let exact = Decimal::new(near, 8) + Decimal::new(extra, scale + 8);
            let rate = Rate::new(exact).unwrap();
            let amount = Money::from_fen(fen).unwrap();
            let result = rate.apply_round_down(amount);
            let product = rate.decimal() * amount.decimal();
            proptest::prop_assert!(result.decimal() <= product);
            proptest::prop_assert!(product - result.decimal() < dec!(0.01));
            proptest::prop_assert!(result <= amount);
        }

        #[test]
        fn sums_of_many_small_claims_are_exact_and_their_rounded_parts_never_exceed_the_whole(
            claims in proptest::collection::vec(1i64..=100_000, 1..=2_000),
        ) {
            let five = Rate::new(dec!(0.05)).unwrap();
            let mut total = Money::ZERO;
            let mut subsidies = Money::ZERO;
            for fen in &claims {
                let claim = Money::from_fen(*fen).unwrap();
                total = total.checked_add(claim).unwrap();
                subsidies = subsidies.checked_add(five.apply_round_down(claim)).unwrap();
            }
            proptest::prop_assert_eq!(total.fen(), claims.iter().sum::<i64>());
            // Rounding each claim down never pays more than rounding the whole once, and
            // loses less than a fen per claim.
            let whole = five.apply_round_down(total);
            proptest::prop_assert!(subsidies <= whole);
            proptest::prop_assert!(whole.fen() - subsidies.fen() < claims.len() as i64);
        }

        #[test]
        fn adding_past_the_maximum_or_below_zero_is_refused_not_wrapped(
            a in NEAR_MAX,
            b in 0i64..=2_000_000,
        ) {
            let (x, y) = (Money::from_fen(a).unwrap(), Money::from_fen(b).unwrap());
            match x.checked_add(y) {
                Some(sum) => {
                    proptest::prop_assert!(a + b <= Money::FEN_MAX);
                    proptest::prop_assert_eq!(sum.fen(), a + b);
                }
                None => proptest::prop_assert!(a + b > Money::FEN_MAX),
            }
            match y.checked_sub(x) {
                Some(difference) => proptest::prop_assert_eq!(difference.fen(), b - a),
                None => proptest::prop_assert!(b < a),
            }
            proptest::prop_assert_eq!(y.saturating_sub(x).fen(), (b - a).max(0));
        }

        #[test]
        fn amounts_at_the_top_of_the_range_survive_text_and_proto(fen in NEAR_MAX) {
            let money = Money::from_fen(fen).unwrap();
            proptest::prop_assert_eq!(money.to_string().parse::<Money>().unwrap(), money);
            proptest::prop_assert_eq!(Money::from_proto(&money.to_proto()).unwrap(), money);
            proptest::prop_assert_eq!(Money::from_fen(fen + 1).is_err(), fen == Money::FEN_MAX);
        }

        #[test]
        fn rounding_down_any_decimal_lands_within_one_fen_below_it(
            fen in 0i64..=Money::FEN_MAX,
            below_a_fen in 0i64..=999_999,
        ) {
            // An amount and up to six more decimals below the fen.
            let value = Decimal::new(fen, 2) + Decimal::new(below_a_fen, 8);
            let money = Money::round_down(value).unwrap();
            proptest::prop_assert!(money.decimal() <= value);
            proptest::prop_assert!(value - money.decimal() < dec!(0.01));
        }
    }
}
