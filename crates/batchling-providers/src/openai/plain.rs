//! A lean HTTP/1.1 client for plain-`http` upstreams (local servers such as
//! vLLM, llama.cpp or the mock), used instead of reqwest when no TLS, HTTP/2
//! or proxy is involved.
//!
//! Why: at zero latency reqwest's per-request work (URL handling, header map
//! merging, its middleware stack and pool checkout) cost more CPU than the
//! rest of a request. Here the request target, `Host` and fixed headers are
//! built once, and keep-alive connections sit in a plain stack.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONNECTION, HOST, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use batchling_core::Endpoint;

const CUSTOM_ID: HeaderName = HeaderName::from_static("x-batchling-custom-id");

/// Why an exchange produced no answer.
#[derive(Debug)]
pub(crate) enum PlainError {
    /// Connect, send or read did not finish within the timeout.
    Timeout,
    /// The connection could not be made or broke.
    Connection(String),
}

/// A response read in full.
#[derive(Debug)]
pub(crate) struct PlainResponse {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// One keep-alive connection: the handle to send on, and its task, which
/// is ended with it (a connection given up on mid-answer, after a timeout,
/// must not linger on a server that never answers).
struct Sender {
    send: SendRequest<Full<Bytes>>,
    task: tokio::task::AbortHandle,
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// See the module docs.
pub(crate) struct PlainClient {
    /// `host:port`, to connect to.
    addr: String,
    /// Origin-form request target per endpoint (`/v1/chat/completions`).
    targets: Vec<(Endpoint, Uri)>,
    /// `Host`, `Content-Type`, the key, `User-Agent` and `--header`s.
    headers: HeaderMap,
    timeout: Duration,
    connect_timeout: Duration,
    /// Idle keep-alive connections, most recently used last.
    idle: Mutex<Vec<Sender>>,
    pool_size: usize,
}

impl std::fmt::Debug for PlainClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The headers hold the key: never printed.
        f.debug_struct("PlainClient")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl PlainClient {
    /// `base` is an `http://` URL's host, port and path prefix; `headers`
    /// the fixed headers (without `Host`, added here).
    pub(crate) fn new(
        host: &str,
        port: u16,
        path_prefix: &str,
        mut headers: HeaderMap,
        timeout: Duration,
        connect_timeout: Duration,
        pool_size: usize,
    ) -> Result<Self, String> {
        let authority = if port == 80 {
            host.to_owned()
        } else {
            format!("{host}:{port}")
        };
        headers.insert(
            HOST,
            HeaderValue::from_str(&authority).map_err(|e| e.to_string())?,
        );
        let prefix = path_prefix.trim_end_matches('/');
        let targets = Endpoint::ALL
            .into_iter()
            .map(|e| {
                format!("{prefix}{}", e.relative_path())
                    .parse::<Uri>()
                    .map(|u| (e, u))
                    .map_err(|err| err.to_string())
            })
            .collect::<Result<_, _>>()?;
        // An IPv6 literal keeps its brackets for the socket address.
        Ok(PlainClient {
            addr: format!("{host}:{port}"),
            targets,
            headers,
            timeout,
            connect_timeout,
            idle: Mutex::new(Vec::with_capacity(pool_size)),
            pool_size,
        })
    }

    /// One POST, answer read in full, within the per-attempt timeout.
    pub(crate) async fn post(
        &self,
        endpoint: Endpoint,
        custom_id: HeaderValue,
        body: Bytes,
    ) -> Result<PlainResponse, PlainError> {
        match tokio::time::timeout(self.timeout, self.exchange(endpoint, custom_id, body)).await {
            Ok(r) => r,
            Err(_) => Err(PlainError::Timeout),
        }
    }

    fn request(
        &self,
        endpoint: Endpoint,
        custom_id: &HeaderValue,
        body: Bytes,
    ) -> Request<Full<Bytes>> {
        let uri = self
            .targets
            .iter()
            .find(|(e, _)| *e == endpoint)
            .map(|(_, u)| u.clone())
            .expect("every endpoint has a target");
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = uri;
        // A clone of the whole map copies its tables at once, cheaper than
        // inserting header by header.
        let mut headers = self.headers.clone();
        headers.insert(CUSTOM_ID, custom_id.clone());
        *req.headers_mut() = headers;
        req
    }

    async fn exchange(
        &self,
        endpoint: Endpoint,
        custom_id: HeaderValue,
        body: Bytes,
    ) -> Result<PlainResponse, PlainError> {
        // A pooled connection the server has closed meanwhile fails without
        // the request having been sent: then once more on a new one.
        let mut pooled = true;
        let mut req = self.request(endpoint, &custom_id, body);
        let (sender, resp) = loop {
            let mut sender = match self.checkout(pooled) {
                Some(s) => s,
                None => {
                    pooled = false;
                    self.connect().await?
                }
            };
            if let Err(e) = sender.send.ready().await {
                if pooled {
                    continue; // closed while idle: take another
                }
                return Err(connection_error(e));
            }
            match sender.send.try_send_request(req).await {
                Ok(resp) => break (sender, resp),
                Err(mut e) => match e.take_message() {
                    Some(back) if pooled => req = back,
                    _ => return Err(connection_error(e.into_error())),
                },
            }
        };
        let status = resp.status().as_u16();
        let reuse = !resp
            .headers()
            .get(CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let (parts, incoming) = resp.into_parts();
        let body = incoming
            .collect()
            .await
            .map_err(connection_error)?
            .to_bytes();
        if reuse {
            // The connection becomes ready again once its task has seen the
            // end of this exchange; `ready()` waits for that at checkout.
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < self.pool_size {
                idle.push(sender);
            }
        }
        Ok(PlainResponse {
            status,
            headers: parts.headers,
            body,
        })
    }

    /// An idle connection that is still open, if any (and if `pooled`).
    fn checkout(&self, pooled: bool) -> Option<Sender> {
        if !pooled {
            return None;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(s) = idle.pop() {
            if !s.send.is_closed() {
                return Some(s);
            }
        }
        None
    }

    async fn connect(&self) -> Result<Sender, PlainError> {
        let stream = match tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect(&self.addr),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(PlainError::Connection(format!(
                    "cannot connect to {}: {e}",
                    self.addr
                )));
            }
            Err(_) => return Err(PlainError::Timeout),
        };
        // Requests are single writes; Nagle would only delay them.
        let _ = stream.set_nodelay(true);
        let (send, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(connection_error)?;
        // The connection's own task reads and writes the socket; it ends
        // when the server closes it or its `Sender` is dropped.
        let task = tokio::spawn(async move {
            let _ = conn.await;
        })
        .abort_handle();
        Ok(Sender { send, task })
    }
}

fn connection_error(e: hyper::Error) -> PlainError {
    let mut message = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        message.push_str(": ");
        message.push_str(&s.to_string());
        src = s.source();
    }
    PlainError::Connection(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers one request per connection and then closes it
    /// without saying so, as keep-alive timeouts do.
    async fn one_shot_server() -> (u16, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Headers, then a two-byte body.
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") || !buf.ends_with(b"{}") {
                    let n = s.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let text = String::from_utf8_lossy(&buf).to_lowercase();
                assert!(text.starts_with("post /v1/embeddings http/1.1"), "{text}");
                assert!(text.contains(&format!("host: 127.0.0.1:{port}")), "{text}");
                assert!(text.contains("x-batchling-custom-id: id-1"), "{text}");
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n{\"a\":1}")
                    .await
                    .unwrap();
                s.shutdown().await.unwrap();
            }
        });
        (port, task)
    }

