//! The SMTP sender: one plain-text UTF-8 message per attempt through the configured relay.
//! The relay accepting the message is success; a 5xx rejection is permanent; anything else is
//! retried.

use std::time::Duration;

use crate::settings::Settings;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use subsidy_common::BoxError;

use crate::domain::delivery::Outcome;
use crate::domain::email::EmailContent;

/// The domain of the `Message-ID`s this service generates.
pub const MESSAGE_ID_DOMAIN: &str = "notification.subsidy.invalid";

/// Sends emails through one SMTP relay.
#[derive(Clone, Debug)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    timeout: Duration,
}

impl Mailer {
    /// A mailer for the configured relay and sender. TLS (for `smtps://` or `?tls=required`)
    /// uses rustls with the ring provider and the Mozilla roots.
    pub fn new(config: &Settings) -> Result<Self, BoxError> {
        let timeout = Duration::from_millis(config.smtp_timeout_ms);
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&config.smtp_url)
            .map_err(|e| format!("notification.smtp_url is not usable: {e}"))?
            .timeout(Some(timeout))
            .build();
        let from: Mailbox = config
            .smtp_from
            .parse()
            .map_err(|e| format!("notification.smtp_from is not a mailbox: {e}"))?;
        Ok(Mailer {
            transport,
            from,
            timeout,
        })
    }

    /// Makes one attempt to send `content` to `to`. The `Message-ID` is derived from
    /// `delivery_id`, so that every attempt of one delivery carries the same one and mail
    /// systems can drop repeats.
    pub async fn send(&self, to: &str, content: &EmailContent, delivery_id: &str) -> Outcome {
        let Ok(to) = to.parse::<Mailbox>() else {
            return Outcome::Failed {
                status_code: 0,
                error: "the recipient address is not valid".into(),
                permanent: true,
            };
        };
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(content.subject.clone())
            .message_id(Some(format!("<{delivery_id}@{MESSAGE_ID_DOMAIN}>")))
            .header(ContentType::TEXT_PLAIN)
            .body(content.body.clone());
        let message = match message {
            Ok(message) => message,
            Err(_) => {
                return Outcome::Failed {
                    status_code: 0,
                    error: "the message could not be built".into(),
                    permanent: true,
                };
            }
        };
        match tokio::time::timeout(self.timeout, self.transport.send(message)).await {
            Err(_) => {
                Outcome::transient(0, format!("timeout after {} ms", self.timeout.as_millis()))
            }
            Ok(Ok(response)) => Outcome::Succeeded {
                status_code: i64::from(u16::from(response.code())),
            },
            Ok(Err(error)) => {
                let status_code = error
                    .status()
                    .map(|code| i64::from(u16::from(code)))
                    .unwrap_or(0);
                let permanent = error.is_permanent();
                let text = if error.is_timeout() {
                    "timeout".to_owned()
                } else if permanent {
                    format!("rejected permanently (SMTP {status_code})")
                } else if error.is_transient() {
                    format!("rejected temporarily (SMTP {status_code})")
                } else if error.is_tls() {
                    "TLS handshake with the relay failed".to_owned()
                } else {
                    "the relay could not be reached".to_owned()
                };
                Outcome::Failed {
                    status_code,
                    error: text,
                    permanent,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::domain::event::EmailAddress;

    #[test]
    fn the_domain_accepts_exactly_the_addresses_the_mail_library_accepts() {
        // Proves the domain's address syntax (written without the mail library) agrees with
        // the library the relay is given addresses through, on valid and invalid forms.
        let corpus = [
            "name@example.org",
            "first.last+tag@sub.example.org",
            "ops@agency.example.org",
            "user@[127.0.0.1]",
            "user@127.0.0.1",
            "user@[::1]",
            "用户@例子.广告",
            "user@例子.广告",
            "\"quoted name\"@example.org",
            "nobody",
            "@example.org",
            "user@",
            "user@@example.org",
            "a@b@example.org",
            "user name@example.org",
            "user@exa mple.org",
            "user@-example.org",
            "user@example..org",
            ".user@example.org",
            "user.@example.org",
            "user@[300.0.0.1]",
            "",
        ];
        for text in corpus {
            assert_eq!(
                EmailAddress::parse(text).is_ok(),
                text.parse::<lettre::Address>().is_ok(),
                "{text}"
            );
        }
    }
}
