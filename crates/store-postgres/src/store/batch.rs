//! Operations that arrive together, sent to the database together: the hot path's rotations
//! (see [`rotation`](super::rotation)).
//!
//! Under load much of PostgreSQL's work for a small statement is per statement, not per row:
//! starting the executor (opening every index the plan touches), ending the transaction, and
//! the round trip itself; and every statement costs sessiond a pool checkout and sqlx's check
//! of the connection when it is returned. (Lookups are not batched: measured, a batch of them
//! cost PostgreSQL more CPU per refresh than one statement each, and added a wait to every
//! request.) A [`Batcher`] sends one batch at a time; what is
//! queued meanwhile leaves as the next batch. An idle store sends an operation at once, alone,
//! so a quiet deployment pays nothing in latency; a busy one sends fewer, larger statements. A
//! batch still running after [`SLOW_BATCH`] (a database slow to answer, say) lets the
//! next one start beside it, up to [`MAX_BATCHES_IN_FLIGHT`], so one slow statement holds up
//! the others for that long at most.
//!
//! A caller that stops waiting (its operation timed out, its client went away) does not stop
//! its batch: the statement runs to its end whoever is still listening, exactly as a single
//! statement would once sent.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sessiond_core::store::StoreError;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// How long a batch runs before the next one may start beside it. One batch at a time makes
/// the largest batches (on a two-core machine, one rotation batch at a time cost PostgreSQL a
/// third less CPU per rotation than two).
const SLOW_BATCH: Duration = Duration::from_millis(50);

/// The most batches of one kind an instance has running at once, when batches are slow.
const MAX_BATCHES_IN_FLIGHT: usize = 4;

/// Operations waiting for a batch, beyond which a caller waits to queue (memory stays bounded
/// whatever the load).
const QUEUE_CAPACITY: usize = 1024;

/// One kind of batched operation.
pub(super) trait Batch: Send + Sync + 'static {
    /// An operation waiting for its batch, with the means to answer it.
    type Item: Send + 'static;

    /// Takes the next batch off the front of `waiting`, in arrival order; what it leaves stays,
    /// in order, for the batches after.
    fn take(&self, waiting: &mut VecDeque<Self::Item>) -> Vec<Self::Item>;

    /// Sends `batch` and answers each of its operations.
    fn send(self: Arc<Self>, batch: Vec<Self::Item>) -> impl Future<Output = ()> + Send;
}

/// The handle operations are queued through; cloned with the store. The task that forms and
/// sends batches ends when the last handle is dropped.
pub(super) struct Batcher<B: Batch> {
    queue: mpsc::Sender<B::Item>,
}

impl<B: Batch> Batcher<B> {
    /// Starts the task that forms and sends `kind`'s batches. Needs a Tokio runtime.
    pub(super) fn start(kind: B) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(form_batches(Arc::new(kind), receiver));
        Self { queue }
    }

    /// Queues `item`, which is answered through its own means once its batch has run.
    pub(super) async fn queue(&self, item: B::Item) -> Result<(), StoreError> {
        self.queue.send(item).await.map_err(|_| stopped())
    }
}

impl<B: Batch> Clone for Batcher<B> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<B: Batch> fmt::Debug for Batcher<B> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Batcher")
            .field("queued", &(QUEUE_CAPACITY - self.queue.capacity()))
            .finish()
    }
}

/// The batching task is gone (the runtime that ran it is shutting down), or dropped an
/// operation unanswered.
pub(super) fn stopped() -> StoreError {
    StoreError::Unavailable("the store's batching task has stopped".into())
}

/// Forms batches from the queue: the next one as soon as the previous one has run, or has run
/// for [`SLOW_BATCH`], with at most [`MAX_BATCHES_IN_FLIGHT`] running.
async fn form_batches<B: Batch>(kind: Arc<B>, mut queue: mpsc::Receiver<B::Item>) {
    let in_flight = Arc::new(Semaphore::new(MAX_BATCHES_IN_FLIGHT));
    // Operations taken off the queue that the batch being formed left for later.
    let mut waiting: VecDeque<B::Item> = VecDeque::new();
    loop {
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            return;
        };
        if waiting.is_empty() {
            match queue.recv().await {
                Some(item) => waiting.push_back(item),
                None => return,
            }
        }
        while waiting.len() < QUEUE_CAPACITY {
            match queue.try_recv() {
                Ok(item) => waiting.push_back(item),
                Err(_) => break,
            }
        }
        let batch = kind.take(&mut waiting);
        let (ran, done) = oneshot::channel::<()>();
        let sender = Arc::clone(&kind);
        tokio::spawn(async move {
            sender.send(batch).await;
            drop(permit);
            let _ = ran.send(());
        });
        // Meanwhile the queue fills with the next batch.
        let _ = tokio::time::timeout(SLOW_BATCH, done).await;
    }
}
