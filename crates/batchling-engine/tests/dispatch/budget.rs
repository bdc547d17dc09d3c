//! `max_cost`: each request's worst case (input plus its `max_tokens` of
//! output) is reserved before it is sent, and its answer's usage settles it
//! (`budget.rs`). The run stops when the next worst case cannot fit.
//!
//! Prices here: input free, output $10,000 per million tokens, so a
//! request allowing 100 output tokens reserves exactly $1.00 and an answer
//! of `n` output tokens costs `n` cents.

use std::sync::Arc;

use batchling_core::pricing::{Catalog, ModelPrice};
use batchling_engine::StopCause;

use crate::support::{Upstream, Workdir, ms, ok};

const N: usize = 20;
const LIMIT: f64 = 4.0;

fn budgeted() -> Workdir {
    let mut w = Workdir::with_requests(N);
    let mut prices = Catalog::new();
    prices.insert(
        "m",
        ModelPrice {
            provider: None,
            input: 0.0,
            cached_input: None,
            cache_write: None,
            cache_write_1h: None,
            output: 10_000.0,
            batch_input: None,
            batch_output: None,
            checked: None,
        },
    );
    w.job.prices = Some(Arc::new(prices));
    w.job.max_cost = Some(LIMIT);
    w
}

/// What the upstream billed: the usage its 200s reported.
fn billed(up: &Upstream) -> f64 {
    let outputs = up
        .sends()
        .into_iter()
        .filter_map(|s| s.usage)
        .map(|u| u.output);
    outputs.sum::<u64>() as f64 / 100.0
}

#[tokio::test(start_paused = true)]
async fn the_run_stops_before_spending_over_the_budget() {
    let w = budgeted();
    let up = Upstream::new(ok().usage(10, 50).after(ms(100))).arc();

    let summary = w.run(&up).await;

    assert_eq!(
        summary.stopped,
        Some(StopCause::BudgetReached { limit_usd: LIMIT })
    );
    let spent = billed(&up);
    assert!(spent <= LIMIT, "spent {spent}");
    // It stopped because the next $1.00 did not fit, not sooner.
    assert!(spent > LIMIT - 1.0, "spent only {spent}");
    let cost = summary.cost_usd.expect("priced");
    assert!(
        (cost - spent).abs() < 1e-9,
        "summary {cost} vs billed {spent}"
    );
    // The requests not sent are not finished: the journal holds exactly
    // the answered ones, none failed.
    let sent: std::collections::BTreeSet<String> =
        up.sends().into_iter().map(|s| s.custom_id).collect();
    assert!(sent.len() < N);
    assert_eq!(w.journaled(), sent);
    assert_eq!(summary.not_done, (N - sent.len()) as u64);
    assert!(w.failed().is_empty());
}

#[tokio::test(start_paused = true)]
async fn answers_that_cost_their_whole_reservation_fill_the_budget_exactly() {
    let w = budgeted();
    let up = Upstream::new(ok().usage(10, 100).after(ms(100))).arc();

    let summary = w.run(&up).await;

    assert_eq!(
        summary.stopped,
        Some(StopCause::BudgetReached { limit_usd: LIMIT })
    );
    // $1.00 each: four fit, and once they are spent a fifth never does.
    assert_eq!(up.sends().len(), 4);
    assert_eq!(billed(&up), LIMIT);
    assert_eq!(w.answered().len(), 4);
    assert_eq!(summary.not_done, (N - 4) as u64);
}
