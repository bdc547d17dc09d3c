//! The API endpoints a request line may target.

use std::fmt;
use std::str::FromStr;

/// One of the endpoints batchling can send request lines to: OpenAI's, and
/// Anthropic's Messages API.
///
/// The wire form is the path with its `/v1` prefix, exactly as it appears in a
/// batch input line's `url` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `/v1/chat/completions`
    ChatCompletions,
    /// `/v1/completions`
    Completions,
    /// `/v1/embeddings`
    Embeddings,
    /// `/v1/responses`
    Responses,
    /// `/v1/moderations`
    Moderations,
    /// `/v1/messages`: Anthropic's Messages API (the body is a Messages
    /// body). Not an OpenAI endpoint, so not in [`Endpoint::ALL`].
    Messages,
}

impl Endpoint {
    /// Every OpenAI endpoint, in documentation order: what an OpenAI
    /// Batch API (or `batchling serve`) runs batches for.
    pub const ALL: [Endpoint; 5] = [
        Endpoint::ChatCompletions,
        Endpoint::Completions,
        Endpoint::Embeddings,
        Endpoint::Responses,
        Endpoint::Moderations,
    ];

    /// Every endpoint a request line may name: [`Endpoint::ALL`] and
    /// [`Endpoint::Messages`].
    pub const EVERY: [Endpoint; 6] = [
        Endpoint::ChatCompletions,
        Endpoint::Completions,
        Endpoint::Embeddings,
        Endpoint::Responses,
        Endpoint::Moderations,
        Endpoint::Messages,
    ];

    /// The path as written in batch files, with the `/v1` prefix.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/v1/chat/completions",
            Endpoint::Completions => "/v1/completions",
            Endpoint::Embeddings => "/v1/embeddings",
            Endpoint::Responses => "/v1/responses",
            Endpoint::Moderations => "/v1/moderations",
            Endpoint::Messages => "/v1/messages",
        }
    }

    /// The path relative to a base URL that already ends in `/v1`, as the
    /// official SDKs join them.
    pub fn relative_path(self) -> &'static str {
        &self.path()[3..]
    }

    /// Whether the endpoint generates output tokens (and so needs an output
    /// reservation in the token budget).
    pub fn generates_output(self) -> bool {
        matches!(
            self,
            Endpoint::ChatCompletions
                | Endpoint::Completions
                | Endpoint::Responses
                | Endpoint::Messages
        )
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.path())
    }
}

/// The `url` of a request line named no supported endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unsupported url {0:?}: expected one of /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/responses, /v1/moderations, /v1/messages"
)]
pub struct UnknownEndpoint(pub String);

impl FromStr for Endpoint {
    type Err = UnknownEndpoint;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Accept the path without its /v1 prefix too: some tools write it that way.
        let norm = s.strip_prefix("/v1").unwrap_or(s);
        Endpoint::EVERY
            .into_iter()
            .find(|e| e.relative_path() == norm)
            .ok_or_else(|| UnknownEndpoint(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_and_without_prefix() {
        assert_eq!("/v1/embeddings".parse(), Ok(Endpoint::Embeddings));
        assert_eq!("/chat/completions".parse(), Ok(Endpoint::ChatCompletions));
        assert!("/v1/images/generations".parse::<Endpoint>().is_err());
        assert!("".parse::<Endpoint>().is_err());
        assert_eq!("/v1/messages".parse(), Ok(Endpoint::Messages));
        assert!(!Endpoint::ALL.contains(&Endpoint::Messages));
    }

    #[test]
    fn relative_path_drops_v1() {
        assert_eq!(Endpoint::Responses.relative_path(), "/responses");
    }
}
