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
//!
//! Everything a peer says is bounded before it is believed (see
//! [`Limits`]): the head's size and number of lines, the informational
//! answers before the real one, and the body, whose size is checked against
//! the cap before anything is set aside for it, and counted as it arrives
//! when no length is declared. Memory is only ever reserved for a body the
//! cap allows, fallibly, and is filled in place (one copy of the body).

use std::io::{IoSlice, Write as _};
use std::ops::Range;
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use batchling_core::Endpoint;

use super::HeaderLookup;

/// The most header lines an answer may have (also the trailers').
const MAX_HEADERS: usize = 128;
/// The largest answer head accepted (status line and headers), and the
/// largest trailer block.
const MAX_HEAD: usize = 64 * 1024;
/// The longest chunk-size line (size and extensions).
const MAX_CHUNK_LINE: usize = 4096;
/// The most informational (1xx) answers before the real one.
const MAX_INFORMATIONAL: usize = 16;
/// What an answer of unknown length is first given, and grows by.
const GROW: usize = 64 * 1024;

/// The bounds an answer is read within.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The most body bytes (`--max-response-mb`).
    pub(crate) max_body: u64,
    /// The largest head, and the largest trailer block.
    pub(crate) max_head: usize,
    /// The most informational answers before the real one.
    pub(crate) max_informational: usize,
}

impl Limits {
    /// The defaults, with this body cap.
    pub(crate) fn with_max_body(max_body: u64) -> Self {
        Limits {
            max_body,
            max_head: MAX_HEAD,
            max_informational: MAX_INFORMATIONAL,
        }
    }
}

/// Why an exchange produced no answer.
#[derive(Debug)]
pub(crate) enum PlainError {
    /// Connect, send or read did not finish within the timeout.
    Timeout,
    /// The connection could not be made, or broke or closed before a
    /// complete answer.
    Connection(String),
    /// What came back is not a well-formed HTTP/1.x answer.
    Malformed(String),
    /// The answer is larger than the cap.
    TooLarge(Oversize),
}

/// How an answer showed it is over the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Oversize {
    /// Its `Content-Length` says so (`None`: a number of 2^64 or more).
    Declared(Option<u64>),
    /// A chunk's size line says so: the body bytes before that chunk, and
    /// the chunk's size (`None`: 2^64 or more).
    Chunk { before: u64, size: Option<u64> },
    /// More than the cap arrived; cut off after this many bytes.
    Read(u64),
}

/// `n` bytes for people: whole MiB when it is, else bytes and MiB.
pub(crate) fn size_text(n: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= MIB {
        format!("{n} bytes ({:.1} MiB)", n as f64 / MIB as f64)
    } else {
        format!("{n} bytes")
    }
}

/// The message of a `response_too_large` error: the size, and the cap.
pub(crate) fn too_large_message(o: Oversize, cap: u64) -> String {
    oversize_message(o, &format!("the {} response cap", size_text(cap)))
}

/// What `o` says, against `cap` (its size and name, for people).
pub(crate) fn oversize_message(o: Oversize, cap: &str) -> String {
    match o {
        Oversize::Declared(Some(n)) => {
            format!("the answer's Content-Length is {n} bytes, over {cap}; it was not read")
        }
        Oversize::Declared(None) => {
            format!(
                "the answer's Content-Length is 2^64 bytes or more, over {cap}; it was not read"
            )
        }
        Oversize::Chunk {
            before,
            size: Some(s),
        } => format!(
            "after {before} bytes, the answer announced a chunk of {s} bytes, which takes it over {cap}; it was cut off"
        ),
        Oversize::Chunk { before, size: None } => format!(
            "after {before} bytes, the answer announced a chunk of 2^64 bytes or more, over {cap}; it was cut off"
        ),
        Oversize::Read(n) => format!("the answer passed {cap}; it was cut off after {n} bytes"),
    }
}

/// An answer's headers: its head as received, and where each name and
/// value lie in it.
#[derive(Debug, Default)]
pub(crate) struct RawHeaders {
    head: Bytes,
    fields: Vec<(Range<usize>, Range<usize>)>,
    /// Which of the headers that shape the reading are present (the
    /// `SEEN_*` bits), so that an answer without them is not searched.
    seen: u8,
}

const SEEN_LENGTH: u8 = 1;
const SEEN_TRANSFER: u8 = 2;
const SEEN_CONNECTION: u8 = 4;
const SEEN_CODING: u8 = 8;

/// The `SEEN_*` bit of a header name, if it has one.
fn seen_bit(name: &str) -> u8 {
    let is = |n: &str| name.eq_ignore_ascii_case(n);
    match name.len() {
        14 if is("content-length") => SEEN_LENGTH,
        17 if is("transfer-encoding") => SEEN_TRANSFER,
        10 if is("connection") => SEEN_CONNECTION,
        16 if is("content-encoding") => SEEN_CODING,
        _ => 0,
    }
}

impl RawHeaders {
    /// The values of a `SEEN_*` header.
    fn seen_values(&self, bit: u8, name: &'static [u8]) -> impl Iterator<Item = &[u8]> {
        let present = self.seen & bit != 0;
        self.values(name).take(if present { usize::MAX } else { 0 })
    }

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

