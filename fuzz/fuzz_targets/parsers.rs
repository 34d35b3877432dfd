//! Arbitrary text through every parser of people's input: USCC codes, amounts in CNY (as text
//! and as `google.type.Money`), `subsidyctl` claim files (YAML) and service configuration
//! files (TOML). The first byte picks the parser.
//!
//! Fails on a panic, and when what a parser accepts does not survive its own round trip (an
//! amount or a code that prints as something else than it parsed).
#![no_main]

use std::collections::HashMap;
use std::io::Write;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use subsidy_common::config::{Config, ServiceKind};
use subsidy_common::{Money, Uscc};
use subsidy_proto::google::r#type::Money as ProtoMoney;

/// An empty directory: the base of a claim file's attachment paths.
static EMPTY: LazyLock<tempfile::TempDir> =
    LazyLock::new(|| tempfile::tempdir().expect("a temporary directory"));

fn uscc(text: &str) {
    if let Ok(code) = Uscc::parse(text) {
        let again = Uscc::parse(code.as_str()).expect("a parsed code parses again");
        assert_eq!(again, code);
        assert_eq!(code.as_str().len(), 18);
    }
}

fn amount(text: &str) {
    if let Ok(money) = text.parse::<Money>() {
        assert!(money.fen() >= 0);
        let printed: Money = money.to_string().parse().expect("a printed amount parses");
        assert_eq!(printed, money);
        assert_eq!(Money::from_fen(money.fen()).expect("its fen"), money);
        assert_eq!(
            Money::from_proto(&money.to_proto()).expect("its proto"),
            money
        );
    }
}

fn proto_amount(bytes: &[u8]) {
    let mut units = [0u8; 8];
    let mut nanos = [0u8; 4];
    for (i, byte) in bytes.iter().take(12).enumerate() {
        if i < 8 {
            units[i] = *byte;
        } else {
            nanos[i - 8] = *byte;
        }
    }
    let currency = String::from_utf8_lossy(bytes.get(12..).unwrap_or_default()).into_owned();
    let value = ProtoMoney {
        currency_code: currency,
        units: i64::from_le_bytes(units),
        nanos: i32::from_le_bytes(nanos),
    };
    if let Ok(money) = Money::from_proto(&value) {
        assert_eq!(
            money.to_proto(),
            value,
            "an accepted amount is already canonical"
        );
    }
}

fn claim_file(text: &str) {
    let _ = subsidy::ctl::application::parse_claim_file(text, EMPTY.path());
}

fn config_file(text: &str) {
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("a temporary file");
    file.write_all(text.as_bytes()).expect("write");
    let env = HashMap::new();
    for kind in ServiceKind::ALL {
        let Ok(config) = Config::load(kind, Some(file.path()), &env) else {
            continue;
        };
        // Each service reads its own section the same way.
        let _ = match kind {
            ServiceKind::Budget => config
                .section::<subsidy_budget::settings::Settings>()
                .map(drop),
            ServiceKind::Rules => config
                .section::<subsidy_rules::settings::Settings>()
                .map(drop),
            ServiceKind::Notification => config
                .section::<subsidy_notification::settings::Settings>()
                .map(drop),
            ServiceKind::Application => config
                .section::<subsidy_application::settings::Settings>()
                .map(drop),
        };
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    if pick % 5 == 2 {
        proto_amount(rest);
        return;
    }
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match pick % 5 {
        0 => uscc(text),
        1 => amount(text),
        3 => claim_file(text),
        _ => config_file(text),
    }
});
