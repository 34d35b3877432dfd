//! `subsidyctl` commands of the notification service: `subscription create|list|rotate-secret|
//! delete`, `deliveries`, `redeliver` and `watch`.

use std::time::Duration;

use clap::Subcommand;
use subsidy_common::BoxError;
use subsidy_common::config::ServiceKind;
use subsidy_notification::domain::event::EventType;
use subsidy_notification::wire;
use subsidy_proto::notification as pb;
use subsidy_proto::notification::notification_service_client::NotificationServiceClient;

use super::{Ctx, Output, enums, json, money, print, time};

/// First pause before `watch` reconnects after the stream broke, in milliseconds.
const WATCH_RECONNECT_DELAY_MS_MIN: u64 = 500;
/// Longest pause between reconnects of `watch`, in milliseconds.
const WATCH_RECONNECT_DELAY_MS_MAX: u64 = 30_000;

/// Commands of the notification service.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Manage webhook subscriptions of agency systems.
    #[command(subcommand)]
    Subscription(SubscriptionCommand),
    /// Show the delivery log, newest first: attempts, status codes, next attempt.
    Deliveries {
        /// Only deliveries of this event.
        #[arg(long, default_value = "")]
        event: String,
        /// Only deliveries to this subscription.
        #[arg(long, default_value = "")]
        subscription: String,
        /// Only this channel.
        #[arg(long, value_parser = enums::parser::<pb::Channel>())]
        channel: Option<pb::Channel>,
        /// Only this state.
        #[arg(long, value_parser = enums::parser::<pb::DeliveryState>())]
        state: Option<pb::DeliveryState>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i32,
    },
    /// Deliver an event again, or every dead letter of a subscription.
    Redeliver {
        /// The event to deliver again (all its finished deliveries, or the one to
        /// `--subscription`).
        #[arg(long, required_unless_present = "dead_letters")]
        event: Option<String>,
        /// The subscription concerned; required with `--dead-letters`.
        #[arg(long, default_value = "")]
        subscription: String,
        /// Requeue every dead-lettered delivery of `--subscription` instead.
        #[arg(long, conflicts_with = "event", requires = "subscription")]
        dead_letters: bool,
        /// Idempotency key; pass the same one to retry safely. Generated when absent.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Follow the event feed and print events as they come; reconnects from its cursor.
    Watch {
        /// Resume after this cursor (printed with every event).
        #[arg(long, conflicts_with = "from_beginning")]
        cursor: Option<String>,
        /// Replay the feed from its first event.
        #[arg(long)]
        from_beginning: bool,
        /// Only these event types, e.g. `claim.approved` (repeatable).
        #[arg(long = "type", value_parser = parse_event_type)]
        event_types: Vec<pb::EventType>,
        /// Only this program.
        #[arg(long, value_parser = enums::parser::<pb::Program>())]
        program: Option<pb::Program>,
        /// Only this enterprise (USCC).
        #[arg(long, default_value = "")]
        enterprise: String,
    },
}

