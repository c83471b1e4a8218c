//! [`EventHub`]: hands each stored event, once, to every open stream that wants it.
//!
//! One tailer per process reads events from the store in cursor order and publishes them here
//! (see [`super::tailer`]); the hub serialises each event once and offers it to the streams of
//! its user and to the streams that watch every user. Each stream has a bounded queue: a
//! stream that falls behind by a full queue is dropped, marked as lagged, and resumes from its
//! cursor when its client reconnects. Memory is therefore bounded by streams × queue depth,
//! whatever a slow client does, and the number of streams is capped in total and per user
//! ([`StreamLimits`]): a stream is opened only with a [`StreamPermit`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde_json::{Map, Value};
use sessiond_core::event::{EventCursor, StoredEvent};
use sessiond_core::{SessionId, Timestamp, UserId};
use tokio::sync::{Notify, mpsc, watch};

use crate::http::convert::rfc3339;

/// Events a stream may have queued before it counts as too slow and is dropped. Four times the
/// tailer's page, so that a burst published at once never drops a stream that keeps up; a
/// queued event costs a pointer (the event itself is shared).
pub const STREAM_QUEUE_DEPTH: usize = 1024;

/// Caps on open event streams, SSE and WebSocket together (`SESSIOND_MAX_STREAMS`,
/// `SESSIOND_MAX_STREAMS_PER_USER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Streams open at once in this process, every caller's.
    pub total: usize,
    /// Streams one user's access tokens hold open at once (admin streams count in the total
    /// only).
    pub per_user: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            total: 2048,
            per_user: 16,
        }
    }
}

/// Why a stream was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamRefusal {
    /// The user already holds this many streams.
    PerUser(usize),
    /// The process already serves this many streams.
    Total(usize),
}

/// Streams admitted and not yet closed.
#[derive(Debug, Default)]
struct Admitted {
    total: usize,
    by_user: HashMap<UserId, usize>,
}

/// A stored event, serialised once for every stream it goes to.
#[derive(Debug)]
pub struct PublishedEvent {
    /// Its position.
    pub cursor: EventCursor,
    /// Its type.
    pub kind: &'static str,
    /// Whose it is.
    pub user_id: UserId,
    /// The session concerned.
    pub session_id: Option<SessionId>,
    /// When it happened, by the writer's clock.
    pub at: Timestamp,
    /// The wire form: `{"type", "cursor", "user_id", "session_id", "at", ...data}`.
    pub json: String,
}

impl PublishedEvent {
    /// Serialises `event`. Its `data` fields join the top level, except any that would hide a
    /// field every event has.
    pub fn new(event: StoredEvent) -> Self {
        let mut object = Map::with_capacity(5 + event.data.len());
        object.insert("type".into(), Value::from(event.kind));
        object.insert("cursor".into(), Value::from(event.cursor.to_string()));
        object.insert("user_id".into(), Value::from(event.user_id.as_str()));
        object.insert(
            "session_id".into(),
            event
                .session_id
                .map_or(Value::Null, |id| Value::from(id.to_string())),
        );
        object.insert("at".into(), Value::from(rfc3339(event.at)));
        for (name, value) in event.data {
            object.entry(name).or_insert(value);
        }
        Self {
            cursor: event.cursor,
            kind: event.kind,
            user_id: event.user_id,
            session_id: event.session_id,
            at: event.at,
            json: Value::Object(object).to_string(),
        }
    }
}

/// Which events a subscriber is sent.
#[derive(Debug, Clone)]
pub struct Interest {
    /// One user's events, or every user's when `None`.
    pub user_id: Option<UserId>,
    /// Only these types, or every type when `None`.
    pub kinds: Option<Vec<&'static str>>,
}

#[derive(Debug)]
struct Subscriber {
    id: u64,
    kinds: Option<Vec<&'static str>>,
    queue: mpsc::Sender<Arc<PublishedEvent>>,
    lagged: Arc<AtomicBool>,
}

