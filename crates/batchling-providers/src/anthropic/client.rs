//! The HTTP client for Anthropic's Messages API (`POST /v1/messages`).
//!
//! Each line decides its own form by its endpoint:
//! - [`Endpoint::Messages`]: a Messages body, sent byte for byte; the
//!   answer is Anthropic's message object, as it came.
//! - [`Endpoint::ChatCompletions`]: an OpenAI body, translated with
//!   [`request_to_messages`]; a 2xx answer is translated back with
//!   [`message_to_chat_completion`] (the usage is read from Anthropic's own
//!   answer, cache reads and writes included). A body that cannot be
//!   translated fails its line, naming the field, without a call.
//! - every other endpoint has no Anthropic equivalent and fails its line.
//!
//! Connections, caps and timeouts are the crate's shared `http` module's,
//! as for OpenAI.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use batchling_core::Endpoint;
use batchling_core::usage::{BodyRead, read_body};

use super::headers::{self, HeaderLookup};
use super::translate::{
    MAX_WARNING_BYTES, RequestOptions, Translated, message_to_chat_completion, request_to_messages,
};
use crate::attempt::{Answer, Attempt, Outgoing, TransportError, TransportKind};
use crate::http::{self, Http, ReadAnswer};
use crate::secret::ApiKey;
use crate::{Provider, ProviderError, Verdict};

/// Anthropic's API, without `/v1` (as its SDKs take it).
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";

/// The `anthropic-version` sent unless the user's headers name another.
pub const DEFAULT_VERSION: &str = "2023-06-01";

static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
static ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");

/// Everything needed to talk to Anthropic (or a server that speaks its
/// Messages API).
#[derive(Debug, Clone)]
pub struct AnthropicConfig {
    /// Base URL without `/v1` (`https://api.anthropic.com`); one ending in
    /// `/v1` is taken as well.
    pub base_url: String,
    /// Sent as `x-api-key`.
    pub api_key: Option<ApiKey>,
    /// Sent as `anthropic-version`; a user header of that name wins.
    pub version: String,
    /// Extra headers sent with every request (`anthropic-beta`, say),
    /// passed through as given.
    pub headers: Vec<(String, String)>,
    /// Per-attempt timeout (connect, send, and read the whole answer).
    pub timeout: Duration,
    /// Idle keep-alive connections kept; set to the concurrency.
    pub pool_size: usize,
    /// Use HTTP/2 when the server offers it.
    pub http2: bool,
    /// The largest answer body read; a larger one becomes a
    /// `response_too_large` error, not retried.
    pub max_response_bytes: u64,
    /// How OpenAI lines are translated (strict or lenient, the default
    /// `max_tokens`).
    pub translation: RequestOptions,
}

impl Default for AnthropicConfig {
    fn default() -> Self {
        AnthropicConfig {
            base_url: DEFAULT_BASE_URL.into(),
            api_key: None,
            version: DEFAULT_VERSION.into(),
            headers: Vec::new(),
            timeout: Duration::from_secs(600),
            pool_size: 64,
            http2: false,
            max_response_bytes: http::DEFAULT_MAX_RESPONSE_BYTES,
            translation: RequestOptions::default(),
        }
    }
}

impl AnthropicConfig {
    /// The settings of `c` (the ones every client shares), translating as
    /// `translation` says.
    pub fn from_client(c: crate::openai::ClientConfig, translation: RequestOptions) -> Self {
        AnthropicConfig {
            base_url: c.base_url,
            api_key: c.api_key,
            headers: c.headers,
            timeout: c.timeout,
            pool_size: c.pool_size,
            http2: c.http2,
            max_response_bytes: c.max_response_bytes,
            translation,
            ..AnthropicConfig::default()
        }
    }
}

/// A pooled keep-alive client for Anthropic's Messages API.
#[derive(Debug, Clone)]
pub struct AnthropicClient {
    http: Http,
    base: String,
    translation: RequestOptions,
    /// Lenient mode's warnings on the lines answered so far.
    warnings: Arc<AtomicU64>,
}

impl AnthropicClient {
    /// Build the client. Fails on a bad base URL or header.
    pub fn new(config: AnthropicConfig) -> Result<Self, ProviderError> {
        let (base, _) = http::base_url(&config.base_url, DEFAULT_BASE_URL)?;
        let api = if base.ends_with("/v1") {
            base.clone()
        } else {
            format!("{base}/v1")
        };
        let (api, parsed) = http::base_url(&api, DEFAULT_BASE_URL)?;
        let mut headers = HeaderMap::new();
        if let Some(key) = &config.api_key {
            headers.insert(
                X_API_KEY.clone(),
                http::key_header(&X_API_KEY, key.expose())?,
            );
        }
        let version =
            HeaderValue::from_str(config.version.trim()).map_err(|e| ProviderError::BadHeader {
                name: ANTHROPIC_VERSION.to_string(),
                reason: e.to_string(),
            })?;
        headers.insert(ANTHROPIC_VERSION.clone(), version);
        http::add_user_headers(&mut headers, &config.headers)?;
        let settings = http::Settings {
            timeout: config.timeout,
            pool_size: config.pool_size,
            http2: config.http2,
            max_response_bytes: config.max_response_bytes,
        };
        let http = Http::new(&api, &parsed, headers, config.api_key, settings)?;
        Ok(AnthropicClient {
            http,
            base,
            translation: config.translation,
            warnings: Arc::default(),
        })
    }

