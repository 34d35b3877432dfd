//! The notification service's configuration section, `[notification]`: defaults, the
//! environment variables that override them, and validation with named bounds.

use serde::{Deserialize, Deserializer, Serialize};
use subsidy_common::config::{ConfigError, Section, Setting, check_range, comma_list};

use crate::domain::address::AllowList;
use crate::domain::subscription::MAX_IN_FLIGHT_MAX;

/// Default SMTP relay: a local relay without TLS.
pub const SMTP_URL_DEFAULT: &str = "smtp://127.0.0.1:25";
/// Default sender of every email.
pub const SMTP_FROM_DEFAULT: &str = "Shandong Subsidy Notifications <noreply@subsidy.invalid>";
/// Default time one SMTP conversation may take, in milliseconds.
pub const SMTP_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Default time a webhook endpoint has to answer, in milliseconds.
pub const WEBHOOK_TIMEOUT_MS_DEFAULT: u64 = 15_000;
/// Shortest SMTP or webhook timeout accepted, in milliseconds.
pub const ATTEMPT_TIMEOUT_MS_MIN: u64 = 100;
/// Longest SMTP or webhook timeout accepted, in milliseconds.
pub const ATTEMPT_TIMEOUT_MS_MAX: u64 = 600_000;
/// Default delays before each attempt of a delivery, in milliseconds: immediately, 5 s, 5 min,
/// 30 min, 2 h, 5 h, 10 h, 10 h. Its length is the number of attempts.
pub const RETRY_SCHEDULE_MS_DEFAULT: [u64; 8] = [
    0, 5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000,
];
/// Most attempts a retry schedule may have.
pub const RETRY_SCHEDULE_LEN_MAX: usize = 20;
/// Longest delay of one retry step, in milliseconds: 7 days.
pub const RETRY_DELAY_MS_MAX: u64 = 7 * 24 * 3_600_000;
/// Default jitter of each retry delay, in percent of the delay (either way).
pub const RETRY_JITTER_PERCENT_DEFAULT: u32 = 10;
/// Smallest jitter accepted, in percent (none).
pub const RETRY_JITTER_PERCENT_MIN: u32 = 0;
/// Largest jitter accepted, in percent.
pub const RETRY_JITTER_PERCENT_MAX: u32 = 50;
/// Default deliveries attempted at once per webhook subscription.
pub const MAX_IN_FLIGHT_DEFAULT: u32 = 8;
/// Smallest default of deliveries attempted at once per webhook subscription accepted (the
/// largest is the domain's [`MAX_IN_FLIGHT_MAX`]).
pub const MAX_IN_FLIGHT_DEFAULT_MIN: u32 = 1;
/// Default emails sent at once by one notification process.
pub const EMAIL_IN_FLIGHT_MAX_DEFAULT: u32 = 4;
/// Smallest number of emails sent at once accepted.
pub const EMAIL_IN_FLIGHT_MAX_MIN: u32 = 1;
/// Largest number of emails sent at once accepted.
pub const EMAIL_IN_FLIGHT_MAX_MAX: u32 = 1_000;
/// Default attempts (webhook and email together) made at once by one notification process.
pub const WORKER_CONCURRENCY_MAX_DEFAULT: u32 = 64;
/// Smallest number of attempts made at once accepted.
pub const WORKER_CONCURRENCY_MAX_MIN: u32 = 1;
/// Largest number of attempts made at once accepted.
pub const WORKER_CONCURRENCY_MAX_MAX: u32 = 10_000;
/// Default time an endpoint may fail every attempt before its subscription is disabled, in
/// milliseconds: 5 days.
pub const DISABLE_AFTER_MS_DEFAULT: u64 = 5 * 24 * 3_600_000;
/// Shortest disable period accepted, in milliseconds.
pub const DISABLE_AFTER_MS_MIN: u64 = 1_000;
/// Longest disable period accepted, in milliseconds: 365 days.
pub const DISABLE_AFTER_MS_MAX: u64 = 365 * 24 * 3_600_000;
/// Default time finished deliveries and delivered events are kept, in milliseconds: 90 days
/// (also how far back a stream can resume).
pub const DELIVERY_RETENTION_MS_DEFAULT: u64 = 90 * 24 * 3_600_000;
/// Shortest delivery retention accepted, in milliseconds.
pub const DELIVERY_RETENTION_MS_MIN: u64 = 1_000;
/// Longest delivery retention accepted, in milliseconds: ten years.
pub const DELIVERY_RETENTION_MS_MAX: u64 = 3_650 * 24 * 3_600_000;
/// Default interval at which the delivery worker looks for due deliveries when nothing woke it,
/// in milliseconds.
pub const POLL_INTERVAL_MS_DEFAULT: u64 = 1_000;
/// Shortest poll interval accepted, in milliseconds.
pub const POLL_INTERVAL_MS_MIN: u64 = 10;
/// Longest poll interval accepted, in milliseconds.
pub const POLL_INTERVAL_MS_MAX: u64 = 60_000;
/// Default silence after which an event stream gets a heartbeat, in milliseconds.
pub const STREAM_HEARTBEAT_MS_DEFAULT: u64 = 30_000;
/// Shortest heartbeat interval accepted, in milliseconds.
pub const STREAM_HEARTBEAT_MS_MIN: u64 = 100;
/// Longest heartbeat interval accepted, in milliseconds.
pub const STREAM_HEARTBEAT_MS_MAX: u64 = 3_600_000;

