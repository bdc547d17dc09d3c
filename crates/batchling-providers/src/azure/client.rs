//! The online client of Azure OpenAI, and its Files + Batches client.

use bytes::Bytes;

use batchling_core::Endpoint;
use batchling_core::json::{scan_object, string_value};

use super::headers;
use crate::attempt::{Answer, Attempt, Outgoing, TransportError, TransportKind};
use crate::http::{self, HeaderLookup, Http, ReadAnswer};
use crate::openai::batches::BatchClient;
use crate::openai::client::{ClientConfig, prepare, read_answer};
use crate::openai::{AuthStyle, classify::error_message};
use crate::{Provider, ProviderError, Verdict};

/// A good endpoint, for errors.
const EXAMPLE: &str = "https://NAME.openai.azure.com";

/// Everything needed to talk to one Azure OpenAI resource.
#[derive(Debug, Clone)]
pub struct AzureConfig {
    /// The key, extra headers, timeout, pool and caps, as for OpenAI;
    /// `base_url` is the resource's endpoint (`https://NAME.openai.azure.com`;
    /// a trailing `/openai` or `/openai/v1` is taken off). The key goes in
    /// `api-key` whatever `auth` says.
    pub client: ClientConfig,
    /// `api-version` (`2024-10-21`): the dated URLs, a deployment per
    /// request's `model`; `None`: the v1 URLs.
    pub api_version: Option<String>,
}

impl AzureConfig {
    /// The base URL requests go under (`{endpoint}/openai/v1`, or
    /// `{endpoint}/openai` for the dated URLs), the settings to build a
    /// client from, and the api-version checked.
    fn resolve(&self) -> Result<ClientConfig, ProviderError> {
        let (endpoint, _) = http::base_url(&self.client.base_url, EXAMPLE)?;
        let endpoint = endpoint
            .strip_suffix("/openai/v1")
            .or_else(|| endpoint.strip_suffix("/openai"))
            .unwrap_or(&endpoint);
        if let Some(v) = &self.api_version
            && (v.is_empty()
                || !v
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'))
        {
            return Err(ProviderError::BadBaseUrl {
                url: self.client.base_url.clone(),
                reason: format!("the api-version {v:?} is not a version (2024-10-21)"),
                example: EXAMPLE,
            });
        }
        let base = match self.api_version {
            None => format!("{endpoint}/openai/v1"),
            Some(_) => format!("{endpoint}/openai"),
        };
        Ok(ClientConfig {
            base_url: base,
            auth: AuthStyle::ApiKeyHeader,
            ..self.client.clone()
        })
    }

    /// `api-version=V`, for the query of every dated URL.
    fn query(&self) -> Option<String> {
        self.api_version
            .as_ref()
            .map(|v| format!("api-version={v}"))
    }
}

/// A pooled keep-alive client for one Azure OpenAI resource.
#[derive(Debug, Clone)]
pub struct AzureClient {
    http: Http,
    /// `api-version=V` for the dated URLs; `None` for v1.
    query: Option<String>,
}

impl AzureClient {
    /// Build the client. Fails on a bad endpoint, api-version or header.
    pub fn new(config: AzureConfig) -> Result<Self, ProviderError> {
        let resolved = config.resolve()?;
        let (base, parsed, headers) = prepare(&resolved)?;
        let settings = http::Settings {
            timeout: resolved.timeout,
            pool_size: resolved.pool_size,
            http2: resolved.http2,
            max_response_bytes: resolved.max_response_bytes,
        };
        let http = Http::new(&base, &parsed, headers, resolved.api_key, settings)?;
        Ok(AzureClient {
            http,
            query: config.query(),
        })
    }

    /// The dated URL's target of a request (under `{endpoint}/openai`).
    fn dated_target(&self, query: &str, request: &Outgoing) -> Result<String, String> {
        let path = match request.endpoint {
            Endpoint::Responses => return Ok(format!("/responses?{query}")),
            e => e.relative_path(),
        };
        let deployment = deployment_of(&request.body).ok_or_else(|| {
            format!(
                "the body has no \"model\": with an api-version, Azure's URL names the deployment, which batchling takes from it ({} needs one)",
                request.endpoint
            )
        })?;
        Ok(format!("/deployments/{deployment}{path}?{query}"))
    }
}

/// The body's `model`, percent-encoded for a path segment.
fn deployment_of(body: &Bytes) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let [Some(range)] = scan_object(text, ["model"]).ok()? else {
        return None;
    };
    let model = string_value(&text[range])?;
    if model.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(model.len());
    for b in model.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Some(out)
}

impl ReadAnswer for AzureClient {
    fn answered<H: HeaderLookup>(&self, status: u16, h: &H, body: Bytes) -> Answer {
        read_answer(self.http.key(), status, h, body, headers::rate_limits(h))
    }
}

