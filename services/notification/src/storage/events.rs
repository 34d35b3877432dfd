//! The feed: stored events in publication order and the feed head, the position of the last.

use std::collections::HashMap;

use sqlx::any::AnyRow;
use sqlx::{Any, Row};
use subsidy_common::db::{Kind, bind_padding, padded_in, padded_insert};
use subsidy_common::{Money, Uscc};

use super::{Arg, Store, Tx, bind_all, corrupt, optional};
use crate::domain::event::{
    EmailAddress, Event, EventFilter, EventId, EventType, Language, Program,
};

const EVENT_COLUMNS: &str = "seq, event_id, event_type, application_id, enterprise_uscc, program, amount_fen, \
     occur_us, traceparent, tracestate, payload_json, language, recipient_email, round_id, source, content_hash, \
     published_us";

/// An event as stored, with its feed position.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    /// Position in the feed, from 1.
    pub seq: i64,
    /// The event.
    pub event: Event,
    /// When it was first stored, µs.
    pub published_us: i64,
}

fn event_row(row: &AnyRow) -> Result<StoredEvent, sqlx::Error> {
    let event_id: String = row.try_get("event_id")?;
    let kind: String = row.try_get("event_type")?;
    let amount_fen: Option<i64> = row.try_get("amount_fen")?;
    let payload: String = row.try_get("payload_json")?;
    let event = Event {
        event_id: EventId::parse(&event_id).map_err(|e| corrupt(format!("event_id: {e}")))?,
        event_type: EventType::parse(&kind).ok_or_else(|| corrupt(format!("type {kind}")))?,
        application_id: row.try_get("application_id")?,
        enterprise_uscc: optional(&row.try_get::<String, _>("enterprise_uscc")?, |text| {
            Uscc::parse(text).map_err(|e| format!("uscc: {e}"))
        })?,
        program: optional(&row.try_get::<String, _>("program")?, |text| {
            Program::parse(text).ok_or_else(|| format!("program {text}"))
        })?,
        amount: amount_fen
            .map(Money::from_fen)
            .transpose()
            .map_err(|e| corrupt(format!("amount: {e}")))?,
        occur_us: row.try_get("occur_us")?,
        traceparent: row.try_get("traceparent")?,
        tracestate: row.try_get("tracestate")?,
        payload: serde_json::from_str(&payload).map_err(|e| corrupt(format!("payload: {e}")))?,
        language: optional(&row.try_get::<String, _>("language")?, |text| {
            Language::parse(text).ok_or_else(|| format!("language {text}"))
        })?,
        recipient_email: optional(&row.try_get::<String, _>("recipient_email")?, |text| {
            EmailAddress::parse(text).map_err(|e| format!("email: {e}"))
        })?,
        round_id: row.try_get("round_id")?,
        source: row.try_get("source")?,
    };
    Ok(StoredEvent {
        seq: row.try_get("seq")?,
        event,
        published_us: row.try_get("published_us")?,
    })
}

/// One event and its content hash.
async fn event_by_id<'e>(
    executor: impl sqlx::Executor<'e, Database = Any>,
    event_id: &str,
) -> Result<Option<(StoredEvent, String)>, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE event_id = $1"
    )))
    .bind(event_id)
    .fetch_optional(executor)
    .await?;
    row.map(|row| Ok((event_row(&row)?, row.try_get("content_hash")?)))
        .transpose()
}