/// Most subscriptions the service holds, by default.
pub const SUBSCRIPTIONS_MAX_DEFAULT: u32 = crate::domain::subscription::SUBSCRIPTIONS_MAX as u32;
/// Most event streams open at once per process, by default.
pub const STREAMS_MAX_DEFAULT: u32 = 1000;
/// The highest `notification.streams_max` accepted.
pub const STREAMS_MAX_MAX: u32 = 100_000;
/// The lowest limit of subscriptions or streams accepted.
pub const LIMIT_MIN: u32 = 1;

/// Notification-service settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The SMTP relay: `smtp://host:port` (plain), `smtp://host:587?tls=required` (STARTTLS) or
    /// `smtps://user:password@host:465`.
    pub smtp_url: String,
    /// The sender of every email, e.g. `Name <noreply@example.org>`.
    pub smtp_from: String,
    /// Time one SMTP conversation may take, in milliseconds.
    pub smtp_timeout_ms: u64,
    /// Time a webhook endpoint has to answer with a status, in milliseconds.
    pub webhook_timeout_ms: u64,
    /// Delay before each attempt of a delivery, in milliseconds, the first counted from the
    /// publication and each later one from the previous failure; its length is the number of
    /// attempts before the delivery is dead-lettered.
    #[serde(deserialize_with = "comma_list::u64s")]
    pub retry_schedule_ms: Vec<u64>,
    /// Random spread of each retry delay, in percent of the delay, either way.
    pub retry_jitter_percent: u32,
    /// Deliveries attempted at once for a subscription that does not set its own limit.
    pub max_in_flight_default: u32,
    /// Emails sent at once by one process.
    pub email_in_flight_max: u32,
    /// Attempts made at once by one process.
    pub worker_concurrency_max: u32,
    /// Time an endpoint may fail every attempt before its subscription is disabled, in
    /// milliseconds.
    pub disable_after_ms: u64,
    /// Time finished deliveries (delivered, cancelled, dead-lettered) are kept, and events once
    /// every delivery of theirs is gone, in milliseconds: the event stream resumes at most this
    /// far back.
    pub delivery_retention_ms: u64,
    /// Whether plain `http://` webhook endpoints are accepted (tests, closed networks).
    pub allow_http_endpoints: bool,
    /// Interval of the delivery worker's look for due deliveries, in milliseconds.
    pub poll_interval_ms: u64,
    /// Silence after which an event stream gets a heartbeat, in milliseconds.
    pub stream_heartbeat_ms: u64,
    /// Most subscriptions the service holds; more are refused with
    /// `SUBSCRIPTION_LIMIT_REACHED`.
    pub subscriptions_max: u32,
    /// Most event streams open at once per process; more are refused with
    /// `STREAM_LIMIT_REACHED`.
    pub streams_max: u32,
    /// Hosts webhooks may reach although they are, or resolve to, loopback, private,
    /// link-local or other internal addresses: host names (matched exactly, without case),
    /// IP addresses and CIDR networks. Empty by default: no exception.
    #[serde(deserialize_with = "text_list")]
    pub webhook_allowed_hosts: Vec<String>,
    /// The file holding the key that encrypts webhook signing secrets at rest: 64 hex digits
    /// (`openssl rand -hex 32`) or 32 raw bytes. Empty: on SQLite a key generated once next
    /// to the database file (`<database>-secret.key`); on PostgreSQL the service refuses to
    /// start (production mounts its own key). See `storage::secrets`.
    pub secret_key_file: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            smtp_url: SMTP_URL_DEFAULT.into(),
            smtp_from: SMTP_FROM_DEFAULT.into(),
            smtp_timeout_ms: SMTP_TIMEOUT_MS_DEFAULT,
            webhook_timeout_ms: WEBHOOK_TIMEOUT_MS_DEFAULT,
            retry_schedule_ms: RETRY_SCHEDULE_MS_DEFAULT.to_vec(),
            retry_jitter_percent: RETRY_JITTER_PERCENT_DEFAULT,
            max_in_flight_default: MAX_IN_FLIGHT_DEFAULT,
            email_in_flight_max: EMAIL_IN_FLIGHT_MAX_DEFAULT,
            worker_concurrency_max: WORKER_CONCURRENCY_MAX_DEFAULT,
            disable_after_ms: DISABLE_AFTER_MS_DEFAULT,
            delivery_retention_ms: DELIVERY_RETENTION_MS_DEFAULT,
            allow_http_endpoints: false,
            poll_interval_ms: POLL_INTERVAL_MS_DEFAULT,
            stream_heartbeat_ms: STREAM_HEARTBEAT_MS_DEFAULT,
            subscriptions_max: SUBSCRIPTIONS_MAX_DEFAULT,
            streams_max: STREAMS_MAX_DEFAULT,
            webhook_allowed_hosts: Vec::new(),
            secret_key_file: String::new(),
        }
    }
}

