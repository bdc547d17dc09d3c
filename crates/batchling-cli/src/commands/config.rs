//! `batchling config check FILE`: load a routes config, read its keys from
//! the environment, and show what it defines, the chains expanded and the
//! warnings. Key values are never printed: only variables and whether
//! they are set.

use std::process::ExitCode;

use anyhow::Result;
use batchling_core::limits::{LimitsFile, ModelLimit};
use batchling_core::pricing::Catalog;
use batchling_core::routes::{
    GroupConf, ModelConf, PriceFrom, ProviderConf, RouteConf, RoutesConfig, ServeConf,
};

use super::exit;
use super::prices::usd;
use crate::args::{ConfigArgs, ConfigCheckArgs, ConfigCommand};
use crate::settings::catalog;

pub(crate) fn config(a: ConfigArgs, getenv: impl Fn(&str) -> Option<String>) -> Result<ExitCode> {
    match a.command {
        ConfigCommand::Check(a) => check(&a, getenv),
    }
}

/// The report on stdout; exit 2 (through the error) when the file is
/// invalid, 2 when a key's variable is missing, else 0.
fn check(a: &ConfigCheckArgs, getenv: impl Fn(&str) -> Option<String>) -> Result<ExitCode> {
    let config = RoutesConfig::load(&a.file)?;
    let catalog = catalog(a.prices.as_deref())?;
    let set = |env: &str| getenv(env).is_some_and(|v| !v.is_empty());
    out!("providers:")?;
    for p in config.providers.values() {
        out!("  {}", provider(p))?;
    }
    out!("groups:")?;
    for g in config.groups.values() {
        out!("  {}", group(g, &set))?;
    }
    out!("models:")?;
    for m in config.models.values() {
        out!("  {}", model(&config, m, &catalog))?;
    }
    out!("routes:")?;
    for r in config.routes.values() {
        out!("  {}", route(r))?;
    }
    if let Some(s) = &config.serve {
        out!("serve:\n  {}", serve(s, &set))?;
    }
    let mut warnings = config.warnings.clone();
    warnings.extend(config.price_warnings(&catalog));
    if !warnings.is_empty() {
        out!("warnings:")?;
        for w in &warnings {
            out!("  {w}")?;
        }
    }
    match config.resolve_keys(&getenv) {
        Ok(keys) => {
            out!(
                "{}: valid; {} keys, every variable set",
                config.path,
                keys.len()
            )?;
            Ok(ExitCode::from(exit::OK))
        }
        Err(missing) => {
            out!("missing keys:")?;
            for m in &missing.0 {
                out!("  {m}")?;
            }
            eprintln!(
                "error: {}: {} of the keys' environment variables not set",
                config.path,
                missing.0.len()
            );
            Ok(ExitCode::from(exit::ERROR))
        }
    }
}

fn provider(p: &ProviderConf) -> String {
    let mut s = format!("{}: {}, {}", p.name, p.kind, p.base_url);
    if let Some(v) = &p.api_version {
        s.push_str(&format!(", api-version {v}"));
    }
    if let Some(v) = &p.version {
        s.push_str(&format!(", anthropic-version {v}"));
    }
    if !p.beta.is_empty() {
        s.push_str(&format!(", anthropic-beta {}", p.beta.join(",")));
    }
    s
}

/// Keys by id, their variable and whether it is set (never its value).
fn group(g: &GroupConf, set: &impl Fn(&str) -> bool) -> String {
    let keys: Vec<String> = (g.keys.iter())
        .map(|k| {
            let state = if set(&k.env) { "set" } else { "NOT SET" };
            format!("{} ({} {state})", k.id, k.env)
        })
        .collect();
    let mut s = format!(
        "{}: provider {}; keys {}",
        g.name,
        g.provider,
        keys.join(", ")
    );
    let limits = limits(&g.limits);
    if !limits.is_empty() {
        s.push_str(&format!("; limits {limits}"));
    }
    s
}

fn limits(l: &LimitsFile) -> String {
    let mut parts = Vec::new();
    let default = rates(l.rpm, l.tpm, l.itpm, l.otpm);
    if !default.is_empty() {
        parts.push(format!("default {default}"));
    }
    for m in &l.table.models {
        parts.push(model_limit(m));
    }
    parts.join(", ")
}

fn model_limit(m: &ModelLimit) -> String {
    let rates = rates(m.rpm, m.tpm, m.itpm, m.otpm);
    if m.models.len() == 1 && m.models[0] == m.name {
        format!("{} {rates}", m.name)
    } else {
        format!("{} ({}) {rates}", m.name, m.models.join(", "))
    }
}

fn rates(rpm: Option<u64>, tpm: Option<u64>, itpm: Option<u64>, otpm: Option<u64>) -> String {
    [("rpm", rpm), ("tpm", tpm), ("itpm", itpm), ("otpm", otpm)]
        .iter()
        .filter_map(|(n, v)| v.map(|v| format!("{n} {v}")))
        .collect::<Vec<_>>()
        .join(" ")
}

fn model(config: &RoutesConfig, m: &ModelConf, catalog: &Catalog) -> String {
    let price = match config.price(&m.name, catalog) {
        Some(tp) => {
            let p = tp.price;
            let mut s = format!("USD per 1M: input {}", usd(p.input));
            if let Some(c) = p.cached_input {
                s.push_str(&format!(", cached {}", usd(c)));
            }
            s.push_str(&format!(", output {}", usd(p.output)));
            match tp.from {
                PriceFrom::Config => s.push_str(" (config)"),
                PriceFrom::Catalog(name) => s.push_str(&format!(" (catalog: {name})")),
            }
            s
        }
        None => "no price".to_owned(),
    };
    let window = m
        .context_window
        .map_or_else(|| "unknown".to_owned(), |w| w.to_string());
    format!(
        "{}: {} {}; groups {}; {price}; context window {window}",
        m.name,
        m.provider,
        m.model,
        m.groups.join(", ")
    )
}

fn route(r: &RouteConf) -> String {
    let chain = |c: &[String], none: &str| {
        if c.is_empty() {
            none.to_owned()
        } else {
            c.join(" → ")
        }
    };
    let c = &r.expanded;
    let mut s = format!(
        "{}: {}; context window: {}; content policy: {}; {} attempts per line, {} per target",
        r.name,
        chain(&c.chain, "-"),
        chain(&c.context_window, "none"),
        chain(&c.content_policy, "none (a refusal is the answer)"),
        r.attempts(),
        r.attempts_per_target(),
    );
    if let Some(ratio) = r.max_price_ratio {
        s.push_str(&format!("; a fallback costs at most {ratio}x the primary"));
    }
    s
}

/// `[serve]`: what `batchling serve` takes from it.
fn serve(s: &ServeConf, set: &impl Fn(&str) -> bool) -> String {
    let mut parts = Vec::new();
    if let Some(env) = &s.auth_keys_env {
        let state = if set(env) { "set" } else { "not set" };
        parts.push(format!("client keys from {env} ({state})"));
    }
    if let Some(c) = s.concurrency {
        parts.push(format!("concurrency {c}"));
    }
    if let Some(t) = s.timeout_secs {
        parts.push(format!("timeout {t} s"));
    }
    if let Some(mb) = s.max_response_mb {
        parts.push(format!("answers up to {mb} MiB"));
    }
    if s.lenient {
        parts.push("lenient translation for Anthropic".into());
    }
    if parts.is_empty() {
        return "the defaults".into();
    }
    parts.join("; ")
}
