//! What a replay of a stored decision evaluates and what it gives: the stored inputs as the
//! domain reads them, and the result. Pure types; the use case is `ops::decisions::replay`.

use subsidy_common::Money;

use super::compute_voucher::Claim;
use super::data_infra::Proposal;
use super::decision::Decision;
use super::graph::EngineFailure;
use super::ranking::{Candidate, RoundResult};
use super::registry::RegistryAnswer;

/// The inputs of a stored decision, as the domain evaluates them.
#[derive(Clone, Debug)]
pub enum Inputs {
    /// A compute-voucher claim and what the denylist said about its buyer then.
    ComputeVoucher {
        /// The claim.
        claim: Claim,
        /// The denylist's answer when the decision was made.
        buyer_on_denylist: bool,
        /// The provider registry's answer when the decision was made, if it was consulted.
        provider_registry: Option<RegistryAnswer>,
    },
    /// A data-infrastructure proposal.
    DataInfra(Proposal),
    /// A selection round.
    SelectionRound {
        /// What the pool had available.
        pool: Money,
        /// The candidates.
        candidates: Vec<Candidate>,
    },
}

/// The result of a replay.
#[derive(Clone, Debug)]
pub enum Replayed {
    /// An evaluation's decision, with its trace.
    Decision(Decision),
    /// A ranking's awards.
    Ranking(RoundResult),
    /// The engine failed on the stored inputs (the stored decision was answered, so this is a
    /// difference, not an error of the replay).
    EngineFailed(EngineFailure),
}
