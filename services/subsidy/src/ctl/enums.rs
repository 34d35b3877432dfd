//! Enum arguments of the CLI, parsed from the proto's own enum names so that the CLI declares
//! no enum of its own: `--state pending-review` is `CLAIM_STATE_PENDING_REVIEW`. The accepted
//! values are listed in `--help` and in the error for a wrong one.

use clap::builder::{PossibleValue, TypedValueParser};
use subsidy_proto::application as apb;
use subsidy_proto::budget as bpb;
use subsidy_proto::notification as npb;
use subsidy_proto::rules as rpb;

/// A proto enum as the CLI sees it.
pub trait ProtoEnum: Copy + Clone + Send + Sync + 'static + TryFrom<i32> {
    /// The prefix every value name carries, e.g. `CLAIM_STATE_`.
    const PREFIX: &'static str;
    /// The proto name, e.g. `CLAIM_STATE_PENDING_REVIEW`.
    fn proto_name(self) -> &'static str;
    /// Whether this is the zero `…_UNSPECIFIED` value.
    fn is_unspecified(self) -> bool {
        self.proto_name().ends_with("_UNSPECIFIED")
    }
}

/// Largest enum number looked at when listing the values.
const ENUM_NUMBER_MAX: i32 = 256;

/// Every value of `E` but the unspecified one, in number order.
pub fn values<E: ProtoEnum>() -> Vec<E> {
    (0..=ENUM_NUMBER_MAX)
        .filter_map(|n| E::try_from(n).ok())
        .filter(|value| !value.is_unspecified())
        .collect()
}

/// The CLI name of a value: `CLAIM_STATE_PENDING_REVIEW` is `pending-review`.
pub fn arg_name<E: ProtoEnum>(value: E) -> String {
    value
        .proto_name()
        .strip_prefix(E::PREFIX)
        .unwrap_or(value.proto_name())
        .to_ascii_lowercase()
        .replace('_', "-")
}

/// Parses a CLI name (`pending-review`, `pending_review` or `PENDING_REVIEW`).
pub fn parse<E: ProtoEnum>(text: &str) -> Option<E> {
    let wanted = text.trim().to_ascii_lowercase().replace('_', "-");
    values::<E>()
        .into_iter()
        .find(|value| arg_name(*value) == wanted)
}

/// The clap value parser of `E`.
#[derive(Clone, Debug)]
pub struct Parser<E>(std::marker::PhantomData<E>);

/// The clap value parser of `E`, for `#[arg(value_parser = enums::parser::<E>())]`.
pub fn parser<E: ProtoEnum>() -> Parser<E> {
    Parser(std::marker::PhantomData)
}

impl<E: ProtoEnum> TypedValueParser for Parser<E> {
    type Value = E;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<E, clap::Error> {
        let text = value.to_string_lossy();
        parse::<E>(&text).ok_or_else(|| {
            let mut error = clap::Error::new(clap::error::ErrorKind::InvalidValue).with_cmd(cmd);
            use clap::error::{ContextKind, ContextValue};
            if let Some(arg) = arg {
                error.insert(
                    ContextKind::InvalidArg,
                    ContextValue::String(arg.to_string()),
                );
            }
            error.insert(
                ContextKind::InvalidValue,
                ContextValue::String(text.into_owned()),
            );
            error.insert(
                ContextKind::ValidValue,
                ContextValue::Strings(values::<E>().into_iter().map(arg_name).collect()),
            );
            error
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            values::<E>()
                .into_iter()
                .map(|value| PossibleValue::new(arg_name(value))),
        ))
    }
}

impl ProtoEnum for apb::ClaimState {
    const PREFIX: &'static str = "CLAIM_STATE_";
    fn proto_name(self) -> &'static str {
        self.as_str_name()
    }
}

impl ProtoEnum for apb::ProposalState {
    const PREFIX: &'static str = "PROPOSAL_STATE_";
    fn proto_name(self) -> &'static str {
        self.as_str_name()
    }
}

impl ProtoEnum for apb::ProposalCategory {
    const PREFIX: &'static str = "PROPOSAL_CATEGORY_";
    fn proto_name(self) -> &'static str {
        self.as_str_name()
    }
}

impl ProtoEnum for apb::SelectionRoundState {
    const PREFIX: &'static str = "SELECTION_ROUND_STATE_";
    fn proto_name(self) -> &'static str {
        self.as_str_name()
    }
}

impl ProtoEnum for apb::DocumentKind {
    const PREFIX: &'static str = "DOCUMENT_KIND_";
    fn proto_name(self) -> &'static str {
        self.as_str_name()
    }
}

