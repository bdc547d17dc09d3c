//! A routes config (`--config`) made into the engine's routes
//! (`batchling_engine::route::from_config`), with a client per key of its
//! provider's kind; for `submit`, also a Batch API client per target
//! ([`batch_apis`]).

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use batchling_core::routes::ProviderConf;
use batchling_engine::submit::{Apis, BatchTarget};
use batchling_engine::{GroupLimits, Routes};
use batchling_providers::anthropic::translate::{DEFAULT_MAX_TOKENS, Mode, RequestOptions};
use batchling_providers::openai::ClientConfig;
use batchling_providers::{AnyBatchClient, AnyClient, ApiKey, KeyClient};

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
        let client = key_client(provider, secret, base, default_max_tokens, lenient).online();
        let client =
            client.with_context(|| format!("{}: the provider {}", config.path, provider.name))?;
        Ok(Arc::new(client))
    })
}

/// The Batch API of each target of `c` (`submit --config`), built with the
/// first key of its first limit group (a batch is one call, so one key per
/// target), and each route (and target named directly) sent to its chain's
/// first target.
pub(crate) fn batch_apis(
    c: &ConfigRoutes,
    base: &ClientConfig,
    lenient: bool,
) -> Result<Apis<AnyBatchClient>> {
    let config = &c.config;
    let mut apis = Apis::routed();
    for (name, model) in &config.models {
        let Some((group, key_id, key)) = model
            .groups
            .first()
            .and_then(|g| c.keys.iter().find(|(_, kg, _)| kg == g))
            .map(|(id, g, key)| (g, id, key))
        else {
            bail!(
                "{}: [models.{name}] has no key to send batches with (its first group holds none)",
                config.path
            );
        };
        let provider = &config.providers[&config.groups[group].provider];
        let api = key_client(provider, key, base, DEFAULT_MAX_TOKENS, lenient).batches();
        let api =
            api.with_context(|| format!("{}: the provider {}", config.path, provider.name))?;
        apis.target(
            name,
            BatchTarget {
                api,
                model: model.model.clone(),
                group: group.clone(),
                key_id: key_id.clone(),
                price: model.price.clone(),
            },
        );
    }
    for (name, route) in &config.routes {
        let primary = route.expanded.chain.first().map_or("", String::as_str);
        if !apis.route(name, primary) {
            bail!(
                "{}: [routes.{name}] starts with {primary:?}, which is no [models.*] table",
                config.path
            );
        }
    }
    for name in config.models.keys() {
        if !config.routes.contains_key(name) {
            apis.route(name, name);
        }
    }
    Ok(apis)
}

/// One key's clients, of its provider's kind (`providers::KeyClient`).
fn key_client<'a>(
    provider: &'a ProviderConf,
    key: &'a ApiKey,
    shared: &'a ClientConfig,
    default_max_tokens: u64,
    lenient: bool,
) -> KeyClient<'a> {
    KeyClient {
        provider,
        key,
        shared,
        translation: RequestOptions {
            default_max_tokens,
            mode: if lenient { Mode::Lenient } else { Mode::Strict },
        },
    }
}
