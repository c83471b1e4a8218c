//! One persistent HTTP/1.1 keep-alive connection per worker, built on hyper's low-level client.
//!
//! The pooled `hyper_util` client would hide when connections are opened and add a pool
//! lookup to every request; a load generator wants the opposite: exactly one connection per
//! worker, requests strictly one after another on it, and a visible count of reconnects (a
//! server that honours keep-alive should cause none). Latency is measured from handing the
//! request to hyper until the last byte of the answer body, so reconnecting is not part of it.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Every request body is a single in-memory buffer.
pub(crate) type Body = Full<Bytes>;

/// Why a request produced no usable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Failure {
    /// No connection could be opened: the request never left this process.
    Connect,
    /// The connection broke while sending or receiving: the server may have acted on it.
    Transport,
    /// No complete answer within the request timeout: the server may have acted on it.
    Timeout,
    /// The server answered with a status other than the expected one.
    Status(u16),
    /// The answer had the expected status but a body this tool could not use.
    BadBody,
}

impl Failure {
    /// Whether the server may have seen the request; a refresh token sent in such a request
    /// may be spent, and sending it again could trip reuse detection.
    pub(crate) fn may_have_reached_server(self) -> bool {
        !matches!(self, Failure::Connect)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Connect => formatter.write_str("connect failed"),
            Failure::Transport => formatter.write_str("connection broke"),
            Failure::Timeout => formatter.write_str("timed out"),
            Failure::Status(status) => write!(formatter, "status {status}"),
            Failure::BadBody => formatter.write_str("unusable body"),
        }
    }
}

/// A complete answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    /// The body when it was asked for, else empty.
    pub(crate) body: Bytes,
    /// From handing over the request until the body's last byte.
    pub(crate) latency: Duration,
}

/// A worker's connection, reopened on demand when the server closes it or it breaks.
#[derive(Debug)]
pub(crate) struct Connection {
    address: SocketAddr,
    timeout: Duration,
    sender: Option<SendRequest<Body>>,
    opened: u64,
    last_connect_error: Option<String>,
}

impl Connection {
    /// A connection that opens lazily on the first request.
    pub(crate) fn new(address: SocketAddr, timeout: Duration) -> Self {
        Self {
            address,
            timeout,
            sender: None,
            opened: 0,
            last_connect_error: None,
        }
    }

    /// How many times the connection had to be reopened after the first open.
    pub(crate) fn reconnects(&self) -> u64 {
        self.opened.saturating_sub(1)
    }

    /// The most recent connect error, for the summary.
    pub(crate) fn last_connect_error(&self) -> Option<&str> {
        self.last_connect_error.as_deref()
    }

    /// Sends one request and reads the whole answer; `keep_body` says whether the body is
    /// wanted or only drained (it must be read to the end either way, or hyper closes the
    /// connection instead of reusing it).
    pub(crate) async fn exchange(
        &mut self,
        request: Request<Body>,
        keep_body: bool,
    ) -> Result<Answer, Failure> {
        let timeout = self.timeout;
        let sender = self.ready_sender().await?;
        let started = Instant::now();
        let outcome =
            tokio::time::timeout(timeout, send_and_read(sender, request, keep_body)).await;
        let latency = started.elapsed();
        match outcome {
            Ok(Ok((status, body))) => Ok(Answer {
                status,
                body,
                latency,
            }),
            // After a broken or abandoned exchange the connection's state is unknown, so it
            // is dropped (closing the socket) and the next request starts afresh.
            Ok(Err(_)) => {
                self.sender = None;
                Err(Failure::Transport)
            }
            Err(_) => {
                self.sender = None;
                Err(Failure::Timeout)
            }
        }
    }

    /// The sender of a live connection, opening one when there is none or the old one closed
    /// (for example because the server ended keep-alive).
    async fn ready_sender(&mut self) -> Result<&mut SendRequest<Body>, Failure> {
        if let Some(mut sender) = self.sender.take() {
            // For HTTP/1 `ready` resolves at once when the previous exchange is complete and
            // fails when the connection has closed meanwhile.
            if let Ok(Ok(())) = tokio::time::timeout(self.timeout, sender.ready()).await {
                return Ok(self.sender.insert(sender));
            }
        }
        match open(self.address, self.timeout).await {
            Ok(sender) => {
                self.opened += 1;
                Ok(self.sender.insert(sender))
            }
            Err(error) => {
                self.last_connect_error = Some(format!("{error:#}"));
                Err(Failure::Connect)
            }
        }
    }
}

/// Opens a TCP connection with Nagle's algorithm off and does the HTTP/1 handshake.
async fn open(address: SocketAddr, timeout: Duration) -> anyhow::Result<SendRequest<Body>> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(address))
        .await
        .with_context(|| format!("connecting to {address} timed out"))?
        .with_context(|| format!("connecting to {address}"))?;
    // Requests are small and sent one at a time; without this, Nagle's algorithm can hold a
    // request back waiting for the ACK of the previous segment and add tens of milliseconds.
    stream
        .set_nodelay(true)
        .context("setting TCP_NODELAY on the connection")?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP/1 handshake")?;
    tokio::spawn(async move {
        // The connection task ends when the peer closes or I/O fails; the sender then reports
        // the failure on the next request, which is where it is counted, so the error here
        // carries nothing more to act on.
        let _ended = connection.await;
    });
    Ok(sender)
}

async fn send_and_read(
    sender: &mut SendRequest<Body>,
    request: Request<Body>,
    keep_body: bool,
) -> Result<(StatusCode, Bytes), hyper::Error> {
    let response: Response<Incoming> = sender.send_request(request).await?;
    let status = response.status();
    let mut body = response.into_body();
    if keep_body {
        return Ok((status, body.collect().await?.to_bytes()));
    }
    // Draining frame by frame avoids gathering a body nobody will look at.
    while let Some(frame) = body.frame().await {
        frame?;
    }
    Ok((status, Bytes::new()))
}