impl ProtoEnum for apb::PublicNoticeState {
    const PREFIX: &'static str = "PUBLIC_NOTICE_STATE_";
    fn proto_name(self) -> &'static str {
        self.as_str_name()
    }
}

impl ProtoEnum for apb::ObjectionState {
    const PREFIX: &'static str = "OBJECTION_STATE_";
    fn proto_name(self) -> &'static str {
        self.as_str_name()
    }
}

impl ProtoEnum for apb::BenefitRating {
    const PREFIX: &'static str = "BENEFIT_RATING_";
    fn proto_name(self) -> &'static str {
        self.as_str_name()
    }
}

impl ProtoEnum for apb::ClaimRejectionReason {
    const PREFIX: &'static str = "CLAIM_REJECTION_REASON_";
    fn proto_name(self) -> &'static str {
        self.as_str_name()
    }
}

impl ProtoEnum for apb::ComputeType {
    const PREFIX: &'static str = "COMPUTE_TYPE_";
    fn proto_name(self) -> &'static str {
        self.as_str_name()
    }
}

impl ProtoEnum for bpb::ReservationState {
    const PREFIX: &'static str = "RESERVATION_STATE_";
    fn proto_name(self) -> &'static str {
        self.as_str_name()
    }
}

impl ProtoEnum for npb::Channel {
    const PREFIX: &'static str = "CHANNEL_";
    fn proto_name(self) -> &'static str {
        self.as_str_name()
    }
}

impl ProtoEnum for npb::DeliveryState {
    const PREFIX: &'static str = "DELIVERY_STATE_";
    fn proto_name(self) -> &'static str {
        self.as_str_name()
    }
}

impl ProtoEnum for npb::SubscriptionState {
    const PREFIX: &'static str = "SUBSCRIPTION_STATE_";
    fn proto_name(self) -> &'static str {
        self.as_str_name()
    }
}

impl ProtoEnum for npb::Program {
    const PREFIX: &'static str = "PROGRAM_";
    fn proto_name(self) -> &'static str {
        self.as_str_name()
    }
}

impl ProtoEnum for rpb::ProviderStatus {
    const PREFIX: &'static str = "PROVIDER_STATUS_";
    fn proto_name(self) -> &'static str {
        self.as_str_name()
    }
}

impl ProtoEnum for rpb::DataCenterStatus {
    const PREFIX: &'static str = "DATA_CENTER_STATUS_";
    fn proto_name(self) -> &'static str {
        self.as_str_name()
    }
}

impl ProtoEnum for rpb::Program {
    const PREFIX: &'static str = "PROGRAM_";
    fn proto_name(self) -> &'static str {
        self.as_str_name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_names_come_from_the_proto_names() {
        // Proves the CLI spelling is derived from the proto and parses back, in any case.
        assert_eq!(arg_name(apb::ClaimState::PendingReview), "pending-review");
        assert_eq!(
            parse::<apb::ClaimState>("PENDING_REVIEW"),
            Some(apb::ClaimState::PendingReview)
        );
        assert_eq!(
            parse::<apb::ComputeType>("ai_accelerator"),
            Some(apb::ComputeType::AiAccelerator)
        );
        assert_eq!(parse::<apb::ClaimState>("unspecified"), None);
        assert_eq!(parse::<apb::ClaimState>("pending"), None);
        assert!(!values::<npb::DeliveryState>().is_empty());
    }

    #[test]
    fn revoked_awards_and_publicity_states_parse() {
        // Proves the states the publicity feature added are accepted where states are parsed:
        // a revoked claim or proposal, a notice's and an objection's states.
        assert_eq!(
            parse::<apb::ClaimState>("revoked"),
            Some(apb::ClaimState::Revoked)
        );
        assert_eq!(
            parse::<apb::ProposalState>("REVOKED"),
            Some(apb::ProposalState::Revoked)
        );
        let notices: Vec<String> = values::<apb::PublicNoticeState>()
            .into_iter()
            .map(arg_name)
            .collect();
        assert_eq!(notices, ["published", "ended", "revoked"]);
        let objections: Vec<String> = values::<apb::ObjectionState>()
            .into_iter()
            .map(arg_name)
            .collect();
        assert_eq!(objections, ["open", "upheld", "dismissed"]);
    }

    #[test]
    fn rules_programs_are_named_by_their_policy_ids() {
        // Proves the rules programs' CLI names are the policy ids `compute-voucher` and
        // `data-infra`.
        let names: Vec<String> = values::<rpb::Program>().into_iter().map(arg_name).collect();
        assert_eq!(names, ["compute-voucher", "data-infra"]);
    }
}
