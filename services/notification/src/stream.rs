//! The event stream: the hub that tells streams (and the worker) that something changed, the
//! opaque cursor of a feed position, and the follower that serves one `StreamEvents` call.
//!
//! Gap-free by construction: a follower reads the feed head first, then every matching event
//! up to it. Publications take their position under the head's row lock and commit in feed
//! order, so every event at or before the head is committed and visible. The hub's signal
//! only shortens the wait; without it a follower polls, so replicas that publish elsewhere
//! are followed too. A client that reconnects with its last cursor misses nothing.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use subsidy_proto::notification as pb;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::domain::event::EventFilter;
use crate::error::NotificationError;
use crate::settings::Settings;
use crate::storage::Store;
use crate::wire::event_to_proto;

/// Messages buffered per stream before the stream waits for its client.
pub const STREAM_BUFFER_LEN: usize = 64;
/// Events read per query while a stream catches up.
pub const STREAM_BATCH_LEN: i64 = 200;
/// The kind of stream cursors (the text before the position).
const CURSOR_KIND: &str = "feed";

/// The event stream, as the generated service trait names it (`tonic::codegen::BoxStream`).
pub type EventStream = Pin<Box<dyn Stream<Item = Result<pb::StreamEventsResponse, Status>> + Send>>;

/// What a process's RPCs, streams and worker signal each other: the last feed position
/// stored by this process (streams wait on it) and the worker's wake-up (deliveries may be
/// due).
#[derive(Clone, Debug)]
pub struct Hub {
    feed: watch::Sender<i64>,
    wake: Arc<Notify>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            feed: watch::channel(0).0,
            wake: Arc::new(Notify::new()),
        }
    }
}

impl Hub {
    /// Tells streams and the worker that the event at `seq` was stored.
    pub fn published(&self, seq: i64) {
        self.feed.send_modify(|head| *head = (*head).max(seq));
        self.wake.notify_one();
    }

    /// Tells the worker that deliveries may be due.
    pub fn wake_worker(&self) {
        self.wake.notify_one();
    }

    /// What the worker waits on.
    pub fn worker_wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }
}

/// The opaque stream cursor of a feed position. Its form is kept stable: clients keep their
/// last cursor across restarts and upgrades of the service.
pub fn cursor(seq: i64) -> String {
    hex::encode(format!("{CURSOR_KIND}:{seq}"))
}

/// The feed position of a cursor issued by [`cursor`].
pub fn parse_cursor(text: &str) -> Result<i64, NotificationError> {
    hex::decode(text)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| {
            text.strip_prefix(CURSOR_KIND)?
                .strip_prefix(':')?
                .parse::<i64>()
                .ok()
        })
        .filter(|seq| *seq >= 0)
        .ok_or(NotificationError::CursorInvalid)
}

/// Where a stream starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// With the first event of the feed.
    Beginning,
    /// With the next event stored.
    Head,
    /// After the event at this position (from a cursor).
    After(i64),
}

/// The streams of one process: at most `notification.streams_max` at once, all ended when the
/// process stops.
#[derive(Clone, Debug)]
pub struct Streams {
    store: Store,
    hub: Hub,
    permits: Arc<Semaphore>,
    streams_max: usize,
    stop: watch::Receiver<bool>,
    heartbeat: Duration,
    poll: Duration,
}

impl Streams {
    /// Streams over `store` woken by `hub`, ended when `stop` turns true.
    pub fn new(store: Store, hub: Hub, stop: watch::Receiver<bool>, settings: &Settings) -> Self {
        Streams {
            store,
            hub,
            permits: Arc::new(Semaphore::new(settings.streams_max as usize)),
            streams_max: settings.streams_max as usize,
            stop,
            heartbeat: Duration::from_millis(settings.stream_heartbeat_ms),
            poll: Duration::from_millis(settings.poll_interval_ms),
        }
    }

    /// Opens a stream of the events passing `filter` from `start`. A cursor beyond the feed
    /// head was not issued by this service.
    pub async fn open(
        &self,
        filter: EventFilter,
        start: Start,
    ) -> Result<EventStream, NotificationError> {
        let head = self.store.feed_head().await?;
        let pruned = self.store.pruned_through().await?;
        let after = match start {
            Start::Beginning => 0,
            Start::Head => head,
            Start::After(seq) if seq > head => return Err(NotificationError::CursorInvalid),
            Start::After(seq) if seq < pruned => {
                return Err(NotificationError::CursorExpired {
                    oldest_cursor: cursor(pruned),
                });
            }
            Start::After(seq) => seq,
        };
        let permit = self.permits.clone().try_acquire_owned().map_err(|_| {
            NotificationError::StreamLimitReached {
                streams_max: self.streams_max,
            }
        })?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER_LEN);
        let follower = Follower {
            store: self.store.clone(),
            feed: self.hub.feed.subscribe(),
            filter,
            after,
            tx,
            stop: self.stop.clone(),
            heartbeat: self.heartbeat,
            poll: self.poll,
        };
        tokio::spawn(follower.run(permit));
        Ok(Box::pin(ReceiverStream::new(rx)))
    }
}

