//! The API's connections: accepted under a cap, closed when a client is slow to send a request
//! or leaves a connection idle, and handed to hyper with the router.
//!
//! Each connection is in one of two states. *Waiting*: no request is being answered, so it is
//! either receiving a request's headers (from its first byte, or from the accept) or idle
//! between requests; it is closed once it has spent `header_timeout` on the headers or
//! `keep_alive_timeout` idle, and it may be closed to make room. *Answering*: a request's
//! headers are in and its answer is not finished, which covers a request body still arriving
//! (the router's own deadline, [`crate::http`]'s `request_body`, bounds that) and an event
//! stream (bounded by the stream caps instead). A WebSocket leaves both states when it upgrades:
//! it keeps its place among the connections until it closes, and no timeout here applies to it.
//!
//! At most `max_connections` are open. A new connection beyond that closes the waiting
//! connection that has waited longest, so slow or idle clients cannot lock others out and the
//! number of open sockets stays bounded; when every connection is answering, the new one is
//! answered `503 too_many_connections` at once and closed.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt as _;

/// Timeouts and the cap of the API's connections (`SESSIOND_HEADER_TIMEOUT`,
/// `SESSIOND_BODY_TIMEOUT`, `SESSIOND_KEEP_ALIVE_TIMEOUT`, `SESSIOND_MAX_CONNECTIONS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// How long a request's headers may take, from the connection's accept or the request's
    /// first byte.
    pub header_timeout: Duration,
    /// How long a request's body may take once its headers are in.
    pub body_timeout: Duration,
    /// How long a connection may wait idle for its next request.
    pub keep_alive_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(20),
            // Longer than the 60 s idle timeout of common load balancers, so that they, not
            // sessiond, close an idle connection first and never reuse one sessiond just closed.
            keep_alive_timeout: Duration::from_secs(75),
            max_connections: 4096,
        }
    }
}

/// The largest request head (start line and headers) accepted; a larger one is answered 431.
/// Also the largest buffer hyper keeps per connection, the bound on what a waiting connection
/// holds in memory.
const MAX_HEAD: usize = 64 * 1024;
/// Refused connections being answered at once; beyond that they are closed without an answer.
const MAX_REFUSING: usize = 64;
/// How long a refused connection may take to be answered and closed.
const REFUSAL_GRACE: Duration = Duration::from_secs(1);
/// What a refused connection reads (and drops) at most before it closes.
const REFUSAL_DRAIN: usize = 64 * 1024;
/// How long the accept loop pauses after an error that is not the client's (out of file
/// descriptors), so that it does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The answer to a connection beyond the cap when none can make room.
static REFUSAL: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let body = r#"{"error":"too_many_connections","message":"the server has as many connections open as it allows; retry later","retry_after":1}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
});

/// The instant milliseconds are counted from: connection times are kept in atomics as
/// milliseconds since this, plus one, so that 0 means "not set".
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_millis() -> u64 {
    u64::try_from(EPOCH.elapsed().as_millis())
        .unwrap_or(u64::MAX - 1)
        .saturating_add(1)
}

