//! A lean HTTP/1.1 client for plain-`http` upstreams (local servers such as
//! vLLM, llama.cpp or the mock), used instead of reqwest when no TLS, HTTP/2
//! or proxy is involved.
//!
//! Why: at zero latency a general client's per-request work (header maps,
//! a connection task and the channels to it, its pool) cost more CPU than
//! the rest of a request. Here each exchange is driven by the attempt
//! itself: the request head is one prepared byte string plus the custom id
//! and length, sent with the body in one vectored write; the answer's head
//! is parsed in place (httparse) and its headers are kept as ranges into it,
//! looked up by name only for the few batchling reads. Bodies are framed by
//! `Content-Length`, chunked transfer coding, or the end of the connection.
//! Keep-alive connections sit in a plain stack.

use std::io::{IoSlice, Write as _};
use std::ops::Range;
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use batchling_core::Endpoint;

use super::headers::HeaderLookup;

/// The most header lines an answer may have.
const MAX_HEADERS: usize = 128;
/// The largest answer head accepted (status line and headers).
const MAX_HEAD: usize = 64 * 1024;

/// Why an exchange produced no answer.
#[derive(Debug)]
pub(crate) enum PlainError {
    /// Connect, send or read did not finish within the timeout.
    Timeout,
    /// The connection could not be made or broke, or the answer was not
    /// HTTP/1.1.
    Connection(String),
}

/// An answer's headers: its head as received, and where each name and
/// value lie in it.
#[derive(Debug, Default)]
pub(crate) struct RawHeaders {
    head: Bytes,
    fields: Vec<(Range<usize>, Range<usize>)>,
}

impl RawHeaders {
    fn values<'a, 'n>(&'a self, name: &'n [u8]) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        self.fields
            .iter()
            .filter(move |(n, _)| self.head[n.clone()].eq_ignore_ascii_case(name))
            .map(|(_, v)| &self.head[v.clone()])
    }

    fn first<'a>(&'a self, name: &[u8]) -> Option<&'a [u8]> {
        self.values(name).next()
    }
}

impl HeaderLookup for RawHeaders {
    fn header(&self, name: &HeaderName) -> Option<&str> {
        self.first(name.as_str().as_bytes())
            .and_then(|v| std::str::from_utf8(v).ok())
    }
}

/// A response read in full.
#[derive(Debug)]
pub(crate) struct PlainResponse {
    pub(crate) status: u16,
    pub(crate) headers: RawHeaders,
    pub(crate) body: Bytes,
}

/// One keep-alive connection and what was read on it past the last answer.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    /// Whether any byte of the current answer has arrived.
    answered: bool,
}

/// See the module docs.
pub(crate) struct PlainClient {
    /// `host:port`, to connect to.
    addr: String,
    /// Per endpoint, the request line and every fixed header (`Host`,
    /// `Content-Type`, the key, `User-Agent`, `--header`s), ready to send.
    heads: Vec<(Endpoint, Vec<u8>)>,
    timeout: Duration,
    connect_timeout: Duration,
    /// Idle keep-alive connections, most recently used last.
    idle: Mutex<Vec<Conn>>,
    pool_size: usize,
}

impl std::fmt::Debug for PlainClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The prepared heads hold the key: never printed.
        f.debug_struct("PlainClient")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// How an answer's body is delimited.
enum Framing {
    None,
    Length(usize),
    Chunked,
    UntilClose,
}

fn broken(what: impl std::fmt::Display) -> PlainError {
    PlainError::Connection(what.to_string())
}