/// Follows the feed for one stream: sends every matching event after `after` in feed order,
/// then waits for new ones, with a heartbeat after a silence.
struct Follower {
    store: Store,
    feed: watch::Receiver<i64>,
    filter: EventFilter,
    after: i64,
    tx: mpsc::Sender<Result<pb::StreamEventsResponse, Status>>,
    stop: watch::Receiver<bool>,
    heartbeat: Duration,
    poll: Duration,
}

/// What one look at the feed found.
enum Scan {
    /// Events were sent and more may be waiting.
    More,
    /// Events were sent; the stream is at the head.
    Sent,
    /// Nothing new matched.
    Nothing,
    /// The client went away.
    Closed,
}

impl Follower {
    /// Serves the stream until the client leaves or the process stops; the stream's slot is
    /// given back then.
    async fn run(mut self, permit: OwnedSemaphorePermit) {
        let mut last_sent = tokio::time::Instant::now();
        loop {
            if *self.stop.borrow() {
                break;
            }
            let scanned = match self.catch_up().await {
                Ok(scanned) => scanned,
                Err(error) => {
                    let _ = self.tx.send(Err(error.into())).await;
                    break;
                }
            };
            match scanned {
                Scan::Closed => break,
                Scan::More => {
                    last_sent = tokio::time::Instant::now();
                    continue;
                }
                Scan::Sent => last_sent = tokio::time::Instant::now(),
                Scan::Nothing => {}
            }
            match self.wait(last_sent + self.heartbeat).await {
                Wait::Stop => break,
                Wait::Look => {}
                Wait::Beat => {
                    if !self.beat().await {
                        break;
                    }
                    last_sent = tokio::time::Instant::now();
                }
            }
        }
        drop(permit);
    }

    /// Waits for a new event, the poll interval, the heartbeat time or the end.
    async fn wait(&mut self, heartbeat_at: tokio::time::Instant) -> Wait {
        tokio::select! {
            _ = self.stop.changed() => Wait::Stop,
            _ = self.tx.closed() => Wait::Stop,
            _ = self.feed.changed() => Wait::Look,
            _ = tokio::time::sleep(self.poll) => Wait::Look,
            _ = tokio::time::sleep_until(heartbeat_at) => Wait::Beat,
        }
    }

    /// Sends a heartbeat carrying the current cursor; false when the client went away.
    async fn beat(&self) -> bool {
        let beat = pb::StreamEventsResponse {
            event: None,
            cursor: cursor(self.after),
        };
        self.tx.send(Ok(beat)).await.is_ok()
    }

    /// Sends the matching events up to the head, at most one batch.
    async fn catch_up(&mut self) -> Result<Scan, NotificationError> {
        // Reading the head first is what makes the scan gap-free.
        let head = self.store.feed_head().await?;
        if head <= self.after {
            return Ok(Scan::Nothing);
        }
        let events = self
            .store
            .list_events(&self.filter, self.after, head, STREAM_BATCH_LEN)
            .await?;
        let full = events.len() as i64 == STREAM_BATCH_LEN;
        let sent_any = !events.is_empty();
        for stored in &events {
            let message = pb::StreamEventsResponse {
                event: Some(event_to_proto(stored)),
                cursor: cursor(stored.seq),
            };
            if self.tx.send(Ok(message)).await.is_err() {
                return Ok(Scan::Closed);
            }
            self.after = stored.seq;
        }
        if full {
            return Ok(Scan::More);
        }
        // Every matching event up to the head was sent; the rest were filtered out.
        self.after = head;
        Ok(if sent_any { Scan::Sent } else { Scan::Nothing })
    }
}

/// Why a follower stopped waiting.
enum Wait {
    /// The process stops or the client left.
    Stop,
    /// Something may have been published.
    Look,
    /// The silence lasted a heartbeat.
    Beat,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_foreign_tokens_are_refused() {
        // Proves a cursor carries its feed position and nothing else parses as one.
        assert_eq!(parse_cursor(&cursor(42)).ok(), Some(42));
        for foreign in ["zz", "", &hex::encode("events:1"), &hex::encode("feed:-1")] {
            assert!(parse_cursor(foreign).is_err(), "{foreign}");
        }
    }
}
