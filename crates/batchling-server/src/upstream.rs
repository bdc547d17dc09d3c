//! Upstreams: one HTTP client, one shared set of limits and one set of
//! counters per upstream server, whatever the number of batches using it;
//! or, with a routes config, one set of routes (a client per key), one set
//! of limits for its groups and one set of counters for the whole server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use batchling_core::Endpoint;
use batchling_core::routes::{ProviderConf, ProviderKind, RoutesConfig};
use batchling_engine::{PacerConfig, Routes, SharedLimits};
use batchling_providers::anthropic::translate::{Mode, RequestOptions};
use batchling_providers::anthropic::{AnthropicClient, AnthropicConfig};
use batchling_providers::openai::{ClientConfig, OpenAiClient};
use batchling_providers::{
    Answer, AnyClient, ApiKey, Attempt, KeyClient, Outgoing, Provider, ProviderError, Verdict,
};

use crate::ServeError;
use crate::config::{RoutesSetup, UpstreamConfig, UpstreamKind};

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

/// The client of one key of a routes config's provider.
fn provider_client(
    p: &ProviderConf,
    key: &ApiKey,
    setup: &RoutesSetup,
) -> Result<Client, ProviderError> {
    let shared = ClientConfig {
        timeout: setup.timeout,
        pool_size: setup.concurrency,
        max_response_bytes: setup.max_response_bytes,
        ..ClientConfig::default()
    };
    let mode = if setup.lenient {
        Mode::Lenient
    } else {
        Mode::Strict
    };
    let translation = RequestOptions {
        mode,
        ..RequestOptions::default()
    };
    KeyClient {
        provider: p,
        key,
        shared: &shared,
        translation,
    }
    .online()
}

/// Whether a provider of `kind` can answer lines for `endpoint`: as an
/// upstream of its API ([`UpstreamKind::speaks`]).
pub(crate) fn kind_speaks(kind: ProviderKind, endpoint: Endpoint) -> bool {
    let api = match kind {
        ProviderKind::Anthropic => UpstreamKind::Anthropic,
        ProviderKind::OpenAi | ProviderKind::OpenAiCompatible | ProviderKind::Azure => {
            UpstreamKind::OpenAi
        }
    };
    api.speaks(endpoint)
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

/// How `/metrics` and the batches' rows name the routes of a config.
pub(crate) const ROUTES_NAME: &str = "routes";

/// A routes config, ready to run batches: one set of routes (circuits,
/// dead keys, models gone are the server's) and one set of limits for its
/// groups, whatever the number of batches.
#[derive(Debug)]
pub(crate) struct Routed {
    pub(crate) config: Arc<RoutesConfig>,
    pub(crate) routes: Arc<Routes<Metered>>,
    pub(crate) limits: SharedLimits,
    pub(crate) concurrency: usize,
    pub(crate) metrics: Arc<UpstreamMetrics>,
}

impl Routed {
    pub(crate) fn new(setup: &RoutesSetup) -> Result<Self, ServeError> {
        let config = &setup.config;
        let metrics = Arc::new(UpstreamMetrics::default());
        let (routes, groups) = batchling_engine::route::from_config(config, |group, key| {
            let provider = &config.providers[&group.provider];
            let upstream_error = |source| ServeError::Upstream {
                name: provider.name.clone(),
                source,
            };
            let secret = (setup.keys.iter())
                .find(|(id, g, _)| *id == key.id && *g == group.name)
                .map(|(_, _, k)| k)
                .ok_or_else(|| ServeError::MissingKey {
                    id: key.id.clone(),
                    group: group.name.clone(),
                })?;
            let inner = provider_client(provider, secret, setup).map_err(upstream_error)?;
            Ok::<_, ServeError>(Arc::new(Metered {
                inner,
                metrics: metrics.clone(),
            }))
        })?;
        let pacing = PacerConfig {
            groups,
            ..PacerConfig::default()
        };
        Ok(Routed {
            config: Arc::new(setup.config.clone()),
            routes: Arc::new(routes),
            limits: SharedLimits::new(pacing, setup.concurrency),
            concurrency: setup.concurrency.max(1),
            metrics,
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
