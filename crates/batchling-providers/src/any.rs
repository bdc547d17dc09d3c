//! One client of any provider kind, for callers that pick the kind at run
//! time (a routes config, a serve upstream): an enum, so the common path
//! costs one branch, not a virtual call.

use crate::anthropic::AnthropicClient;
use crate::azure::AzureClient;
use crate::openai::OpenAiClient;
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
