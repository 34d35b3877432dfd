//! Program statistics, pure: the period of submission dates and its window of instants, the
//! burn rate of a pool and when it runs out, the compute-voucher multiplier (contract volume
//! per yuan of subsidy) by group, and where the median of a sorted list lies. Every figure is
//! integer fen or an exact decimal rounded down; nothing here is floating point. The proto's
//! `GetProgramStatisticsResponse` defines each figure; this file computes them as it says.

use std::collections::BTreeMap;

use chrono::{Days, NaiveDate};
use rust_decimal::Decimal;

/// Longest period a statistics request may cover, in days (ten years and then some).
pub const PERIOD_DAYS_MAX: i64 = 3_660;
/// Most pools reported (the first ones by pool id).
pub const POOLS_MAX: i64 = 50;
/// Most groups in each of the multiplier's lists.
pub const MULTIPLIER_GROUPS_MAX: usize = 500;
/// Microseconds in a day.
const DAY_US: i64 = 24 * 3600 * 1_000_000;

/// The two programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    /// Compute-voucher claims.
    ComputeVoucher,
    /// Data-infrastructure proposals.
    DataInfrastructure,
}

impl Program {
    /// The label of the program in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Program::ComputeVoucher => "compute_voucher",
            Program::DataInfrastructure => "data_infrastructure",
        }
    }
}

/// A period of submission dates, both included (Asia/Shanghai); `from <= to` and at most
/// [`PERIOD_DAYS_MAX`] days long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Period {
    from: NaiveDate,
    to: NaiveDate,
}

/// Why two dates are not a period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeriodProblem {
    /// The last day lies before the first.
    Reversed,
    /// The period is longer than [`PERIOD_DAYS_MAX`].
    TooLong,
}

impl Period {
    /// The period from `from` to `to`, both included.
    pub fn new(from: NaiveDate, to: NaiveDate) -> Result<Self, PeriodProblem> {
        if to < from {
            return Err(PeriodProblem::Reversed);
        }
        if (to - from).num_days() + 1 > PERIOD_DAYS_MAX {
            return Err(PeriodProblem::TooLong);
        }
        Ok(Period { from, to })
    }

    /// The first day.
    pub fn first_day(self) -> NaiveDate {
        self.from
    }

    /// The last day.
    pub fn last_day(self) -> NaiveDate {
        self.to
    }

    /// The instants of the period, microseconds since the epoch: from the first day's 00:00 in
    /// Shanghai (included) to the 00:00 after the last day (excluded).
    pub fn window_us(self) -> (i64, i64) {
        (shanghai_midnight_us(self.from), {
            shanghai_midnight_us(self.to) + DAY_US
        })
    }

    /// The days a burn rate is spread over on `as_of`: from the first day to the earlier of the
    /// last day and `as_of`, both included; 0 when the period starts after `as_of`.
    pub fn days_elapsed(self, as_of: NaiveDate) -> i64 {
        let end = self.to.min(as_of);
        ((end - self.from).num_days() + 1).max(0)
    }
}

/// 00:00 of `day` in Shanghai, microseconds since the epoch.
fn shanghai_midnight_us(day: NaiveDate) -> i64 {
    let utc_midnight_us = day
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
        .timestamp_micros();
    utc_midnight_us - i64::from(subsidy_common::time::SHANGHAI_OFFSET_SECONDS) * 1_000_000
}

/// The burn rate: `committed_fen` spread over `days`, rounded down to the fen; 0 without days.
pub fn burn_rate_fen(committed_fen: i64, days: i64) -> i64 {
    assert!(committed_fen >= 0, "committed amounts are never negative");
    if days <= 0 { 0 } else { committed_fen / days }
}

/// The day `available_fen` runs out at `burn_rate_fen` a day, counted from `as_of`:
/// `as_of` plus ceil(available / burn rate) days. `None` when the burn rate is zero (or the day
/// lies beyond the calendar).
pub fn exhaustion_date(
    as_of: NaiveDate,
    available_fen: i64,
    burn_rate_fen: i64,
) -> Option<NaiveDate> {
    if burn_rate_fen <= 0 {
        return None;
    }
    let available_fen = available_fen.max(0);
    let days = (available_fen + burn_rate_fen - 1) / burn_rate_fen;
    as_of.checked_add_days(Days::new(u64::try_from(days).ok()?))
}

/// Where the median of `count` sorted values lies, counting from 0: the lower middle
/// ((count - 1) / 2), so that the median is always one of the values. `None` without values.
pub fn median_offset(count: i64) -> Option<i64> {
    (count > 0).then(|| (count - 1) / 2)
}

/// `volume_fen` per fen of `subsidy_fen`, rounded down to two decimal places; `None` when the
/// subsidy is zero. Computed in integers (hundredths), so the rounding is exact.
pub fn multiplier(volume_fen: i64, subsidy_fen: i64) -> Option<Decimal> {
    if subsidy_fen <= 0 {
        return None;
    }
    let hundredths = i128::from(volume_fen.max(0)) * 100 / i128::from(subsidy_fen);
    Some(Decimal::from_i128_with_scale(hundredths, 2))
}