impl Subscriber {
    /// Queues `event` if wanted; `false` when the subscriber must go (full queue or gone).
    fn offer(&self, event: &Arc<PublishedEvent>) -> bool {
        if let Some(kinds) = &self.kinds
            && !kinds.contains(&event.kind)
        {
            return true;
        }
        match self.queue.try_send(Arc::clone(event)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.lagged.store(true, Ordering::Relaxed);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

#[derive(Debug, Default)]
struct Subscribers {
    next_id: u64,
    by_user: HashMap<UserId, Vec<Subscriber>>,
    everyone: Vec<Subscriber>,
}

impl Subscribers {
    fn count(&self) -> usize {
        self.everyone.len() + self.by_user.values().map(Vec::len).sum::<usize>()
    }
}

/// What [`EventHub::listeners`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Listeners {
    /// Subscriptions open.
    pub(crate) open: usize,
    /// Subscriptions made since the hub began, open or not.
    pub(crate) made: u64,
}

/// The subscribers of one process, and the signals around them.
#[derive(Debug)]
pub struct EventHub {
    subscribers: Mutex<Subscribers>,
    /// The subscriptions open, as `subscribers` counted them at its last change: read by
    /// [`EventHub::open_streams`] and so by [`EventHub::poke`] on the write path, which must not
    /// wait for a publication holding the lock.
    open: AtomicUsize,
    /// Poked after this process writes events, so the tailer reads them at once.
    written: Notify,
    /// Set when the server shuts down: every stream ends.
    closing: watch::Sender<bool>,
    limits: StreamLimits,
    admitted: Mutex<Admitted>,
}

impl Default for EventHub {
    fn default() -> Self {
        Self::new(StreamLimits::default())
    }
}

impl EventHub {
    /// A hub that admits streams up to `limits`.
    pub fn new(limits: StreamLimits) -> Self {
        Self {
            subscribers: Mutex::default(),
            open: AtomicUsize::new(0),
            written: Notify::new(),
            closing: watch::Sender::new(false),
            limits,
            admitted: Mutex::default(),
        }
    }

    /// Admits one more stream, counted against `user` (a stream opened by that user's access
    /// token) and the total; the stream holds the permit while it is open.
    ///
    /// # Errors
    /// [`StreamRefusal`] when the user, or the process, already has as many streams as allowed.
    pub fn admit(self: &Arc<Self>, user: Option<&UserId>) -> Result<StreamPermit, StreamRefusal> {
        let mut admitted = self.admitted.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(user) = user
            && admitted.by_user.get(user).copied().unwrap_or(0) >= self.limits.per_user
        {
            return Err(StreamRefusal::PerUser(self.limits.per_user));
        }
        if admitted.total >= self.limits.total {
            return Err(StreamRefusal::Total(self.limits.total));
        }
        admitted.total += 1;
        if let Some(user) = user {
            *admitted.by_user.entry(user.clone()).or_default() += 1;
        }
        Ok(StreamPermit {
            hub: Arc::clone(self),
            user: user.cloned(),
        })
    }

    fn release(&self, user: Option<&UserId>) {
        let mut admitted = self.admitted.lock().unwrap_or_else(PoisonError::into_inner);
        admitted.total = admitted.total.saturating_sub(1);
        if let Some(user) = user
            && let Some(count) = admitted.by_user.get_mut(user)
        {
            *count -= 1;
            if *count == 0 {
                admitted.by_user.remove(user);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Subscribers> {
        // Every critical section leaves the map consistent, so a panic elsewhere cannot have
        // broken it.
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a subscriber; it receives every event published from now on that `interest`
    /// covers, until the returned [`Subscription`] is dropped or falls behind.
    pub fn subscribe(self: &Arc<Self>, interest: Interest) -> Subscription {
        let (queue, receiver) = mpsc::channel(STREAM_QUEUE_DEPTH);
        let lagged = Arc::new(AtomicBool::new(false));
        let mut subscribers = self.lock();
        subscribers.next_id += 1;
        let id = subscribers.next_id;
        let subscriber = Subscriber {
            id,
            kinds: interest.kinds,
            queue,
            lagged: Arc::clone(&lagged),
        };
        match &interest.user_id {
            Some(user) => subscribers
                .by_user
                .entry(user.clone())
                .or_default()
                .push(subscriber),
            None => subscribers.everyone.push(subscriber),
        }
        self.open.store(subscribers.count(), Ordering::SeqCst);
        Subscription {
            hub: Arc::clone(self),
            id,
            user_id: interest.user_id,
            receiver,
            lagged,
        }
    }

    fn unsubscribe(&self, id: u64, user: Option<&UserId>) {
        let mut subscribers = self.lock();
        match user {
            Some(user) => {
                if let Some(list) = subscribers.by_user.get_mut(user) {
                    list.retain(|subscriber| subscriber.id != id);
                    if list.is_empty() {
                        subscribers.by_user.remove(user);
                    }
                }
            }
            None => subscribers
                .everyone
                .retain(|subscriber| subscriber.id != id),
        }
        self.open.store(subscribers.count(), Ordering::SeqCst);
    }

    /// Offers `events` (in cursor order) to the subscribers that want them; drops those whose
    /// queue is full. With no subscriber, nothing is rendered.
    pub fn publish(&self, events: Vec<StoredEvent>) {
        if events.is_empty() || self.open_streams() == 0 {
            return;
        }
        let events: Vec<Arc<PublishedEvent>> = events
            .into_iter()
            .map(|event| Arc::new(PublishedEvent::new(event)))
            .collect();
        let mut subscribers = self.lock();
        let subscribers = &mut *subscribers;
        for event in &events {
            subscribers
                .everyone
                .retain(|subscriber| subscriber.offer(event));
            if let Some(list) = subscribers.by_user.get_mut(&event.user_id) {
                list.retain(|subscriber| subscriber.offer(event));
                if list.is_empty() {
                    subscribers.by_user.remove(&event.user_id);
                }
            }
        }
        self.open.store(subscribers.count(), Ordering::SeqCst);
    }

    /// Open subscriptions, for the metrics gauge and the tailer, without taking the lock.
    pub fn open_streams(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// The open subscriptions and how many were ever made, read together: while the second
    /// stays the same, no stream has subscribed since, nor begun to read its backlog (a
    /// stream subscribes before it reads one).
    pub(crate) fn listeners(&self) -> Listeners {
        let subscribers = self.lock();
        Listeners {
            open: subscribers.count(),
            made: subscribers.next_id,
        }
    }

    /// Tells the tailer that this process has just written events, while a stream is open:
    /// with none, the tailer only keeps its cursor current once a poll, and waking it for each
    /// write would cost the refresh path a task wake-up for nothing. A stream that subscribes
    /// after a write went unannounced reads that write's events in its backlog (or, opened
    /// without a cursor, starts after them).
    pub fn poke(&self) {
        if self.open_streams() > 0 {
            self.written.notify_one();
        }
    }

    /// Waits for [`EventHub::poke`].
    pub async fn poked(&self) {
        self.written.notified().await;
    }

    /// Ends every stream (server shutdown); streams opened afterwards end at once.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// A receiver that changes to `true` when the hub closes.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }
}

/// One admitted stream ([`EventHub::admit`]); gives its place back when dropped.
#[derive(Debug)]
pub struct StreamPermit {
    hub: Arc<EventHub>,
    user: Option<UserId>,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        self.hub.release(self.user.as_ref());
    }
}

/// One registered subscriber; unregisters itself when dropped.
#[derive(Debug)]
pub struct Subscription {
    hub: Arc<EventHub>,
    id: u64,
    user_id: Option<UserId>,
    receiver: mpsc::Receiver<Arc<PublishedEvent>>,
    lagged: Arc<AtomicBool>,
}

impl Subscription {
    /// The next published event, or `None` once the hub has dropped this subscriber.
    pub async fn recv(&mut self) -> Option<Arc<PublishedEvent>> {
        self.receiver.recv().await
    }

    /// Whether the hub dropped this subscriber for falling behind.
    pub fn lagged(&self) -> bool {
        self.lagged.load(Ordering::Relaxed)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(self.id, self.user_id.as_ref());
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt as _;
    use sessiond_core::Timestamp;

    use super::*;

    fn event(sequence: i64, user: &str, kind: &'static str) -> StoredEvent {
        StoredEvent {
            cursor: EventCursor { epoch: 0, sequence },
            kind,
            user_id: UserId::from_trusted(user.to_owned()),
            session_id: Some(SessionId::generate()),
            at: Timestamp::from_unix_millis(1_700_000_000_000),
            data: Map::from_iter([
                ("reason".to_owned(), Value::from("logout")),
                ("type".to_owned(), Value::from("forged")),
            ]),
        }
    }

    fn interest(user: Option<&str>) -> Interest {
        Interest {
            user_id: user.map(|user| UserId::from_trusted(user.to_owned())),
            kinds: None,
        }
    }

    #[tokio::test]
    async fn users_get_their_own_events_and_admins_get_all() {
        let hub = Arc::new(EventHub::default());
        let mut alice = hub.subscribe(interest(Some("alice")));
        let mut everyone = hub.subscribe(interest(None));
        hub.publish(vec![
            event(1, "bob", "session.created"),
            event(2, "alice", "session.revoked"),
        ]);
        let first = alice.recv().await.expect("alice's event");
        assert_eq!(first.cursor.sequence, 2);
        let json: Value = serde_json::from_str(&first.json).expect("JSON");
        assert_eq!(json["type"], "session.revoked", "data cannot hide the type");
        assert_eq!(json["reason"], "logout");
        assert_eq!(json["cursor"], "0.2");
        assert_eq!(json["at"], "2023-11-14T22:13:20.000Z");
        assert_eq!(everyone.recv().await.expect("first").cursor.sequence, 1);
        assert_eq!(everyone.recv().await.expect("second").cursor.sequence, 2);
        assert_eq!(hub.open_streams(), 2);
        drop(alice);
        assert_eq!(hub.open_streams(), 1);
    }

    #[test]
    fn streams_are_capped_per_user_and_in_total_and_dropping_a_permit_frees_its_place() {
        let hub = Arc::new(EventHub::new(StreamLimits {
            total: 3,
            per_user: 2,
        }));
        let alice = UserId::from_trusted("alice".to_owned());
        let bob = UserId::from_trusted("bob".to_owned());
        let first = hub.admit(Some(&alice)).expect("alice's first");
        let _second = hub.admit(Some(&alice)).expect("alice's second");
        assert_eq!(
            hub.admit(Some(&alice)).unwrap_err(),
            StreamRefusal::PerUser(2)
        );
        let _bobs = hub.admit(Some(&bob)).expect("bob is not alice");
        assert_eq!(hub.admit(None).unwrap_err(), StreamRefusal::Total(3));
        drop(first);
        let _again = hub.admit(Some(&alice)).expect("alice's place came back");
        assert_eq!(hub.admit(None).unwrap_err(), StreamRefusal::Total(3));
    }

    #[test]
    fn listeners_count_open_subscriptions_and_every_subscription_made() {
        let hub = Arc::new(EventHub::default());
        let before = hub.listeners();
        assert_eq!(before.open, 0);
        let stream = hub.subscribe(interest(Some("alice")));
        assert_eq!(hub.listeners().open, 1);
        drop(stream);
        let after = hub.listeners();
        assert_eq!(after.open, 0, "closed again");
        assert_ne!(after.made, before.made, "but made in between");
    }

    #[test]
    fn a_poke_wakes_the_tailer_only_while_a_stream_is_open() {
        let hub = Arc::new(EventHub::default());
        hub.poke();
        assert!(
            hub.poked().now_or_never().is_none(),
            "nobody listens: no wake-up is left for the tailer"
        );
        let stream = hub.subscribe(interest(None));
        hub.poke();
        assert!(hub.poked().now_or_never().is_some(), "a stream is open");
        drop(stream);
        hub.poke();
        assert!(
            hub.poked().now_or_never().is_none(),
            "the stream is closed again"
        );
    }

    #[tokio::test]
    async fn type_filters_apply() {
        let hub = Arc::new(EventHub::default());
        let mut revocations = hub.subscribe(Interest {
            user_id: None,
            kinds: Some(vec!["session.revoked"]),
        });
        hub.publish(vec![
            event(1, "bob", "session.created"),
            event(2, "bob", "session.revoked"),
        ]);
        assert_eq!(revocations.recv().await.expect("event").cursor.sequence, 2);
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_a_full_queue_behind_is_dropped_and_marked() {
        let hub = Arc::new(EventHub::default());
        let mut slow = hub.subscribe(interest(Some("alice")));
        let mut fast = hub.subscribe(interest(Some("alice")));
        for sequence in 0..=i64::try_from(STREAM_QUEUE_DEPTH).expect("small") {
            hub.publish(vec![event(sequence + 1, "alice", "session.refreshed")]);
            fast.recv().await.expect("fast keeps up");
        }
        assert!(slow.lagged());
        assert_eq!(hub.open_streams(), 1, "only the fast one is left");
        // What was queued before the drop is still delivered, then the stream ends.
        let mut delivered = 0;
        while slow.recv().await.is_some() {
            delivered += 1;
        }
        assert_eq!(delivered, STREAM_QUEUE_DEPTH);
        assert!(!fast.lagged());
    }
}