impl PlainClient {
    /// An `http://` URL's host, port and path prefix; `headers` the fixed
    /// headers (`Host` is added here).
    pub(crate) fn new(
        host: &str,
        port: u16,
        path_prefix: &str,
        headers: HeaderMap,
        timeout: Duration,
        connect_timeout: Duration,
        pool_size: usize,
    ) -> Result<Self, String> {
        let authority = if port == 80 {
            host.to_owned()
        } else {
            format!("{host}:{port}")
        };
        HeaderValue::from_str(&authority).map_err(|e| e.to_string())?;
        let mut fixed = format!("host: {authority}\r\n").into_bytes();
        for (name, value) in &headers {
            fixed.extend_from_slice(name.as_str().as_bytes());
            fixed.extend_from_slice(b": ");
            fixed.extend_from_slice(value.as_bytes());
            fixed.extend_from_slice(b"\r\n");
        }
        let prefix = path_prefix.trim_end_matches('/');
        let heads = Endpoint::ALL
            .into_iter()
            .map(|e| {
                let target = format!("{prefix}{}", e.relative_path());
                // The same check a URI parser would make: a target is
                // visible ASCII, no spaces.
                if !target.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(format!("the path {target:?} cannot be a request target"));
                }
                let mut head = format!("POST {target} HTTP/1.1\r\n").into_bytes();
                head.extend_from_slice(&fixed);
                Ok((e, head))
            })
            .collect::<Result<_, String>>()?;
        // An IPv6 literal keeps its brackets for the socket address.
        Ok(PlainClient {
            addr: format!("{host}:{port}"),
            heads,
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
        match tokio::time::timeout(self.timeout, self.exchange(endpoint, &custom_id, &body)).await {
            Ok(r) => r,
            Err(_) => Err(PlainError::Timeout),
        }
    }

    fn head(&self, endpoint: Endpoint, custom_id: &HeaderValue, len: usize) -> Vec<u8> {
        let fixed = self
            .heads
            .iter()
            .find(|(e, _)| *e == endpoint)
            .map(|(_, h)| h)
            .expect("every endpoint has a head");
        let mut head = Vec::with_capacity(fixed.len() + custom_id.len() + 64);
        head.extend_from_slice(fixed);
        head.extend_from_slice(b"x-batchling-custom-id: ");
        head.extend_from_slice(custom_id.as_bytes());
        // Writing to a Vec cannot fail.
        let _ = write!(head, "\r\ncontent-length: {len}\r\n\r\n");
        head
    }

    async fn exchange(
        &self,
        endpoint: Endpoint,
        custom_id: &HeaderValue,
        body: &Bytes,
    ) -> Result<PlainResponse, PlainError> {
        let head = self.head(endpoint, custom_id, body.len());
        let mut use_pool = true;
        let (response, reusable, conn) = loop {
            let pooled = if use_pool { self.checkout() } else { None };
            let (mut conn, pooled) = match pooled {
                Some(c) => (c, true),
                None => (self.connect().await?, false),
            };
            conn.answered = false;
            let sent = write_all(&mut conn.stream, &head, body).await;
            let result = match sent {
                Ok(()) => read_response(&mut conn).await,
                Err(e) => Err(broken(format!("sending the request: {e}"))),
            };
            match result {
                Ok((response, reusable)) => break (response, reusable, conn),
                // A kept-alive connection the server closed just before it
                // was taken (its end not yet seen): nothing came back, so
                // once more on a new connection, as any HTTP client does.
                Err(_) if pooled && !conn.answered => use_pool = false,
                Err(e) => return Err(e),
            }
        };
        if reusable {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < self.pool_size {
                idle.push(conn);
            }
        }
        Ok(response)
    }

    /// An idle connection the server has not closed meanwhile, if any. A
    /// closed one has become readable (the end of the stream) while idle.
    /// The readiness the runtime already holds says "not readable" with no
    /// system call; when it says readable, a read tells (it may be left
    /// over from the last answer's read).
    fn checkout(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(c) = idle.pop() {
            let readable = std::future::Future::poll(
                std::pin::pin!(c.stream.ready(tokio::io::Interest::READABLE)),
                &mut std::task::Context::from_waker(std::task::Waker::noop()),
            );
            if readable.is_pending() {
                return Some(c);
            }
            match c.stream.try_read(&mut [0u8; 1]) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(c),
                // Closed, broken, or sent what nobody asked for.
                _ => continue,
            }
        }
        None
    }

    async fn connect(&self) -> Result<Conn, PlainError> {
        let stream = match tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect(&self.addr),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(broken(format!("cannot connect to {}: {e}", self.addr)));
            }
            Err(_) => return Err(PlainError::Timeout),
        };
        // Requests are single writes; Nagle would only delay them.
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            stream,
            buf: BytesMut::with_capacity(8 * 1024),
            answered: false,
        })
    }
}

/// Write the head and the body, in one system call when the socket takes
/// them at once.
async fn write_all(stream: &mut TcpStream, head: &[u8], body: &[u8]) -> std::io::Result<()> {
    let (mut h, mut b) = (head, body);
    while !h.is_empty() {
        let n = stream
            .write_vectored(&[IoSlice::new(h), IoSlice::new(b)])
            .await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let from_head = n.min(h.len());
        h = &h[from_head..];
        b = &b[n - from_head..];
    }
    if !b.is_empty() {
        stream.write_all(b).await?;
    }
    Ok(())
}

