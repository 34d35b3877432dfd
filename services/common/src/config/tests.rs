use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A section like a service's, for the loader's tests.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Sample {
    interval_ms: u64,
    #[serde(deserialize_with = "comma_list::u64s")]
    schedule_ms: Vec<u64>,
    allow: bool,
    name: String,
}

impl Default for Sample {
    fn default() -> Self {
        Sample {
            interval_ms: 5,
            schedule_ms: vec![0, 1],
            allow: false,
            name: "x".into(),
        }
    }
}

impl Section for Sample {
    const KEY: &'static str = "budget";
    const SETTINGS: &'static [Setting] = &[
        Setting::scalar("budget.interval_ms", &["SAMPLE_INTERVAL_MS"], "interval"),
        Setting::scalar("budget.schedule_ms", &["SAMPLE_SCHEDULE_MS"], "schedule").list(),
        Setting::scalar("budget.allow", &["SAMPLE_ALLOW"], "allow"),
        Setting::text("budget.name", &["SAMPLE_NAME"], "name"),
    ];

    fn validate(&self) -> Result<(), ConfigError> {
        check_range("budget.interval_ms", self.interval_ms, 1, 100)
    }
}

#[test]
fn defaults_give_the_service_port_and_an_embedded_database() {
    let config = Config::load(ServiceKind::Budget, None, &env(&[])).unwrap();
    assert_eq!(config.listen, "0.0.0.0:50053");
    assert_eq!(config.database.url, "sqlite:data/budget.db");
}

#[test]
fn environment_overrides_and_bad_values_are_refused_with_the_key() {
    let config = Config::load(
        ServiceKind::Rules,
        None,
        &env(&[("DATABASE_URL", "postgres://x/y")]),
    )
    .unwrap();
    assert_eq!(config.database.url, "postgres://x/y");
    let error = Config::load(
        ServiceKind::Rules,
        None,
        &env(&[("SUBSIDY_DATABASE_URL", "mysql://x")]),
    )
    .unwrap_err();
    assert!(
        matches!(
            error,
            ConfigError::Invalid {
                key: "database.url",
                ..
            }
        ),
        "{error}"
    );
    let error = Config::load(
        ServiceKind::Rules,
        None,
        &env(&[("SUBSIDY_REQUEST_TIMEOUT_MS", "ten")]),
    )
    .unwrap_err();
    assert!(matches!(
        error,
        ConfigError::Invalid {
            key: "SUBSIDY_REQUEST_TIMEOUT_MS",
            ..
        }
    ));
    let error = Config::load(
        ServiceKind::Rules,
        None,
        &env(&[("SUBSIDY_LISTEN", "nowhere")]),
    )
    .unwrap_err();
    assert!(matches!(error, ConfigError::Invalid { key: "listen", .. }));
}

#[test]
fn the_first_environment_variable_of_a_key_wins() {
    // Proves SUBSIDY_DATABASE_URL takes precedence over DATABASE_URL.
    let config = Config::load(
        ServiceKind::Rules,
        None,
        &env(&[
            ("DATABASE_URL", "postgres://x/generic"),
            ("SUBSIDY_DATABASE_URL", "postgres://x/specific"),
        ]),
    )
    .unwrap();
    assert_eq!(config.database.url, "postgres://x/specific");
}

#[test]
fn a_section_is_layered_from_defaults_file_and_environment() {
    // Proves a service section takes its defaults, then the file's table, then the
    // environment; a list may be comma-separated; bad values name the variable or key.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[budget]\ninterval_ms = 7\nname = \"file\"\n").unwrap();
    let config = Config::load(ServiceKind::Budget, Some(&path), &env(&[])).unwrap();
    let sample: Sample = config.section().unwrap();
    assert_eq!((sample.interval_ms, sample.name.as_str()), (7, "file"));
    assert_eq!(sample.schedule_ms, vec![0, 1]);
    let config = Config::load(
        ServiceKind::Budget,
        Some(&path),
        &env(&[
            ("SAMPLE_INTERVAL_MS", "9"),
            ("SAMPLE_SCHEDULE_MS", "0, 100,200"),
            ("SAMPLE_ALLOW", "true"),
            ("SAMPLE_NAME", "123"),
        ]),
    )
    .unwrap();
    let sample: Sample = config.section().unwrap();
    assert_eq!(sample.interval_ms, 9);
    assert_eq!(sample.schedule_ms, vec![0, 100, 200]);
    assert!(sample.allow);
    assert_eq!(sample.name, "123");
    for (key, value, reported) in [
        ("SAMPLE_SCHEDULE_MS", "0,soon", "SAMPLE_SCHEDULE_MS"),
        ("SAMPLE_ALLOW", "yes", "SAMPLE_ALLOW"),
        ("SAMPLE_INTERVAL_MS", "1000", "budget.interval_ms"),
    ] {
        let config = Config::load(ServiceKind::Budget, None, &env(&[(key, value)])).unwrap();
        let error = config.section::<Sample>().unwrap_err();
        assert!(
            matches!(&error, ConfigError::Invalid { key, .. } if *key == reported),
            "{error}"
        );
    }
    std::fs::write(&path, "[budget]\ninterval_ms = 7\nintervl = 3\n").unwrap();
    let config = Config::load(ServiceKind::Budget, Some(&path), &env(&[])).unwrap();
    let error = config.section::<Sample>().unwrap_err();
    assert!(matches!(error, ConfigError::Parse { .. }), "{error}");
}

#[test]
fn a_section_set_in_code_replaces_the_layers() {
    // Proves set_section and tweak_section give back what was set, validated.
    let mut config = Config::load(ServiceKind::Budget, None, &env(&[])).unwrap();
    config.tweak_section(|s: &mut Sample| s.interval_ms = 42);
    assert_eq!(config.section::<Sample>().unwrap().interval_ms, 42);
    config.tweak_section(|s: &mut Sample| s.interval_ms = 0);
    assert!(config.section::<Sample>().is_err());
}

#[test]
fn unknown_keys_in_the_file_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "listen = \"127.0.0.1:1\"\nlisten_port = 3\n").unwrap();
    let error = Config::load(ServiceKind::Budget, Some(&path), &env(&[])).unwrap_err();
    assert!(matches!(error, ConfigError::Parse { .. }), "{error}");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:1\"\n[server]\nrequest_timeout_ms = 2000\n",
    )
    .unwrap();
    let config = Config::load(ServiceKind::Budget, Some(&path), &env(&[])).unwrap();
    assert_eq!(config.server.request_timeout_ms, 2000);
    std::fs::write(&path, "[sever]\nrequest_timeout_ms = 2000\n").unwrap();
    let error = Config::load(ServiceKind::Budget, Some(&path), &env(&[])).unwrap_err();
    assert!(matches!(error, ConfigError::Parse { .. }), "{error}");
}

#[test]
fn the_table_renders_defaults_from_the_code() {
    // Proves the README rows take their defaults from the serialized defaults.
    let rows = table_rows(SHARED_SETTINGS, &shared_defaults());
    let row = |key: &str| {
        rows.iter()
            .find(|r| r.key == format!("`{key}`"))
            .unwrap()
            .clone()
    };
    assert_eq!(row("server.request_timeout_ms").default, "10000");
    assert_eq!(row("telemetry.otlp_endpoint").default, "unset");
    assert_eq!(row("listen").default, "`0.0.0.0:<service port>`");
    let rows = table_rows(Sample::SETTINGS, &section_defaults::<Sample>());
    assert_eq!(rows[1].default, "0, 1");
}
