//! The HTTP machinery every provider's online client shares: the base URL
//! and fixed headers checked once, one of two transports (the lean
//! HTTP/1.1 client of [`plain`] for plain-`http` upstreams, reqwest for TLS,
//! HTTP/2 and proxies), the cap on an answer's body, the per-attempt
//! timeout, and transport errors free of the key.
//!
//! What an answer *means* stays with each provider: [`Http::send`] hands
//! the status, headers and body to the provider's [`ReadAnswer`], which
//! reads its own headers (OpenAI's `x-ratelimit-*`, Anthropic's
//! `anthropic-ratelimit-*`) into an [`Answer`]. The reader is a type
//! parameter, so each provider's path is compiled on its own, with no
//! indirection on the hot path.

pub(crate) mod plain;

use std::sync::{Arc, Once};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use batchling_core::Endpoint;

use crate::ProviderError;
use crate::attempt::{Answer, Attempt, TransportError, TransportKind};
use crate::secret::ApiKey;
use plain::{Oversize, PlainClient, PlainError, too_large_message};

/// The default cap on an answer's body: 256 MiB. The largest real answers
/// are embeddings of a full request (2,048 inputs at 3,072 dimensions as
/// JSON floats: 130-200 MB); a long completion with log-probabilities is
/// tens of MB; everything else is far below 1 MB.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 256 * 1024 * 1024;

/// Spare room set aside after a large answer's body, so that the output
/// line (its envelope: ids, status, request id) can be built around the
/// body in the same memory instead of a copy.
pub const LINE_ROOM: usize = 4096;

/// Read access to an answer's headers, whichever client read them.
pub trait HeaderLookup {
    /// The first value of header `name` (lower case), when it is text.
    fn header(&self, name: &HeaderName) -> Option<&str>;

    /// The first value of header `name` (lower case), as bytes.
    fn header_bytes(&self, name: &HeaderName) -> Option<&[u8]>;

    /// The first `Content-Encoding`, as bytes.
    fn content_encoding(&self) -> Option<&[u8]> {
        self.header_bytes(&reqwest::header::CONTENT_ENCODING)
    }
}

impl HeaderLookup for HeaderMap {
    fn header(&self, name: &HeaderName) -> Option<&str> {
        self.get(name).and_then(|v| v.to_str().ok())
    }

    fn header_bytes(&self, name: &HeaderName) -> Option<&[u8]> {
        self.get(name).map(HeaderValue::as_bytes)
    }
}

/// A provider's reading of an answer that arrived whole: its headers
/// (limits, retry hints, request id) and its body.
pub(crate) trait ReadAnswer {
    /// The [`Answer`] for a status in 200-599 with an uncompressed body.
    fn answered<H: HeaderLookup>(&self, status: u16, headers: &H, body: Bytes) -> Answer;
}

/// How the connections of one upstream behave.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// Per-attempt timeout (connect, send, and read the whole answer).
    pub(crate) timeout: Duration,
    /// Idle keep-alive connections kept per host.
    pub(crate) pool_size: usize,
    /// Use HTTP/2 when the server offers it.
    pub(crate) http2: bool,
    /// The largest answer body read.
    pub(crate) max_response_bytes: u64,
}

pub(crate) fn install_crypto() {
    static ONCE: Once = Once::new();
    // ring is compiled in instead of aws-lc for build time; reqwest needs a
    // process-wide default. An error means one is already installed.
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// An error and its sources, joined by ": ". reqwest's own message names the
/// URL but not the cause ("connection refused" is a source); it never holds
/// headers, so no key, but callers still redact it.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        message.push_str(": ");
        message.push_str(&s.to_string());
        src = s.source();
    }
    message
}