impl Section for Settings {
    const KEY: &'static str = "notification";
    const SETTINGS: &'static [Setting] = &[
        Setting::text(
            "notification.smtp_url",
            &["SUBSIDY_SMTP_URL"],
            "SMTP relay (`smtp://host:port`, `smtp://host:587?tls=required`, `smtps://user:pass@host:465`)",
        ),
        Setting::text(
            "notification.smtp_from",
            &["SUBSIDY_SMTP_FROM"],
            "sender of every email",
        ),
        Setting::scalar(
            "notification.smtp_timeout_ms",
            &["SUBSIDY_SMTP_TIMEOUT_MS"],
            "time one email attempt may take, in milliseconds",
        ),
        Setting::scalar(
            "notification.webhook_timeout_ms",
            &["SUBSIDY_WEBHOOK_TIMEOUT_MS"],
            "time a webhook endpoint has to answer, in milliseconds",
        ),
        Setting::scalar(
            "notification.retry_schedule_ms",
            &["SUBSIDY_NOTIFICATION_RETRY_SCHEDULE_MS"],
            "delay before each attempt, in milliseconds (comma-separated); its length is the number of attempts before dead-lettering",
        )
        .list(),
        Setting::scalar(
            "notification.retry_jitter_percent",
            &["SUBSIDY_NOTIFICATION_RETRY_JITTER_PERCENT"],
            "random spread of each delay, in percent either way",
        ),
        Setting::scalar(
            "notification.max_in_flight_default",
            &["SUBSIDY_NOTIFICATION_MAX_IN_FLIGHT"],
            "deliveries in flight per endpoint unless the subscription says",
        ),
        Setting::file_only(
            "notification.email_in_flight_max",
            "emails sent at once by one process",
        ),
        Setting::file_only(
            "notification.worker_concurrency_max",
            "attempts (webhook and email) made at once by one process",
        ),
        Setting::scalar(
            "notification.disable_after_ms",
            &["SUBSIDY_NOTIFICATION_DISABLE_AFTER_MS"],
            "an endpoint failing every attempt this long (milliseconds) is disabled and its owner emailed",
        ),
        Setting::scalar(
            "notification.delivery_retention_ms",
            &["SUBSIDY_NOTIFICATION_DELIVERY_RETENTION_MS"],
            "finished deliveries, then their events, are pruned after this long (milliseconds); a stream resumes at most this far back",
        ),
        Setting::scalar(
            "notification.allow_http_endpoints",
            &["SUBSIDY_NOTIFICATION_ALLOW_HTTP"],
            "accept plain `http://` webhook endpoints (closed networks, tests)",
        ),
        Setting::scalar(
            "notification.poll_interval_ms",
            &["SUBSIDY_NOTIFICATION_POLL_INTERVAL_MS"],
            "how often the delivery worker looks for due deliveries, in milliseconds",
        ),
        Setting::file_only(
            "notification.stream_heartbeat_ms",
            "silence after which an event stream gets a heartbeat, in milliseconds",
        ),
        Setting::scalar(
            "notification.subscriptions_max",
            &["SUBSIDY_NOTIFICATION_SUBSCRIPTIONS_MAX"],
            "most subscriptions the service holds (at most 10,000); more are refused with `RESOURCE_EXHAUSTED` / `SUBSCRIPTION_LIMIT_REACHED`",
        ),
        Setting::scalar(
            "notification.streams_max",
            &["SUBSIDY_NOTIFICATION_STREAMS_MAX"],
            "most event streams open at once per process; more are refused with `RESOURCE_EXHAUSTED` / `STREAM_LIMIT_REACHED`",
        ),
        Setting::text(
            "notification.webhook_allowed_hosts",
            &["SUBSIDY_NOTIFICATION_WEBHOOK_ALLOWED_HOSTS"],
            "host names, IP addresses or CIDR networks (comma-separated) that webhooks may reach although they are or resolve to loopback, private, link-local, CGNAT or other internal addresses",
        )
        .list()
        .described("none"),
        Setting::text(
            "notification.secret_key_file",
            &["SUBSIDY_NOTIFICATION_SECRET_KEY_FILE"],
            "file with the key that encrypts webhook signing secrets at rest (AES-256-GCM): 64 hex digits from `openssl rand -hex 32`; unset: on SQLite a key generated once next to the database (`<database>-secret.key`), on PostgreSQL the service refuses to start",
        )
        .described("none"),
    ];

    fn validate(&self) -> Result<(), ConfigError> {
        self.check_smtp()?;
        check_range(
            "notification.smtp_timeout_ms",
            self.smtp_timeout_ms,
            ATTEMPT_TIMEOUT_MS_MIN,
            ATTEMPT_TIMEOUT_MS_MAX,
        )?;
        check_range(
            "notification.webhook_timeout_ms",
            self.webhook_timeout_ms,
            ATTEMPT_TIMEOUT_MS_MIN,
            ATTEMPT_TIMEOUT_MS_MAX,
        )?;
        self.check_retry_schedule()?;
        check_range(
            "notification.retry_jitter_percent",
            self.retry_jitter_percent,
            RETRY_JITTER_PERCENT_MIN,
            RETRY_JITTER_PERCENT_MAX,
        )?;
        check_range(
            "notification.max_in_flight_default",
            self.max_in_flight_default,
            MAX_IN_FLIGHT_DEFAULT_MIN,
            MAX_IN_FLIGHT_MAX as u32,
        )?;
        check_range(
            "notification.email_in_flight_max",
            self.email_in_flight_max,
            EMAIL_IN_FLIGHT_MAX_MIN,
            EMAIL_IN_FLIGHT_MAX_MAX,
        )?;
        check_range(
            "notification.worker_concurrency_max",
            self.worker_concurrency_max,
            WORKER_CONCURRENCY_MAX_MIN,
            WORKER_CONCURRENCY_MAX_MAX,
        )?;
        check_range(
            "notification.subscriptions_max",
            self.subscriptions_max,
            LIMIT_MIN,
            crate::domain::subscription::SUBSCRIPTIONS_MAX_MAX as u32,
        )?;
        check_range(
            "notification.streams_max",
            self.streams_max,
            LIMIT_MIN,
            STREAMS_MAX_MAX,
        )?;
        check_range(
            "notification.disable_after_ms",
            self.disable_after_ms,
            DISABLE_AFTER_MS_MIN,
            DISABLE_AFTER_MS_MAX,
        )?;
        check_range(
            "notification.delivery_retention_ms",
            self.delivery_retention_ms,
            DELIVERY_RETENTION_MS_MIN,
            DELIVERY_RETENTION_MS_MAX,
        )?;
        check_range(
            "notification.poll_interval_ms",
            self.poll_interval_ms,
            POLL_INTERVAL_MS_MIN,
            POLL_INTERVAL_MS_MAX,
        )?;
        check_range(
            "notification.stream_heartbeat_ms",
            self.stream_heartbeat_ms,
            STREAM_HEARTBEAT_MS_MIN,
            STREAM_HEARTBEAT_MS_MAX,
        )?;
        AllowList::parse(&self.webhook_allowed_hosts).map_err(|bad| {
            ConfigError::invalid("notification.webhook_allowed_hosts", &bad.entry, bad.why)
        })?;
        Ok(())
    }
}

