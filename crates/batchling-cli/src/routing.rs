//! A routes config (`--config`) made into the engine's routes
//! (`batchling_engine::route::from_config`), with a client per key of its
//! provider's kind.

use std::sync::Arc;

use anyhow::{Context, Result};
use batchling_core::routes::{ProviderConf, ProviderKind};
use batchling_engine::{GroupLimits, Routes};
use batchling_providers::anthropic::AnthropicClient;
use batchling_providers::azure::{AzureClient, AzureConfig};
use batchling_providers::openai::{ClientConfig, OpenAiClient};
use batchling_providers::{AnyClient, ApiKey};

use crate::commands::run::anthropic_config;
use crate::settings::ConfigRoutes;

/// The engine's routes for `c`, and the pacer's settings of its limit
/// groups (by group id, as the routes number them). `base` carries what
/// every client shares (timeout, pool size, caps); `default_max_tokens`
/// and `lenient` are Anthropic's translation settings.
pub(crate) fn build(
    c: &ConfigRoutes,
    base: &ClientConfig,
    default_max_tokens: u64,
    lenient: bool,
) -> Result<(Routes<AnyClient>, Vec<GroupLimits>)> {
    let config = &c.config;
    batchling_engine::route::from_config(config, |group, key| {
        let provider = &config.providers[&group.provider];
        let secret = (c.keys.iter())
            .find(|(id, g, _)| *id == key.id && *g == group.name)
            .map(|(_, _, secret)| secret)
            .with_context(|| format!("{}: key {} was not read", config.path, key.id))?;
        let client = client(provider, secret, base, default_max_tokens, lenient)
            .with_context(|| format!("{}: the provider {}", config.path, provider.name))?;
        Ok(Arc::new(client))
    })
}

/// One key's client, of its provider's kind.
fn client(
    provider: &ProviderConf,
    key: &ApiKey,
    base: &ClientConfig,
    default_max_tokens: u64,
    lenient: bool,
) -> Result<AnyClient> {
    let config = ClientConfig {
        base_url: provider.base_url.clone(),
        api_key: Some(key.clone()),
        ..base.clone()
    };
    Ok(match provider.kind {
        ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => {
            AnyClient::OpenAi(OpenAiClient::new(config)?)
        }
        ProviderKind::Azure => AnyClient::Azure(AzureClient::new(AzureConfig {
            client: config,
            api_version: provider.api_version.clone(),
        })?),
        ProviderKind::Anthropic => {
            let mut a = anthropic_config(config, default_max_tokens, lenient);
            if let Some(v) = &provider.version {
                a.version = v.clone();
            }
            if !provider.beta.is_empty() {
                a.headers
                    .push(("anthropic-beta".into(), provider.beta.join(",")));
            }
            AnyClient::Anthropic(AnthropicClient::new(a)?)
        }
    })
}