/// Subscription commands.
#[derive(Subcommand, Debug)]
pub enum SubscriptionCommand {
    /// Create a subscription; its signing secret is printed once.
    Create {
        /// The https endpoint deliveries are POSTed to.
        #[arg(long)]
        url: String,
        /// Only these event types, e.g. `claim.approved` (repeatable); all when absent.
        #[arg(long = "type", value_parser = parse_event_type)]
        event_types: Vec<pb::EventType>,
        /// Only this program.
        #[arg(long, value_parser = enums::parser::<pb::Program>())]
        program: Option<pb::Program>,
        /// Only this enterprise (USCC).
        #[arg(long, default_value = "")]
        enterprise: String,
        /// A description, e.g. the agency's name.
        #[arg(long, default_value = "")]
        description: String,
        /// Deliveries attempted at once; 0 means the service default.
        #[arg(long, default_value_t = 0)]
        max_in_flight: i32,
        /// Who is emailed when the service disables the subscription.
        #[arg(long, default_value = "")]
        contact: String,
        /// Idempotency key; pass the same one to retry safely. Generated when absent.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// List subscriptions, oldest first.
    List {
        /// Only this state.
        #[arg(long, value_parser = enums::parser::<pb::SubscriptionState>())]
        state: Option<pb::SubscriptionState>,
    },
    /// Replace the signing secret; the old one stays valid for the grace period.
    RotateSecret {
        /// The subscription.
        subscription_id: String,
        /// Grace period of the old secret in seconds; 0 means 24 hours.
        #[arg(long, default_value_t = 0)]
        grace_seconds: i64,
        /// Idempotency key; pass the same one to retry safely. Generated when absent.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Delete a subscription; its unfinished deliveries are cancelled.
    Delete {
        /// The subscription.
        subscription_id: String,
        /// Idempotency key; pass the same one to retry safely. Generated when absent.
        #[arg(long)]
        request_id: Option<String>,
    },
}

/// Parses an event type by its dotted name, the one spelling on the wire (`claim.approved`,
/// `proposal.not_selected`; see docs/events): the name the service stores and webhook bodies
/// carry. The error lists every accepted name.
pub fn parse_event_type(text: &str) -> Result<pb::EventType, String> {
    EventType::parse(text)
        .map(wire::event_type_to_proto)
        .ok_or_else(|| {
            let names: Vec<&str> = EventType::ALL.iter().map(|kind| kind.as_str()).collect();
            format!(
                "unknown event type `{text}`; expected one of: {}",
                names.join(", ")
            )
        })
}

/// The dotted name of an event type (`claim.approved`), as `--type` takes it; `unspecified`
/// for a value this build does not know.
pub fn event_type_name(kind: pb::EventType) -> String {
    match kind {
        pb::EventType::Unspecified => "unspecified".to_owned(),
        kind => wire::event_type_from_proto(kind).as_str().to_owned(),
    }
}

/// A request id for one invocation: unique by process, time and a counter, or the one given.
fn request_id(given: Option<String>, operation: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    given.unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("subsidyctl-{operation}-{}-{nanos}-{n}", std::process::id())
    })
}

fn short(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix).to_ascii_lowercase()
}

fn subscription_rows(subscriptions: &[pb::Subscription]) -> Vec<Vec<String>> {
    subscriptions
        .iter()
        .map(|s| {
            let types = if s.event_types.is_empty() {
                "all".to_owned()
            } else {
                s.event_types()
                    .map(event_type_name)
                    .collect::<Vec<_>>()
                    .join(",")
            };
            vec![
                s.subscription_id.clone(),
                short(s.state().as_str_name(), "SUBSCRIPTION_STATE_"),
                short(s.disabled_reason().as_str_name(), "DISABLED_REASON_")
                    .replace("unspecified", ""),
                s.endpoint_url.clone(),
                types,
                s.max_in_flight.to_string(),
                time(&s.failing_since_time),
                s.description.clone(),
            ]
        })
        .collect()
}

const SUBSCRIPTION_HEADERS: [&str; 8] = [
    "SUBSCRIPTION",
    "STATE",
    "DISABLED REASON",
    "ENDPOINT",
    "TYPES",
    "MAX IN FLIGHT",
    "FAILING SINCE",
    "DESCRIPTION",
];

fn delivery_row(d: &pb::Delivery) -> Vec<String> {
    let last = d.attempts.last();
    vec![
        d.delivery_id.clone(),
        d.event_id.clone(),
        event_type_name(d.event_type()),
        short(d.channel().as_str_name(), "CHANNEL_"),
        if d.subscription_id.is_empty() {
            d.recipient_email.clone()
        } else {
            d.subscription_id.clone()
        },
        short(d.state().as_str_name(), "DELIVERY_STATE_"),
        d.attempt_count.to_string(),
        if d.last_status_code == 0 {
            "-".into()
        } else {
            d.last_status_code.to_string()
        },
        last.map(|a| format!("{} ms", a.latency_ms))
            .unwrap_or_else(|| "-".into()),
        time(&d.next_attempt_time),
        d.last_error.clone(),
    ]
}

const DELIVERY_HEADERS: [&str; 11] = [
    "DELIVERY",
    "EVENT",
    "TYPE",
    "CHANNEL",
    "TO",
    "STATE",
    "ATTEMPTS",
    "LAST STATUS",
    "LAST LATENCY",
    "NEXT ATTEMPT",
    "LAST ERROR",
];