/// The city of a 6-digit division code: its first four digits followed by `00`; `None` when
/// the code is not six digits.
pub fn city_of_division(code: &str) -> Option<String> {
    (code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()))
        .then(|| format!("{}00", &code[..4]))
}

/// The city of an enterprise's registration, from its USCC: characters 3 to 8 are the
/// registration division code.
pub fn city_of_uscc(uscc: &str) -> Option<String> {
    city_of_division(uscc.get(2..8)?)
}

/// A funded compute contract: a claim now APPROVED or DISBURSED, as the multiplier counts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FundedContract {
    /// The buyer's USCC.
    pub buyer_uscc: String,
    /// The seller's USCC.
    pub seller_uscc: String,
    /// The seller's name on the contract.
    pub seller_name: String,
    /// The contract's data-center division code.
    pub data_center_division_code: String,
    /// The contract's total, fen.
    pub contract_total_fen: i64,
    /// The claim's approved amount, fen.
    pub approved_fen: i64,
}

/// Contract volume and subsidy of a set of funded claims.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Volume {
    /// Funded claims.
    pub claim_count: i64,
    /// Sum of their contract totals, fen.
    pub contract_volume_fen: i64,
    /// Sum of their approved amounts, fen.
    pub subsidy_fen: i64,
}

impl Volume {
    fn add(&mut self, contract: &FundedContract) {
        self.claim_count += 1;
        self.contract_volume_fen += contract.contract_total_fen;
        self.subsidy_fen += contract.approved_fen;
    }

    /// The multiplier of this volume.
    pub fn multiplier(&self) -> Option<Decimal> {
        multiplier(self.contract_volume_fen, self.subsidy_fen)
    }
}

/// One group of the multiplier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// The division code of a city, or a seller's USCC.
    pub key: String,
    /// The seller's name (providers only; empty for cities).
    pub name: String,
    /// The group's volume.
    pub volume: Volume,
}

/// The multiplier, overall and by group (each list ordered by contract volume, largest first,
/// then by key, and cut at [`MULTIPLIER_GROUPS_MAX`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Multiplier {
    /// All funded claims.
    pub overall: Volume,
    /// By the buyer's city.
    pub by_buyer_city: Vec<Group>,
    /// By compute provider (seller).
    pub by_compute_provider: Vec<Group>,
    /// By the data center's city.
    pub by_data_center_city: Vec<Group>,
    /// Groups left out of the lists by their limit.
    pub omitted_group_count: i64,
}

/// Adds up funded contracts, one at a time, into the multiplier's groups.
#[derive(Debug, Default)]
pub struct MultiplierTally {
    overall: Volume,
    buyer_cities: BTreeMap<String, Volume>,
    /// By seller USCC: the volume and the seller name of the latest contract added.
    providers: BTreeMap<String, (Volume, String)>,
    data_center_cities: BTreeMap<String, Volume>,
}

impl MultiplierTally {
    /// Counts `contract`; contracts are added in submission order, so a seller's name is the
    /// one on its latest submitted contract. A code that is not a division code (never the
    /// case for a validated claim) groups under itself.
    pub fn add(&mut self, contract: &FundedContract) {
        self.overall.add(contract);
        let buyer_city =
            city_of_uscc(&contract.buyer_uscc).unwrap_or_else(|| contract.buyer_uscc.clone());
        self.buyer_cities
            .entry(buyer_city)
            .or_default()
            .add(contract);
        let provider = self
            .providers
            .entry(contract.seller_uscc.clone())
            .or_default();
        provider.0.add(contract);
        provider.1.clone_from(&contract.seller_name);
        let data_center_city = city_of_division(&contract.data_center_division_code)
            .unwrap_or_else(|| contract.data_center_division_code.clone());
        self.data_center_cities
            .entry(data_center_city)
            .or_default()
            .add(contract);
    }

    /// The multiplier of what was added.
    pub fn finish(self) -> Multiplier {
        let mut omitted = 0;
        let cities = |groups: BTreeMap<String, Volume>| {
            groups
                .into_iter()
                .map(|(key, volume)| Group {
                    key,
                    name: String::new(),
                    volume,
                })
                .collect::<Vec<_>>()
        };
        let providers = self
            .providers
            .into_iter()
            .map(|(key, (volume, name))| Group { key, name, volume })
            .collect();
        Multiplier {
            overall: self.overall,
            by_buyer_city: largest_first(cities(self.buyer_cities), &mut omitted),
            by_compute_provider: largest_first(providers, &mut omitted),
            by_data_center_city: largest_first(cities(self.data_center_cities), &mut omitted),
            omitted_group_count: omitted,
        }
    }
}

