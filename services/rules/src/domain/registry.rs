//! The registry of compute providers (sellers of compute) and their data centers. A provider is
//! admitted on registration; each later status change takes effect on a day and is kept. The
//! status on a day is that of the last change effective on or before it, so a contract signed
//! before a suspension still counts. REVOKED is final.

use std::fmt;

use chrono::NaiveDate;
use subsidy_common::Uscc;

/// Longest provider or data-center name, in characters.
pub const NAME_CHARS_MAX: usize = 200;
/// Longest reason of a status change, in characters.
pub const REASON_CHARS_MAX: usize = 500;
/// Most data centers of one provider.
pub const DATA_CENTERS_MAX: usize = 100;
/// Most status changes answered with a provider (the latest ones).
pub const HISTORY_SHOWN_MAX: i64 = 1000;
/// Most decimal places of a capacity.
const CAPACITY_SCALE_MAX: usize = 3;
/// Most integer digits of a capacity (below 10,000,000 PFLOPS).
const CAPACITY_INTEGER_DIGITS_MAX: usize = 7;
/// The province's prefix of administrative division codes.
pub const SHANDONG_PREFIX: &str = "37";

/// A provider's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProviderStatus {
    /// Its contracts count.
    Admitted,
    /// Its contracts signed meanwhile do not count; may be readmitted.
    Suspended,
    /// Final.
    Revoked,
}

impl ProviderStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderStatus::Admitted => "ADMITTED",
            ProviderStatus::Suspended => "SUSPENDED",
            ProviderStatus::Revoked => "REVOKED",
        }
    }

    /// The status of a stored name.
    pub fn parse(text: &str) -> Option<ProviderStatus> {
        match text {
            "ADMITTED" => Some(ProviderStatus::Admitted),
            "SUSPENDED" => Some(ProviderStatus::Suspended),
            "REVOKED" => Some(ProviderStatus::Revoked),
            _ => None,
        }
    }
}

impl fmt::Display for ProviderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A data center's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataCenterStatus {
    /// Compute served from it counts.
    InService,
    /// Kept on record, never matched.
    Retired,
}

impl DataCenterStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DataCenterStatus::InService => "IN_SERVICE",
            DataCenterStatus::Retired => "RETIRED",
        }
    }

    /// The status of a stored name.
    pub fn parse(text: &str) -> Option<DataCenterStatus> {
        match text {
            "IN_SERVICE" => Some(DataCenterStatus::InService),
            "RETIRED" => Some(DataCenterStatus::Retired),
            _ => None,
        }
    }
}

/// A 6-digit administrative division code.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DivisionCode(String);

impl DivisionCode {
    /// `text` if it is exactly 6 ASCII digits.
    pub fn parse(text: &str) -> Option<DivisionCode> {
        (text.len() == 6 && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| DivisionCode(text.to_owned()))
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the location is in Shandong (`37xxxx`).
    pub fn in_shandong(&self) -> bool {
        self.0.starts_with(SHANDONG_PREFIX)
    }
}

/// An intelligent-compute capacity in PFLOPS: a positive decimal with at most 3 decimal places
/// below 10,000,000, kept as canonical text (never a float).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capacity(String);

impl Capacity {
    /// `text` (plain decimal notation) in canonical form, or `None` if it is not a capacity.
    pub fn parse(text: &str) -> Option<Capacity> {
        let (integer, fraction) = text.split_once('.').unwrap_or((text, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if integer.is_empty()
            || !digits(integer)
            || !digits(fraction)
            || (text.contains('.') && fraction.is_empty())
            || fraction.len() > CAPACITY_SCALE_MAX
        {
            return None;
        }
        let integer = integer.trim_start_matches('0');
        let fraction = fraction.trim_end_matches('0');
        if integer.len() > CAPACITY_INTEGER_DIGITS_MAX
            || (integer.is_empty() && fraction.is_empty())
        {
            return None;
        }
        let integer = if integer.is_empty() { "0" } else { integer };
        Some(Capacity(if fraction.is_empty() {
            integer.to_owned()
        } else {
            format!("{integer}.{fraction}")
        }))
    }

    /// The canonical text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A data center of a provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataCenter {
    /// Its name, unique within its provider.
    pub name: String,
    /// Where it is.
    pub division_code: DivisionCode,
    /// Its intelligent-compute capacity.
    pub capacity: Capacity,
    /// Its status.
    pub status: DataCenterStatus,
}

/// A provider to register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// The provider.
    pub uscc: Uscc,
    /// Its name.
    pub name: String,
    /// The day it is admitted from.
    pub effective_date: NaiveDate,
    /// Why.
    pub reason: String,
    /// Its data centers (1 to [`DATA_CENTERS_MAX`], names unique).
    pub data_centers: Vec<DataCenter>,
}

/// A provider as registered, with its current status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provider {
    /// The provider.
    pub uscc: Uscc,
    /// Its name.
    pub name: String,
    /// Its current status.
    pub status: ProviderStatus,
    /// The day the current status took effect.
    pub effective_date: NaiveDate,
    /// Why it has it.
    pub reason: String,
    /// Its data centers in registration order.
    pub data_centers: Vec<DataCenter>,
    /// When it was registered, µs.
    pub registered_us: i64,
    /// When its status last changed, µs.
    pub updated_us: i64,
}

/// A status change asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusUpdate {
    /// The provider.
    pub uscc: Uscc,
    /// The new status.
    pub status: ProviderStatus,
    /// From when.
    pub effective_date: NaiveDate,
    /// Why.
    pub reason: String,
}

