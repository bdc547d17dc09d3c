//! The HTTP client for OpenAI-compatible servers.

use std::sync::{Arc, Once};
use std::time::Duration;

use bytes::Bytes;

use batchling_core::Endpoint;
use batchling_core::usage::{BodyRead, read_body};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use super::headers::HeaderLookup;
use super::plain::{Oversize, PlainClient, PlainError, too_large_message};
use super::{classify, headers};
use crate::attempt::{Answer, Attempt, Outgoing, TransportError, TransportKind};
use crate::secret::ApiKey;
use crate::{Provider, ProviderError, Verdict};

/// How the key is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthStyle {
    /// `Authorization: Bearer KEY` (OpenAI and most compatible servers).
    #[default]
    Bearer,
    /// `api-key: KEY` (Azure OpenAI).
    ApiKeyHeader,
}

/// Everything needed to talk to one OpenAI-compatible upstream.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base URL including `/v1`, as in the official SDKs.
    pub base_url: String,
    /// The key, if the server needs one.
    pub api_key: Option<ApiKey>,
    /// How to send the key.
    pub auth: AuthStyle,
    /// Extra headers sent with every request.
    pub headers: Vec<(String, String)>,
    /// Per-attempt timeout (connect, send, and read the whole answer).
    pub timeout: Duration,
    /// Idle keep-alive connections kept per host; set to the concurrency.
    pub pool_size: usize,
    /// Use HTTP/2 when the server offers it. Off by default: hyper opens
    /// one HTTP/2 connection per host, which caps concurrency at the
    /// server's stream limit, while an HTTP/1.1 pool scales with it.
    pub http2: bool,
    /// The largest answer body read (`--max-response-mb`); a larger one is
    /// cut off and becomes a `response_too_large` error, not retried.
    pub max_response_bytes: u64,
}

/// The default cap on an answer's body: 256 MiB. The largest real answers
/// are embeddings of a full request (2,048 inputs at 3,072 dimensions as
/// JSON floats: 130-200 MB); a long completion with log-probabilities is
/// tens of MB; everything else is far below 1 MB.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 256 * 1024 * 1024;

/// Spare room set aside after a large answer's body, so that the output
/// line (its envelope: ids, status, request id) can be built around the
/// body in the same memory instead of a copy.
pub const LINE_ROOM: usize = 4096;

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            base_url: "https://api.openai.com/v1".into(),
            api_key: None,
            auth: AuthStyle::Bearer,
            headers: Vec::new(),
            timeout: Duration::from_secs(600),
            pool_size: 64,
            http2: false,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