/// `groups` by contract volume, largest first, then by key, cut at [`MULTIPLIER_GROUPS_MAX`]
/// (the groups cut are added to `omitted`).
fn largest_first(mut groups: Vec<Group>, omitted: &mut i64) -> Vec<Group> {
    groups.sort_by(|a, b| {
        b.volume
            .contract_volume_fen
            .cmp(&a.volume.contract_volume_fen)
            .then_with(|| a.key.cmp(&b.key))
    });
    if groups.len() > MULTIPLIER_GROUPS_MAX {
        *omitted += (groups.len() - MULTIPLIER_GROUPS_MAX) as i64;
        groups.truncate(MULTIPLIER_GROUPS_MAX);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    #[test]
    fn a_period_covers_whole_shanghai_days() {
        // Proves the window starts at 16:00 UTC the day before the first day and ends at the
        // same hour of the last day (exclusive).
        let period = Period::new(day("2025-01-02"), day("2025-01-02")).unwrap();
        assert_eq!(
            period.window_us(),
            (1_735_747_200_000_000, 1_735_833_600_000_000)
        );
        assert_eq!(
            Period::new(day("2025-01-02"), day("2025-01-01")),
            Err(PeriodProblem::Reversed)
        );
        assert_eq!(
            Period::new(day("2020-01-01"), day("2030-01-08")),
            Err(PeriodProblem::TooLong)
        );
    }

    #[test]
    fn the_burn_rate_counts_the_days_up_to_today_and_rounds_down() {
        // Proves days are clipped at as-of, a future period has none, and fen round down.
        let period = Period::new(day("2025-03-01"), day("2025-03-31")).unwrap();
        assert_eq!(period.days_elapsed(day("2025-03-10")), 10);
        assert_eq!(period.days_elapsed(day("2025-04-10")), 31);
        assert_eq!(period.days_elapsed(day("2025-02-10")), 0);
        assert_eq!(burn_rate_fen(1_000, 3), 333);
        assert_eq!(burn_rate_fen(1_000, 0), 0);
    }

    #[test]
    fn a_pool_runs_out_after_the_days_its_money_lasts_rounded_up() {
        // Proves ceil(available / rate) days from as-of, as-of when nothing is left, none
        // without a burn rate.
        let today = day("2025-03-10");
        assert_eq!(exhaustion_date(today, 1_000, 333), Some(day("2025-03-14")));
        assert_eq!(exhaustion_date(today, 999, 333), Some(day("2025-03-13")));
        assert_eq!(exhaustion_date(today, 0, 333), Some(today));
        assert_eq!(exhaustion_date(today, 1_000, 0), None);
    }

    #[test]
    fn the_median_of_an_even_count_is_the_lower_middle() {
        // Proves the offsets of the median for odd and even counts.
        assert_eq!(median_offset(0), None);
        assert_eq!(median_offset(1), Some(0));
        assert_eq!(median_offset(4), Some(1));
        assert_eq!(median_offset(5), Some(2));
    }

    #[test]
    fn the_multiplier_rounds_down_to_two_places() {
        // Proves 2/3 is 0.66 (not 0.67), exact ratios keep two places, no subsidy gives none.
        assert_eq!(multiplier(2, 3).unwrap().to_string(), "0.66");
        assert_eq!(
            multiplier(100_000_000, 5_000_000).unwrap().to_string(),
            "20.00"
        );
        assert_eq!(multiplier(100, 0), None);
    }

    #[test]
    fn funded_contracts_group_by_city_and_provider_largest_first() {
        // Proves the cities of a USCC and of a data center, the provider's latest name, and
        // the order of the groups.
        let contract =
            |buyer: &str, seller: &str, name: &str, dc: &str, total: i64| FundedContract {
                buyer_uscc: buyer.into(),
                seller_uscc: seller.into(),
                seller_name: name.into(),
                data_center_division_code: dc.into(),
                contract_total_fen: total,
                approved_fen: total / 20,
            };
        let mut tally = MultiplierTally::default();
        tally.add(&contract(
            "91370102MA0000001X",
            "S1",
            "Old",
            "370102",
            1_000,
        ));
        tally.add(&contract(
            "91110105MA0000002X",
            "S1",
            "New",
            "370211",
            3_000,
        ));
        tally.add(&contract(
            "91370100MA0000003X",
            "S2",
            "Two",
            "370103",
            2_000,
        ));
        let multiplier = tally.finish();
        assert_eq!(multiplier.overall.contract_volume_fen, 6_000);
        assert_eq!(multiplier.overall.subsidy_fen, 300);
        let keys = |groups: &[Group]| groups.iter().map(|g| g.key.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&multiplier.by_buyer_city), ["110100", "370100"]);
        assert_eq!(keys(&multiplier.by_compute_provider), ["S1", "S2"]);
        assert_eq!(multiplier.by_compute_provider[0].name, "New");
        assert_eq!(keys(&multiplier.by_data_center_city), ["370100", "370200"]);
        assert_eq!(
            multiplier.by_data_center_city[0].volume.contract_volume_fen,
            3_000
        );
        assert_eq!(multiplier.omitted_group_count, 0);
    }
}