/// Deserializes a list of texts given either as a list or as one comma-separated text (an
/// entry of the allow-list never holds a comma).
fn text_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        List(Vec<String>),
        Text(String),
    }
    Ok(match Form::deserialize(deserializer)? {
        Form::List(list) => list,
        Form::Text(text) => text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

impl Settings {
    /// The relay's URL names a host, and the sender is a mailbox.
    fn check_smtp(&self) -> Result<(), ConfigError> {
        let smtp_host = self
            .smtp_url
            .split_once("://")
            .filter(|(scheme, _)| matches!(*scheme, "smtp" | "smtps"))
            .map(|(_, rest)| rest.rsplit('@').next().unwrap_or_default());
        if smtp_host.is_none_or(|host| host.is_empty() || host.starts_with([':', '/', '?'])) {
            return Err(ConfigError::invalid(
                "notification.smtp_url",
                &"(hidden: it may hold a password)",
                "must be smtp://host[:port][?tls=required|opportunistic] or smtps://host[:port]",
            ));
        }
        let from = self.smtp_from.trim();
        if from.is_empty() || !from.contains('@') || from.contains(['\r', '\n']) {
            return Err(ConfigError::invalid(
                "notification.smtp_from",
                &self.smtp_from,
                "must be an email address, optionally with a name: Name <user@example.org>",
            ));
        }
        Ok(())
    }

    /// The retry schedule has 1 to [`RETRY_SCHEDULE_LEN_MAX`] delays of at most
    /// [`RETRY_DELAY_MS_MAX`] each.
    fn check_retry_schedule(&self) -> Result<(), ConfigError> {
        let schedule = &self.retry_schedule_ms;
        if schedule.is_empty()
            || schedule.len() > RETRY_SCHEDULE_LEN_MAX
            || schedule.iter().any(|delay| *delay > RETRY_DELAY_MS_MAX)
        {
            return Err(ConfigError::invalid(
                "notification.retry_schedule_ms",
                &format!("{schedule:?}"),
                format!(
                    "must be 1 to {RETRY_SCHEDULE_LEN_MAX} delays of at most {RETRY_DELAY_MS_MAX} ms each"
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use subsidy_common::config::{Config, ServiceKind};

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Config::load(ServiceKind::Notification, None, &env(pairs))?.section()
    }

    #[test]
    fn notification_settings_come_from_the_environment_and_are_checked() {
        // Proves the notification section has the defaults, takes its overrides from
        // the environment and refuses a bad schedule or relay by key.
        let settings = load(&[]).unwrap();
        assert_eq!(
            settings.retry_schedule_ms,
            RETRY_SCHEDULE_MS_DEFAULT.to_vec()
        );
        assert!(!settings.allow_http_endpoints);
        let settings = load(&[
            ("SUBSIDY_SMTP_URL", "smtp://127.0.0.1:2525"),
            ("SUBSIDY_NOTIFICATION_RETRY_SCHEDULE_MS", "0, 100,200"),
            ("SUBSIDY_NOTIFICATION_ALLOW_HTTP", "true"),
        ])
        .unwrap();
        assert_eq!(settings.smtp_url, "smtp://127.0.0.1:2525");
        assert_eq!(settings.retry_schedule_ms, vec![0, 100, 200]);
        assert!(settings.allow_http_endpoints);
        for (key, value, reported) in [
            (
                "SUBSIDY_NOTIFICATION_RETRY_SCHEDULE_MS",
                "0,soon",
                "SUBSIDY_NOTIFICATION_RETRY_SCHEDULE_MS",
            ),
            (
                "SUBSIDY_NOTIFICATION_RETRY_SCHEDULE_MS",
                "0,999999999999",
                "notification.retry_schedule_ms",
            ),
            ("SUBSIDY_SMTP_URL", "http://relay", "notification.smtp_url"),
            (
                "SUBSIDY_NOTIFICATION_ALLOW_HTTP",
                "yes",
                "SUBSIDY_NOTIFICATION_ALLOW_HTTP",
            ),
        ] {
            let error = load(&[(key, value)]).unwrap_err();
            assert!(
                matches!(&error, ConfigError::Invalid { key, .. } if *key == reported),
                "{error}"
            );
        }
    }

    #[test]
    fn the_webhook_allow_list_and_the_secret_key_file_come_from_the_environment() {
        // Proves the allow-list is a comma-separated list checked entry by entry, and that
        // neither setting has a default exception or key file.
        let settings = load(&[]).unwrap();
        assert!(settings.webhook_allowed_hosts.is_empty());
        assert!(settings.secret_key_file.is_empty());
        let settings = load(&[
            (
                "SUBSIDY_NOTIFICATION_WEBHOOK_ALLOWED_HOSTS",
                "127.0.0.1, hooks.internal ,10.20.0.0/16",
            ),
            (
                "SUBSIDY_NOTIFICATION_SECRET_KEY_FILE",
                "/run/secrets/notification/key",
            ),
        ])
        .unwrap();
        assert_eq!(
            settings.webhook_allowed_hosts,
            vec!["127.0.0.1", "hooks.internal", "10.20.0.0/16"]
        );
        assert_eq!(settings.secret_key_file, "/run/secrets/notification/key");
        let error = load(&[(
            "SUBSIDY_NOTIFICATION_WEBHOOK_ALLOWED_HOSTS",
            "127.0.0.1,10.0.0.0/33",
        )])
        .unwrap_err();
        assert!(
            matches!(&error, ConfigError::Invalid { key, value, .. }
                if *key == "notification.webhook_allowed_hosts" && value == "10.0.0.0/33"),
            "{error}"
        );
    }

    #[test]
    fn the_refusal_of_a_plain_http_endpoint_names_the_setting_that_allows_it() {
        // Proves the text an operator reads when an http:// endpoint is refused (at
        // subscription and at delivery) names the TOML key and the environment variable that
        // really turn `allow_http_endpoints` on.
        use crate::domain::subscription::{EndpointUrl, PLAIN_HTTP_REFUSED};
        let key = "notification.allow_http_endpoints";
        let setting = Settings::SETTINGS
            .iter()
            .find(|setting| setting.key == key)
            .expect("the setting is declared");
        assert!(PLAIN_HTTP_REFUSED.contains(key), "{PLAIN_HTTP_REFUSED}");
        assert!(!setting.env.is_empty());
        for name in setting.env {
            assert!(PLAIN_HTTP_REFUSED.contains(name), "{PLAIN_HTTP_REFUSED}");
            assert!(load(&[(name, "true")]).unwrap().allow_http_endpoints);
        }
        assert_eq!(
            EndpointUrl::parse("http://agency.example.org/hooks", false),
            Err(PLAIN_HTTP_REFUSED)
        );
    }

    #[test]
    fn the_refusal_of_an_internal_address_names_the_setting_that_allows_it() {
        // Proves both refusals of an internal address name the TOML key and every environment
        // variable of the allow-list, and that those variables really fill it.
        use crate::domain::address::ForbiddenRange;
        use crate::webhook::EndpointRefused;
        let key = "notification.webhook_allowed_hosts";
        let setting = Settings::SETTINGS
            .iter()
            .find(|setting| setting.key == key)
            .expect("the setting is declared");
        assert!(!setting.env.is_empty());
        for refusal in [
            EndpointRefused::Address(ForbiddenRange::Loopback),
            EndpointRefused::Resolves(ForbiddenRange::Private),
        ] {
            let text = refusal.to_string();
            assert!(text.contains(key), "{text}");
            for name in setting.env {
                assert!(text.contains(name), "{text}");
            }
        }
        for name in setting.env {
            let settings = load(&[(name, "127.0.0.1")]).unwrap();
            assert_eq!(settings.webhook_allowed_hosts, vec!["127.0.0.1"]);
        }
    }
}
