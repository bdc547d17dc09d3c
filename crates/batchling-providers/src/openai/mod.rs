//! OpenAI-compatible upstreams: OpenAI itself, Azure's v1 API, vLLM,
//! llama.cpp's server and the built-in mock; [`batches`] is the client of
//! the Files + Batches API behind `batchling submit`.

pub mod batches;
pub mod classify;
pub mod client;
pub mod headers;

pub use batches::{BatchApiError, BatchClient, BatchStatus};
pub use classify::classify;
pub use client::{AuthStyle, ClientConfig, DEFAULT_MAX_RESPONSE_BYTES, LINE_ROOM, OpenAiClient};

pub(crate) use crate::http::error_chain;