    fn header_bytes(&self, name: &HeaderName) -> Option<&[u8]> {
        self.first(name.as_str().as_bytes())
    }

    fn content_encoding(&self) -> Option<&[u8]> {
        self.seen_values(SEEN_CODING, b"content-encoding").next()
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
struct Conn<S = TcpStream> {
    stream: S,
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
    /// The path prefix and the fixed headers, for a target of its own
    /// ([`PlainClient::post_to`]).
    prefix: String,
    fixed: Vec<u8>,
    timeout: Duration,
    connect_timeout: Duration,
    limits: Limits,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

fn broken(what: impl std::fmt::Display) -> PlainError {
    PlainError::Connection(what.to_string())
}

fn malformed(what: impl std::fmt::Display) -> PlainError {
    PlainError::Malformed(what.to_string())
}

/// Up to 40 bytes of what a peer sent, quoted and escaped, for a message.
fn quoted(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(40)];
    let more = if bytes.len() > cut.len() { "..." } else { "" };
    format!("\"{}{more}\"", cut.escape_ascii())
}

impl PlainClient {
    /// An `http://` URL's host, port and path prefix; `headers` the fixed
    /// headers (`Host` is added here); `max_body` the cap on an answer.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        host: &str,
        port: u16,
        path_prefix: &str,
        headers: HeaderMap,
        timeout: Duration,
        connect_timeout: Duration,
        pool_size: usize,
        max_body: u64,
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
        let heads = Endpoint::EVERY
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
            prefix: prefix.to_owned(),
            fixed,
            timeout,
            connect_timeout,
            limits: Limits::with_max_body(max_body),
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
        let head = self.head(endpoint, &custom_id, body.len());
        self.post_head(head, &body).await
    }

    /// One POST to `target` (path and query under the prefix), for a URL
    /// that depends on the request (Azure's deployments).
    pub(crate) async fn post_to(
        &self,
        target: &str,
        custom_id: HeaderValue,
        body: Bytes,
    ) -> Result<PlainResponse, PlainError> {
        let target = format!("{}{target}", self.prefix);
        if !target.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(PlainError::Connection(format!(
                "the path {target:?} cannot be a request target"
            )));
        }
        let mut head = format!("POST {target} HTTP/1.1\r\n").into_bytes();
        head.extend_from_slice(&self.fixed);
        push_request_headers(&mut head, &custom_id, body.len());
        self.post_head(head, &body).await
    }