/// Read more of the answer into the connection's buffer; the end of the
/// stream here is an error (the answer is incomplete).
async fn fill(conn: &mut Conn) -> Result<(), PlainError> {
    if conn.buf.capacity() - conn.buf.len() < 4096 {
        conn.buf.reserve(16 * 1024);
    }
    match conn.stream.read_buf(&mut conn.buf).await {
        Ok(0) => Err(broken(
            "the server closed the connection before a complete answer",
        )),
        Ok(_) => {
            conn.answered = true;
            Ok(())
        }
        Err(e) => Err(broken(format!("reading the answer: {e}"))),
    }
}

/// Read one answer. Returns it and whether the connection can carry another.
async fn read_response(conn: &mut Conn) -> Result<(PlainResponse, bool), PlainError> {
    loop {
        let parsed = {
            // Left uninitialised: httparse writes only the ones it fills.
            let mut fields = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
            let mut r = httparse::Response::new(&mut []);
            match httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut r,
                &conn.buf,
                &mut fields,
            ) {
                Ok(httparse::Status::Complete(len)) => Some(head_of(&conn.buf, &r, len)?),
                Ok(httparse::Status::Partial) => None,
                Err(e) => return Err(broken(format!("the answer is not HTTP/1.1: {e}"))),
            }
        };
        let Some((status, version, fields, len)) = parsed else {
            if conn.buf.len() >= MAX_HEAD {
                return Err(broken("the answer's head is over 64 KiB"));
            }
            fill(conn).await?;
            continue;
        };
        let head = conn.buf.split_to(len).freeze();
        let headers = RawHeaders { head, fields };
        // Informational answers (100 Continue and the like) precede the
        // real one.
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        let mut keep_alive = version == 1;
        for v in headers.values(b"connection") {
            if v.split(|&c| c == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
            {
                keep_alive = false;
            }
        }
        let framing = framing(status, &headers)?;
        let body = match framing {
            Framing::None => Bytes::new(),
            Framing::Length(n) => {
                // One allocation for a large body, not a doubling series.
                conn.buf.reserve(n.saturating_sub(conn.buf.len()));
                while conn.buf.len() < n {
                    fill(conn).await?;
                }
                conn.buf.split_to(n).freeze()
            }
            Framing::Chunked => read_chunked(conn).await?,
            Framing::UntilClose => {
                keep_alive = false;
                // The end of the stream ends the body; a broken stream
                // does not.
                loop {
                    conn.buf.reserve(16 * 1024);
                    match conn.stream.read_buf(&mut conn.buf).await {
                        Ok(0) => break,
                        Ok(_) => conn.answered = true,
                        Err(e) => return Err(broken(format!("reading the answer: {e}"))),
                    }
                }
                conn.buf.split().freeze()
            }
        };
        // Anything past the answer was not asked for: the connection is
        // out of step and is not reused.
        let reusable = keep_alive && conn.buf.is_empty();
        return Ok((
            PlainResponse {
                status,
                headers,
                body,
            },
            reusable,
        ));
    }
}

type Head = (u16, u8, Vec<(Range<usize>, Range<usize>)>, usize);

/// The status, minor version and header ranges of a parsed head.
fn head_of(buf: &[u8], r: &httparse::Response<'_, '_>, len: usize) -> Result<Head, PlainError> {
    let status = r.code.ok_or_else(|| broken("the answer has no status"))?;
    let version = r.version.unwrap_or(0);
    let base = buf.as_ptr() as usize;
    let range = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let fields = r
        .headers
        .iter()
        .map(|h| (range(h.name.as_bytes()), range(h.value)))
        .collect();
    Ok((status, version, fields, len))
}

fn framing(status: u16, headers: &RawHeaders) -> Result<Framing, PlainError> {
    if status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(Framing::None);
    }
    if let Some(te) = headers.first(b"transfer-encoding") {
        let last = te.rsplit(|&c| c == b',').next().unwrap_or_default();
        return if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
            Ok(Framing::Chunked)
        } else {
            Ok(Framing::UntilClose)
        };
    }
    let mut lengths = headers.values(b"content-length");
    match lengths.next() {
        None => Ok(Framing::UntilClose),
        Some(v) => {
            let n = std::str::from_utf8(v)
                .ok()
                .and_then(|t| t.trim().parse::<usize>().ok())
                .ok_or_else(|| broken("the answer's content-length is not a number"))?;
            if lengths.any(|other| other.trim_ascii() != v.trim_ascii()) {
                return Err(broken("the answer has conflicting content-lengths"));
            }
            Ok(Framing::Length(n))
        }
    }
}

/// The position just past the next CRLF in `buf`, if it holds one.
fn line_end(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n").map(|i| i + 2)
}