/// One recorded status change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusChange {
    /// Its number for the provider, from 1.
    pub sequence: i64,
    /// The status from `effective_date`.
    pub status: ProviderStatus,
    /// The day it takes effect.
    pub effective_date: NaiveDate,
    /// Why.
    pub reason: String,
    /// Who.
    pub actor: String,
    /// When recorded, µs.
    pub recorded_us: i64,
}

/// Why a status change is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StatusRefusal {
    /// The provider has that status already, or is revoked (final).
    #[error("the provider's status is {current} and cannot change to {asked}")]
    Unchanged {
        /// The current status.
        current: ProviderStatus,
        /// The status asked for.
        asked: ProviderStatus,
    },
    /// The change would take effect before the current status did.
    #[error("the change takes effect before the current status did ({current_since})")]
    DateOutOfOrder {
        /// The day the current status took effect.
        current_since: NaiveDate,
    },
}

/// Whether `provider` may take `update`.
pub fn check_update(provider: &Provider, update: &StatusUpdate) -> Result<(), StatusRefusal> {
    if provider.status == ProviderStatus::Revoked || provider.status == update.status {
        return Err(StatusRefusal::Unchanged {
            current: provider.status,
            asked: update.status,
        });
    }
    if update.effective_date < provider.effective_date {
        return Err(StatusRefusal::DateOutOfOrder {
            current_since: provider.effective_date,
        });
    }
    Ok(())
}

/// What the registry says about a contract's seller and data center: the input of the policy's
/// registry check, stored with the decision so that a replay does not ask today's registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RegistryAnswer {
    /// The seller was an admitted provider on the signing date.
    pub seller_admitted: bool,
    /// The contract's division code is one of the seller's in-service Shandong data centers.
    pub data_center_registered: bool,
}

/// The status on `day` given the `changes` of a provider (any order): that of the last change
/// effective on or before it (the later recorded of two on one day); `None` before the first.
pub fn status_on(
    changes: &[(i64, ProviderStatus, NaiveDate)],
    day: NaiveDate,
) -> Option<ProviderStatus> {
    changes
        .iter()
        .filter(|(_, _, effective)| *effective <= day)
        .max_by_key(|(sequence, _, effective)| (*effective, *sequence))
        .map(|(_, status, _)| *status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    #[test]
    fn capacities_are_canonical_positive_decimals_with_at_most_three_places() {
        // Proves the capacity's parse: canonical form, refusals of zero, floats' notations and
        // excess precision.
        assert_eq!(Capacity::parse("0120.50").unwrap().as_str(), "120.5");
        assert_eq!(Capacity::parse("3").unwrap().as_str(), "3");
        assert_eq!(Capacity::parse("0.001").unwrap().as_str(), "0.001");
        for bad in [
            "", "0", "0.000", "1.", ".5", "1e3", "-1", "1.0001", "10000000", "1,5",
        ] {
            assert!(Capacity::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn the_status_on_a_day_is_that_of_the_last_change_effective_by_then() {
        // Proves status_on: before admission none; a suspension counts from its day; a
        // readmission on the same day as a suspension wins by sequence.
        let changes = [
            (1, ProviderStatus::Admitted, day("2025-01-01")),
            (2, ProviderStatus::Suspended, day("2025-06-01")),
            (3, ProviderStatus::Admitted, day("2025-09-01")),
        ];
        assert_eq!(status_on(&changes, day("2024-12-31")), None);
        assert_eq!(
            status_on(&changes, day("2025-05-31")),
            Some(ProviderStatus::Admitted)
        );
        assert_eq!(
            status_on(&changes, day("2025-06-01")),
            Some(ProviderStatus::Suspended)
        );
        assert_eq!(
            status_on(&changes, day("2025-09-02")),
            Some(ProviderStatus::Admitted)
        );
    }
}
