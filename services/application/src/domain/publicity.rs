//! Publicity (公示) of awards, pure: an approved claim or awarded proposal is published with a
//! period the rules service counts in working days; during it anyone authenticated may object,
//! a reviewer upholds or dismisses each objection, and the award is paid only once the period
//! has ended with no objection open. An upheld objection revokes the award (its committed money
//! returns to the pool).
//!
//! The notice's period end is `None` until the rules service has answered (the notice is
//! recorded in the approval's transaction, the period asked for after it): such a notice is
//! still open, so nothing is paid on a period nobody has counted yet.

/// Longest objection grounds or decision reasons, in characters.
pub const OBJECTION_TEXT_CHARS_MAX: usize = 2_000;

/// Why an award may not be paid yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaymentHold {
    /// The publicity period has not ended (its end in µs, `None` while not yet counted).
    PeriodOpen {
        /// When the period ends, µs since the epoch.
        end_us: Option<i64>,
    },
    /// An objection awaits a reviewer's decision.
    ObjectionOpen {
        /// When the period ends, µs since the epoch.
        end_us: Option<i64>,
    },
}

impl PaymentHold {
    /// The stable reason code of the refusal.
    pub fn reason(self) -> &'static str {
        match self {
            PaymentHold::PeriodOpen { .. } => "PUBLICITY_PERIOD_OPEN",
            PaymentHold::ObjectionOpen { .. } => "OBJECTION_OPEN",
        }
    }
}

/// The state of an objection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectionState {
    /// Filed, awaiting a reviewer.
    Open,
    /// Upheld: the award is revoked.
    Upheld,
    /// Dismissed: the award stands.
    Dismissed,
}

impl ObjectionState {
    /// Every state.
    pub const ALL: [ObjectionState; 3] = [Self::Open, Self::Upheld, Self::Dismissed];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "OPEN",
            Self::Upheld => "UPHELD",
            Self::Dismissed => "DISMISSED",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// A notice as far as these decisions need it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoticeWindow {
    /// When the period ends (exclusive), µs; `None` until counted.
    pub end_us: Option<i64>,
    /// How many of its objections are open.
    pub open_objections: u32,
    /// Whether the award was revoked.
    pub revoked: bool,
}

impl NoticeWindow {
    /// Whether the period is still running at `now_us`.
    pub fn period_open(&self, now_us: i64) -> bool {
        self.end_us.is_none_or(|end| now_us < end)
    }

    /// Whether an objection may be filed at `now_us`: during the period of an award that
    /// stands.
    pub fn accepts_objections(&self, now_us: i64) -> bool {
        !self.revoked && self.period_open(now_us)
    }

    /// Whether the award may be paid at `now_us`: the period has ended and no objection is
    /// open. (An open objection is reported first: it holds the payment even after the
    /// period.)
    pub fn payment(&self, now_us: i64) -> Result<(), PaymentHold> {
        if self.open_objections > 0 {
            return Err(PaymentHold::ObjectionOpen {
                end_us: self.end_us,
            });
        }
        if self.period_open(now_us) {
            return Err(PaymentHold::PeriodOpen {
                end_us: self.end_us,
            });
        }
        Ok(())
    }
}

/// Whether an objection in `state` may be decided (only an open one is).
pub fn can_decide(state: ObjectionState) -> bool {
    state == ObjectionState::Open
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(end_us: Option<i64>, open_objections: u32) -> NoticeWindow {
        NoticeWindow {
            end_us,
            open_objections,
            revoked: false,
        }
    }

    #[test]
    fn an_award_is_paid_only_after_its_period_with_no_objection_open() {
        // Proves the payment gate: before the end, PERIOD_OPEN; at the end, paid; an open
        // objection holds it before and after the end; an uncounted period holds it.
        let notice = window(Some(1_000), 0);
        assert_eq!(
            notice.payment(999),
            Err(PaymentHold::PeriodOpen {
                end_us: Some(1_000)
            })
        );
        assert_eq!(notice.payment(1_000), Ok(()));
        let objected = window(Some(1_000), 1);
        assert_eq!(
            objected.payment(2_000).unwrap_err().reason(),
            "OBJECTION_OPEN"
        );
        assert_eq!(objected.payment(10).unwrap_err().reason(), "OBJECTION_OPEN");
        assert_eq!(
            window(None, 0).payment(i64::MAX).unwrap_err().reason(),
            "PUBLICITY_PERIOD_OPEN"
        );
    }

    #[test]
    fn objections_are_accepted_only_during_the_period_of_a_standing_award() {
        // Proves the objection window ends with the period (exclusive) and a revoked award
        // takes no more objections.
        let notice = window(Some(1_000), 0);
        assert!(notice.accepts_objections(999));
        assert!(!notice.accepts_objections(1_000));
        assert!(window(None, 0).accepts_objections(5));
        let revoked = NoticeWindow {
            revoked: true,
            ..notice
        };
        assert!(!revoked.accepts_objections(0));
    }

    #[test]
    fn only_an_open_objection_is_decided_and_states_read_back() {
        // Proves a decided objection is final and every stored name parses back.
        assert!(can_decide(ObjectionState::Open));
        assert!(!can_decide(ObjectionState::Upheld) && !can_decide(ObjectionState::Dismissed));
        for state in ObjectionState::ALL {
            assert_eq!(ObjectionState::parse(state.as_str()), Some(state));
        }
    }
}