    async fn post_head(&self, head: Vec<u8>, body: &Bytes) -> Result<PlainResponse, PlainError> {
        match tokio::time::timeout(self.timeout, self.exchange(&head, body)).await {
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
        push_request_headers(&mut head, custom_id, len);
        head
    }

    async fn exchange(&self, head: &[u8], body: &Bytes) -> Result<PlainResponse, PlainError> {
        let mut use_pool = true;
        let (response, reusable, conn) = loop {
            let pooled = if use_pool { self.checkout() } else { None };
            let (mut conn, pooled) = match pooled {
                Some(c) => (c, true),
                None => (self.connect().await?, false),
            };
            conn.answered = false;
            let sent = write_all(&mut conn.stream, head, body).await;
            let result = match sent {
                Ok(()) => read_response(&mut conn, &self.limits).await,
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
/// The per-request headers (custom id, length) and the end of the head.
fn push_request_headers(head: &mut Vec<u8>, custom_id: &HeaderValue, len: usize) {
    head.extend_from_slice(b"x-batchling-custom-id: ");
    head.extend_from_slice(custom_id.as_bytes());
    // Writing to a Vec cannot fail.
    let _ = write!(head, "\r\ncontent-length: {len}\r\n\r\n");
}

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
async fn fill<S: AsyncRead + Unpin>(conn: &mut Conn<S>) -> Result<(), PlainError> {
    if conn.buf.capacity() - conn.buf.len() < 4096 {
        conn.buf.reserve(16 * 1024);
    }
    match conn.stream.read_buf(&mut conn.buf).await {
        Ok(0) if !conn.answered => {
            Err(broken("the server closed the connection without answering"))
        }
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

/// Read from the stream straight into `body`, at most `limit` bytes; the
/// number read (0 at the end of the stream). `body` has room for them.
async fn read_into<S: AsyncRead + Unpin>(
    conn: &mut Conn<S>,
    body: &mut Vec<u8>,
    limit: usize,
) -> Result<usize, PlainError> {
    debug_assert!(body.capacity() - body.len() >= limit.min(1));
    match conn.stream.read_buf(&mut (&mut *body).limit(limit)).await {
        Ok(n) => {
            conn.answered |= n > 0;
            Ok(n)
        }
        Err(e) => Err(broken(format!("reading the answer: {e}"))),
    }
}

/// Room for exactly `additional` more bytes in `body`, or an error (never
/// an abort) when the memory cannot be had.
fn make_room(body: &mut Vec<u8>, additional: usize) -> Result<(), PlainError> {
    body.try_reserve_exact(additional).map_err(|_| {
        broken(format!(
            "cannot set aside memory for {additional} more bytes of the answer"
        ))
    })
}

/// Room for `additional` more bytes in a body whose final size is not
/// known (chunked, or to the end of the connection): the buffer grows
/// eight-fold, never past the cap and the line's room. Each growth copies
/// the body and frees the old buffer, which the allocator may keep for a
/// while: growing eight-fold rather than doubling keeps what is outgrown to
/// a seventh of the body instead of all of it.
fn grow(body: &mut Vec<u8>, additional: usize, max: u64) -> Result<(), PlainError> {
    grow_body(body, additional, max).map_err(|_| {
        broken(format!(
            "cannot set aside memory for {additional} more bytes of the answer"
        ))
    })
}

/// [`grow`], for either client.
pub(crate) fn grow_body(
    body: &mut Vec<u8>,
    additional: usize,
    max: u64,
) -> Result<(), std::collections::TryReserveError> {
    let need = body.len().saturating_add(additional);
    if need <= body.capacity() {
        return Ok(());
    }
    let ceiling = usize::try_from(max)
        .unwrap_or(usize::MAX)
        .saturating_add(super::LINE_ROOM);
    let target = body.capacity().saturating_mul(8).min(ceiling).max(need);
    body.try_reserve_exact(target - body.len())
}

/// The message for an httparse error, with the start of what came.
fn head_error(e: httparse::Error, buf: &[u8]) -> PlainError {
    match e {
        httparse::Error::Version => malformed(format!(
            "the answer is not HTTP/1.x: it starts with {}",
            quoted(buf)
        )),
        httparse::Error::Status => malformed(format!(
            "the answer's status line has no valid three-digit status: {}",
            quoted(buf.split(|&b| b == b'\n').next().unwrap_or_default())
        )),
        httparse::Error::TooManyHeaders => malformed(format!(
            "the answer has more than {MAX_HEADERS} header lines"
        )),
        e => malformed(format!("the answer's head is not valid HTTP/1.1 ({e})")),
    }
}

/// Check an answer's status: an error for one that is no HTTP status or
/// switches protocols; `true` for an informational answer (100 Continue,
/// 103 Early Hints and the like), which precedes the real one.
fn is_informational(status: u16, seen: &mut usize, limits: &Limits) -> Result<bool, PlainError> {
    if !(100..=599).contains(&status) {
        return Err(malformed(format!(
            "the answer's status {status} is not an HTTP status (100-599)"
        )));
    }
    if status == 101 {
        return Err(malformed(
            "the server switched protocols (101 Switching Protocols), which was not asked for",
        ));
    }
    if status >= 200 {
        return Ok(false);
    }
    *seen += 1;
    if *seen > limits.max_informational {
        return Err(malformed(format!(
            "the server sent more than {} informational (1xx) answers and no real one",
            limits.max_informational
        )));
    }
    Ok(true)
}

/// Whether a `Connection` header says `close`.
fn asks_to_close(headers: &RawHeaders) -> bool {
    headers
        .seen_values(SEEN_CONNECTION, b"connection")
        .any(|v| {
            v.split(|&c| c == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
        })
}

/// Read the body its framing delimits, never more than the cap.
async fn read_body<S: AsyncRead + Unpin>(
    conn: &mut Conn<S>,
    framing: Framing,
    limits: &Limits,
) -> Result<Bytes, PlainError> {
    Ok(match framing {
        Framing::None => Bytes::new(),
        Framing::Length(n) => {
            if n > limits.max_body {
                return Err(PlainError::TooLarge(Oversize::Declared(Some(n))));
            }
            // At most the cap, which fits in memory's address space.
            let n = usize::try_from(n)
                .map_err(|_| PlainError::TooLarge(Oversize::Declared(Some(n))))?;
            read_length(conn, n).await?
        }
        Framing::Chunked => read_chunked(conn, limits).await?,
        Framing::UntilClose => read_until_close(conn, limits.max_body).await?,
    })
}

/// Read one answer. Returns it and whether the connection can carry another.
async fn read_response<S: AsyncRead + Unpin>(
    conn: &mut Conn<S>,
    limits: &Limits,
) -> Result<(PlainResponse, bool), PlainError> {
    let mut informational = 0;
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
                Ok(httparse::Status::Complete(len)) if len > limits.max_head => None,
                Ok(httparse::Status::Complete(len)) => Some(head_of(&conn.buf, &r, len)?),
                Ok(httparse::Status::Partial) => None,
                Err(e) => return Err(head_error(e, &conn.buf)),
            }
        };
        let Some((status, version, fields, len)) = parsed else {
            if conn.buf.len() >= limits.max_head {
                return Err(malformed(format!(
                    "the answer's head (status line and headers) is over {} bytes",
                    limits.max_head
                )));
            }
            fill(conn).await?;
            continue;
        };
        let head = conn.buf.split_to(len).freeze();
        let (fields, seen) = fields;
        let headers = RawHeaders { head, fields, seen };
        if is_informational(status, &mut informational, limits)? {
            continue;
        }
        let mut keep_alive = version == 1 && !asks_to_close(&headers);
        let framing = framing(status, version, &headers)?;
        if framing == Framing::UntilClose {
            keep_alive = false;
        }
        let body = read_body(conn, framing, limits).await?;
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

type Head = (u16, u8, (Vec<(Range<usize>, Range<usize>)>, u8), usize);

/// The status, minor version and header ranges of a parsed head.
fn head_of(buf: &[u8], r: &httparse::Response<'_, '_>, len: usize) -> Result<Head, PlainError> {
    let status = r
        .code
        .ok_or_else(|| malformed("the answer has no status"))?;
    let version = r.version.unwrap_or(0);
    let base = buf.as_ptr() as usize;
    let range = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let mut seen = 0;
    let fields = r
        .headers
        .iter()
        .map(|h| {
            seen |= seen_bit(h.name);
            (range(h.name.as_bytes()), range(h.value))
        })
        .collect();
    Ok((status, version, (fields, seen), len))
}

/// A `Content-Length` value: one or more decimal numbers separated by
/// commas (a list of equal values is allowed). `Ok(None)` for a number of
/// 2^64 or more.
fn content_length(v: &[u8]) -> Result<Option<u64>, PlainError> {
    let mut value: Option<Option<u64>> = None;
    for part in v.split(|&c| c == b',') {
        let digits = part.trim_ascii();
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(malformed(format!(
                "the answer's Content-Length {} is not a number",
                quoted(v)
            )));
        }
        let n = digits.iter().try_fold(0u64, |n, &d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        });
        match value {
            Some(prev) if prev != n => {
                return Err(malformed(format!(
                    "the answer's Content-Length {} holds different values",
                    quoted(v)
                )));
            }
            _ => value = Some(n),
        }
    }
    Ok(value.flatten())
}

fn framing(status: u16, version: u8, headers: &RawHeaders) -> Result<Framing, PlainError> {
    if status == 204 || status == 304 {
        return Ok(Framing::None);
    }
    let mut lengths = headers.seen_values(SEEN_LENGTH, b"content-length");
    let length = match lengths.next() {
        None => None,
        Some(first) => {
            let n = content_length(first)?;
            for other in lengths {
                if content_length(other)? != n {
                    return Err(malformed(
                        "the answer has conflicting Content-Length headers",
                    ));
                }
            }
            Some(n)
        }
    };
    let mut codings = headers
        .seen_values(SEEN_TRANSFER, b"transfer-encoding")
        .flat_map(|v| v.split(|&c| c == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|c| !c.is_empty())
        .peekable();
    if codings.peek().is_some() {
        if length.is_some() {
            // RFC 9112 §6.3: "ought to be handled as an error" (a sign of
            // request smuggling or response splitting).
            return Err(malformed(
                "the answer has both Content-Length and Transfer-Encoding",
            ));
        }
        if version == 0 {
            return Err(malformed(
                "the answer is HTTP/1.0 but has a Transfer-Encoding",
            ));
        }
        let codings: Vec<&[u8]> = codings.collect();
        return if codings.len() == 1 && codings[0].eq_ignore_ascii_case(b"chunked") {
            Ok(Framing::Chunked)
        } else {
            let all = headers
                .values(b"transfer-encoding")
                .collect::<Vec<_>>()
                .join(&b", "[..]);
            Err(malformed(format!(
                "the answer's Transfer-Encoding is {}, and batchling reads only chunked (it asked for no compression)",
                quoted(&all)
            )))
        };
    }
    match length {
        Some(Some(n)) => Ok(Framing::Length(n)),
        Some(None) => Err(PlainError::TooLarge(Oversize::Declared(None))),
        None => Ok(Framing::UntilClose),
    }
}

/// A body of `n` bytes (within the cap). One already in the buffer, or
/// short of it by little, is split off it; a longer one is read into memory
/// set aside once for `n`
/// bytes and the output line's envelope (address space until the bytes
/// arrive), from the stream straight, so the body is never copied again.
async fn read_length<S: AsyncRead + Unpin>(
    conn: &mut Conn<S>,
    n: usize,
) -> Result<Bytes, PlainError> {
    let short = |got: usize| {
        broken(format!(
            "the server closed the connection after {got} of the {n} bytes its Content-Length announced"
        ))
    };
    if n - conn.buf.len().min(n) <= SMALL_REST {
        // The common case: the rest fits the connection's buffer, and the
        // body is split off it.
        conn.buf.reserve(n.saturating_sub(conn.buf.len()));
        while conn.buf.len() < n {
            match conn.stream.read_buf(&mut conn.buf).await {
                Ok(0) => return Err(short(conn.buf.len())),
                Ok(_) => conn.answered = true,
                Err(e) => return Err(broken(format!("reading the answer: {e}"))),
            }
        }
        return Ok(conn.buf.split_to(n).freeze());
    }
    let mut body = Vec::new();
    make_room(&mut body, n + super::LINE_ROOM)?;
    body.extend_from_slice(&conn.buf);
    conn.buf.clear();
    while body.len() < n {
        let want = n - body.len();
        if read_into(conn, &mut body, want).await? == 0 {
            return Err(short(body.len()));
        }
    }
    Ok(Bytes::from(body))
}

/// The most of a body still to come that is read into the connection's
/// buffer (a larger rest gets memory of its own).
const SMALL_REST: usize = 64 * 1024;

/// A body that runs to the end of the connection, cut off past `max`.
async fn read_until_close<S: AsyncRead + Unpin>(
    conn: &mut Conn<S>,
    max: u64,
) -> Result<Bytes, PlainError> {
    let mut body = Vec::new();
    let already = conn.buf.len();
    make_room(&mut body, already.max(GROW))?;
    body.extend_from_slice(&conn.buf);
    conn.buf.clear();
    loop {
        if body.len() as u64 > max {
            // Reported as one byte past the cap whatever was buffered, so
            // the message does not depend on how the bytes were split.
            return Err(PlainError::TooLarge(Oversize::Read(max + 1)));
        }
        // One byte past the cap tells an answer over it from one at it.
        let left = usize::try_from(max - body.len() as u64 + 1).unwrap_or(usize::MAX);
        if body.capacity() == body.len() {
            grow(&mut body, GROW.min(left), max)?;
        }
        let room = body.capacity() - body.len();
        if read_into(conn, &mut body, room.min(left)).await? == 0 {
            return Ok(Bytes::from(body));
        }
    }
}

/// The position just past the next CRLF in `buf`, if it holds one.
fn line_end(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n").map(|i| i + 2)
}

/// The next line's end in the buffer (past its CRLF), reading more as
/// needed; a line longer than `max` is an error naming `what`.
async fn next_line<S: AsyncRead + Unpin>(
    conn: &mut Conn<S>,
    max: usize,
    what: &str,
) -> Result<usize, PlainError> {
    loop {
        match line_end(&conn.buf) {
            Some(end) if end > max + 2 => break,
            Some(end) => return Ok(end),
            None if conn.buf.len() > max + 1 => break,
            None => fill(conn).await?,
        }
    }
    Err(malformed(format!("{what} is over {max} bytes")))
}

/// A chunk-size line's size (before any `;` extension): hexadecimal digits
/// only. `Ok(None)` for a size of 2^64 or more.
fn chunk_size(line: &[u8]) -> Result<Option<u64>, PlainError> {
    let digits = line
        .split(|&c| c == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(malformed(format!(
            "a chunk size {} is not hexadecimal",
            quoted(line)
        )));
    }
    Ok(digits.iter().try_fold(0u64, |n, &d| {
        let v = (d as char).to_digit(16).expect("a hex digit");
        n.checked_mul(16)?.checked_add(u64::from(v))
    }))
}

/// A body in chunked transfer coding: size lines, data, and trailers. Each
/// chunk's size is checked against what the cap leaves before it is read;
/// data beyond the buffer is read straight into the body.
async fn read_chunked<S: AsyncRead + Unpin>(
    conn: &mut Conn<S>,
    limits: &Limits,
) -> Result<Bytes, PlainError> {
    let mut body = Vec::new();
    loop {
        let end = next_line(conn, MAX_CHUNK_LINE, "a chunk-size line").await?;
        let size = chunk_size(&conn.buf[..end - 2])?;
        conn.buf.advance(end);
        let before = body.len() as u64;
        let size = match size {
            Some(s) if s <= limits.max_body - before => s as usize,
            size => return Err(PlainError::TooLarge(Oversize::Chunk { before, size })),
        };
        if size == 0 {
            return read_trailers(conn, limits.max_head)
                .await
                .map(|()| Bytes::from(body));
        }
        grow(&mut body, size, limits.max_body)?;
        let have = conn.buf.len().min(size);
        body.extend_from_slice(&conn.buf[..have]);
        conn.buf.advance(have);
        let target = before as usize + size;
        while body.len() < target {
            let want = target - body.len();
            if read_into(conn, &mut body, want).await? == 0 {
                return Err(broken(
                    "the server closed the connection in the middle of a chunk",
                ));
            }
        }
        while conn.buf.len() < 2 {
            fill(conn).await?;
        }
        if &conn.buf[..2] != b"\r\n" {
            return Err(malformed(
                "a chunk does not end with CRLF where its size says",
            ));
        }
        conn.buf.advance(2);
    }
}

/// Trailer lines after the last chunk, up to an empty line; at most `max`
/// bytes in all.
async fn read_trailers<S: AsyncRead + Unpin>(
    conn: &mut Conn<S>,
    max: usize,
) -> Result<(), PlainError> {
    let mut seen = 0usize;
    loop {
        let end = next_line(conn, max.saturating_sub(seen), "the answer's trailer block").await?;
        conn.buf.advance(end);
        if end == 2 {
            return Ok(());
        }
        seen += end;
        if seen > max {
            return Err(malformed(format!(
                "the answer's trailer block is over {max} bytes"
            )));
        }
    }
}

/// Feeding arbitrary bytes to the answer reader, as a peer would: for the
/// fuzzer (see `crate::fuzzing`).
pub(crate) mod feed {
    use super::*;

    /// A peer's bytes, handed over at most `piece` at a time.
    struct Pieces<'a> {
        data: &'a [u8],
        piece: usize,
    }

    impl AsyncRead for Pieces<'_> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let n = self.data.len().min(self.piece).min(buf.remaining());
            buf.put_slice(&self.data[..n]);
            self.data = &self.data[n..];
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// What reading one answer came to, reduced to what must not depend on
    /// how the bytes were split: the status and body, or the kind of error.
    #[derive(Debug, PartialEq, Eq)]
    pub(crate) enum Outcome {
        Answer(u16, Bytes),
        Connection,
        Malformed,
        TooLarge(Oversize),
        Timeout,
    }

    /// Read answers from `data` as the lean client would, handed over at
    /// most `piece` bytes at a time, until one fails or the data ends (at
    /// most 8 answers, as on a kept-alive connection).
    pub(crate) fn answers(data: &[u8], piece: usize, limits: &Limits) -> Vec<Outcome> {
        let mut conn = Conn {
            stream: Pieces {
                data,
                piece: piece.max(1),
            },
            buf: BytesMut::new(),
            answered: false,
        };
        let mut out = Vec::new();
        for _ in 0..8 {
            conn.answered = false;
            let read = std::pin::pin!(read_response(&mut conn, limits));
            // The stream is always ready and nothing waits on a timer, so
            // one poll finishes the read.
            let polled = std::future::Future::poll(
                read,
                &mut std::task::Context::from_waker(std::task::Waker::noop()),
            );
            let std::task::Poll::Ready(result) = polled else {
                unreachable!("reading from memory never waits")
            };
            match result {
                Ok((r, reusable)) => {
                    out.push(Outcome::Answer(r.status, r.body));
                    if !reusable {
                        break;
                    }
                }
                Err(e) => {
                    out.push(match e {
                        PlainError::Connection(_) => Outcome::Connection,
                        PlainError::Malformed(_) => Outcome::Malformed,
                        PlainError::TooLarge(o) => Outcome::TooLarge(o),
                        PlainError::Timeout => Outcome::Timeout,
                    });
                    break;
                }
            }
        }
        out
    }

    /// See [`crate::fuzzing::http_response`].
    pub(crate) fn http_response(data: &[u8]) {
        let limits = Limits {
            max_body: 64 * 1024,
            max_head: 4 * 1024,
            max_informational: 4,
        };
        let whole = answers(data, usize::MAX, &limits);
        let split = answers(data, 3, &limits);
        // How the bytes were split must not change the first answer (later
        // ones depend on whether bytes past an answer were already read).
        assert_eq!(
            whole.first(),
            split.first(),
            "the same bytes read whole and three at a time differ"
        );
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
        client_capped(port, 64 << 20)
    }

    fn client_capped(port: u16, max_body: u64) -> PlainClient {
        PlainClient::new(
            "127.0.0.1",
            port,
            "/v1",
            HeaderMap::new(),
            Duration::from_secs(10),
            Duration::from_secs(10),
            4,
            max_body,
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
            crate::openai::headers::request_id(&r.headers).as_deref(),
            Some("req_9")
        );
        assert_eq!(
            crate::openai::headers::retry_after(&r.headers),
            Some(Duration::from_millis(250))
        );
    }

    #[tokio::test]
    async fn broken_answers_are_errors_that_name_the_problem() {
        // (answer, a connection error rather than a malformed answer, words
        // the message must hold)
        let cases: [(&[u8], bool, &str); 6] = [
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{}",
                true,
                "after 2 of the 10 bytes",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}",
                false,
                "conflicting Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n{}",
                false,
                "is not a number",
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
                false,
                "not hexadecimal",
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n",
                false,
                "does not end with CRLF",
            ),
            (b"SMTP ready\r\n\r\n", false, "not HTTP/1.x"),
        ];
        for (answer, connection, words) in cases {
            let (port, _) = scripted_server(answer, 64, true).await;
            let r = post(&client_for(port)).await;
            let text = String::from_utf8_lossy(answer);
            match r {
                Err(PlainError::Connection(m)) if connection => {
                    assert!(m.contains(words), "{text}: {m}")
                }
                Err(PlainError::Malformed(m)) if !connection => {
                    assert!(m.contains(words), "{text}: {m}")
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    const SMALL: Limits = Limits {
        max_body: 1000,
        max_head: 2048,
        max_informational: 4,
    };

    /// The first outcome of reading `answer` within `limits`, checked to be
    /// the same whether it arrives whole or a byte at a time.
    fn first(answer: &[u8], limits: &Limits) -> feed::Outcome {
        let whole = feed::answers(answer, usize::MAX, limits).remove(0);
        let split = feed::answers(answer, 1, limits).remove(0);
        assert_eq!(whole, split, "{}", String::from_utf8_lossy(answer));
        whole
    }

    /// The error `answer` is read as, within `limits`.
    fn error_of(answer: &[u8], limits: &Limits) -> PlainError {
        let mut conn = Conn {
            stream: answer,
            buf: BytesMut::new(),
            answered: false,
        };
        let read = std::pin::pin!(read_response(&mut conn, limits));
        let polled = std::future::Future::poll(
            read,
            &mut std::task::Context::from_waker(std::task::Waker::noop()),
        );
        match polled {
            std::task::Poll::Ready(Err(e)) => e,
            other => panic!("{}: {other:?}", String::from_utf8_lossy(answer)),
        }
    }

    fn malformed_message(answer: &[u8], limits: &Limits) -> String {
        match error_of(answer, limits) {
            PlainError::Malformed(m) => m,
            other => panic!("{}: {other:?}", String::from_utf8_lossy(answer)),
        }
    }

    #[test]
    fn a_declared_length_over_the_cap_is_refused_before_reading() {
        use feed::Outcome::TooLarge;
        let absurd = b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999\r\n\r\n{}";
        assert_eq!(
            first(absurd, &SMALL),
            TooLarge(Oversize::Declared(Some(99_999_999_999_999)))
        );
        let beyond = b"HTTP/1.1 200 OK\r\ncontent-length: 999999999999999999999999\r\n\r\n";
        assert_eq!(first(beyond, &SMALL), TooLarge(Oversize::Declared(None)));
        // At the cap is fine, one past is not.
        let mut at = b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n".to_vec();
        at.extend_from_slice(&[b'x'; 1000]);
        assert!(matches!(first(&at, &SMALL), feed::Outcome::Answer(200, b) if b.len() == 1000));
        let over = b"HTTP/1.1 200 OK\r\ncontent-length: 1001\r\n\r\n";
        assert_eq!(
            first(over, &SMALL),
            TooLarge(Oversize::Declared(Some(1001)))
        );
        let m = too_large_message(Oversize::Declared(Some(99_999_999_999_999)), 256 << 20);
        assert!(
            m.contains("99999999999999 bytes") && m.contains("256 MiB"),
            "{m}"
        );
    }

    #[test]
    fn chunk_sizes_are_checked_against_the_cap_without_overflow() {
        use feed::Outcome::TooLarge;
        let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        let max = format!("{head}ffffffffffffffff\r\nabc");
        assert_eq!(
            first(max.as_bytes(), &SMALL),
            TooLarge(Oversize::Chunk {
                before: 0,
                size: Some(u64::MAX)
            })
        );
        let beyond = format!("{head}1ffffffffffffffff\r\n");
        assert_eq!(
            first(beyond.as_bytes(), &SMALL),
            TooLarge(Oversize::Chunk {
                before: 0,
                size: None
            })
        );
        // Many small chunks add up past the cap.
        let mut many = head.to_owned();
        for _ in 0..30 {
            many.push_str(&format!("40\r\n{}\r\n", "y".repeat(64)));
        }
        many.push_str("0\r\n\r\n");
        assert_eq!(
            first(many.as_bytes(), &SMALL),
            TooLarge(Oversize::Chunk {
                before: 960,
                size: Some(64)
            })
        );
        let m = too_large_message(
            Oversize::Chunk {
                before: 0,
                size: Some(u64::MAX),
            },
            1 << 20,
        );
        assert!(
            m.contains("18446744073709551615") && m.contains("1 MiB"),
            "{m}"
        );
        // Signs and spaces are not hexadecimal digits.
        for bad in ["+5", "-1", "0x5", " ", "5 5"] {
            let a = format!("{head}{bad}\r\nhello\r\n0\r\n\r\n");
            assert!(
                malformed_message(a.as_bytes(), &SMALL).contains("not hexadecimal"),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_body_to_the_end_of_the_connection_is_cut_off_past_the_cap() {
        let mut a = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        a.extend_from_slice(&[b'z'; 5000]);
        assert_eq!(
            first(&a, &SMALL),
            feed::Outcome::TooLarge(Oversize::Read(1001))
        );
        // HTTP/1.0 without a length is a valid answer.
        let old = b"HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{\"a\":1}";
        assert_eq!(
            first(old, &SMALL),
            feed::Outcome::Answer(200, Bytes::from_static(b"{\"a\":1}"))
        );
    }

    #[test]
    fn heads_are_bounded_in_size_and_lines() {
        let big = format!(
            "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 2\r\n\r\n{{}}",
            "v".repeat(3000)
        );
        let m = malformed_message(big.as_bytes(), &SMALL);
        assert!(m.contains("head") && m.contains("over 2048 bytes"), "{m}");
        assert_eq!(first(big.as_bytes(), &SMALL), feed::Outcome::Malformed);
        // Endless headers, never a blank line.
        let endless =
            "HTTP/1.1 200 OK\r\n".to_owned() + &format!("x-a: {}\r\n", "b".repeat(40)).repeat(100);
        assert!(malformed_message(endless.as_bytes(), &SMALL).contains("over 2048 bytes"));
        let many = "HTTP/1.1 200 OK\r\n".to_owned() + &"a: b\r\n".repeat(200) + "\r\n";
        let limits = Limits::with_max_body(1000);
        let m = malformed_message(many.as_bytes(), &limits);
        assert!(m.contains("more than 128 header lines"), "{m}");
        // Trailers too.
        let trailers = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n".to_owned()
            + &"t: 1\r\n".repeat(1000);
        let m = malformed_message(trailers.as_bytes(), &SMALL);
        assert!(m.contains("trailer block"), "{m}");
    }

    #[test]
    fn statuses_and_informational_answers() {
        for (answer, words) in [
            (
                &b"HTTP/1.1 999 Odd\r\ncontent-length: 2\r\n\r\n{}"[..],
                "999 is not an HTTP status",
            ),
            (b"HTTP/1.1 42 X\r\n\r\n", "no valid three-digit status"),
            (b"HTTP/1.1 099 X\r\n\r\n", "99 is not an HTTP status"),
            (
                b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\n\r\n",
                "switched protocols",
            ),
            (b"HTTP/2 200\r\n\r\n", "not HTTP/1.x"),
        ] {
            let m = malformed_message(answer, &SMALL);
            assert!(
                m.contains(words),
                "{}: {m}",
                String::from_utf8_lossy(answer)
            );
        }
        // A few informational answers are skipped...
        let ok = "HTTP/1.1 100 Continue\r\n\r\n".repeat(2)
            + "HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n"
            + "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(
            first(ok.as_bytes(), &SMALL),
            feed::Outcome::Answer(200, Bytes::from_static(b"{}"))
        );
        // ... but not without end.
        let endless = "HTTP/1.1 100 Continue\r\n\r\n".repeat(50);
        let m = malformed_message(endless.as_bytes(), &SMALL);
        assert!(m.contains("more than 4 informational"), "{m}");
    }

    #[test]
    fn lengths_and_codings_that_cannot_be_trusted() {
        for (answer, words) in [
            (
                &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"[..],
                "both Content-Length and Transfer-Encoding",
            ),
            (b"HTTP/1.1 200 OK\r\ncontent-length: +2\r\n\r\n{}", "not a number"),
            (b"HTTP/1.1 200 OK\r\ncontent-length: 2, 3\r\n\r\n{}", "different values"),
            (b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nxx", "reads only chunked"),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
                "reads only chunked",
            ),
            (
                b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
                "HTTP/1.0 but has a Transfer-Encoding",
            ),
        ] {
            let m = malformed_message(answer, &SMALL);
            assert!(m.contains(words), "{}: {m}", String::from_utf8_lossy(answer));
        }
        // Equal values repeated are one length.
        let same = b"HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(
            first(same, &SMALL),
            feed::Outcome::Answer(200, Bytes::from_static(b"{}"))
        );
    }

    #[tokio::test]
    async fn the_client_cuts_off_an_answer_over_its_cap() {
        let (port, _) = scripted_server(
            b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999\r\n\r\n{}",
            64,
            true,
        )
        .await;
        let r = post(&client_capped(port, 1 << 20)).await;
        assert!(
            matches!(
                r,
                Err(PlainError::TooLarge(Oversize::Declared(Some(
                    99_999_999_999_999
                ))))
            ),
            "{r:?}"
        );
        static ENDLESS: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let endless = ENDLESS.get_or_init(|| {
            let mut a = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
            a.resize(a.len() + (3 << 20), b'x');
            a
        });
        let (port, _) = scripted_server(endless, 100_000, true).await;
        let r = post(&client_capped(port, 1 << 20)).await;
        assert!(
            matches!(r, Err(PlainError::TooLarge(Oversize::Read(n))) if n == (1 << 20) + 1),
            "{r:?}"
        );
    }

    /// The seed corpus of the `http_response` fuzz target (at the
    /// repository root), replayed: none of it may panic.
    #[test]
    fn the_fuzz_corpus_replays() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fuzz/corpus/http_response"
        );
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).expect("the seed corpus exists") {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            crate::fuzzing::http_response(&data);
            seen += 1;
        }
        assert!(seen >= 12, "{seen} seeds");
    }

    /// Random byte edits of the seeds (a poor fuzzer's mutations, fixed
    /// seed): the reader never panics, however the bytes are split.
    #[test]
    fn mutated_seeds_never_panic() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fuzz/corpus/http_response"
        );
        let seeds: Vec<Vec<u8>> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let tokens: &[&[u8]] = &[
            b"\r\n",
            b"\n",
            b"0",
            b"f",
            b":",
            b";",
            b",",
            b" ",
            b"\r\n\r\n",
            b"content-length: ",
            b"transfer-encoding: chunked\r\n",
            b"HTTP/1.1 100 C\r\n\r\n",
            b"ffffffffffffffff",
            b"\x00",
            b"\xff",
        ];
        for _ in 0..3000 {
            let mut d = seeds[next(seeds.len())].clone();
            for _ in 0..1 + next(4) {
                let at = next(d.len() + 1);
                match next(4) {
                    0 if at < d.len() => d[at] = next(256) as u8,
                    1 if at < d.len() => {
                        let end = (at + next(16)).min(d.len());
                        d.drain(at..end);
                    }
                    _ => {
                        let t = tokens[next(tokens.len())];
                        d.splice(at..at, t.iter().copied());
                    }
                }
            }
            crate::fuzzing::http_response(&d);
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
            1 << 20,
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
