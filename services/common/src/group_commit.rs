//! Group commit of independent writes: callers hand an item to one writer task, which takes
//! everything that queued while its previous write was in flight (at most a batch's maximum)
//! and writes it at once, so concurrent callers share one statement, one commit and one fsync.
//! An idle writer takes the first item at once: a lone caller waits for no one.
//!
//! Each caller is answered only after its item's write has committed or failed, never before.
//! The writer applies each batch in a task of its own: if that task panics, the batch's callers
//! are answered with an error (their reply channels close) and the writer goes on with the next
//! batch. The writer ends when the last [`GroupCommit`] handle is dropped.
//!
//! A write may answer each item a value of its own (`R`), such as what the notification's
//! recording of an attempt decided; most answer nothing (`()`).
//!
//! The budget has its own per-pool writer, which decides operations against locked counters;
//! this one is for writes that need no decision against other callers' items, such as the rules
//! service's stored decisions or the notification's recorded attempts.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::db::DbError;

/// Most items waiting for the writer; further callers wait for room.
pub const QUEUE_ITEMS_MAX: usize = 4_096;

type Reply<R> = oneshot::Sender<Result<R, DbError>>;

/// A handle on a group-commit writer of items of type `T`, each answered an `R`.
#[derive(Debug)]
pub struct GroupCommit<T, R = ()> {
    queue: mpsc::Sender<(T, Reply<R>)>,
}

impl<T, R> Clone for GroupCommit<T, R> {
    fn clone(&self) -> Self {
        GroupCommit {
            queue: self.queue.clone(),
        }
    }
}

impl<T: Send + 'static, R: Send + 'static> GroupCommit<T, R> {
    /// Starts a writer on the current runtime that writes batches of at most `batch_items_max`
    /// items with `write`. `write` answers one result per item, in the items' order (a batch
    /// written in one statement answers the statement's result for each item).
    ///
    /// # Panics
    /// When `batch_items_max` is zero.
    pub fn spawn<W, F>(batch_items_max: usize, write: W) -> Self
    where
        W: Fn(Vec<T>) -> F + Send + Sync + 'static,
        F: Future<Output = Vec<Result<R, DbError>>> + Send + 'static,
    {
        assert!(batch_items_max > 0, "a batch holds at least one item");
        let (queue, receiver) = mpsc::channel(QUEUE_ITEMS_MAX);
        tokio::spawn(run(receiver, batch_items_max, Arc::new(write)));
        GroupCommit { queue }
    }

    /// Hands `item` to the writer and waits until it is written (or its batch failed).
    pub async fn submit(&self, item: T) -> Result<R, DbError> {
        let (reply, answer) = oneshot::channel();
        if self.queue.send((item, reply)).await.is_err() {
            return Err(stopped());
        }
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }
}

/// The error of a caller whose writer is gone or whose batch panicked: the write did not
/// happen, and the caller may try again.
fn stopped() -> DbError {
    DbError::Unavailable(sqlx::Error::PoolClosed)
}

async fn run<T, R, W, F>(
    mut receiver: mpsc::Receiver<(T, Reply<R>)>,
    batch_items_max: usize,
    write: Arc<W>,
) where
    T: Send + 'static,
    R: Send + 'static,
    W: Fn(Vec<T>) -> F + Send + Sync + 'static,
    F: Future<Output = Vec<Result<R, DbError>>> + Send + 'static,
{
    while let Some(first) = receiver.recv().await {
        let mut batch = vec![first];
        while batch.len() < batch_items_max {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let (items, replies): (Vec<T>, Vec<Reply<R>>) = batch.into_iter().unzip();
        let write = write.clone();
        let written = tokio::spawn(async move {
            let results = write(items).await;
            assert_eq!(
                results.len(),
                replies.len(),
                "a group-commit write answers once per item"
            );
            for (reply, result) in replies.into_iter().zip(results) {
                // A caller that stopped waiting no longer needs its answer.
                let _ = reply.send(result);
            }
        });
        if let Err(failure) = written.await {
            tracing::error!(error = %failure, "a group-commit batch failed; the writer goes on");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    /// Callers that arrive while a batch is being written share the next batch, and each gets
    /// its own item's result.
    #[tokio::test]
    async fn callers_queued_during_a_write_share_the_next_batch() {
        let batches: Arc<Mutex<Vec<Vec<u32>>>> = Arc::default();
        let seen = batches.clone();
        let writer = GroupCommit::spawn(8, move |items: Vec<u32>| {
            seen.lock().unwrap().push(items.clone());
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                items
                    .iter()
                    .map(|item| {
                        if item % 2 == 0 {
                            Ok(())
                        } else {
                            Err(DbError::Url(format!("odd {item}")))
                        }
                    })
                    .collect()
            }
        });
        let first = tokio::spawn({
            let writer = writer.clone();
            async move { writer.submit(0).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let rest: Vec<_> = (1..=10)
            .map(|item| {
                let writer = writer.clone();
                tokio::spawn(async move { (item, writer.submit(item).await) })
            })
            .collect();
        assert!(first.await.unwrap().is_ok());
        for caller in rest {
            let (item, result) = caller.await.unwrap();
            assert_eq!(result.is_ok(), item % 2 == 0, "item {item}");
        }
        let batches = batches.lock().unwrap().clone();
        assert_eq!(batches[0], vec![0], "a lone caller is written at once");
        assert_eq!(
            batches[1].len(),
            8,
            "the next batch takes up to its maximum"
        );
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 11);
    }

    /// A write that answers values gives each caller its own item's value, batched or not.
    #[tokio::test]
    async fn each_caller_gets_the_value_answered_for_its_own_item() {
        let writer = GroupCommit::spawn(4, |items: Vec<u32>| async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            items.iter().map(|item| Ok(item * 10)).collect()
        });
        let callers: Vec<_> = (1..=9)
            .map(|item| {
                let writer = writer.clone();
                tokio::spawn(async move { (item, writer.submit(item).await) })
            })
            .collect();
        for caller in callers {
            let (item, answer) = caller.await.unwrap();
            assert_eq!(answer.unwrap(), item * 10);
        }
    }

    /// A batch whose write panics answers its callers with an error, and the writer goes on.
    #[tokio::test]
    async fn a_panicking_batch_answers_its_callers_and_the_writer_goes_on() {
        let writer = GroupCommit::spawn(4, |items: Vec<u32>| async move {
            assert!(!items.contains(&7), "seven is refused loudly");
            items.iter().map(|_| Ok(())).collect()
        });
        assert!(matches!(
            writer.submit(7).await,
            Err(DbError::Unavailable(_))
        ));
        assert!(writer.submit(1).await.is_ok());
    }
}
