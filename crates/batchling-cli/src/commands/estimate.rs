//! `batchling estimate`: what a file will cost, per model, before anything
//! is sent.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use batchling_core::pricing::TokenCounts;
use batchling_engine::estimate::count_file;
use batchling_store::Journal;
use serde::Serialize;

use crate::args::EstimateArgs;
use crate::settings::catalog;

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
}

#[derive(Debug, Serialize)]
struct Estimate {
    input: String,
    requests: u64,
    invalid_lines: u64,
    uncounted_lines: u64,
    models: std::collections::BTreeMap<String, ModelEstimate>,
    warnings: Vec<String>,
}

pub(crate) fn estimate(a: &EstimateArgs) -> Result<ExitCode> {
    let catalog = catalog(a.prices.as_deref())?;
    if !a.input.exists() {
        bail!(
            "{} does not exist; give the JSONL input to estimate",
            a.input.display()
        );
    }
    if !a.input.is_file() {
        bail!(
            "{} is not a file; give the JSONL input to estimate",
            a.input.display()
        );
    }
    let journal = a
        .state
        .as_deref()
        .map(Journal::open_read_only)
        .transpose()?;
    let (avg_output, basis) = match (a.output_tokens, &journal) {
        (Some(n), _) => (Some(n as f64), "--output-tokens"),
        (None, Some(j)) => match j.average_output_tokens()? {
            Some(avg) => (Some(avg), "journal average"),
            None => (None, "maximum"),
        },
        (None, None) => (None, "maximum"),
    };
    // Limits: as given, else those the earlier run ended with.
    let known = journal
        .as_ref()
        .map(|j| j.meta())
        .transpose()?
        .unwrap_or_default();
    let (rpm, tpm) = match (a.rpm, a.tpm) {
        (None, None) => (known.rpm_limit, known.tpm_limit),
        given => given,
    };
    let t = count_file(&a.input, &a.models, a.default_max_tokens)
        .with_context(|| format!("cannot read {}", a.input.display()))?;
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
    let mut models = std::collections::BTreeMap::new();
    for (model, m) in &t.models {
        let expected = match avg_output {
            Some(avg) => ((avg * m.requests as f64).round() as u64).min(m.output_tokens_max),
            None => m.output_tokens_max,
        };
        let price = catalog.get(model);
        if price.is_none() {
            warnings.push(format!(
                "no price for model {model:?}: add it with --prices FILE"
            ));
        }
        if !m.exact {
            warnings.push(format!(
                "{model}: tokens are an estimate (not an OpenAI tokenizer)"
            ));
        }
        let counts = |output| TokenCounts {
            input: m.input_tokens,
            output,
            ..TokenCounts::default()
        };
        let minutes = match (rpm, tpm) {
            (None, None) => None,
            (rpm, tpm) => {
                let by_requests = rpm.map_or(0.0, |r| m.requests as f64 / r as f64);
                let tokens = (m.input_tokens + m.output_tokens_max) as f64;
                let by_tokens = tpm.map_or(0.0, |r| tokens / r as f64);
                Some(by_requests.max(by_tokens))
            }
        };
        models.insert(
            model.clone(),
            ModelEstimate {
                requests: m.requests,
                input_tokens: m.input_tokens,
                output_tokens_max: m.output_tokens_max,
                output_tokens_expected: expected,
                output_basis: basis,
                exact: m.exact,
                priced_as: price.map(|(name, _)| name.to_owned()),
                cost_online_usd: price.map(|(_, p)| p.cost_online(&counts(expected))),
                cost_batch_usd: price.map(|(_, p)| p.cost_batch(&counts(expected))),
                cost_online_max_usd: price
                    .map(|(_, p)| p.cost_online(&counts(m.output_tokens_max))),
                cost_batch_max_usd: price.map(|(_, p)| p.cost_batch(&counts(m.output_tokens_max))),
                minutes_at_limits: minutes,
            },
        );
    }
    let e = Estimate {
        input: a.input.display().to_string(),
        requests: t.requests,
        invalid_lines: t.invalid,
        uncounted_lines: t.uncounted,
        models,
        warnings,
    };
    if a.json {
        out!("{}", serde_json::to_string_pretty(&e)?)?;
    } else {
        print_table(&e)?;
    }
    Ok(ExitCode::SUCCESS)
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
    for w in &e.warnings {
        eprintln!("warning: {w}");
    }
    Ok(())
}
