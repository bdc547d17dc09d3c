//! OpenAI-compatible upstreams: OpenAI itself, Azure's v1 API, vLLM,
//! llama.cpp's server and the built-in mock.

pub mod classify;
pub mod client;
pub mod headers;
mod plain;

pub use classify::classify;
pub use client::{AuthStyle, ClientConfig, OpenAiClient};
