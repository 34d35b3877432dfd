//! Wire money for tests, from integer fen or whole yuan.

use subsidy_common::Money;
use subsidy_proto::google::r#type::Money as ProtoMoney;

/// `fen` as wire money.
pub fn cny(fen: i64) -> Option<ProtoMoney> {
    Some(
        Money::from_fen(fen)
            .expect("test amounts are valid")
            .to_proto(),
    )
}

/// `n` whole yuan as wire money.
pub fn yuan(n: i64) -> Option<ProtoMoney> {
    cny(n * 100)
}

/// The fen of present wire money.
pub fn fen_of(money: &Option<ProtoMoney>) -> i64 {
    Money::from_proto(money.as_ref().expect("money present"))
        .expect("valid money")
        .fen()
}
