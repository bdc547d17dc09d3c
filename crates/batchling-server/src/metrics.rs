//! `GET /metrics` in Prometheus' text format: per upstream, what was sent,
//! what came back and what it cost; batches by status. A routes config is
//! one upstream, `routes` (per model and key, see each batch's journal).

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::api::{ApiError, Shared};
use crate::upstream::{ROUTES_NAME, UpstreamMetrics};
use batchling_core::batch::BatchStatus;
use batchling_engine::SharedLimits;

/// A label value with `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// What one upstream's row shows.
struct Row<'a> {
    name: &'a str,
    metrics: &'a UpstreamMetrics,
    limits: &'a SharedLimits,
    concurrency: usize,
}

/// A metric's value for one upstream.
type Getter = fn(&Row<'_>) -> f64;

/// The per-upstream families: name, type, help, value.
const UPSTREAM_FAMILIES: [(&str, &str, &str, Getter); 9] = [
    (
        "batchling_upstream_requests_total",
        "counter",
        "HTTP attempts sent to the upstream.",
        |u| u.metrics.requests.load(Relaxed) as f64,
    ),
    (
        "batchling_upstream_rate_limited_total",
        "counter",
        "429 answers from the upstream.",
        |u| u.metrics.rate_limited.load(Relaxed) as f64,
    ),
    (
        "batchling_upstream_errors_total",
        "counter",
        "Error answers (other than 429) and transport failures.",
        |u| u.metrics.errors.load(Relaxed) as f64,
    ),
    (
        "batchling_upstream_input_tokens_total",
        "counter",
        "Input tokens from answers' usage.",
        |u| u.metrics.input_tokens.load(Relaxed) as f64,
    ),
    (
        "batchling_upstream_output_tokens_total",
        "counter",
        "Output tokens from answers' usage.",
        |u| u.metrics.output_tokens.load(Relaxed) as f64,
    ),
    (
        "batchling_upstream_cost_usd_total",
        "counter",
        "Cost of answers at the catalog's online prices (USD).",
        |u| u.metrics.cost_micro_usd.load(Relaxed) as f64 / 1e6,
    ),
    (
        "batchling_upstream_in_flight",
        "gauge",
        "Requests in flight or awaiting their journal commit.",
        |u| u.limits.in_use(u.concurrency) as f64,
    ),
    (
        "batchling_upstream_limit_rpm",
        "gauge",
        "Requests-per-minute limit in force (0: none).",
        |u| u.limits.limits().rpm.unwrap_or(0) as f64,
    ),
    (
        "batchling_upstream_limit_tpm",
        "gauge",
        "Tokens-per-minute limit in force (0: none).",
        |u| u.limits.limits().tpm.unwrap_or(0) as f64,
    ),
];

/// `GET /metrics`.
pub(crate) async fn render(state: Shared) -> Result<Response, ApiError> {
    let mut out = String::new();
    let mut rows: Vec<Row<'_>> = (state.runner.upstreams().iter())
        .map(|u| Row {
            name: &u.config.name,
            metrics: &u.metrics,
            limits: &u.limits,
            concurrency: u.config.concurrency,
        })
        .collect();
    if let Some(r) = state.runner.routed() {
        rows.push(Row {
            name: ROUTES_NAME,
            metrics: &r.metrics,
            limits: &r.limits,
            concurrency: r.concurrency,
        });
    }
    write_upstreams(&mut out, &rows);
    write_batches(&mut out, &state.meta.batch_status_counts()?);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response())
}

fn write_upstreams(out: &mut String, ups: &[Row<'_>]) {
    for (name, kind, help, get) in UPSTREAM_FAMILIES {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for u in ups {
            let _ = writeln!(out, "{name}{{upstream=\"{}\"}} {}", label(u.name), get(u));
        }
    }
}

/// Batches by status, every known status listed (0 when none).
fn write_batches(out: &mut String, counts: &[(BatchStatus, u64)]) {
    let _ = writeln!(
        out,
        "# HELP batchling_batches Batches by status.\n# TYPE batchling_batches gauge"
    );
    for s in BatchStatus::ALL {
        let n = counts.iter().find(|(k, _)| *k == s).map_or(0, |(_, n)| *n);
        let _ = writeln!(out, "batchling_batches{{status=\"{}\"}} {n}", s.as_str());
    }
}
