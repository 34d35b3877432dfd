//! The README's configuration table is the code's: generated from the settings declarations.

use std::collections::BTreeSet;

use subsidy_common::config::{SHARED_SETTINGS, Section, section_defaults, shared_defaults};

const BEGIN: &str = "<!-- settings:begin";
const END: &str = "<!-- settings:end -->";

fn readme_table() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("read README.md");
    let start = readme
        .find(BEGIN)
        .expect("README has the settings:begin marker");
    let start = start + readme[start..].find('\n').expect("a line after the marker") + 1;
    let end = readme
        .find(END)
        .expect("README has the settings:end marker");
    readme[start..end].to_owned()
}

#[test]
fn the_readme_configuration_table_is_generated_from_the_settings() {
    // Proves the README shows every key with the default the code has; regenerate it with
    // `cargo run -p subsidy --bin subsidy -- settings` when this fails.
    assert_eq!(
        readme_table(),
        subsidy::launch::settings_table(),
        "README.md's configuration table differs from `subsidy settings`"
    );
}

fn leaf_keys(value: &figment::value::Value, prefix: &str, out: &mut BTreeSet<String>) {
    match value {
        figment::value::Value::Dict(_, dict) => {
            for (key, inner) in dict {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                leaf_keys(inner, &path, out);
            }
        }
        _ => {
            out.insert(prefix.to_owned());
        }
    }
}

fn assert_documented<S: Section>() {
    let mut keys = BTreeSet::new();
    leaf_keys(&section_defaults::<S>(), "", &mut keys);
    let documented: BTreeSet<String> = S::SETTINGS.iter().map(|s| s.key.to_owned()).collect();
    assert_eq!(keys, documented, "section [{}]", S::KEY);
}

#[test]
fn every_setting_of_every_section_is_documented() {
    // Proves no key can be added to a section without its line in the table.
    assert_documented::<subsidy_application::settings::Settings>();
    assert_documented::<subsidy_rules::settings::Settings>();
    assert_documented::<subsidy_budget::settings::Settings>();
    assert_documented::<subsidy_notification::settings::Settings>();
    let mut keys = BTreeSet::new();
    leaf_keys(&shared_defaults(), "", &mut keys);
    keys.insert("listen".into());
    keys.insert("telemetry.otlp_endpoint".into());
    let documented: BTreeSet<String> = SHARED_SETTINGS.iter().map(|s| s.key.to_owned()).collect();
    assert_eq!(keys, documented);
}