impl Provider for AzureClient {
    async fn send(&self, request: &Outgoing) -> Attempt {
        let invalid = |message: String| {
            Attempt::Transport(TransportError {
                kind: TransportKind::Invalid,
                message,
            })
        };
        if matches!(request.endpoint, Endpoint::Moderations | Endpoint::Messages) {
            return invalid(format!("Azure OpenAI has no {} endpoint", request.endpoint));
        }
        let body = request.body.clone();
        match &self.query {
            None => {
                self.http
                    .send(self, request.endpoint, &request.custom_id, body)
                    .await
            }
            Some(query) => match self.dated_target(query, request) {
                Ok(target) => {
                    self.http
                        .send_to(self, &target, &request.custom_id, body)
                        .await
                }
                Err(message) => invalid(message),
            },
        }
    }

    fn classify(&self, attempt: &Attempt) -> Verdict {
        super::classify(attempt)
    }

    fn describe(&self, answer: &Answer) -> String {
        error_message(answer)
    }
}

/// OpenAI's Files + Batches client on the resource's URLs
/// (`{endpoint}/openai/v1/files`, or `{endpoint}/openai/files?api-version=V`),
/// the key in `api-key`. Batch lines keep their `model`, the deployment.
pub fn batch_client(config: &AzureConfig) -> Result<BatchClient, ProviderError> {
    BatchClient::with_query(&config.resolve()?, config.query())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ApiKey;

    fn config(endpoint: &str, version: Option<&str>) -> AzureConfig {
        AzureConfig {
            client: ClientConfig {
                base_url: endpoint.into(),
                api_key: Some(ApiKey::new("azure-secret-key")),
                ..ClientConfig::default()
            },
            api_version: version.map(str::to_owned),
        }
    }

    #[test]
    fn endpoints_take_either_url_form_and_lose_their_openai_suffix() {
        for e in [
            "https://res.openai.azure.com",
            "https://res.openai.azure.com/",
            "https://res.openai.azure.com/openai",
            "https://res.openai.azure.com/openai/v1/",
        ] {
            let v1 = config(e, None).resolve().unwrap();
            assert_eq!(v1.base_url, "https://res.openai.azure.com/openai/v1", "{e}");
            let dated = config(e, Some("2024-10-21")).resolve().unwrap();
            assert_eq!(dated.base_url, "https://res.openai.azure.com/openai", "{e}");
            assert_eq!(dated.auth, AuthStyle::ApiKeyHeader);
        }
        let bad = config("https://res.openai.azure.com", Some("2024 10&x=1")).resolve();
        assert!(matches!(bad, Err(ProviderError::BadBaseUrl { .. })));
        assert!(config("ftp://res", None).resolve().is_err());
    }

    #[test]
    fn the_deployment_is_the_body_model_encoded() {
        let d = |b: &str| deployment_of(&Bytes::from(b.to_owned()));
        assert_eq!(
            d(r#"{"model":"gpt-4o-mini","messages":[]}"#).as_deref(),
            Some("gpt-4o-mini")
        );
        assert_eq!(d(r#"{"model":"a b/c"}"#).as_deref(), Some("a%20b%2Fc"));
        assert_eq!(d(r#"{"model":""}"#), None);
        assert_eq!(d(r#"{"model":3}"#), None);
        assert_eq!(d(r#"{"messages":[]}"#), None);
        assert_eq!(d("not json"), None);
    }

    #[test]
    fn dated_targets_per_endpoint() {
        let c = AzureClient::new(config("http://127.0.0.1:1", Some("2024-10-21"))).unwrap();
        let q = c.query.clone().unwrap();
        let target = |endpoint, body: &'static str| {
            c.dated_target(
                &q,
                &Outgoing {
                    custom_id: "a".into(),
                    endpoint,
                    body: Bytes::from_static(body.as_bytes()),
                },
            )
        };
        let m = r#"{"model":"dep1"}"#;
        assert_eq!(
            target(Endpoint::ChatCompletions, m).unwrap(),
            "/deployments/dep1/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(
            target(Endpoint::Completions, m).unwrap(),
            "/deployments/dep1/completions?api-version=2024-10-21"
        );
        assert_eq!(
            target(Endpoint::Embeddings, m).unwrap(),
            "/deployments/dep1/embeddings?api-version=2024-10-21"
        );
        assert_eq!(
            target(Endpoint::Responses, m).unwrap(),
            "/responses?api-version=2024-10-21"
        );
        assert!(
            target(Endpoint::ChatCompletions, "{}")
                .unwrap_err()
                .contains("\"model\"")
        );
    }

    #[tokio::test]
    async fn endpoints_azure_lacks_fail_without_a_call() {
        let c = AzureClient::new(config("http://127.0.0.1:1", None)).unwrap();
        let a = c
            .send(&Outgoing {
                custom_id: "a".into(),
                endpoint: Endpoint::Moderations,
                body: Bytes::from_static(b"{}"),
            })
            .await;
        assert_eq!(
            c.classify(&a),
            Verdict::Fail(batchling_core::FailKind::Invalid)
        );
    }
}
