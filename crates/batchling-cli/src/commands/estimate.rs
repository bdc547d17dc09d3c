//! `batchling estimate`: what a file will cost, per model, before anything
//! is sent.

use std::process::ExitCode;

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, Result};
use batchling_core::pricing::{Catalog, ModelPrice, TokenCounts};
use batchling_core::routes::{PriceFrom, RoutesConfig};
use batchling_engine::estimate::{FileTokens, ModelTokens, count_file_as};
use batchling_store::Journal;
use serde::Serialize;

use crate::settings::EstimateSettings;

#[derive(Debug, Serialize)]
struct ModelEstimate {
    requests: u64,
    input_tokens: u64,
    output_tokens_max: u64,
    output_tokens_expected: u64,
    /// Where the expected output figure comes from.
    output_basis: &'static str,
    /// False: tokens counted with an approximate tokenizer.
    exact: bool,
    /// The catalog entry used, if any.
    priced_as: Option<String>,
    cost_online_usd: Option<f64>,
    cost_batch_usd: Option<f64>,
    cost_online_max_usd: Option<f64>,
    cost_batch_max_usd: Option<f64>,
    /// Minutes to finish at the given limits (None without limits).
    minutes_at_limits: Option<f64>,
    /// With `--config`: the route's targets.
    #[serde(skip_serializing_if = "Option::is_none")]
    route: Option<RouteEstimate>,
}

