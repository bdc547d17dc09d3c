//! One client of any provider kind, for callers that pick the kind at run
//! time (a routes config, a serve upstream): an enum, so the common path
//! costs one branch, not a virtual call.

use batchling_core::routes::{ProviderConf, ProviderKind};
use bytes::Bytes;

use crate::anthropic::translate::RequestOptions;
use crate::anthropic::{AnthropicClient, AnthropicConfig, MessageBatchClient};
use crate::azure::{AzureClient, AzureConfig};
use crate::openai::{BatchClient, ClientConfig, OpenAiClient};
use crate::{ApiKey, ProviderError};

use crate::batch::{
    BatchApi, BatchApiError, BatchInfo, BatchLimits, BatchResults, Lookup, NewBatch, Refusal,
};
use crate::{Answer, Attempt, Outgoing, Provider, Verdict};

/// A client of one of the providers batchling speaks.
#[derive(Debug)]
pub enum AnyClient {
    /// OpenAI's API, or a server speaking it.
    OpenAi(OpenAiClient),
    /// Anthropic's Messages API.
    Anthropic(AnthropicClient),
    /// Azure OpenAI.
    Azure(AzureClient),
}

/// What one key of a routes config's provider talks through: the
/// provider's base URL, the key, and `shared`'s other settings (timeout,
/// pool, caps); Azure's `api_version`, Anthropic's `version` and `beta`
/// headers from the provider. The one place a config's kind picks a client.
#[derive(Debug, Clone, Copy)]
pub struct KeyClient<'a> {
    /// The provider, as the config has it.
    pub provider: &'a ProviderConf,
    /// The key.
    pub key: &'a ApiKey,
    /// What every client shares.
    pub shared: &'a ClientConfig,
    /// How Anthropic's clients translate OpenAI lines.
    pub translation: RequestOptions,
}

impl KeyClient<'_> {
    fn config(&self) -> ClientConfig {
        ClientConfig {
            base_url: self.provider.base_url.clone(),
            api_key: Some(self.key.clone()),
            ..self.shared.clone()
        }
    }

    fn azure(&self) -> AzureConfig {
        AzureConfig {
            client: self.config(),
            api_version: self.provider.api_version.clone(),
        }
    }

    fn anthropic(&self) -> AnthropicConfig {
        let mut a = AnthropicConfig::from_client(self.config(), self.translation);
        if let Some(v) = &self.provider.version {
            a.version = v.clone();
        }
        if !self.provider.beta.is_empty() {
            a.headers
                .push(("anthropic-beta".into(), self.provider.beta.join(",")));
        }
        a
    }

    /// The online client.
    pub fn online(&self) -> Result<AnyClient, ProviderError> {
        Ok(match self.provider.kind {
            ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => {
                AnyClient::OpenAi(OpenAiClient::new(self.config())?)
            }
            ProviderKind::Azure => AnyClient::Azure(AzureClient::new(self.azure())?),
            ProviderKind::Anthropic => {
                AnyClient::Anthropic(AnthropicClient::new(self.anthropic())?)
            }
        })
    }

    /// The Batch API client (Azure's is OpenAI's on Azure's URLs).
    pub fn batches(&self) -> Result<AnyBatchClient, ProviderError> {
        Ok(match self.provider.kind {
            ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => {
                AnyBatchClient::OpenAi(BatchClient::new(&self.config())?)
            }
            ProviderKind::Azure => {
                AnyBatchClient::OpenAi(crate::azure::batch_client(&self.azure())?)
            }
            ProviderKind::Anthropic => {
                AnyBatchClient::Anthropic(MessageBatchClient::new(&self.anthropic())?)
            }
        })
    }
}

impl AnyClient {
    /// Anthropic's count of fields dropped in lenient translation (0 for
    /// the others).
    pub fn translation_warnings(&self) -> u64 {
        match self {
            AnyClient::Anthropic(c) => c.translation_warnings(),
            AnyClient::OpenAi(_) | AnyClient::Azure(_) => 0,
        }
    }
}

impl Provider for AnyClient {
    async fn send(&self, request: &Outgoing) -> Attempt {
        match self {
            AnyClient::OpenAi(c) => c.send(request).await,
            AnyClient::Anthropic(c) => c.send(request).await,
            AnyClient::Azure(c) => c.send(request).await,
        }
    }

    fn classify(&self, attempt: &Attempt) -> Verdict {
        match self {
            AnyClient::OpenAi(c) => c.classify(attempt),
            AnyClient::Anthropic(c) => c.classify(attempt),
            AnyClient::Azure(c) => c.classify(attempt),
        }
    }

    fn describe(&self, answer: &Answer) -> String {
        match self {
            AnyClient::OpenAi(c) => c.describe(answer),
            AnyClient::Anthropic(c) => c.describe(answer),
            AnyClient::Azure(c) => c.describe(answer),
        }
    }
}

/// A Batch API client of any provider kind (`submit --config`: one per
/// target). Azure's Batch API is OpenAI's on Azure's URLs, so it is the
/// OpenAI variant.
#[derive(Debug)]
pub enum AnyBatchClient {
    /// OpenAI's Files + Batches API (or Azure's, or a server speaking it).
    OpenAi(BatchClient),
    /// Anthropic's Message Batches API.
    Anthropic(MessageBatchClient),
}

/// `$call` on whichever client `$self` holds.
macro_rules! each_batch_client {
    ($self:ident, $c:ident => $call:expr) => {
        match $self {
            AnyBatchClient::OpenAi($c) => $call,
            AnyBatchClient::Anthropic($c) => $call,
        }
    };
}

impl BatchApi for AnyBatchClient {
    async fn upload(&self, name: &str, requests: Bytes) -> Result<Option<String>, BatchApiError> {
        each_batch_client!(self, c => c.upload(name, requests).await)
    }

    async fn create(&self, batch: &NewBatch) -> Result<BatchInfo, BatchApiError> {
        each_batch_client!(self, c => c.create(batch).await)
    }

    async fn find(&self, lookup: &Lookup<'_>) -> Result<Option<BatchInfo>, BatchApiError> {
        each_batch_client!(self, c => c.find(lookup).await)
    }

    async fn retrieve(&self, id: &str) -> Result<BatchInfo, BatchApiError> {
        each_batch_client!(self, c => c.retrieve(id).await)
    }

    async fn cancel(&self, id: &str) -> Result<Option<BatchInfo>, BatchApiError> {
        each_batch_client!(self, c => c.cancel(id).await)
    }

    async fn results(
        &self,
        batch: &BatchInfo,
        endpoint: &str,
    ) -> Result<BatchResults, BatchApiError> {
        each_batch_client!(self, c => c.results(batch, endpoint).await)
    }

    fn is_transient(&self, error: &BatchApiError) -> bool {
        each_batch_client!(self, c => c.is_transient(error))
    }

    fn limits(&self) -> BatchLimits {
        each_batch_client!(self, c => c.limits())
    }

    fn refuse(&self, line: &batchling_core::RequestLine) -> Option<Refusal> {
        each_batch_client!(self, c => c.refuse(line))
    }

    fn settings(&self) -> Option<String> {
        each_batch_client!(self, c => c.settings())
    }

    fn warns_on(&self, endpoint: &str) -> bool {
        each_batch_client!(self, c => c.warns_on(endpoint))
    }

    fn add_warnings(&self, requests: &[u8], results: &mut BatchResults) -> u64 {
        each_batch_client!(self, c => c.add_warnings(requests, results))
    }
}
