//! Azure OpenAI (docs/providers.md, "Azure OpenAI"): OpenAI's bodies, with
//! the key in `api-key`, the resource's own URLs, Azure's rate-limit
//! headers and its 429 and content-filter errors.
//!
//! Two URL forms, chosen by whether an `api-version` is given:
//! - v1 (none given): `{endpoint}/openai/v1/chat/completions`, the model
//!   (the deployment's name) in the body, as OpenAI's;
//! - dated: `{endpoint}/openai/deployments/{body.model}/chat/completions?api-version=V`
//!   (completions and embeddings alike; the Responses API is
//!   `{endpoint}/openai/responses?api-version=V`, its model in the body).
//!
//! [`AzureClient`] is the online client ([`classify`](mod@classify) its rules, OpenAI's
//! plus Azure's own, [`headers`] its reading of the limits);
//! [`batch_client`] is OpenAI's Files + Batches client on the same URLs.

pub mod classify;
pub mod client;
pub mod headers;

pub use classify::classify;
pub use client::{AzureClient, AzureConfig, batch_client};