/// How a route prices a model's lines: at its primary target; a line may
/// cost more only on a fallback its price ceiling allows.
#[derive(Debug, Serialize)]
struct RouteEstimate {
    primary: String,
    /// The dearest target of the route's chains within its
    /// `max_price_ratio` (any, without one), if dearer than the primary.
    dearest_fallback: Option<String>,
    /// Every line answered there, at its maximum output, online.
    cost_online_max_dearest_usd: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Estimate {
    input: String,
    requests: u64,
    invalid_lines: u64,
    uncounted_lines: u64,
    models: BTreeMap<String, ModelEstimate>,
    warnings: Vec<String>,
}

pub(crate) fn estimate(s: &EstimateSettings) -> Result<ExitCode> {
    let journal = s
        .state
        .as_deref()
        .map(Journal::open_read_only)
        .transpose()?;
    let output = ExpectedOutput::from(s.output_tokens, journal.as_ref())?;
    let limits = limits(s, journal.as_ref())?;
    let tokenize_as = s.routes.as_ref().map(tokenize_as).unwrap_or_default();
    let t = count_file_as(&s.input, &s.models, s.default_max_tokens, &tokenize_as)
        .with_context(|| format!("cannot read {}", s.input.display()))?;
    let mut warnings = file_warnings(&t);
    let mut models = BTreeMap::new();
    for (model, m) in &t.models {
        let (estimate, warning) = match &s.routes {
            Some(config) => routed_estimate(config, &s.catalog, model, m, &output, limits),
            None => {
                let price = s.catalog.get(model);
                let warning = price
                    .is_none()
                    .then(|| format!("no price for model {model:?}: add it with --prices FILE"));
                (model_estimate(m, &output, price, limits), warning)
            }
        };
        warnings.extend(warning);
        if !m.exact {
            warnings.push(format!(
                "{model}: tokens are an estimate (not an OpenAI tokenizer)"
            ));
        }
        models.insert(model.clone(), estimate);
    }
    let e = Estimate {
        input: s.input.display().to_string(),
        requests: t.requests,
        invalid_lines: t.invalid,
        uncounted_lines: t.uncounted,
        models,
        warnings,
    };
    if s.json {
        out!("{}", serde_json::to_string_pretty(&e)?)?;
    } else {
        print_table(&e)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The output tokens expected per request, and where the figure comes from.
struct ExpectedOutput {
    /// `None`: each request's maximum.
    average: Option<f64>,
    basis: &'static str,
}

impl ExpectedOutput {
    fn from(given: Option<u64>, journal: Option<&Journal>) -> Result<Self> {
        let (average, basis) = match (given, journal) {
            (Some(n), _) => (Some(n as f64), "--output-tokens"),
            (None, Some(j)) => match j.average_output_tokens()? {
                Some(avg) => (Some(avg), "journal average"),
                None => (None, "maximum"),
            },
            (None, None) => (None, "maximum"),
        };
        Ok(ExpectedOutput { average, basis })
    }
}

/// RPM and TPM for the time estimate: as given, else those the earlier run
/// ended with.
fn limits(s: &EstimateSettings, journal: Option<&Journal>) -> Result<(Option<u64>, Option<u64>)> {
    if s.rpm.is_some() || s.tpm.is_some() {
        return Ok((s.rpm, s.tpm));
    }
    let known = journal.map(Journal::meta).transpose()?.unwrap_or_default();
    Ok((known.rpm_limit, known.tpm_limit))
}

/// What the whole file says: invalid lines, lines whose tokens were not counted.
fn file_warnings(t: &FileTokens) -> Vec<String> {
    let mut warnings = Vec::new();
    if t.invalid > 0 {
        warnings.push(format!(
            "{} invalid line(s) left out (see `batchling run --strict`)",
            t.invalid
        ));
    }
    for (line, why) in &t.uncounted_examples {
        warnings.push(format!("line {line}: tokens not counted: {why}"));
    }
    warnings
}

/// One model's tokens priced (when the catalog has it) and timed (at limits).
fn model_estimate(
    m: &ModelTokens,
    output: &ExpectedOutput,
    price: Option<(&str, &ModelPrice)>,
    (rpm, tpm): (Option<u64>, Option<u64>),
) -> ModelEstimate {
    let expected = match output.average {
        Some(avg) => ((avg * m.requests as f64).round() as u64).min(m.output_tokens_max),
        None => m.output_tokens_max,
    };
    let counts = |output| TokenCounts {
        input: m.input_tokens,
        output,
        ..TokenCounts::default()
    };
    let minutes = (rpm.is_some() || tpm.is_some()).then(|| {
        let by_requests = rpm.map_or(0.0, |r| m.requests as f64 / r as f64);
        let tokens = (m.input_tokens + m.output_tokens_max) as f64;
        let by_tokens = tpm.map_or(0.0, |r| tokens / r as f64);
        by_requests.max(by_tokens)
    });
    ModelEstimate {
        requests: m.requests,
        input_tokens: m.input_tokens,
        output_tokens_max: m.output_tokens_max,
        output_tokens_expected: expected,
        output_basis: output.basis,
        exact: m.exact,
        priced_as: price.map(|(name, _)| name.to_owned()),
        cost_online_usd: price.map(|(_, p)| p.cost_online(&counts(expected))),
        cost_batch_usd: price.map(|(_, p)| p.cost_batch(&counts(expected))),
        cost_online_max_usd: price.map(|(_, p)| p.cost_online(&counts(m.output_tokens_max))),
        cost_batch_max_usd: price.map(|(_, p)| p.cost_batch(&counts(m.output_tokens_max))),
        minutes_at_limits: minutes,
        route: None,
    }
}

/// Each route and target name of `config` → the model its primary sends,
/// whose tokenizer counts its lines.
fn tokenize_as(config: &RoutesConfig) -> HashMap<String, String> {
    let names = (config.routes.keys()).chain(config.models.keys());
    names
        .filter_map(|name| {
            let chains = config.chains_for(name)?;
            let primary = config.models.get(chains.chain.first()?)?;
            Some((name.clone(), primary.model.clone()))
        })
        .collect()
}

/// A model's lines priced over `config`'s route for it: at its primary
/// target, with the dearest fallback its ceiling allows; a warning when the
/// config has no route for it or no price for its primary.
fn routed_estimate(
    config: &RoutesConfig,
    catalog: &Catalog,
    model: &str,
    m: &ModelTokens,
    output: &ExpectedOutput,
    limits: (Option<u64>, Option<u64>),
) -> (ModelEstimate, Option<String>) {
    let Some(chains) = config.chains_for(model) else {
        let warning = format!(
            "{}: no route or model is named {model:?}; its lines would fail with no_route",
            config.path
        );
        return (model_estimate(m, output, None, limits), Some(warning));
    };
    let primary = chains.chain.first().cloned().unwrap_or_default();
    let max_cost = |target: &str| {
        let p = config.price(target, catalog)?;
        let counts = TokenCounts {
            input: m.input_tokens,
            output: m.output_tokens_max,
            ..TokenCounts::default()
        };
        Some(p.price.cost_online(&counts))
    };
    let price = config.price(&primary, catalog);
    let priced_as = price.map(|p| match p.from {
        PriceFrom::Config => format!("{primary} (its config price)"),
        PriceFrom::Catalog(name) => format!("{primary} ({name})"),
    });
    let mut estimate = model_estimate(
        m,
        output,
        price.map(|p| (priced_as.as_deref().unwrap_or_default(), p.price)),
        limits,
    );
    let warning = price.is_none().then(|| {
        format!(
            "{}: no price for {primary:?}, the primary of {model:?}: give [models.{primary}] a price",
            config.path
        )
    });
    let ceiling = (config.routes.get(model))
        .and_then(|r| r.max_price_ratio)
        .zip(max_cost(&primary))
        .map(|(ratio, base)| ratio * base);
    let all = (chains.chain.iter())
        .chain(&chains.context_window)
        .chain(&chains.content_policy);
    let dearest = all
        .filter_map(|t| Some((t, max_cost(t)?)))
        .filter(|(_, c)| ceiling.is_none_or(|limit| *c <= limit * (1.0 + 1e-9)))
        .filter(|(_, c)| max_cost(&primary).is_none_or(|base| *c > base))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    estimate.route = Some(RouteEstimate {
        primary,
        dearest_fallback: dearest.map(|(t, _)| t.clone()),
        cost_online_max_dearest_usd: dearest.map(|(_, c)| c),
    });
    (estimate, warning)
}

fn usd(x: Option<f64>) -> String {
    match x {
        // Small amounts keep two significant digits rather than rounding to 0.
        Some(v) if v > 0.0 && v < 0.01 => {
            let digits = (-v.log10()).ceil() as usize + 1;
            format!("${v:.digits$}")
        }
        Some(v) => format!("${v:.2}"),
        None => "no price".into(),
    }
}

fn print_table(e: &Estimate) -> std::io::Result<()> {
    out!(
        "{:<28} {:>9} {:>13} {:>13} {:>13} {:>11} {:>11} {:>10}",
        "model",
        "requests",
        "input tok",
        "output max",
        "output exp",
        "online",
        "batch",
        "time"
    )?;
    for (model, m) in &e.models {
        let mark = if m.exact { "" } else { " ~" };
        let time = m
            .minutes_at_limits
            .map_or("-".into(), |min| format!("{:.1} min", min));
        out!(
            "{:<28} {:>9} {:>13} {:>13} {:>13} {:>11} {:>11} {:>10}",
            format!("{model}{mark}"),
            m.requests,
            m.input_tokens,
            m.output_tokens_max,
            m.output_tokens_expected,
            usd(m.cost_online_usd),
            usd(m.cost_batch_usd),
            time
        )?;
    }
    eprintln!(
        "{} requests in {}; costs use the expected output ({}); ~ marks approximate token counts",
        e.requests,
        e.input,
        e.models
            .values()
            .next()
            .map_or("maximum", |m| m.output_basis)
    );
    for (model, r) in e
        .models
        .iter()
        .filter_map(|(n, m)| Some((n, m.route.as_ref()?)))
    {
        match (&r.dearest_fallback, r.cost_online_max_dearest_usd) {
            (Some(f), Some(c)) => eprintln!(
                "{model}: priced at its primary {}; a line may land on {f}, all of them at most {} online",
                r.primary,
                usd(Some(c))
            ),
            _ => eprintln!(
                "{model}: priced at its primary {}; no fallback costs more",
                r.primary
            ),
        }
    }
    for w in &e.warnings {
        eprintln!("warning: {w}");
    }
    Ok(())
}