    /// The base URL requests are sent under (as given, without a trailing
    /// slash).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// How many fields lenient mode dropped or clamped on the lines
    /// answered so far (a line's warnings count once, whatever its
    /// attempts).
    pub fn translation_warnings(&self) -> u64 {
        self.warnings.load(Relaxed)
    }

    /// An OpenAI chat line: translated there and back.
    async fn send_translated(&self, request: &Outgoing) -> Attempt {
        let translated = match request_to_messages(&request.body, &self.translation) {
            Ok(t) => t,
            // The error names the field and says why.
            Err(e) => return invalid(e.to_string()),
        };
        let Translated {
            body,
            warnings,
            more_warnings,
        } = translated;
        let attempt = self
            .http
            .send(
                self,
                Endpoint::Messages,
                &request.custom_id,
                Bytes::from(body),
            )
            .await;
        match attempt {
            Attempt::Answered(mut a) if (200..300).contains(&a.status) && a.body_is_json => {
                match message_to_chat_completion(&a.body, unix_now()) {
                    Ok(mut body) => {
                        if !warnings.is_empty() {
                            let n = warnings.len() + more_warnings;
                            self.warnings.fetch_add(n as u64, Relaxed);
                            add_warnings(&mut body, &warnings, more_warnings);
                        }
                        a.body = Bytes::from(body);
                        Attempt::Answered(a)
                    }
                    Err(e) => invalid(format!(
                        "Anthropic's answer{} cannot be translated to a chat.completion: {e}",
                        a.request_id
                            .as_deref()
                            .map(|id| format!(" (request id {id})"))
                            .unwrap_or_default()
                    )),
                }
            }
            other => other,
        }
    }
}

/// Lenient mode's warnings, in the answer they concern: a member
/// `x_batchling: {"warnings": [...], "more_warnings": N}` at the end of the
/// `chat.completion` object (beside `x_anthropic`), each text within
/// [`MAX_WARNING_BYTES`]. `submit` adds them to batch answers the same way.
/// Returns whether the body took them (it is a JSON object).
pub(crate) fn add_warnings(
    body: &mut Vec<u8>,
    warnings: &[super::translate::Warning],
    more: usize,
) -> bool {
    if body.last() != Some(&b'}') {
        return false;
    }
    let texts: Vec<String> = warnings.iter().map(warning_text).collect();
    let member = serde_json::json!({"warnings": texts, "more_warnings": more});
    body.pop();
    body.extend_from_slice(b",\"x_batchling\":");
    body.extend_from_slice(member.to_string().as_bytes());
    body.push(b'}');
    true
}