/// Runs a command.
pub async fn run(command: Command, ctx: &Ctx) -> Result<(), BoxError> {
    match command {
        Command::Watch {
            cursor,
            from_beginning,
            event_types,
            program,
            enterprise,
        } => {
            let request = pb::StreamEventsRequest {
                cursor: cursor.unwrap_or_default(),
                from_beginning,
                event_types: event_types.into_iter().map(|t| t as i32).collect(),
                program: program.unwrap_or(pb::Program::Unspecified) as i32,
                enterprise_uscc: enterprise,
            };
            watch(ctx, request).await
        }
        other => {
            let client =
                NotificationServiceClient::new(ctx.channel(ServiceKind::Notification).await?);
            run_unary(other, ctx, client).await
        }
    }
}

/// The notification service's client.
type Client = NotificationServiceClient<tonic::transport::Channel>;

async fn run_unary(command: Command, ctx: &Ctx, mut client: Client) -> Result<(), BoxError> {
    let client = &mut client;
    match command {
        Command::Subscription(SubscriptionCommand::Create {
            url,
            event_types,
            program,
            enterprise,
            description,
            max_in_flight,
            contact,
            request_id: given,
        }) => {
            let request = pb::CreateSubscriptionRequest {
                request_id: request_id(given, "create-subscription"),
                endpoint_url: url,
                event_types: event_types.into_iter().map(|t| t as i32).collect(),
                program_filter: program.unwrap_or(pb::Program::Unspecified) as i32,
                enterprise_uscc_filter: enterprise,
                description,
                max_in_flight,
                contact_email: contact,
            };
            subscription_create(ctx, client, request).await
        }
        Command::Subscription(SubscriptionCommand::List { state }) => {
            subscription_list(ctx, client, state).await
        }
        Command::Subscription(SubscriptionCommand::RotateSecret {
            subscription_id,
            grace_seconds,
            request_id: given,
        }) => rotate_secret(ctx, client, subscription_id, grace_seconds, given).await,
        Command::Subscription(SubscriptionCommand::Delete {
            subscription_id,
            request_id: given,
        }) => subscription_delete(ctx, client, subscription_id, given).await,
        Command::Deliveries {
            event,
            subscription,
            channel,
            state,
            limit,
        } => deliveries(ctx, client, event, subscription, channel, state, limit).await,
        Command::Redeliver {
            event,
            subscription,
            dead_letters,
            request_id: given,
        } => {
            if dead_letters {
                redeliver_dead_letters(ctx, client, subscription, given).await
            } else {
                let event = event.ok_or("--event is required")?;
                redeliver_event(ctx, client, event, subscription, given).await
            }
        }
        Command::Watch { .. } => unreachable!("watch is handled by run"),
    }
}

/// `subscription create`: prints the signing secret, once.
async fn subscription_create(
    ctx: &Ctx,
    client: &mut Client,
    request: pb::CreateSubscriptionRequest,
) -> Result<(), BoxError> {
    let created = client
        .create_subscription(ctx.request(request))
        .await?
        .into_inner();
    let subscription = created
        .subscription
        .as_ref()
        .ok_or("the service returned nothing")?;
    print(
        ctx,
        &["SUBSCRIPTION", "ENDPOINT", "SIGNING SECRET"],
        &[vec![
            subscription.subscription_id.clone(),
            subscription.endpoint_url.clone(),
            created.signing_secret.clone(),
        ]],
        || json::message(&created),
    );
    if ctx.output == Output::Table {
        eprintln!("The signing secret is shown only now; store it with the receiver.");
    }
    Ok(())
}

/// `subscription list`: every subscription in `state` (all when absent), page by page.
async fn subscription_list(
    ctx: &Ctx,
    client: &mut Client,
    state: Option<pb::SubscriptionState>,
) -> Result<(), BoxError> {
    let state = state.unwrap_or(pb::SubscriptionState::Unspecified);
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_subscriptions(ctx.request(pb::ListSubscriptionsRequest {
                state: state as i32,
                page_size: 500,
                page_token: token,
            }))
            .await?
            .into_inner();
        all.extend(page.subscriptions);
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    print(ctx, &SUBSCRIPTION_HEADERS, &subscription_rows(&all), || {
        json::messages(&all)
    });
    Ok(())
}

