//! The HTTP client for OpenAI-compatible servers.

use std::time::Duration;

use bytes::Bytes;

use batchling_core::usage::{BodyRead, read_body};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName};

use super::headers::HeaderLookup;
use super::{classify, headers};
use crate::attempt::{Answer, Attempt, Outgoing};
use crate::http::{self, Http, ReadAnswer};
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

pub use crate::http::{DEFAULT_MAX_RESPONSE_BYTES, LINE_ROOM};

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
    http: Http,
    base: String,
}

/// What both the online client and the Files + Batches client start from:
/// the base URL without a trailing slash, parsed and checked (http or
/// https), and the headers of every request (the key, marked sensitive so
/// it is never logged, and the user's extra headers).
pub(crate) fn prepare(
    config: &ClientConfig,
) -> Result<(String, reqwest::Url, HeaderMap), ProviderError> {
    let (base, parsed) = http::base_url(&config.base_url, "https://api.openai.com/v1")?;
    let mut headers = HeaderMap::new();
    if let Some(key) = &config.api_key {
        let (name, value) = match config.auth {
            AuthStyle::Bearer => (AUTHORIZATION, format!("Bearer {}", key.expose())),
            AuthStyle::ApiKeyHeader => {
                (HeaderName::from_static("api-key"), key.expose().to_owned())
            }
        };
        let value = http::key_header(&name, &value)?;
        headers.insert(name, value);
    }
    http::add_user_headers(&mut headers, &config.headers)?;
    Ok((base, parsed, headers))
}

impl OpenAiClient {
    /// Build the client. Fails on a bad base URL or header.
    pub fn new(config: ClientConfig) -> Result<Self, ProviderError> {
        let (base, parsed, headers) = prepare(&config)?;
        let settings = http::Settings {
            timeout: config.timeout,
            pool_size: config.pool_size,
            http2: config.http2,
            max_response_bytes: config.max_response_bytes,
        };
        let http = Http::new(&base, &parsed, headers, config.api_key, settings)?;
        Ok(OpenAiClient { http, base })
    }

    /// The base URL requests are sent under.
    pub fn base_url(&self) -> &str {
        &self.base
    }
}

impl ReadAnswer for OpenAiClient {
    fn answered<H: HeaderLookup>(&self, status: u16, h: &H, body: Bytes) -> Answer {
        read_answer(self.http.key(), status, h, body, headers::rate_limits(h))
    }
}

/// An OpenAI-shaped answer (OpenAI's, Azure's): its retry hints and request
/// id from OpenAI's headers, `limits` as the provider reads its own, an
/// error body without the key, and whether the body is JSON.
pub(crate) fn read_answer<H: HeaderLookup>(
    key: Option<&ApiKey>,
    status: u16,
    h: &H,
    body: Bytes,
    limits: batchling_core::ratelimit::RateLimitSnapshot,
) -> Answer {
    let retry_after = headers::retry_after(h);
    let should_retry = headers::should_retry(h);
    let request_id = headers::request_id(h);
    let body = http::redact_error_body(key, status, body);
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

impl Provider for OpenAiClient {
    async fn send(&self, request: &Outgoing) -> Attempt {
        self.http
            .send(
                self,
                request.endpoint,
                &request.custom_id,
                request.body.clone(),
            )
            .await
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
    use crate::TransportKind;

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
            client("http://127.0.0.1:8080/v1", false).http.is_plain(),
            !proxied
        );
        assert!(!client("http://127.0.0.1:8080/v1", true).http.is_plain());
        assert!(!client("https://api.openai.com/v1", false).http.is_plain());
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
