//! `batchling estimate`: what a file will cost, per model, before anything
//! is sent.

use std::process::ExitCode;

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use batchling_core::pricing::{ModelPrice, TokenCounts};
use batchling_engine::estimate::{FileTokens, ModelTokens, count_file};
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
    let t = count_file(&s.input, &s.models, s.default_max_tokens)
        .with_context(|| format!("cannot read {}", s.input.display()))?;
    let mut warnings = file_warnings(&t);
    let mut models = BTreeMap::new();
    for (model, m) in &t.models {
        let price = s.catalog.get(model);
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
        models.insert(model.clone(), model_estimate(m, &output, price, limits));
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
    }
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
