//! A routes config (`--config`) made into the engine's routes: a client
//! per key, of its provider's kind; a limit group per `[groups.*]`; a
//! target per `[models.*]`; a route per `[routes.*]`, and one for each
//! target a line may name directly.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use batchling_core::routes::{ProviderConf, ProviderKind, RouteConf};
use batchling_engine::route::{GroupId, TargetId};
use batchling_engine::{GroupLimits, PacerConfig, RouteSpec, Routes};
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
    let mut b = Routes::builder();
    let mut groups: HashMap<&str, GroupId> = HashMap::new();
    let mut limits = Vec::new();
    for (name, group) in &config.groups {
        let given = PacerConfig::from_limits_file(&group.limits);
        limits.push(GroupLimits {
            name: name.clone(),
            defaults: given.defaults(),
            models: given.models,
        });
        let provider = &config.providers[&group.provider];
        let mut keys = Vec::new();
        for (id, _, key) in c.keys.iter().filter(|(_, g, _)| g == name) {
            let client = client(provider, key, base, default_max_tokens, lenient)
                .with_context(|| format!("{}: the provider {}", config.path, provider.name))?;
            keys.push((id.clone(), Arc::new(client)));
        }
        groups.insert(name, b.group(name, keys));
    }
    let mut targets: HashMap<&str, TargetId> = HashMap::new();
    for (name, model) in &config.models {
        let of: Vec<GroupId> = model.groups.iter().map(|g| groups[g.as_str()]).collect();
        let t = b.target(name, Some(&model.model), &of, model.price.clone());
        targets.insert(name, t);
    }
    let ids = |names: &[String]| names.iter().map(|n| targets[n.as_str()]).collect();
    for (name, route) in &config.routes {
        b.route(name, spec(route, &ids));
    }
    // A line may name a target itself: that target alone.
    for (name, t) in &targets {
        if !config.routes.contains_key(*name) {
            b.route(
                name,
                RouteSpec {
                    chain: vec![*t],
                    ..RouteSpec::default()
                },
            );
        }
    }
    Ok((b.build()?, limits))
}

/// A route's chains as target ids, and its caps.
fn spec(route: &RouteConf, ids: &impl Fn(&[String]) -> Vec<TargetId>) -> RouteSpec {
    RouteSpec {
        chain: ids(&route.expanded.chain),
        context_window_chain: ids(&route.expanded.context_window),
        content_policy_chain: ids(&route.expanded.content_policy),
        max_attempts: Some(route.attempts()),
        max_attempts_per_target: Some(route.attempts_per_target()),
        max_price_ratio: route.max_price_ratio,
        spill: route.spill,
    }
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