fn instant_of(millis: u64) -> Instant {
    *EPOCH + Duration::from_millis(millis.saturating_sub(1))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// One open connection, as its task, its I/O and the registry see it.
#[derive(Debug)]
struct Connection {
    /// Requests being answered.
    answering: AtomicU32,
    /// When it last started waiting: its accept, or the end of its last answer.
    waiting_since: AtomicU64,
    /// When the headers it is receiving started (its first byte, or the accept for its first
    /// request); 0 while it is idle without a byte.
    headers_since: AtomicU64,
    /// Set once it upgraded to a WebSocket: its task is gone and the socket belongs to the
    /// stream.
    upgraded: AtomicBool,
    /// Set when the registry chose to close it to make room.
    evicted: AtomicBool,
    /// Wakes its task when its state changes.
    changed: Notify,
    /// Wakes its task to close it.
    evict: Notify,
}

impl Connection {
    fn new() -> Self {
        let now = now_millis();
        Self {
            answering: AtomicU32::new(0),
            waiting_since: AtomicU64::new(now),
            headers_since: AtomicU64::new(now),
            upgraded: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            changed: Notify::new(),
            evict: Notify::new(),
        }
    }

    /// Whether it may be closed to make room: waiting, not upgraded, not already chosen.
    fn evictable(&self) -> bool {
        self.answering.load(Ordering::Acquire) == 0
            && !self.upgraded.load(Ordering::Acquire)
            && !self.evicted.load(Ordering::Acquire)
    }

    /// When it times out, in milliseconds; `None` while it is answering or upgraded.
    fn deadline(&self, settings: &ConnectionSettings) -> Option<u64> {
        if self.answering.load(Ordering::Acquire) > 0 || self.upgraded.load(Ordering::Acquire) {
            return None;
        }
        match self.headers_since.load(Ordering::Acquire) {
            0 => Some(
                self.waiting_since
                    .load(Ordering::Acquire)
                    .saturating_add(millis(settings.keep_alive_timeout)),
            ),
            since => Some(since.saturating_add(millis(settings.header_timeout))),
        }
    }

    /// Bytes arrived: an idle connection starts receiving a request's headers.
    fn received(&self) {
        if self.headers_since.load(Ordering::Relaxed) == 0
            && self.answering.load(Ordering::Relaxed) == 0
            && self
                .headers_since
                .compare_exchange(0, now_millis(), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.changed.notify_one();
        }
    }
}

/// The open connections and the cap on them.
#[derive(Debug)]
struct Connections {
    max: usize,
    registry: Mutex<Registry>,
}

#[derive(Debug, Default)]
struct Registry {
    next_id: u64,
    open: HashMap<u64, Arc<Connection>>,
    /// Open connections already told to close.
    evicting: usize,
}

impl Connections {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        // Every critical section leaves the registry consistent.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for a new connection, closing the longest-waiting connection if the cap is
    /// reached; `None` when every connection is answering.
    fn admit(self: &Arc<Self>) -> Option<Slot> {
        let mut registry = self.lock();
        if registry.open.len() - registry.evicting >= self.max {
            let victim = registry
                .open
                .values()
                .filter(|connection| connection.evictable())
                .min_by_key(|connection| connection.waiting_since.load(Ordering::Acquire))
                .cloned()?;
            victim.evicted.store(true, Ordering::Release);
            victim.evict.notify_one();
            registry.evicting += 1;
        }
        registry.next_id += 1;
        let id = registry.next_id;
        let connection = Arc::new(Connection::new());
        registry.open.insert(id, Arc::clone(&connection));
        Some(Slot {
            connections: Arc::clone(self),
            id,
            connection,
        })
    }
}

/// A connection's place among the open ones; given back when the socket closes.
#[derive(Debug)]
struct Slot {
    connections: Arc<Connections>,
    id: u64,
    connection: Arc<Connection>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut registry = self.connections.lock();
        if let Some(connection) = registry.open.remove(&self.id)
            && connection.evicted.load(Ordering::Acquire)
        {
            registry.evicting -= 1;
        }
    }
}

/// A socket that holds its connection's [`Slot`] (through a WebSocket upgrade too) and tells
/// the connection when bytes arrive.
#[derive(Debug)]
struct TrackedStream {
    stream: TcpStream,
    slot: Slot,
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.slot.connection.received();
        }
        polled
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A request being answered: the connection counts as answering until the answer's body is
/// finished (or dropped).
#[derive(Debug)]
struct Answering(Arc<Connection>);

impl Answering {
    fn start(connection: Arc<Connection>) -> Self {
        connection.answering.fetch_add(1, Ordering::AcqRel);
        Self(connection)
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        let connection = &self.0;
        if connection.answering.fetch_sub(1, Ordering::AcqRel) == 1 {
            connection.headers_since.store(0, Ordering::Release);
            connection
                .waiting_since
                .store(now_millis(), Ordering::Release);
            connection.changed.notify_one();
        }
    }
}

/// An answer's body, holding its [`Answering`] until hyper has sent (or dropped) it.
#[derive(Debug)]
struct AnswerBody {
    body: Body,
    _answering: Answering,
}

impl HttpBody for AnswerBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Serves `router` on `listener` under `settings` until `shutdown` completes, then stops
/// accepting, lets every connection finish the request it is answering, and returns once all
/// have closed (upgraded WebSockets excepted: their streams end on their own).
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    settings: ConnectionSettings,
    shutdown: impl Future<Output = ()>,
) {
    let connections = Arc::new(Connections {
        max: settings.max_connections,
        registry: Mutex::default(),
    });
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let (stop, stopped) = watch::channel(false);
    let mut builder = http1::Builder::new();
    builder.max_buf_size(MAX_HEAD).max_header_size(MAX_HEAD);
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    if !is_connection_error(&error) {
                        tracing::warn!(error = %error, "cannot accept a connection");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    }
                    continue;
                }
            },
        };
        let Some(slot) = connections.admit() else {
            tracing::debug!(%peer, "connection refused: every connection is answering");
            refuse(stream, &refusing);
            continue;
        };
        let connection = Arc::clone(&slot.connection);
        let io = TokioIo::new(TrackedStream { stream, slot });
        tokio::spawn(serve_connection(
            builder.clone(),
            io,
            connection,
            router.clone(),
            peer,
            settings,
            stopped.clone(),
        ));
    }
    drop(listener);
    stop.send_replace(true);
    drop(stopped);
    // Every connection task holds a receiver: this returns once the last one has ended.
    stop.closed().await;
}

