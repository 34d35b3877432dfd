//! The filters and choices of the publicity RPCs at the edge: which notices a list shows (kind
//! and state), which objections, and a reviewer's decision.

use subsidy_common::edge::Violations;
use subsidy_proto::application as pb;

use super::fields::required_enum;
use crate::domain::publicity::ObjectionState;
use crate::storage::{NoticeFilter, NoticeKind};

/// The kind and state filters of `ListPublicNotices` (the time they judge by is set when the
/// list is read). `None` only after recording a violation.
pub(super) fn notice_filter(
    v: &mut Violations,
    r: &pb::ListPublicNoticesRequest,
) -> Option<NoticeFilter> {
    let kind = v.enum_value(
        "application_kind",
        r.application_kind,
        pb::ApplicationKind::Unspecified,
        |kind| match kind {
            pb::ApplicationKind::ComputeVoucherClaim => Some(NoticeKind::Claim),
            pb::ApplicationKind::DataInfrastructureProposal => Some(NoticeKind::Proposal),
            pb::ApplicationKind::Unspecified => None,
        },
    );
    let state = v.enum_value(
        "state",
        r.state,
        pb::PublicNoticeState::Unspecified,
        |state| (state != pb::PublicNoticeState::Unspecified).then_some(state),
    );
    let state = state?.flatten();
    Some(NoticeFilter {
        kind: kind?.flatten(),
        published: state == Some(pb::PublicNoticeState::Published),
        ended: state == Some(pb::PublicNoticeState::Ended),
        revoked: state == Some(pb::PublicNoticeState::Revoked),
        now_us: 0,
    })
}

/// The state filter of `ListObjections`: `Some(None)` for every state. `None` only after
/// recording a violation.
pub(super) fn objection_state(v: &mut Violations, value: i32) -> Option<Option<ObjectionState>> {
    let state = v.enum_value(
        "state",
        value,
        pb::ObjectionState::Unspecified,
        |state| match state {
            pb::ObjectionState::Open => Some(ObjectionState::Open),
            pb::ObjectionState::Upheld => Some(ObjectionState::Upheld),
            pb::ObjectionState::Dismissed => Some(ObjectionState::Dismissed),
            pb::ObjectionState::Unspecified => None,
        },
    );
    Some(state?.flatten())
}

/// Whether a `DecideObjection` upholds (`true`) or dismisses the objection. `None` only after
/// recording a violation.
pub(super) fn uphold(v: &mut Violations, value: i32) -> Option<bool> {
    required_enum(
        v,
        "decision",
        value,
        pb::ObjectionDecision::Unspecified,
        |decision| match decision {
            pb::ObjectionDecision::Uphold => Some(true),
            pb::ObjectionDecision::Dismiss => Some(false),
            pb::ObjectionDecision::Unspecified => None,
        },
        "decisions UPHOLD and DISMISS",
    )
}