    #[tokio::test]
    async fn a_connection_closed_while_idle_is_replaced() {
        let (port, server) = one_shot_server().await;
        let client = PlainClient::new(
            "127.0.0.1",
            port,
            "/v1",
            HeaderMap::new(),
            Duration::from_secs(10),
            Duration::from_secs(10),
            4,
        )
        .unwrap();
        for _ in 0..5 {
            let r = client
                .post(
                    Endpoint::Embeddings,
                    HeaderValue::from_static("id-1"),
                    Bytes::from_static(b"{}"),
                )
                .await
                .unwrap();
            assert_eq!((r.status, &r.body[..]), (200, &b"{\"a\":1}"[..]));
        }
        server.abort();
    }

    #[tokio::test]
    async fn refused_and_silent_servers_are_transport_errors() {
        let refused = PlainClient::new(
            "127.0.0.1",
            1,
            "/v1",
            HeaderMap::new(),
            Duration::from_secs(10),
            Duration::from_secs(10),
            4,
        )
        .unwrap();
        let r = refused
            .post(
                Endpoint::Embeddings,
                HeaderValue::from_static("a"),
                Bytes::new(),
            )
            .await;
        assert!(matches!(r, Err(PlainError::Connection(_))), "{r:?}");

        // Accepts, never answers: the per-attempt timeout ends it.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let silent = PlainClient::new(
            "127.0.0.1",
            port,
            "/v1",
            HeaderMap::new(),
            Duration::from_millis(200),
            Duration::from_secs(10),
            4,
        )
        .unwrap();
        let r = silent
            .post(
                Endpoint::Embeddings,
                HeaderValue::from_static("a"),
                Bytes::new(),
            )
            .await;
        assert!(matches!(r, Err(PlainError::Timeout)), "{r:?}");
        drop(listener);
    }
}