/// A pooled keep-alive client for one upstream.
#[derive(Debug, Clone)]
pub struct OpenAiClient {
    transport: Transport,
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

pub(crate) fn install_crypto() {
    static ONCE: Once = Once::new();
    // ring is compiled in instead of aws-lc for build time; reqwest needs a
    // process-wide default. An error means one is already installed.
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// What both the online client and the Files + Batches client start from:
/// the base URL without a trailing slash, parsed and checked (http or
/// https), and the headers of every request (the key, marked sensitive so
/// it is never logged, and the user's extra headers).
pub(crate) fn prepare(
    config: &ClientConfig,
) -> Result<(String, reqwest::Url, HeaderMap), ProviderError> {
    let base = config.base_url.trim_end_matches('/').to_owned();
    let bad = |reason: &str| ProviderError::BadBaseUrl {
        url: config.base_url.clone(),
        reason: reason.into(),
    };
    let parsed = reqwest::Url::parse(&base).map_err(|e| bad(&e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https"));
    }
    let mut headers = HeaderMap::new();
    if let Some(key) = &config.api_key {
        let (name, value) = match config.auth {
            AuthStyle::Bearer => (AUTHORIZATION, format!("Bearer {}", key.expose())),
            AuthStyle::ApiKeyHeader => {
                (HeaderName::from_static("api-key"), key.expose().to_owned())
            }
        };
        let mut value = HeaderValue::from_str(&value).map_err(|_| ProviderError::BadHeader {
            name: name.to_string(),
            reason: "the API key holds characters not allowed in a header".into(),
        })?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    for (name, value) in &config.headers {
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
    Ok((base, parsed, headers))
}

impl OpenAiClient {
    /// Build the client. Fails on a bad base URL or header.
    pub fn new(config: ClientConfig) -> Result<Self, ProviderError> {
        install_crypto();
        let (base, parsed, mut default_headers) = prepare(&config)?;
        default_headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let transport = match plain_client(&parsed, &config, default_headers.clone())
            .map_err(ProviderError::Client)?
        {
            Some(plain) => Transport::Plain(Arc::new(plain)),
            None => {
                let mut builder = reqwest::Client::builder()
                    .default_headers(default_headers)
                    .pool_max_idle_per_host(config.pool_size)
                    .pool_idle_timeout(Duration::from_secs(90))
                    .connect_timeout(Duration::from_secs(10).min(config.timeout))
                    .tcp_nodelay(true)
                    .user_agent(concat!("batchling/", env!("CARGO_PKG_VERSION")));
                if !config.http2 {
                    builder = builder.http1_only();
                }
                Transport::Reqwest(
                    builder
                        .build()
                        .map_err(|e| ProviderError::Client(e.to_string()))?,
                )
            }
        };
        let urls = Endpoint::ALL
            .into_iter()
            .map(|e| {
                let url = format!("{base}{}", e.relative_path());
                reqwest::Url::parse(&url)
                    .map(|u| (e, u))
                    .map_err(|err| ProviderError::BadBaseUrl {
                        url: config.base_url.clone(),
                        reason: err.to_string(),
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(OpenAiClient {
            transport,
            urls,
            base,
            timeout: config.timeout,
            key: config.api_key,
            max_body: config.max_response_bytes,
        })
    }

    /// The base URL requests are sent under.
    pub fn base_url(&self) -> &str {
        &self.base
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
        self.transport(kind, &super::error_chain(e))
    }

    /// A transport error, its message free of the key.
    fn transport(&self, kind: TransportKind, message: &str) -> TransportError {
        let message = crate::secret::redact(self.key.as_ref(), message);
        TransportError { kind, message }
    }

    fn too_large(&self, o: Oversize) -> Attempt {
        Attempt::Transport(TransportError {
            kind: TransportKind::TooLarge,
            message: too_large_message(o, self.max_body),
        })
    }

    async fn attempt(
        &self,
        http: &reqwest::Client,
        request: &Outgoing,
    ) -> Result<Attempt, reqwest::Error> {
        let url = self
            .urls
            .iter()
            .find(|(e, _)| *e == request.endpoint)
            .map(|(_, u)| u.clone())
            .expect("every endpoint has a URL");
        let resp = http
            .post(url)
            .timeout(self.timeout)
            .header(
                "x-batchling-custom-id",
                custom_id_header(&request.custom_id),
            )
            .body(request.body.clone())
            .send()
            .await?;
        let mut resp = resp;
        let status = resp.status().as_u16();
        let headers = std::mem::take(resp.headers_mut());
        match read_capped(&mut resp, self.max_body).await {
            Ok(body) => Ok(self.answer(status, &headers, body)),
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
    fn answer<H: HeaderLookup>(&self, status: u16, h: &H, body: Bytes) -> Attempt {
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
        Attempt::Answered(self.answered(status, h, body))
    }

    fn answered<H: HeaderLookup>(&self, status: u16, h: &H, mut body: Bytes) -> Answer {
        let limits = headers::rate_limits(h);
        let retry_after = headers::retry_after(h);
        let should_retry = headers::should_retry(h);
        let request_id = headers::request_id(h);
        if !(200..300).contains(&status)
            && let Some(k) = &self.key
            && let text = String::from_utf8_lossy(&body)
            && text.contains(k.expose())
        {
            // A server that echoes the key in an error must not put it into
            // the error file.
            body = Bytes::from(k.redact(&text));
        }
        // One parse serves both purposes: validating the body as JSON (an
        // output line embeds it verbatim) and reading its usage.
        let (body_is_json, usage) = if (200..300).contains(&status) {
            match read_body(&body) {
                BodyRead::Json(u) => (true, u),
                BodyRead::NotJson => (false, None),
            }
        } else {
            let valid = serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok();
            (valid, None)
        };
        Answer {
            status,
            body,
            request_id,
            limits,
            retry_after,
            should_retry,
            body_is_json,
            usage,
        }
    }

    async fn send_plain(&self, plain: &PlainClient, request: &Outgoing) -> Attempt {
        let custom_id = custom_id_header(&request.custom_id);
        match plain
            .post(request.endpoint, custom_id, request.body.clone())
            .await
        {
            Ok(r) => self.answer(r.status, &r.headers, r.body),
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

/// The lean client, when the upstream is plain `http` (no TLS), HTTP/2 is
/// off and no proxy is configured: reqwest is kept for everything else.
fn plain_client(
    url: &reqwest::Url,
    config: &ClientConfig,
    headers: HeaderMap,
) -> Result<Option<PlainClient>, String> {
    let proxied = ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
        .iter()
        .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()));
    if url.scheme() != "http"
        || config.http2
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
        config.timeout,
        Duration::from_secs(10).min(config.timeout),
        config.pool_size,
        config.max_response_bytes,
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
        super::plain::grow_body(&mut body, chunk.len(), cap)
            .map_err(|_| Cut::NoMemory(chunk.len()))?;
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

impl Provider for OpenAiClient {
    async fn send(&self, request: &Outgoing) -> Attempt {
        match &self.transport {
            Transport::Plain(plain) => self.send_plain(plain, request).await,
            Transport::Reqwest(http) => match self.attempt(http, request).await {
                Ok(a) => a,
                Err(e) => Attempt::Transport(self.transport_error(&e)),
            },
        }
    }

    fn classify(&self, attempt: &Attempt) -> Verdict {
        classify(attempt)
    }

    fn describe(&self, answer: &Answer) -> String {
        super::classify::error_message(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_urls_and_headers_without_echoing_the_key() {
        let bad = OpenAiClient::new(ClientConfig {
            base_url: "ftp://x/v1".into(),
            ..ClientConfig::default()
        });
        assert!(matches!(bad, Err(ProviderError::BadBaseUrl { .. })));
        let err = OpenAiClient::new(ClientConfig {
            base_url: "http://127.0.0.1:1/v1".into(),
            api_key: Some(ApiKey::new("sk-secret\nvalue")),
            ..ClientConfig::default()
        })
        .unwrap_err()
        .to_string();
        assert!(!err.contains("sk-secret"), "{err}");
        let err = OpenAiClient::new(ClientConfig {
            base_url: "http://127.0.0.1:1/v1".into(),
            headers: vec![("bad header".into(), "v".into())],
            ..ClientConfig::default()
        });
        assert!(matches!(err, Err(ProviderError::BadHeader { .. })));
    }

    #[test]
    fn the_lean_client_only_for_plain_http_without_http2() {
        let client = |url: &str, http2: bool| {
            OpenAiClient::new(ClientConfig {
                base_url: url.into(),
                http2,
                ..ClientConfig::default()
            })
            .unwrap()
        };
        // A proxy in the environment would turn it off too; the test
        // environment is not touched here.
        let proxied = ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
            .iter()
            .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()));
        assert_eq!(
            matches!(
                client("http://127.0.0.1:8080/v1", false).transport,
                Transport::Plain(_)
            ),
            !proxied
        );
        assert!(matches!(
            client("http://127.0.0.1:8080/v1", true).transport,
            Transport::Reqwest(_)
        ));
        assert!(matches!(
            client("https://api.openai.com/v1", false).transport,
            Transport::Reqwest(_)
        ));
    }

    #[test]
    fn any_custom_id_makes_a_header() {
        assert_eq!(custom_id_header("req-1 a").to_str().unwrap(), "req-1 a");
        assert_eq!(custom_id_header("a\nb%").to_str().unwrap(), "a%0Ab%25");
        assert_eq!(custom_id_header("é").to_str().unwrap(), "%C3%A9");
    }

    #[tokio::test]
    async fn connection_refused_is_a_transport_error() {
        // Port 1 on loopback: nothing listens there.
        let c = OpenAiClient::new(ClientConfig {
            base_url: "http://127.0.0.1:1/v1".into(),
            api_key: Some(ApiKey::new("sk-secret-abcdef")),
            ..ClientConfig::default()
        })
        .unwrap();
        let a = c
            .send(&Outgoing {
                custom_id: "a".into(),
                endpoint: batchling_core::Endpoint::Embeddings,
                body: bytes::Bytes::from_static(b"{}"),
            })
            .await;
        match a {
            Attempt::Transport(t) => {
                assert_eq!(t.kind, TransportKind::Connection);
                assert!(!t.message.contains("sk-secret"));
            }
            other => panic!("expected a transport error, got {other:?}"),
        }
    }
}