impl Store {
    /// Takes the next feed position. The head's row lock serialises publications from here to
    /// commit, which is what makes the feed gap-free for readers of the head.
    pub async fn next_seq(&self, tx: &mut Tx) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(
            "UPDATE feed_head SET last_seq = last_seq + 1 WHERE singleton = 1 RETURNING last_seq",
        )
        .fetch_one(&mut **tx)
        .await
    }

    /// Locks the feed head for a publication of several events and answers the position of
    /// the last stored event. The lock is held to commit, as [`Store::next_seq`]'s is; the
    /// publication then moves the head with [`Store::advance_feed_head`].
    pub async fn lock_feed_head(&self, tx: &mut Tx) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(
            "UPDATE feed_head SET last_seq = last_seq WHERE singleton = 1 RETURNING last_seq",
        )
        .fetch_one(&mut **tx)
        .await
    }

    /// Moves the feed head, locked in `tx` by [`Store::lock_feed_head`], to `last_seq`.
    pub async fn advance_feed_head(&self, tx: &mut Tx, last_seq: i64) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE feed_head SET last_seq = $1 WHERE singleton = 1")
            .bind(last_seq)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// The position of the last stored event (0 when there is none). Every event at or
    /// before it is committed and visible.
    pub async fn feed_head(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT last_seq FROM feed_head WHERE singleton = 1")
            .fetch_one(&self.db.pool)
            .await
    }

    /// The last feed position pruned: events up to it are gone.
    pub async fn pruned_through(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT pruned_through_seq FROM feed_head WHERE singleton = 1")
            .fetch_one(&self.db.pool)
            .await
    }

    /// Stores `events`, each with its content hash, at the feed positions from `first_seq`
    /// on, in one statement; answers them as stored, in feed order.
    pub async fn insert_events(
        &self,
        tx: &mut Tx,
        first_seq: i64,
        events: &[(&Event, String)],
    ) -> Result<Vec<StoredEvent>, sqlx::Error> {
        const KINDS: [Kind; 16] = [
            Kind::Int,
            Kind::Text,
            Kind::Text,
            Kind::Text,
            Kind::Text,
            Kind::Text,
            Kind::Int,
            Kind::Int,
            Kind::Text,
            Kind::Text,
            Kind::Text,
            Kind::Text,
            Kind::Text,
            Kind::Text,
            Kind::Text,
            Kind::Text,
        ];
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let columns: Vec<String> = (1..=KINDS.len()).map(|n| format!("v.column{n}")).collect();
        let sql = padded_insert(
            &format!("INSERT INTO events ({EVENT_COLUMNS})"),
            &format!("{}, {now}", columns.join(", "), now = self.now),
            events.len(),
            &KINDS,
            &format!("RETURNING {EVENT_COLUMNS}"),
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for ((event, content_hash), seq) in events.iter().zip(first_seq..) {
            query = query
                .bind(seq)
                .bind(event.event_id.as_str().to_owned())
                .bind(event.event_type.as_str())
                .bind(event.application_id.clone())
                .bind(
                    event
                        .enterprise_uscc
                        .as_ref()
                        .map(|u| u.as_str().to_owned())
                        .unwrap_or_default(),
                )
                .bind(event.program.map(Program::as_str).unwrap_or_default())
                .bind(event.amount.map(Money::fen))
                .bind(event.occur_us)
                .bind(event.traceparent.clone())
                .bind(event.tracestate.clone())
                .bind(event.payload_json())
                .bind(event.language.map(Language::as_str).unwrap_or_default())
                .bind(
                    event
                        .recipient_email
                        .as_ref()
                        .map(|e| e.as_str().to_owned())
                        .unwrap_or_default(),
                )
                .bind(event.round_id.clone())
                .bind(event.source.clone())
                .bind(content_hash.clone());
        }
        let rows = bind_padding(query, &KINDS, events.len())
            .fetch_all(&mut **tx)
            .await?;
        let mut stored = rows.iter().map(event_row).collect::<Result<Vec<_>, _>>()?;
        if stored.len() != events.len() {
            return Err(corrupt(format!(
                "{} of {} events stored",
                stored.len(),
                events.len()
            )));
        }
        stored.sort_by_key(|event| event.seq);
        Ok(stored)
    }

    /// The stored events among `event_ids`, with their content hashes, read in `tx` in one
    /// statement, by event id.
    pub async fn find_events_in(
        &self,
        tx: &mut Tx,
        event_ids: &[&str],
    ) -> Result<HashMap<String, (StoredEvent, String)>, sqlx::Error> {
        if event_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let ids = padded_in(event_ids);
        let list: Vec<String> = (1..=ids.len()).map(|n| format!("${n}")).collect();
        let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE event_id IN ({})",
            list.join(", ")
        )));
        for id in ids {
            query = query.bind(id);
        }
        let rows = query.fetch_all(&mut **tx).await?;
        rows.iter()
            .map(|row| {
                let stored = event_row(row)?;
                let hash: String = row.try_get("content_hash")?;
                Ok((stored.event.event_id.as_str().to_owned(), (stored, hash)))
            })
            .collect()
    }

    /// One event and its content hash, read in `tx`.
    pub async fn find_event_in(
        &self,
        tx: &mut Tx,
        event_id: &str,
    ) -> Result<Option<(StoredEvent, String)>, sqlx::Error> {
        event_by_id(&mut **tx, event_id).await
    }

    /// One event.
    pub async fn get_event(&self, event_id: &str) -> Result<Option<StoredEvent>, sqlx::Error> {
        let found = event_by_id(&self.db.pool, event_id).await?;
        Ok(found.map(|(stored, _)| stored))
    }

    /// The event at feed position `seq`, which exists.
    pub async fn event_at(&self, seq: i64) -> Result<StoredEvent, sqlx::Error> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE seq = $1"
        )))
        .bind(seq)
        .fetch_one(&self.db.pool)
        .await?;
        event_row(&row)
    }

    /// Events in feed order with `after < seq <= up_to` that pass `filter`, at most `limit`.
    pub async fn list_events(
        &self,
        filter: &EventFilter,
        after: i64,
        up_to: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, sqlx::Error> {
        let mut conditions = vec!["seq > $1".to_owned(), "seq <= $2".to_owned()];
        let mut args = vec![Arg::Int(after), Arg::Int(up_to)];
        // Binds `arg` and returns its placeholder.
        let mut bind = |arg: Arg| {
            args.push(arg);
            format!("${}", args.len())
        };
        if !filter.event_types.is_empty() {
            let names: Vec<String> = filter
                .event_types
                .iter()
                .map(|kind| bind(Arg::Text(kind.as_str().into())))
                .collect();
            conditions.push(format!("event_type IN ({})", names.join(", ")));
        }
        if let Some(program) = filter.program {
            conditions.push(format!(
                "program = {}",
                bind(Arg::Text(program.as_str().into()))
            ));
        }
        if let Some(application_id) = &filter.application_id {
            conditions.push(format!(
                "application_id = {}",
                bind(Arg::Text(application_id.clone()))
            ));
        }
        if let Some(uscc) = &filter.enterprise_uscc {
            conditions.push(format!(
                "enterprise_uscc = {}",
                bind(Arg::Text(uscc.as_str().into()))
            ));
        }
        if let Some(tenants) = &filter.tenants {
            let own: Vec<String> = tenants
                .iter()
                .map(|uscc| bind(Arg::Text(uscc.clone())))
                .collect();
            // Events of no enterprise are the program's, for everyone, except those only
            // staff may read (`EventType::is_staff_only`).
            let staff_only: Vec<String> = EventType::ALL
                .into_iter()
                .filter(|kind| kind.is_staff_only())
                .map(|kind| format!("'{}'", kind.as_str()))
                .collect();
            let program_wide = format!(
                "(enterprise_uscc = '' AND event_type NOT IN ({}))",
                staff_only.join(", ")
            );
            conditions.push(if own.is_empty() {
                program_wide
            } else {
                format!(
                    "({program_wide} OR enterprise_uscc IN ({}))",
                    own.join(", ")
                )
            });
        }
        if let Some(start_us) = filter.start_us {
            conditions.push(format!("occur_us >= {}", bind(Arg::Int(start_us))));
        }
        if let Some(end_us) = filter.end_us {
            conditions.push(format!("occur_us < {}", bind(Arg::Int(end_us))));
        }
        args.push(Arg::Int(limit));
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE {} ORDER BY seq LIMIT ${}",
            conditions.join(" AND "),
            args.len()
        );
        let rows = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), args)
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter().map(event_row).collect()
    }
}
