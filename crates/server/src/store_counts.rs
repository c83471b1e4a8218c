//! The counts over the active sessions (`Store::stats`) that `GET /v1/stats`,
//! `GET /v1/stats/history` and the gauge task ask for, one count at a time.
//!
//! A count reads every active session: about 1.6 s of a read connection at 1,000,000 sessions
//! on SQLite. Counted once per caller, a few dashboards polling at once would hold as many of
//! the store's read connections, and listings and audit reads would queue behind them. So a
//! caller that arrives while a count runs waits for it to end and then takes the outcome of the
//! next count to begin, shared by every caller that arrived before that one began: each answer
//! is still counted after its request arrived, and at most one count runs at a time, however
//! many callers ask.
//!
//! A count that fails answers its waiting callers with copies of its failure (a store that is
//! down fails each of them once, not once per caller in turn). A count whose caller stopped
//! waiting ends there and answers no one; the next caller in line counts again.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use sessiond_core::store::{StoreError, StoreStats};
use tokio::sync::Mutex;

/// One count at a time, shared by the callers that wait for it.
#[derive(Debug, Default)]
pub(crate) struct StoreCounts {
    /// Counts begun so far.
    begun: AtomicU64,
    /// Held while a count runs: the number and outcome of the last count that ended.
    last: Mutex<Option<(u64, Result<StoreStats, StoreError>)>>,
}

impl StoreCounts {
    /// The outcome of a count begun after this call: `count`'s own, or that of the count begun
    /// next after this call by another caller.
    ///
    /// # Errors
    /// That count's failure.
    pub(crate) async fn count<F, C>(&self, count: C) -> Result<StoreStats, StoreError>
    where
        C: FnOnce() -> F,
        F: Future<Output = Result<StoreStats, StoreError>>,
    {
        let arrived = self.begun.load(Ordering::Acquire);
        let mut last = self.last.lock().await;
        if let Some((number, outcome)) = &*last
            && *number > arrived
        {
            return shared(outcome);
        }
        let number = self.begun.fetch_add(1, Ordering::AcqRel) + 1;
        let outcome = count().await;
        *last = Some((number, shared(&outcome)));
        outcome
    }
}

/// A copy of a count's outcome for one of its callers.
fn shared(outcome: &Result<StoreStats, StoreError>) -> Result<StoreStats, StoreError> {
    outcome.as_ref().copied().map_err(StoreError::duplicate)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use sessiond_core::store::{StoreError, StoreStats};
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    use super::StoreCounts;

    /// What a count answers, given how many counts have run with it.
    type Outcome = fn(u64) -> Result<StoreStats, StoreError>;
    type Caller = JoinHandle<Result<StoreStats, StoreError>>;

    fn counted(run: u64) -> Result<StoreStats, StoreError> {
        Ok(StoreStats {
            active_sessions: run,
            ..StoreStats::default()
        })
    }

    fn down(run: u64) -> Result<StoreStats, StoreError> {
        Err(StoreError::Unavailable(
            format!("the database is down (count {run})").into(),
        ))
    }

    /// A caller, spawned; its count, if it runs one, waits for `release` when there is one,
    /// then answers `outcome`.
    fn caller(
        counts: &Arc<StoreCounts>,
        runs: &Arc<AtomicU64>,
        release: Option<oneshot::Receiver<()>>,
        outcome: Outcome,
    ) -> Caller {
        let (counts, runs) = (Arc::clone(counts), Arc::clone(runs));
        tokio::spawn(async move {
            counts
                .count(|| async move {
                    if let Some(release) = release {
                        release.await.expect("released");
                    }
                    outcome(runs.fetch_add(1, Ordering::AcqRel) + 1)
                })
                .await
        })
    }

    /// Lets every spawned task run until it waits (the runtime has one thread).
    async fn settle() {
        for _ in 0..16 {
            tokio::task::yield_now().await;
        }
    }

    /// A first caller whose count runs until the others have arrived: `waiting` callers, all
    /// answering `outcome`. Answers the first and the others, once the first's count is let go.
    async fn one_count_then_waiting(
        counts: &Arc<StoreCounts>,
        runs: &Arc<AtomicU64>,
        waiting: usize,
        outcome: Outcome,
    ) -> (Caller, Vec<Caller>) {
        let (release, released) = oneshot::channel();
        let first = caller(counts, runs, Some(released), outcome);
        settle().await;
        let waiting = (0..waiting)
            .map(|_| caller(counts, runs, None, outcome))
            .collect();
        settle().await;
        assert_eq!(runs.load(Ordering::Acquire), 0, "no count has ended yet");
        release.send(()).expect("release");
        (first, waiting)
    }

    /// Two counts ran, and a caller arriving after both ended counts anew.
    async fn two_counts_then_a_new_one(counts: &Arc<StoreCounts>, runs: &Arc<AtomicU64>) {
        assert_eq!(runs.load(Ordering::Acquire), 2);
        assert_eq!(
            active_sessions(caller(counts, runs, None, counted)).await,
            3
        );
    }

    async fn active_sessions(caller: Caller) -> u64 {
        caller
            .await
            .expect("caller")
            .expect("count")
            .active_sessions
    }

    #[tokio::test(flavor = "current_thread")]
    async fn callers_that_arrive_during_a_count_share_the_next_one() {
        let (counts, runs) = Default::default();
        let (first, waiting) = one_count_then_waiting(&counts, &runs, 5, counted).await;

        assert_eq!(active_sessions(first).await, 1);
        for waiting in waiting {
            // None takes the count that began before it arrived; all share the one after.
            assert_eq!(active_sessions(waiting).await, 2);
        }
        two_counts_then_a_new_one(&counts, &runs).await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_failed_count_answers_the_callers_waiting_for_it_and_the_next_caller_counts_again() {
        let (counts, runs) = Default::default();
        let (first, waiting) = one_count_then_waiting(&counts, &runs, 3, down).await;

        let failure = first.await.expect("first").expect_err("a failure");
        assert!(matches!(failure, StoreError::Unavailable(_)), "{failure:?}");
        for waiting in waiting {
            // Each of the three has a copy of the second count's failure.
            let failure = waiting.await.expect("caller").expect_err("a failure");
            assert!(matches!(failure, StoreError::Unavailable(_)), "{failure:?}");
            let source = std::error::Error::source(&failure).map(ToString::to_string);
            assert_eq!(source.as_deref(), Some("the database is down (count 2)"));
        }
        two_counts_then_a_new_one(&counts, &runs).await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_count_whose_caller_stopped_waiting_answers_no_one() {
        let (counts, runs) = Default::default();
        let (_never_released, held) = oneshot::channel();
        let abandoned = caller(&counts, &runs, Some(held), counted);
        settle().await;
        let next = caller(&counts, &runs, None, counted);
        settle().await;
        abandoned.abort();
        assert_eq!(active_sessions(next).await, 1);
    }
}
