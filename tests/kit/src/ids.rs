//! Valid USCCs (with their check character) for test enterprises.

use subsidy_common::Uscc;

/// The `n`-th test enterprise registered in Shandong (Jinan, division 370100). Named here, it
/// is bound to the kit's operator token (see `auth`).
pub fn shandong(n: usize) -> Uscc {
    named(subsidy_common::uscc::complete(&format!("91370100MA{n:07}")))
}

/// The `n`-th test enterprise registered in Beijing (division 110100); bound to the operator
/// token too.
pub fn beijing(n: usize) -> Uscc {
    named(subsidy_common::uscc::complete(&format!("91110100MA{n:07}")))
}

fn named(uscc: Uscc) -> Uscc {
    crate::auth::named(uscc.as_str());
    uscc
}

/// The `n`-th test seller of compute (Qingdao, division 370200).
pub fn seller(n: usize) -> Uscc {
    subsidy_common::uscc::complete(&format!("91370200MB{n:07}"))
}
