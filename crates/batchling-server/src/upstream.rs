//! Upstreams: one HTTP client, one shared set of limits and one set of
//! counters per upstream server, whatever the number of batches using it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use batchling_engine::{PacerConfig, SharedLimits};
use batchling_providers::anthropic::translate::{Mode, RequestOptions};
use batchling_providers::anthropic::{AnthropicClient, AnthropicConfig};
use batchling_providers::openai::{ClientConfig, OpenAiClient};
use batchling_providers::{Answer, AnyClient, Attempt, Outgoing, Provider, ProviderError, Verdict};

use crate::config::{UpstreamConfig, UpstreamKind};

/// Counters for `/metrics`, since the server started.
#[derive(Debug, Default)]
pub(crate) struct UpstreamMetrics {
    /// HTTP attempts sent.
    pub(crate) requests: AtomicU64,
    /// 429 answers.
    pub(crate) rate_limited: AtomicU64,
    /// Other error answers (4xx, 5xx) and transport failures.
    pub(crate) errors: AtomicU64,
    /// Tokens from `usage` of answers.
    pub(crate) input_tokens: AtomicU64,
    pub(crate) output_tokens: AtomicU64,
    /// Cost of finished requests, in micro-USD.
    pub(crate) cost_micro_usd: AtomicU64,
}

/// The client of an upstream's kind (the providers' own enum).
pub(crate) type Client = AnyClient;

/// The client an upstream's config asks for: the one place serve names a
/// provider.
fn client(config: &UpstreamConfig) -> Result<Client, ProviderError> {
    Ok(match config.kind {
        UpstreamKind::OpenAi => AnyClient::OpenAi(OpenAiClient::new(ClientConfig {
            base_url: config.base_url.clone(),
            api_key: config.api_key.clone(),
            headers: config.headers.clone(),
            timeout: config.timeout,
            pool_size: config.concurrency,
            max_response_bytes: config.max_response_bytes,
            ..ClientConfig::default()
        })?),
        UpstreamKind::Anthropic => {
            let defaults = AnthropicConfig::default();
            AnyClient::Anthropic(AnthropicClient::new(AnthropicConfig {
                base_url: config.base_url.clone(),
                api_key: config.api_key.clone(),
                version: (config.anthropic_version.clone()).unwrap_or(defaults.version),
                headers: config.headers.clone(),
                timeout: config.timeout,
                pool_size: config.concurrency,
                max_response_bytes: config.max_response_bytes,
                translation: RequestOptions {
                    mode: if config.lenient {
                        Mode::Lenient
                    } else {
                        Mode::Strict
                    },
                    ..defaults.translation
                },
                http2: defaults.http2,
            })?)
        }
    })
}

/// A provider that counts what passes through it.
#[derive(Debug)]
pub(crate) struct Metered {
    inner: Client,
    metrics: Arc<UpstreamMetrics>,
}

impl Provider for Metered {
    async fn send(&self, request: &Outgoing) -> Attempt {
        let attempt = self.inner.send(request).await;
        let m = &self.metrics;
        m.requests.fetch_add(1, Relaxed);
        match &attempt {
            Attempt::Answered(a) if a.status == 429 => {
                m.rate_limited.fetch_add(1, Relaxed);
            }
            Attempt::Answered(a) if (200..300).contains(&a.status) => {
                if let Some(u) = a.usage {
                    m.input_tokens.fetch_add(u.input, Relaxed);
                    m.output_tokens.fetch_add(u.output, Relaxed);
                }
            }
            _ => {
                m.errors.fetch_add(1, Relaxed);
            }
        }
        attempt
    }

    fn classify(&self, attempt: &Attempt) -> Verdict {
        self.inner.classify(attempt)
    }

    fn describe(&self, answer: &Answer) -> String {
        self.inner.describe(answer)
    }
}

/// One upstream, ready to run batches.
#[derive(Debug)]
pub(crate) struct UpstreamClient {
    pub(crate) config: UpstreamConfig,
    pub(crate) provider: Arc<Metered>,
    pub(crate) limits: SharedLimits,
    pub(crate) metrics: Arc<UpstreamMetrics>,
}

impl UpstreamClient {
    pub(crate) fn new(config: UpstreamConfig) -> Result<Self, ProviderError> {
        let client = client(&config)?;
        let metrics = Arc::new(UpstreamMetrics::default());
        let mut pacing = (config.limits_file.as_ref())
            .map_or_else(PacerConfig::default, PacerConfig::from_limits_file);
        pacing.rpm = config.rpm.or(pacing.rpm);
        pacing.tpm = config.tpm.or(pacing.tpm);
        let limits = SharedLimits::new(pacing, config.concurrency);
        Ok(UpstreamClient {
            provider: Arc::new(Metered {
                inner: client,
                metrics: metrics.clone(),
            }),
            limits,
            metrics,
            config,
        })
    }
}

/// The upstream for a model: the first that serves it.
pub(crate) fn route<'a>(
    upstreams: &'a [UpstreamClient],
    model: Option<&str>,
) -> Option<&'a UpstreamClient> {
    upstreams.iter().find(|u| u.config.serves(model))
}