/// A body in chunked transfer coding: size lines, data, and trailers.
async fn read_chunked(conn: &mut Conn) -> Result<Bytes, PlainError> {
    let mut body = BytesMut::new();
    loop {
        let end = loop {
            match line_end(&conn.buf) {
                Some(end) => break end,
                None if conn.buf.len() > 4096 => {
                    return Err(broken("a chunk size line is too long"));
                }
                None => fill(conn).await?,
            }
        };
        let line = &conn.buf[..end - 2];
        let digits = line
            .split(|&c| c == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        let size = std::str::from_utf8(digits)
            .ok()
            .and_then(|t| usize::from_str_radix(t, 16).ok())
            .ok_or_else(|| broken("a chunk size is not hexadecimal"))?;
        conn.buf.advance(end);
        if size == 0 {
            // Trailers, up to an empty line.
            loop {
                match line_end(&conn.buf) {
                    Some(2) => {
                        conn.buf.advance(2);
                        return Ok(body.freeze());
                    }
                    Some(end) => conn.buf.advance(end),
                    None if conn.buf.len() > MAX_HEAD => {
                        return Err(broken("the answer's trailers are too long"));
                    }
                    None => fill(conn).await?,
                }
            }
        }
        while conn.buf.len() < size + 2 {
            fill(conn).await?;
        }
        if &conn.buf[size..size + 2] != b"\r\n" {
            return Err(broken("a chunk does not end with CRLF"));
        }
        body.extend_from_slice(&conn.buf[..size]);
        conn.buf.advance(size + 2);
    }
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

    /// A server that answers every request with `answer`, written `piece`
    /// bytes at a time, closing the connection after it when `close`.
    /// Returns its port and a count of connections accepted.
    async fn scripted_server(
        answer: &'static [u8],
        piece: usize,
        close: bool,
    ) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::Ordering::SeqCst;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                count.fetch_add(1, SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        // One request: a head, then its content-length body.
                        let complete =
                            buf.windows(4)
                                .position(|w| w == b"\r\n\r\n")
                                .is_some_and(|end| {
                                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                                    let len: usize = head
                                        .split("content-length: ")
                                        .nth(1)
                                        .and_then(|t| t.split("\r\n").next())
                                        .and_then(|n| n.parse().ok())
                                        .unwrap_or(0);
                                    buf.len() >= end + 4 + len
                                });
                        if complete {
                            buf.clear();
                            for p in answer.chunks(piece) {
                                if s.write_all(p).await.is_err() {
                                    return;
                                }
                                s.flush().await.unwrap();
                                tokio::task::yield_now().await;
                            }
                            if close {
                                let _ = s.shutdown().await;
                                return;
                            }
                            continue;
                        }
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        (port, accepted)
    }

    fn client_for(port: u16) -> PlainClient {
        PlainClient::new(
            "127.0.0.1",
            port,
            "/v1",
            HeaderMap::new(),
            Duration::from_secs(10),
            Duration::from_secs(10),
            4,
        )
        .unwrap()
    }

    async fn post(c: &PlainClient) -> Result<PlainResponse, PlainError> {
        c.post(
            Endpoint::ChatCompletions,
            HeaderValue::from_static("id"),
            Bytes::from_static(b"{\"x\":1}"),
        )
        .await
    }

    #[tokio::test]
    async fn framings_and_reuse() {
        use std::sync::atomic::Ordering::SeqCst;
        // answer, written how many bytes at a time, closed after, the body
        // expected, connections expected for three requests
        type Case = (&'static [u8], usize, bool, &'static [u8], usize);
        let cases: [Case; 6] = [
            // content-length, byte by byte; one connection for all answers
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nX-Request-Id: req_1\r\n\r\n{\"a\":1}",
                1,
                false,
                b"{\"a\":1}",
                1,
            ),
            // chunked, with an extension and a trailer
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;ext=1\r\n{\"a\r\n4\r\n\":1}\r\n0\r\nx-t: 1\r\n\r\n",
                5,
                false,
                b"{\"a\":1}",
                1,
            ),
            // an informational answer first
            (
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}",
                64,
                false,
                b"{}",
                1,
            ),
            // no length: the body runs to the end of the connection
            (b"HTTP/1.1 200 OK\r\n\r\n{\"b\":2}", 3, true, b"{\"b\":2}", 3),
            // `Connection: close` is honoured: a new connection each time
            (
                b"HTTP/1.1 503 Busy\r\nconnection: keep-alive, close\r\ncontent-length: 2\r\n\r\n{}",
                64,
                true,
                b"{}",
                3,
            ),
            // 204 has no body, whatever follows
            (b"HTTP/1.1 204 No Content\r\n\r\n", 64, false, b"", 1),
        ];
        for (answer, piece, close, body, connections) in cases {
            let (port, accepted) = scripted_server(answer, piece, close).await;
            let c = client_for(port);
            for _ in 0..3 {
                let r = post(&c).await.unwrap();
                assert_eq!(&r.body[..], body, "{}", String::from_utf8_lossy(answer));
            }
            assert_eq!(
                accepted.load(SeqCst),
                connections,
                "{}",
                String::from_utf8_lossy(answer)
            );
        }
    }

    #[tokio::test]
    async fn large_bodies_both_ways() {
        // An answer of 3 MB, and a request of 2 MB: both need many reads
        // and writes.
        static ANSWER: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let answer = ANSWER.get_or_init(|| {
            let body = format!("{{\"s\":\"{}\"}}", "x".repeat(3 << 20));
            let mut a =
                format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
            a.extend_from_slice(body.as_bytes());
            a
        });
        let (port, accepted) = scripted_server(answer, 100_000, false).await;
        let c = client_for(port);
        let big = Bytes::from(format!("{{\"p\":\"{}\"}}", "y".repeat(2 << 20)));
        for _ in 0..2 {
            let r = c
                .post(
                    Endpoint::ChatCompletions,
                    HeaderValue::from_static("id"),
                    big.clone(),
                )
                .await
                .unwrap();
            assert_eq!(r.body.len(), (3 << 20) + 8);
            assert!(r.body.ends_with(b"xx\"}"));
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    /// Random bodies, framed by length or in random chunks, written in
    /// random pieces: the client reads back exactly the body, on one
    /// kept-alive connection.
    #[tokio::test]
    async fn random_framings_round_trip() {
        use std::sync::atomic::Ordering::SeqCst;
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..60 {
            // Bytes that look like framing inside the body, to confuse a
            // parser that scans instead of counting.
            let alphabet: &[&[u8]] =
                &[b"a", b"{", b"\r\n", b"0\r\n\r\n", b"HTTP/1.1 ", b"\xc3\xa9"];
            let mut body = Vec::new();
            for _ in 0..next(400) {
                body.extend_from_slice(alphabet[next(alphabet.len() as u64) as usize]);
            }
            let mut answer = b"HTTP/1.1 200 OK\r\nX-Request-Id: r\r\n".to_vec();
            if next(2) == 0 {
                answer.extend_from_slice(
                    format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes(),
                );
                answer.extend_from_slice(&body);
            } else {
                answer.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                let mut rest = &body[..];
                while !rest.is_empty() {
                    let n = (1 + next(90) as usize).min(rest.len());
                    let ext = if next(3) == 0 { ";x=y" } else { "" };
                    answer.extend_from_slice(format!("{n:X}{ext}\r\n").as_bytes());
                    answer.extend_from_slice(&rest[..n]);
                    answer.extend_from_slice(b"\r\n");
                    rest = &rest[n..];
                }
                answer.extend_from_slice(b"0\r\n\r\n");
            }
            let answer: &'static [u8] = Box::leak(answer.into_boxed_slice());
            let piece = 1 + next(200) as usize;
            let (port, accepted) = scripted_server(answer, piece, false).await;
            let c = client_for(port);
            for _ in 0..2 {
                let r = post(&c).await.unwrap();
                assert_eq!(&r.body[..], &body[..], "piece {piece}");
            }
            assert_eq!(accepted.load(SeqCst), 1);
        }
    }

    #[tokio::test]
    async fn headers_are_found_by_name_in_any_case() {
        let (port, _) = scripted_server(
            b"HTTP/1.1 429 Too Many\r\nX-Request-ID: req_9\r\nretry-after-ms: 250\r\nContent-Length: 2\r\n\r\n{}",
            64,
            false,
        )
        .await;
        let r = post(&client_for(port)).await.unwrap();
        assert_eq!(r.status, 429);
        assert_eq!(
            super::super::headers::request_id(&r.headers).as_deref(),
            Some("req_9")
        );
        assert_eq!(
            super::super::headers::retry_after(&r.headers),
            Some(Duration::from_millis(250))
        );
    }

    #[tokio::test]
    async fn broken_answers_are_connection_errors() {
        for answer in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{}"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}",
            b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n{}",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n",
            b"SMTP ready\r\n\r\n",
        ] {
            let (port, _) = scripted_server(answer, 64, true).await;
            let r = post(&client_for(port)).await;
            assert!(
                matches!(r, Err(PlainError::Connection(_))),
                "{}: {r:?}",
                String::from_utf8_lossy(answer)
            );
        }
    }

    #[tokio::test]
    async fn a_connection_closed_while_idle_is_replaced() {
        let (port, server) = one_shot_server().await;
        let client = client_for(port);
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
        let refused = client_for(1);
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