/// `subscription rotate-secret`: prints the new secret and until when the old one is valid.
async fn rotate_secret(
    ctx: &Ctx,
    client: &mut Client,
    subscription_id: String,
    grace_seconds: i64,
    given: Option<String>,
) -> Result<(), BoxError> {
    let rotated = client
        .rotate_subscription_secret(ctx.request(pb::RotateSubscriptionSecretRequest {
            request_id: request_id(given, "rotate-secret"),
            subscription_id,
            grace_period_seconds: grace_seconds,
        }))
        .await?
        .into_inner();
    let subscription = rotated
        .subscription
        .as_ref()
        .ok_or("the service returned nothing")?;
    print(
        ctx,
        &["SUBSCRIPTION", "SIGNING SECRET", "OLD SECRET VALID UNTIL"],
        &[vec![
            subscription.subscription_id.clone(),
            rotated.signing_secret.clone(),
            time(&subscription.previous_secret_expire_time),
        ]],
        || json::message(&rotated),
    );
    Ok(())
}

/// `subscription delete`: prints how many unfinished deliveries were cancelled.
async fn subscription_delete(
    ctx: &Ctx,
    client: &mut Client,
    subscription_id: String,
    given: Option<String>,
) -> Result<(), BoxError> {
    let deleted = client
        .delete_subscription(ctx.request(pb::DeleteSubscriptionRequest {
            request_id: request_id(given, "delete-subscription"),
            subscription_id,
        }))
        .await?
        .into_inner();
    let subscription = deleted
        .subscription
        .as_ref()
        .ok_or("the service returned nothing")?;
    print(
        ctx,
        &["SUBSCRIPTION", "ENDPOINT", "CANCELLED DELIVERIES"],
        &[vec![
            subscription.subscription_id.clone(),
            subscription.endpoint_url.clone(),
            deleted.cancelled_delivery_count.to_string(),
        ]],
        || json::message(&deleted),
    );
    Ok(())
}

/// `deliveries`: the first page of the delivery log, newest first.
async fn deliveries(
    ctx: &Ctx,
    client: &mut Client,
    event: String,
    subscription: String,
    channel: Option<pb::Channel>,
    state: Option<pb::DeliveryState>,
    limit: i32,
) -> Result<(), BoxError> {
    let channel = channel.unwrap_or(pb::Channel::Unspecified);
    let state = state.unwrap_or(pb::DeliveryState::Unspecified);
    let page = client
        .list_deliveries(ctx.request(pb::ListDeliveriesRequest {
            event_id: event,
            subscription_id: subscription,
            channel: channel as i32,
            state: state as i32,
            page_size: limit,
            page_token: String::new(),
        }))
        .await?
        .into_inner();
    let rows: Vec<Vec<String>> = page.deliveries.iter().map(delivery_row).collect();
    print(ctx, &DELIVERY_HEADERS, &rows, || {
        json::messages(&page.deliveries)
    });
    Ok(())
}

/// `redeliver --dead-letters`: requeues every dead letter of a subscription.
async fn redeliver_dead_letters(
    ctx: &Ctx,
    client: &mut Client,
    subscription: String,
    given: Option<String>,
) -> Result<(), BoxError> {
    let requeued = client
        .redeliver_dead_letters(ctx.request(pb::RedeliverDeadLettersRequest {
            request_id: request_id(given, "redeliver-dead-letters"),
            subscription_id: subscription.clone(),
        }))
        .await?
        .into_inner();
    print(
        ctx,
        &["SUBSCRIPTION", "REQUEUED"],
        &[vec![subscription, requeued.requeued_count.to_string()]],
        || json::message(&requeued),
    );
    Ok(())
}

/// `redeliver --event`: delivers an event again (to one subscription when given).
async fn redeliver_event(
    ctx: &Ctx,
    client: &mut Client,
    event: String,
    subscription: String,
    given: Option<String>,
) -> Result<(), BoxError> {
    let redelivered = client
        .redeliver_event(ctx.request(pb::RedeliverEventRequest {
            request_id: request_id(given, "redeliver"),
            event_id: event,
            subscription_id: subscription,
        }))
        .await?
        .into_inner();
    let rows: Vec<Vec<String>> = redelivered.deliveries.iter().map(delivery_row).collect();
    print(ctx, &DELIVERY_HEADERS, &rows, || {
        json::messages(&redelivered.deliveries)
    });
    Ok(())
}

