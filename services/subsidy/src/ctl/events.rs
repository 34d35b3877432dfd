//! `subsidyctl events list|show`: the stored event feed of the notification service, for
//! auditors and for finding the event of a delivery (`watch` follows the feed live).

use clap::Subcommand;
use subsidy_common::BoxError;
use subsidy_common::config::ServiceKind;
use subsidy_proto::notification as pb;
use subsidy_proto::notification::notification_service_client::NotificationServiceClient;

use super::notification::{event_type_name, parse_event_type};
use super::{Ctx, enums, json, money, print, print_record, time};

/// Default number of events listed.
const EVENTS_LIMIT_DEFAULT: i32 = 100;

/// Commands of the stored event feed.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// The stored event feed.
    #[command(subcommand)]
    Events(EventsCommand),
}

/// Event commands.
#[derive(Subcommand, Debug)]
pub enum EventsCommand {
    /// List events in feed order (oldest first).
    List {
        /// Only these event types, e.g. `claim.approved` (repeatable).
        #[arg(long = "type", value_parser = parse_event_type)]
        event_types: Vec<pb::EventType>,
        /// Only this program.
        #[arg(long, value_parser = enums::parser::<pb::Program>())]
        program: Option<pb::Program>,
        /// Only this claim or proposal.
        #[arg(long, default_value = "")]
        application: String,
        /// Only this enterprise (USCC).
        #[arg(long, default_value = "")]
        enterprise: String,
        /// At most this many.
        #[arg(long, default_value_t = EVENTS_LIMIT_DEFAULT)]
        limit: i32,
    },
    /// Show one event with its payload.
    Show {
        /// The event.
        id: String,
    },
}

fn event_row(event: &pb::Event) -> Vec<String> {
    vec![
        time(&event.occur_time),
        event_type_name(event.r#type()),
        event.application_id.clone(),
        event.enterprise_uscc.clone(),
        money(&event.amount),
        event.event_id.clone(),
    ]
}

/// Runs an event command.
pub async fn run(command: Command, ctx: &Ctx) -> Result<(), BoxError> {
    let Command::Events(command) = command;
    let mut client = NotificationServiceClient::new(ctx.channel(ServiceKind::Notification).await?);
    match command {
        EventsCommand::List {
            event_types,
            program,
            application,
            enterprise,
            limit,
        } => {
            let page = client
                .list_events(ctx.request(pb::ListEventsRequest {
                    event_types: event_types.into_iter().map(|t| t as i32).collect(),
                    program: program.map(|p| p as i32).unwrap_or_default(),
                    application_id: application,
                    enterprise_uscc: enterprise,
                    start_time: None,
                    end_time: None,
                    page_size: limit,
                    page_token: String::new(),
                }))
                .await?
                .into_inner();
            let rows: Vec<Vec<String>> = page.events.iter().map(event_row).collect();
            print(
                ctx,
                &[
                    "OCCURRED",
                    "TYPE",
                    "APPLICATION",
                    "ENTERPRISE",
                    "AMOUNT",
                    "EVENT",
                ],
                &rows,
                || json::messages(&page.events),
            );
        }
        EventsCommand::Show { id } => {
            let event = client
                .get_event(ctx.request(pb::GetEventRequest { event_id: id }))
                .await?
                .into_inner()
                .event
                .ok_or("the service answered without an event")?;
            let payload = json::message(&event)
                .get("payload")
                .map(|payload| payload.to_string())
                .unwrap_or_default();
            let fields = [
                ("EVENT", event.event_id.clone()),
                ("TYPE", event_type_name(event.r#type())),
                ("APPLICATION", event.application_id.clone()),
                ("ENTERPRISE", event.enterprise_uscc.clone()),
                ("ROUND", event.round_id.clone()),
                ("AMOUNT", money(&event.amount)),
                ("OCCURRED", time(&event.occur_time)),
                ("PUBLISHED", time(&event.publish_time)),
                ("SOURCE", event.source.clone()),
                ("PAYLOAD", payload),
            ];
            print_record(ctx, &fields, || json::message(&event));
        }
    }
    Ok(())
}
