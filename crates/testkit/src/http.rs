//! Serving an axum router on a listener of its own for the length of a test, and forwarding
//! requests to another server (the core of every test proxy).

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::header;
use axum::response::Response;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A router served on `127.0.0.1`, stopped when this is dropped.
#[derive(Debug)]
pub struct HttpServer {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    shutdown: Option<oneshot::Sender<()>>,
}

impl HttpServer {
    /// Serves `router` on a port-0 listener.
    ///
    /// # Panics
    ///
    /// If no port can be bound.
    pub async fn spawn(router: Router) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        Self::spawn_on(listener, router)
    }

    /// Serves `router` on `listener`.
    ///
    /// # Panics
    ///
    /// If the listener has no local address.
    pub fn spawn_on(listener: TcpListener, router: Router) -> Self {
        let address = listener.local_addr().expect("local address");
        let (shutdown, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .expect("the test HTTP server runs");
        });
        Self {
            base: format!("http://{address}"),
            shutdown: Some(shutdown),
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Sends `request` (method, path and query, headers and body) to `upstream` and returns its
/// answer as it came, but for the framing headers hyper sets again.
///
/// # Panics
///
/// If the body cannot be read or `upstream` does not answer.
pub async fn forward(http: &reqwest::Client, upstream: &str, request: Request) -> Response {
    let path = request
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().clone();
    let headers = request.headers().clone();
    let body = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .expect("request body");
    let mut outgoing = http.request(method, format!("{upstream}{path}")).body(body);
    for (name, value) in &headers {
        if name != header::HOST && name != header::CONTENT_LENGTH {
            outgoing = outgoing.header(name, value);
        }
    }
    let answer = outgoing.send().await.expect("upstream answers");
    let status = answer.status();
    let answer_headers = answer.headers().clone();
    let bytes = answer.bytes().await.expect("upstream body");
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    for (name, value) in &answer_headers {
        if name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING {
            response.headers_mut().append(name, value.clone());
        }
    }
    response
}
