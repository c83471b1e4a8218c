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

    use super::StoreCounts;

    fn stats(active_sessions: u64) -> StoreStats {
        StoreStats {
            active_sessions,
            ..StoreStats::default()
        }
    }

    /// Lets every spawned task run until it waits (the runtime has one thread).
    async fn settle() {
        for _ in 0..16 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn callers_that_arrive_during_a_count_share_the_next_one() {
        let counts = Arc::new(StoreCounts::default());
        let runs = Arc::new(AtomicU64::new(0));
        let counting = |counts: Arc<StoreCounts>, runs: Arc<AtomicU64>| async move {
            counts
                .count(|| async {
                    let run = runs.fetch_add(1, Ordering::AcqRel) + 1;
                    Ok(stats(run))
                })
                .await
                .expect("count")
                .active_sessions
        };

        // A first count, held until released.
        let (release, released) = oneshot::channel::<()>();
        let first = tokio::spawn({
            let counts = Arc::clone(&counts);
            let runs = Arc::clone(&runs);
            async move {
                counts
                    .count(|| async {
                        released.await.expect("released");
                        let run = runs.fetch_add(1, Ordering::AcqRel) + 1;
                        Ok(stats(run))
                    })
                    .await
                    .expect("count")
                    .active_sessions
            }
        });
        settle().await;
        // Five callers arrive while it runs.
        let waiting: Vec<_> = (0..5)
            .map(|_| tokio::spawn(counting(Arc::clone(&counts), Arc::clone(&runs))))
            .collect();
        settle().await;
        assert_eq!(runs.load(Ordering::Acquire), 0);
        release.send(()).expect("release");

        assert_eq!(first.await.expect("first"), 1);
        for caller in waiting {
            // None takes the count that began before it arrived; all share the one after.
            assert_eq!(caller.await.expect("caller"), 2);
        }
        assert_eq!(runs.load(Ordering::Acquire), 2);
        // A caller arriving after both counts ended counts anew.
        assert_eq!(counting(Arc::clone(&counts), Arc::clone(&runs)).await, 3);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_failed_count_answers_the_callers_waiting_for_it_and_the_next_caller_counts_again() {
        let counts = Arc::new(StoreCounts::default());
        let runs = Arc::new(AtomicU64::new(0));
        let (release, released) = oneshot::channel::<()>();
        let failing = tokio::spawn({
            let counts = Arc::clone(&counts);
            let runs = Arc::clone(&runs);
            async move {
                counts
                    .count(|| async {
                        released.await.expect("released");
                        runs.fetch_add(1, Ordering::AcqRel);
                        Err(StoreError::Unavailable("the database is down".into()))
                    })
                    .await
            }
        });
        settle().await;
        let waiting: Vec<_> = (0..3)
            .map(|_| {
                let counts = Arc::clone(&counts);
                let runs = Arc::clone(&runs);
                tokio::spawn(async move {
                    counts
                        .count(|| async {
                            runs.fetch_add(1, Ordering::AcqRel);
                            Err(StoreError::Unavailable("the database is still down".into()))
                        })
                        .await
                })
            })
            .collect();
        settle().await;
        release.send(()).expect("release");

        let failure = failing.await.expect("failing").expect_err("a failure");
        assert!(matches!(failure, StoreError::Unavailable(_)), "{failure:?}");
        // The three took the next count's failure, counted once for all of them.
        for caller in waiting {
            let failure = caller.await.expect("caller").expect_err("a failure");
            assert!(matches!(failure, StoreError::Unavailable(_)), "{failure:?}");
            let source = std::error::Error::source(&failure).map(ToString::to_string);
            assert_eq!(source.as_deref(), Some("the database is still down"));
        }
        assert_eq!(runs.load(Ordering::Acquire), 2);
        // A caller arriving afterwards counts anew.
        let counted = counts
            .count(|| async { Ok(stats(7)) })
            .await
            .expect("count");
        assert_eq!(counted.active_sessions, 7);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_count_whose_caller_stopped_waiting_answers_no_one() {
        let counts = Arc::new(StoreCounts::default());
        let abandoned = tokio::spawn({
            let counts = Arc::clone(&counts);
            async move {
                counts
                    .count(std::future::pending::<Result<StoreStats, StoreError>>)
                    .await
            }
        });
        settle().await;
        let next = tokio::spawn({
            let counts = Arc::clone(&counts);
            async move { counts.count(|| async { Ok(stats(9)) }).await }
        });
        settle().await;
        abandoned.abort();
        let counted = next.await.expect("next").expect("count");
        assert_eq!(counted.active_sessions, 9);
    }
}