/// Follows the stream until interrupted, reconnecting from the last cursor when it breaks.
async fn watch(ctx: &Ctx, mut request: pb::StreamEventsRequest) -> Result<(), BoxError> {
    let mut delay_ms = WATCH_RECONNECT_DELAY_MS_MIN;
    if ctx.output == Output::Table {
        outln!(
            "{:<24}  {:<22}  {:<18}  {:<18}  {:>16}  {:<24}  CURSOR",
            "OCCURRED",
            "TYPE",
            "APPLICATION",
            "ENTERPRISE",
            "AMOUNT",
            "EVENT"
        );
    }
    loop {
        // No call timeout: the stream is meant to stay open.
        let opened = match ctx.stream_channel(ServiceKind::Notification).await {
            Ok(channel) => NotificationServiceClient::new(channel)
                .stream_events(ctx.request(request.clone()))
                .await
                .map_err(|status| {
                    // Invalid requests and cursors will not heal by retrying.
                    if status.code() == tonic::Code::InvalidArgument {
                        Some(status)
                    } else {
                        eprintln!("subsidyctl: stream refused: {}", status.message());
                        None
                    }
                }),
            Err(error) => {
                eprintln!("subsidyctl: {error}");
                Err(None)
            }
        };
        let mut stream = match opened {
            Ok(response) => response.into_inner(),
            Err(Some(status)) => return Err(status.into()),
            Err(None) => {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                delay_ms = (delay_ms * 2).min(WATCH_RECONNECT_DELAY_MS_MAX);
                continue;
            }
        };
        loop {
            match stream.message().await {
                Ok(Some(message)) => {
                    delay_ms = WATCH_RECONNECT_DELAY_MS_MIN;
                    if message.event.is_some() {
                        print_event(ctx, &message);
                    }
                    // Resume after the last position seen, also from heartbeats.
                    request.cursor = message.cursor;
                    request.from_beginning = false;
                }
                Ok(None) => {
                    eprintln!("subsidyctl: the stream ended; reconnecting");
                    break;
                }
                Err(status) => {
                    eprintln!(
                        "subsidyctl: the stream broke: {}; reconnecting",
                        status.message()
                    );
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        delay_ms = (delay_ms * 2).min(WATCH_RECONNECT_DELAY_MS_MAX);
    }
}

/// One event of `watch`: a table line, or the stream message (its `cursor` and `event`) as one
/// JSON object per line.
fn print_event(ctx: &Ctx, message: &pb::StreamEventsResponse) {
    let (Some(event), cursor) = (&message.event, &message.cursor) else {
        return;
    };
    let kind = event_type_name(event.r#type());
    match ctx.output {
        Output::Json => outln!("{}", json::message(message)),
        Output::Table => outln!(
            "{:<24}  {:<22}  {:<18}  {:<18}  {:>16}  {:<24}  {}",
            time(&event.occur_time),
            kind,
            event.application_id,
            event.enterprise_uscc,
            money(&event.amount),
            event.event_id,
            cursor
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_are_parsed_by_their_dotted_names_only() {
        // Proves --type takes the one spelling on the wire, every type's name parses back to
        // it, and any other spelling is refused with the list of accepted names.
        assert_eq!(
            parse_event_type("claim.approved"),
            Ok(pb::EventType::ClaimApproved)
        );
        assert_eq!(
            parse_event_type("proposal.not_selected"),
            Ok(pb::EventType::ProposalNotSelected)
        );
        for kind in EventType::ALL {
            let proto = wire::event_type_to_proto(kind);
            assert_eq!(event_type_name(proto), kind.as_str());
            assert_eq!(parse_event_type(kind.as_str()), Ok(proto));
        }
        for text in [
            "claim-approved",
            "claim_approved",
            "EVENT_TYPE_CLAIM_APPROVED",
            "Claim.Approved",
            " claim.approved",
            "unspecified",
            "claim.paid",
            "",
        ] {
            let error = parse_event_type(text).expect_err(text);
            assert!(
                error.contains("claim.approved, claim.rejected")
                    && error.contains("proposal.not_selected"),
                "{error}"
            );
        }
    }

    #[test]
    fn generated_request_ids_differ_and_given_ones_are_kept() {
        // Proves two invocations never share an idempotency key unless the operator says so.
        assert_ne!(request_id(None, "x"), request_id(None, "x"));
        assert_eq!(request_id(Some("mine".into()), "x"), "mine");
    }
}