/// The base URL without a trailing slash, parsed and checked (http or
/// https); `example` is a good one, for the error.
pub(crate) fn base_url(
    url: &str,
    example: &'static str,
) -> Result<(String, reqwest::Url), ProviderError> {
    let base = url.trim_end_matches('/').to_owned();
    let bad = |reason: &str| ProviderError::BadBaseUrl {
        url: url.to_owned(),
        reason: reason.into(),
        example,
    };
    let parsed = reqwest::Url::parse(&base).map_err(|e| bad(&e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https"));
    }
    Ok((base, parsed))
}

/// The key's header value, marked sensitive so it is never logged.
pub(crate) fn key_header(name: &HeaderName, value: &str) -> Result<HeaderValue, ProviderError> {
    let mut value = HeaderValue::from_str(value).map_err(|_| ProviderError::BadHeader {
        name: name.to_string(),
        reason: "the API key holds characters not allowed in a header".into(),
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// The user's extra headers (`--header`), added to `headers`; one named
/// like a header already there replaces it.
pub(crate) fn add_user_headers(
    headers: &mut HeaderMap,
    extra: &[(String, String)],
) -> Result<(), ProviderError> {
    for (name, value) in extra {
        let bad_header = |reason: String| ProviderError::BadHeader {
            name: name.clone(),
            reason,
        };
        let n = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|e| bad_header(e.to_string()))?;
        let mut v = HeaderValue::from_str(value.trim()).map_err(|e| bad_header(e.to_string()))?;
        v.set_sensitive(true);
        headers.insert(n, v);
    }
    Ok(())
}

/// The online client of one upstream: connections, timeouts, caps. See the
/// module docs.
#[derive(Debug, Clone)]
pub(crate) struct Http {
    transport: Transport,
    /// The base URL, for targets built per request ([`Http::send_to`]).
    base: String,
    /// Full URL per endpoint, parsed once: parsing a URL per request costs
    /// more than the rest of building it.
    urls: Vec<(Endpoint, reqwest::Url)>,
    timeout: Duration,
    key: Option<ApiKey>,
    /// The cap on an answer's body.
    max_body: u64,
}

/// How requests travel. Only one of the two is built: reqwest's TLS set-up
/// reads every system root certificate (a few milliseconds of CPU), which a
/// plain-`http` upstream never needs.
#[derive(Debug, Clone)]
enum Transport {
    /// The lean client, for plain-`http` upstreams without a proxy.
    Plain(Arc<PlainClient>),
    /// reqwest, for TLS, HTTP/2 and proxies.
    Reqwest(reqwest::Client),
}

impl Http {
    /// The client for `base` (no trailing slash; endpoints' relative paths
    /// are joined to it), sending `headers` (the key among them) and
    /// `Content-Type: application/json` with every request. `key` is only
    /// used to keep it out of error messages.
    pub(crate) fn new(
        base: &str,
        parsed: &reqwest::Url,
        mut headers: HeaderMap,
        key: Option<ApiKey>,
        s: Settings,
    ) -> Result<Self, ProviderError> {
        install_crypto();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let transport =
            match plain_client(parsed, &s, headers.clone()).map_err(ProviderError::Client)? {
                Some(plain) => Transport::Plain(Arc::new(plain)),
                None => {
                    let mut builder = reqwest::Client::builder()
                        .default_headers(headers)
                        .pool_max_idle_per_host(s.pool_size)
                        .pool_idle_timeout(Duration::from_secs(90))
                        .connect_timeout(Duration::from_secs(10).min(s.timeout))
                        .tcp_nodelay(true)
                        .user_agent(concat!("batchling/", env!("CARGO_PKG_VERSION")));
                    if !s.http2 {
                        builder = builder.http1_only();
                    }
                    Transport::Reqwest(
                        builder
                            .build()
                            .map_err(|e| ProviderError::Client(e.to_string()))?,
                    )
                }
            };
        let urls = Endpoint::EVERY
            .into_iter()
            .map(|e| {
                let url = format!("{base}{}", e.relative_path());
                reqwest::Url::parse(&url)
                    .map(|u| (e, u))
                    .map_err(|err| ProviderError::BadBaseUrl {
                        url: base.to_owned(),
                        reason: err.to_string(),
                        example: "http(s)://host[:port][/path]",
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Http {
            transport,
            base: base.to_owned(),
            urls,
            timeout: s.timeout,
            key,
            max_body: s.max_response_bytes,
        })
    }

    /// The key, to keep it out of what an answer says.
    pub(crate) fn key(&self) -> Option<&ApiKey> {
        self.key.as_ref()
    }

    /// Whether requests go through the lean client (tests).
    #[cfg(test)]
    pub(crate) fn is_plain(&self) -> bool {
        matches!(self.transport, Transport::Plain(_))
    }

    /// One POST of `body` to `endpoint`, read by `reader`. Never fails:
    /// transport problems are part of the returned [`Attempt`].
    pub(crate) async fn send<R: ReadAnswer>(
        &self,
        reader: &R,
        endpoint: Endpoint,
        custom_id: &str,
        body: Bytes,
    ) -> Attempt {
        match &self.transport {
            Transport::Plain(plain) => {
                self.send_plain(reader, plain, endpoint, custom_id, body)
                    .await
            }
            Transport::Reqwest(http) => {
                match self.attempt(reader, http, endpoint, custom_id, body).await {
                    Ok(a) => a,
                    Err(e) => Attempt::Transport(self.transport_error(&e)),
                }
            }
        }
    }

    /// One POST of `body` to `target`, a path (and query) under the base
    /// URL built for this request, read by `reader`. Never fails, as
    /// [`Http::send`].
    pub(crate) async fn send_to<R: ReadAnswer>(
        &self,
        reader: &R,
        target: &str,
        custom_id: &str,
        body: Bytes,
    ) -> Attempt {
        let id = custom_id_header(custom_id);
        match &self.transport {
            Transport::Plain(plain) => {
                let answer = plain.post_to(target, id, body).await;
                self.plain_answer(reader, answer)
            }
            Transport::Reqwest(http) => {
                let url = match reqwest::Url::parse(&format!("{}{target}", self.base)) {
                    Ok(u) => u,
                    Err(e) => {
                        let message = format!("the URL of {target:?} does not parse: {e}");
                        return Attempt::Transport(
                            self.transport(TransportKind::Invalid, &message),
                        );
                    }
                };
                match self.attempt_at(reader, http, url, id, body).await {
                    Ok(a) => a,
                    Err(e) => Attempt::Transport(self.transport_error(&e)),
                }
            }
        }
    }

    fn transport_error(&self, e: &reqwest::Error) -> TransportError {
        let kind = if e.is_timeout() {
            TransportKind::Timeout
        } else if e.is_builder() {
            TransportKind::Invalid
        } else if is_malformed(e) {
            TransportKind::Malformed
        } else {
            TransportKind::Connection
        };
        self.transport(kind, &error_chain(e))
    }

    /// A transport error, its message free of the key.
    pub(crate) fn transport(&self, kind: TransportKind, message: &str) -> TransportError {
        let message = crate::secret::redact(self.key.as_ref(), message);
        TransportError { kind, message }
    }

    fn too_large(&self, o: Oversize) -> Attempt {
        Attempt::Transport(TransportError {
            kind: TransportKind::TooLarge,
            message: too_large_message(o, self.max_body),
        })
    }

    async fn attempt<R: ReadAnswer>(
        &self,
        reader: &R,
        http: &reqwest::Client,
        endpoint: Endpoint,
        custom_id: &str,
        body: Bytes,
    ) -> Result<Attempt, reqwest::Error> {
        let url = self
            .urls
            .iter()
            .find(|(e, _)| *e == endpoint)
            .map(|(_, u)| u.clone())
            .expect("every endpoint has a URL");
        self.attempt_at(reader, http, url, custom_id_header(custom_id), body)
            .await
    }

    async fn attempt_at<R: ReadAnswer>(
        &self,
        reader: &R,
        http: &reqwest::Client,
        url: reqwest::Url,
        custom_id: HeaderValue,
        body: Bytes,
    ) -> Result<Attempt, reqwest::Error> {
        let resp = http
            .post(url)
            .timeout(self.timeout)
            .header("x-batchling-custom-id", custom_id)
            .body(body)
            .send()
            .await?;
        let mut resp = resp;
        let status = resp.status().as_u16();
        let headers = std::mem::take(resp.headers_mut());
        match read_capped(&mut resp, self.max_body).await {
            Ok(body) => Ok(self.answer(reader, status, &headers, body)),
            Err(Cut::Http(e)) => Err(e),
            Err(Cut::Over(o)) => Ok(self.too_large(o)),
            Err(Cut::NoMemory(n)) => Ok(Attempt::Transport(self.transport(
                TransportKind::Connection,
                &format!("cannot set aside memory for {n} more bytes of the answer"),
            ))),
        }
    }

    /// The answer to a response read in full, unless what came is not an
    /// answer batchling can use: a status outside 200-599 (an unasked
    /// protocol switch, or no HTTP status at all), or a compressed body
    /// (batchling asks for none, so cannot read one).
    fn answer<R: ReadAnswer, H: HeaderLookup>(
        &self,
        reader: &R,
        status: u16,
        h: &H,
        body: Bytes,
    ) -> Attempt {
        if !(200..=599).contains(&status) {
            let message = match status {
                101 => "the server switched protocols (101 Switching Protocols), which was not asked for".to_owned(),
                100..=199 => format!("the server's last answer is informational ({status}), not a real one"),
                _ => format!("the answer's status {status} is not an HTTP status (100-599)"),
            };
            return Attempt::Transport(self.transport(TransportKind::Malformed, &message));
        }
        if let Some(coding) = h.content_encoding()
            && !coding.trim_ascii().is_empty()
            && !coding.trim_ascii().eq_ignore_ascii_case(b"identity")
        {
            let coding = &coding[..coding.len().min(40)];
            let message = format!(
                "the answer is compressed (Content-Encoding: {}), which batchling did not ask for and does not decode",
                coding.escape_ascii()
            );
            return Attempt::Transport(self.transport(TransportKind::Malformed, &message));
        }
        Attempt::Answered(reader.answered(status, h, body))
    }

    async fn send_plain<R: ReadAnswer>(
        &self,
        reader: &R,
        plain: &PlainClient,
        endpoint: Endpoint,
        custom_id: &str,
        body: Bytes,
    ) -> Attempt {
        let custom_id = custom_id_header(custom_id);
        let answer = plain.post(endpoint, custom_id, body).await;
        self.plain_answer(reader, answer)
    }

    fn plain_answer<R: ReadAnswer>(
        &self,
        reader: &R,
        answer: Result<plain::PlainResponse, PlainError>,
    ) -> Attempt {
        match answer {
            Ok(r) => self.answer(reader, r.status, &r.headers, r.body),
            Err(PlainError::TooLarge(o)) => self.too_large(o),
            Err(e) => {
                let (kind, message) = match e {
                    PlainError::Timeout => (
                        TransportKind::Timeout,
                        format!("no complete answer within {:?}", self.timeout),
                    ),
                    PlainError::Connection(m) => (TransportKind::Connection, m),
                    PlainError::Malformed(m) => (TransportKind::Malformed, m),
                    PlainError::TooLarge(_) => unreachable!("handled above"),
                };
                Attempt::Transport(self.transport(kind, &message))
            }
        }
    }
}

/// An error body with the key taken out: a server that echoes the key in
/// an error must not put it into the error file. 2xx bodies are left as
/// they are.
pub(crate) fn redact_error_body(key: Option<&ApiKey>, status: u16, body: Bytes) -> Bytes {
    if !(200..300).contains(&status)
        && let Some(k) = key
        && let text = String::from_utf8_lossy(&body)
        && text.contains(k.expose())
    {
        return Bytes::from(k.redact(&text));
    }
    body
}

/// The lean client, when the upstream is plain `http` (no TLS), HTTP/2 is
/// off and no proxy is configured: reqwest is kept for everything else.
fn plain_client(
    url: &reqwest::Url,
    s: &Settings,
    headers: HeaderMap,
) -> Result<Option<PlainClient>, String> {
    let proxied = ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
        .iter()
        .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()));
    if url.scheme() != "http"
        || s.http2
        || proxied
        || url.query().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Ok(None);
    }
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return Ok(None);
    };
    let mut headers = headers;
    headers.insert(
        reqwest::header::USER_AGENT,
        HeaderValue::from_static(concat!("batchling/", env!("CARGO_PKG_VERSION"))),
    );
    PlainClient::new(
        host,
        port,
        url.path(),
        headers,
        s.timeout,
        Duration::from_secs(10).min(s.timeout),
        s.pool_size,
        s.max_response_bytes,
    )
    .map(Some)
}

/// Why reading a body through reqwest stopped.
pub(crate) enum Cut {
    Http(reqwest::Error),
    Over(Oversize),
    NoMemory(usize),
}

/// A body read through reqwest, at most `cap` bytes: a declared length over
/// the cap is refused before anything is read, and the bytes are counted
/// as they arrive. A body of one piece is kept as it came; a longer one is
/// gathered in memory set aside once (for its declared length, within the
/// cap), with room for the output line's envelope.
pub(crate) async fn read_capped(resp: &mut reqwest::Response, cap: u64) -> Result<Bytes, Cut> {
    let declared = resp.content_length();
    if let Some(n) = declared
        && n > cap
    {
        return Err(Cut::Over(Oversize::Declared(Some(n))));
    }
    let mut first: Option<Bytes> = None;
    let mut body: Vec<u8> = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(Cut::Http)? {
        let total = (first.as_ref().map_or(0, Bytes::len) + body.len()) as u64 + chunk.len() as u64;
        if total > cap {
            return Err(Cut::Over(Oversize::Read(total)));
        }
        if first.is_none() && body.is_empty() {
            first = Some(chunk);
            continue;
        }
        if let Some(f) = first.take() {
            // Within the cap: `declared` was checked against it.
            let want = declared.map_or(0, |n| n as usize).max(total as usize) + LINE_ROOM;
            body.try_reserve_exact(want)
                .map_err(|_| Cut::NoMemory(want))?;
            body.extend_from_slice(&f);
        }
        plain::grow_body(&mut body, chunk.len(), cap).map_err(|_| Cut::NoMemory(chunk.len()))?;
        body.extend_from_slice(&chunk);
    }
    Ok(first.unwrap_or_else(|| Bytes::from(body)))
}

/// Whether reqwest's error says the answer was not well-formed HTTP (as
/// opposed to a connection that failed): hyper's parse errors, and the
/// invalid-data errors of its body decoding (a bad chunk size).
fn is_malformed(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper::Error>()
            && (h.is_parse() || h.is_parse_status() || h.is_parse_too_large())
        {
            return true;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
            )
        {
            return true;
        }
        source = s.source();
    }
    false
}

/// The custom id as a header value: visible ASCII as is, every other byte
/// percent-encoded, so any id the input allows can be sent.
fn custom_id_header(id: &str) -> HeaderValue {
    if let Ok(v) = HeaderValue::from_str(id)
        && id.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    {
        return v;
    }
    let mut out = String::with_capacity(id.len() * 3);
    for b in id.bytes() {
        if b.is_ascii_graphic() && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&out).expect("percent-encoded text is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_custom_id_makes_a_header() {
        assert_eq!(custom_id_header("req-1 a").to_str().unwrap(), "req-1 a");
        assert_eq!(custom_id_header("a\nb%").to_str().unwrap(), "a%0Ab%25");
        assert_eq!(custom_id_header("é").to_str().unwrap(), "%C3%A9");
    }

    #[test]
    fn error_bodies_lose_the_key_and_answers_stay_whole() {
        let k = ApiKey::new("sk-echoed-key");
        let body = || Bytes::from_static(b"{\"error\":\"bad key sk-echoed-key\"}");
        let cleaned = redact_error_body(Some(&k), 401, body());
        assert!(!String::from_utf8_lossy(&cleaned).contains("sk-echoed-key"));
        assert_eq!(redact_error_body(Some(&k), 200, body()), body());
    }
}