/// A warning's text, cut at [`MAX_WARNING_BYTES`] (on a character
/// boundary, marked `...`).
fn warning_text(w: &super::translate::Warning) -> String {
    let mut text = w.to_string();
    if text.len() > MAX_WARNING_BYTES {
        let mut end = MAX_WARNING_BYTES - 3;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

/// A line that fails without being sent (or whose answer cannot be used),
/// not retried.
fn invalid(message: String) -> Attempt {
    Attempt::Transport(TransportError {
        kind: TransportKind::Invalid,
        message,
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl ReadAnswer for AnthropicClient {
    fn answered<H: HeaderLookup>(&self, status: u16, h: &H, body: Bytes) -> Answer {
        let body = http::redact_error_body(self.http.key(), status, body);
        // Anthropic's usage shape (cache reads and writes beside
        // `input_tokens`) is read as such.
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
            request_id: headers::request_id(h),
            limits: headers::rate_limits(h),
            retry_after: headers::retry_after(h),
            should_retry: headers::should_retry(h),
            body_is_json,
            usage,
        }
    }
}

impl Provider for AnthropicClient {
    async fn send(&self, request: &Outgoing) -> Attempt {
        match request.endpoint {
            Endpoint::Messages => {
                self.http
                    .send(
                        self,
                        Endpoint::Messages,
                        &request.custom_id,
                        request.body.clone(),
                    )
                    .await
            }
            Endpoint::ChatCompletions => self.send_translated(request).await,
            other => invalid(format!(
                "{other} has no equivalent in Anthropic's API: only /v1/messages and /v1/chat/completions lines can be sent to Anthropic"
            )),
        }
    }

    fn classify(&self, attempt: &Attempt) -> Verdict {
        super::classify(attempt)
    }

    fn describe(&self, answer: &Answer) -> String {
        error_description(answer)
    }
}

/// Anthropic's error envelope in words: `type: message`
/// (`overloaded_error: Overloaded`), else what OpenAI's reading finds.
fn error_description(answer: &Answer) -> String {
    let message = crate::openai::classify::error_message(answer);
    let kind = crate::openai::classify::error_object(answer)
        .and_then(|e| e.get("type").and_then(|t| t.as_str().map(str::to_owned)));
    match kind {
        Some(kind) if !message.starts_with(&kind) => format!("{kind}: {message}"),
        _ => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use batchling_core::ratelimit::RateLimitSnapshot;

    fn answer(status: u16, body: &'static str) -> Answer {
        Answer {
            status,
            body: Bytes::from_static(body.as_bytes()),
            request_id: None,
            limits: RateLimitSnapshot::default(),
            retry_after: None,
            should_retry: None,
            body_is_json: true,
            usage: None,
        }
    }

    #[test]
    fn warnings_join_the_answer_as_a_member() {
        let mut body = br#"{"object":"chat.completion","x_anthropic":{}}"#.to_vec();
        let w = super::super::translate::Warning {
            field: "seed".into(),
            action: super::super::translate::Action::Dropped,
        };
        add_warnings(&mut body, &[w], 2);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["x_batchling"]["more_warnings"], 2);
        let said = v["x_batchling"]["warnings"][0].as_str().unwrap();
        assert!(said.contains("`seed`"), "{said}");
    }

    #[test]
    fn a_warning_about_a_huge_field_name_is_cut() {
        let mut body = br#"{"object":"chat.completion"}"#.to_vec();
        let w = super::super::translate::Warning {
            field: "\u{e9}".repeat(10_000),
            action: super::super::translate::Action::Dropped,
        };
        add_warnings(&mut body, &[w], 0);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let said = v["x_batchling"]["warnings"][0].as_str().unwrap();
        assert!(
            said.len() <= MAX_WARNING_BYTES && said.ends_with("..."),
            "{said}"
        );
        assert!(body.len() < 2 * MAX_WARNING_BYTES);
    }

    #[test]
    fn describes_the_error_envelope() {
        let a = answer(
            529,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}"#,
        );
        assert_eq!(error_description(&a), "overloaded_error: Overloaded");
        assert_eq!(
            error_description(&answer(502, "bad gateway")),
            "bad gateway"
        );
    }

    #[test]
    fn base_urls_with_or_without_v1_and_bad_headers() {
        let c = |url: &str| {
            AnthropicClient::new(AnthropicConfig {
                base_url: url.into(),
                ..AnthropicConfig::default()
            })
        };
        assert_eq!(
            c("http://127.0.0.1:9/").unwrap().base_url(),
            "http://127.0.0.1:9"
        );
        assert!(c("http://127.0.0.1:9/v1").is_ok());
        let bad = c("ftp://x").unwrap_err();
        assert!(matches!(bad, ProviderError::BadBaseUrl { .. }));
        // The example is Anthropic's, not OpenAI's.
        assert!(
            bad.to_string().contains("https://api.anthropic.com"),
            "{bad}"
        );
        assert!(!bad.to_string().contains("openai"), "{bad}");
        let err = AnthropicClient::new(AnthropicConfig {
            api_key: Some(ApiKey::new("sk-ant-secret\nx")),
            ..AnthropicConfig::default()
        })
        .unwrap_err()
        .to_string();
        assert!(!err.contains("sk-ant-secret"), "{err}");
    }

    #[tokio::test]
    async fn lines_without_an_anthropic_form_fail_unsent() {
        // Port 1: a call would be a connection error, not these.
        let c = AnthropicClient::new(AnthropicConfig {
            base_url: "http://127.0.0.1:1".into(),
            ..AnthropicConfig::default()
        })
        .unwrap();
        let send = |endpoint, body: &'static str| Outgoing {
            custom_id: "a".into(),
            endpoint,
            body: Bytes::from_static(body.as_bytes()),
        };
        let a = c
            .send(&send(Endpoint::Embeddings, r#"{"model":"m","input":"x"}"#))
            .await;
        assert!(
            matches!(&a, Attempt::Transport(t) if t.kind == TransportKind::Invalid && t.message.contains("/v1/embeddings")),
            "{a:?}"
        );
        let body =
            r#"{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"x"}],"n":2}"#;
        let a = c.send(&send(Endpoint::ChatCompletions, body)).await;
        match a {
            Attempt::Transport(t) => {
                assert_eq!(t.kind, TransportKind::Invalid);
                assert!(t.message.contains("`n`"), "{}", t.message);
            }
            other => panic!("expected an unsent failure, got {other:?}"),
        }
        assert_eq!(
            c.classify(&invalid("x".into())),
            Verdict::Fail(batchling_core::FailKind::Invalid)
        );
    }
}