/// Whether an accept error concerns only the connection being accepted.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Answers a connection beyond the cap with `503 too_many_connections` and closes it, reading
/// what the client sends meanwhile so that the close does not reset the connection and destroy
/// the answer before the client reads it. At most [`MAX_REFUSING`] at once; others are closed
/// without a word.
fn refuse(mut stream: TcpStream, refusing: &Arc<Semaphore>) {
    let Ok(permit) = Arc::clone(refusing).try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let _ = tokio::time::timeout(REFUSAL_GRACE, async {
            stream.write_all(&REFUSAL).await?;
            stream.shutdown().await?;
            let mut sink = [0_u8; 4096];
            let mut drained = 0;
            while drained < REFUSAL_DRAIN {
                match stream.read(&mut sink).await? {
                    0 => break,
                    read => drained += read,
                }
            }
            io::Result::Ok(())
        })
        .await;
    });
}

async fn serve_connection(
    builder: http1::Builder,
    io: TokioIo<TrackedStream>,
    connection: Arc<Connection>,
    router: Router,
    peer: SocketAddr,
    settings: ConnectionSettings,
    mut stop: watch::Receiver<bool>,
) {
    let answered = Arc::clone(&connection);
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        let router = router.clone();
        let answering = Answering::start(Arc::clone(&answered));
        async move {
            request.extensions_mut().insert(ConnectInfo(peer));
            let response = match router.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                answering.0.upgraded.store(true, Ordering::Release);
            }
            Ok::<_, Infallible>(response.map(|body| AnswerBody {
                body,
                _answering: answering,
            }))
        }
    });
    let mut served = pin!(builder.serve_connection(io, service).with_upgrades());
    let mut stopping = false;
    loop {
        let deadline = connection.deadline(&settings);
        tokio::select! {
            biased;
            result = served.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, error = %error, "connection ended with an error");
                }
                return;
            }
            () = connection.evict.notified() => {
                tracing::debug!(%peer, "connection closed to make room for a new one");
                return;
            }
            () = connection.changed.notified() => {}
            () = sleep_until(deadline) => {
                if connection.deadline(&settings).is_some_and(|deadline| deadline <= now_millis()) {
                    tracing::debug!(%peer, "connection timed out waiting for a request");
                    return;
                }
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                served.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Sleeps until `deadline` (milliseconds as [`now_millis`] counts them), or forever.
async fn sleep_until(deadline: Option<u64>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(instant_of(deadline)).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connections(max: usize) -> Arc<Connections> {
        Arc::new(Connections {
            max,
            registry: Mutex::default(),
        })
    }

    #[test]
    fn beyond_the_cap_the_longest_waiting_connection_makes_room_and_answering_ones_never_do() {
        let connections = connections(2);
        let oldest = connections.admit().expect("room");
        let newer = connections.admit().expect("room");
        newer
            .connection
            .waiting_since
            .fetch_add(10, Ordering::AcqRel);
        let third = connections
            .admit()
            .expect("the oldest waiting one makes room");
        assert!(oldest.connection.evicted.load(Ordering::Acquire));
        assert!(!newer.connection.evicted.load(Ordering::Acquire));
        drop(oldest);
        assert_eq!(connections.lock().open.len(), 2);
        assert_eq!(connections.lock().evicting, 0);

        let _busy_newer = Answering::start(Arc::clone(&newer.connection));
        let _busy_third = Answering::start(Arc::clone(&third.connection));
        assert!(
            connections.admit().is_none(),
            "every connection is answering: refused"
        );
    }

    #[test]
    fn a_waiting_connection_times_out_on_its_headers_first_and_then_on_idleness() {
        let settings = ConnectionSettings {
            header_timeout: Duration::from_secs(1),
            keep_alive_timeout: Duration::from_secs(60),
            ..ConnectionSettings::default()
        };
        let connection = Arc::new(Connection::new());
        let accepted = connection.headers_since.load(Ordering::Acquire);
        assert_eq!(connection.deadline(&settings), Some(accepted + 1000));
        let answering = Answering::start(Arc::clone(&connection));
        assert_eq!(
            connection.deadline(&settings),
            None,
            "answering: no deadline"
        );
        drop(answering);
        let idle = connection.waiting_since.load(Ordering::Acquire);
        assert_eq!(connection.deadline(&settings), Some(idle + 60_000));
        connection.received();
        let started = connection.headers_since.load(Ordering::Acquire);
        assert_eq!(connection.deadline(&settings), Some(started + 1000));
        connection.upgraded.store(true, Ordering::Release);
        assert_eq!(
            connection.deadline(&settings),
            None,
            "upgraded: no deadline"
        );
    }
}
