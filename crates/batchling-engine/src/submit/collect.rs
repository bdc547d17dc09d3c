//! Turning an ended batch's results into journal records: join on
//! `custom_id`, one record per request of the part, never two. A request
//! the results do not mention (a failed batch, a server that leaves lines
//! out) still gets a record, in the error file, saying why.

use std::collections::HashMap;

use batchling_core::batch::{EXPIRED_CODE, EXPIRED_MESSAGE};
use batchling_core::pricing::{ModelPrice, TokenCounts};
use batchling_providers::batch::{BatchInfo, BatchResults, BatchStatus, RequestOutcome};
use batchling_store::{AttemptRow, FinalState, PartRequest, Record, RouteRecord};

use super::line_id;

/// The records of one part, and what they cost at batch prices.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    pub(crate) records: Vec<Record>,
    pub(crate) cost_usd: Option<f64>,
    /// Results that could not be read, named an id not in the part, or
    /// repeated one.
    pub(crate) ignored: u64,
}

/// Why a failed batch failed, with its line numbers mapped to the input:
/// one text for people, and per part line (1-based) the message for it.
pub(crate) fn failure_report(
    part: u64,
    batch: &BatchInfo,
    reqs: &[PartRequest],
) -> (String, HashMap<u64, String>) {
    let mut per_line = HashMap::new();
    let mut texts = Vec::new();
    for e in &batch.problems {
        let what = format!(
            "{}{}",
            e.code
                .as_deref()
                .map(|c| format!("{c}: "))
                .unwrap_or_default(),
            e.message.as_deref().unwrap_or("no message")
        );
        match e
            .line
            .and_then(|k| Some((k, reqs.get(usize::try_from(k).ok()?.checked_sub(1)?)?)))
        {
            Some((k, r)) => {
                let text = format!("input line {} ({}): {what}", r.line_no, r.custom_id);
                per_line.insert(k, text.clone());
                texts.push(text);
            }
            None => texts.push(what),
        }
    }
    if texts.is_empty() {
        texts.push("the server gave no reason".into());
    }
    let summary = format!(
        "part {part}: batch {} failed validation: {}",
        batch.id,
        texts.join("; ")
    );
    (summary, per_line)
}

/// The target whose Batch API ran a part (`submit --config`), and the key
/// it was sent with: each record says the batch answered it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Via<'a> {
    pub(crate) target: &'a str,
    pub(crate) group: &'a str,
    pub(crate) key_id: &'a str,
}

/// Build the records of an ended part from its batch's results, at the
/// batch prices of `price`.
pub(crate) fn collect(
    part: u64,
    batch: &BatchInfo,
    reqs: &[PartRequest],
    results: BatchResults,
    price: Option<ModelPrice>,
    via: Option<Via<'_>>,
) -> Collected {
    let index: HashMap<&str, usize> = reqs
        .iter()
        .enumerate()
        .map(|(i, r)| (r.custom_id.as_str(), i))
        .collect();
    let mut slots: Vec<Option<Record>> = vec![None; reqs.len()];
    let mut out = Collected {
        cost_usd: price.as_ref().map(|_| 0.0),
        ignored: results.unreadable,
        ..Collected::default()
    };
    for outcome in results.outcomes {
        let Some(&i) = index.get(outcome.custom_id.as_str()) else {
            out.ignored += 1;
            continue;
        };
        if slots[i].is_some() {
            out.ignored += 1;
            continue;
        }
        let cost = price
            .as_ref()
            .filter(|_| outcome.succeeded())
            .map(|p| p.cost_batch(&TokenCounts::from(outcome.usage)));
        if let (Some(total), Some(c)) = (out.cost_usd.as_mut(), cost) {
            *total += c;
        }
        let status = outcome.status_code;
        let model = via.and(outcome.answer.as_ref().ok());
        let model = model.and_then(|body| crate::attempt::response_model(body));
        let mut rec = answered(&reqs[i], outcome, cost);
        rec.route = via.and_then(|v| batch_route(v, &batch.id, &reqs[i], &rec, status));
        if let Some(route) = &mut rec.route {
            route.response_model = model;
        }
        slots[i] = Some(rec);
    }
    let (code, message, per_line) = missing_reason(part, batch, reqs);
    for (i, slot) in slots.iter_mut().enumerate() {
        if slot.is_none() {
            let text = per_line.get(&(i as u64 + 1)).map_or_else(
                || message.clone(),
                |t| format!("batch {} failed validation: {t}", batch.id),
            );
            let id = line_id(&batch.id, i as u64 + 1);
            let mut rec = missing(&reqs[i], &id, code, text);
            rec.route = via.and_then(|v| batch_route(v, &batch.id, &reqs[i], &rec, None));
            *slot = Some(rec);
        }
    }
    out.records = slots.into_iter().flatten().collect();
    out
}

/// Who answered a routed request of a target's part: that target, at the
/// start of its chain, in batch `batch_id`; its one attempt is the batch's
/// (billed when it answered).
fn batch_route(
    via: Via<'_>,
    batch_id: &str,
    r: &PartRequest,
    rec: &Record,
    status: Option<u16>,
) -> Option<Box<RouteRecord>> {
    let done = rec.state == FinalState::Done;
    let attempt = AttemptRow {
        target: via.target.to_owned(),
        group: via.group.to_owned(),
        key_id: via.key_id.to_owned(),
        status,
        error_class: (!done).then(|| {
            rec.error_code
                .clone()
                .unwrap_or_else(|| "batch_error".to_owned())
        }),
        retry_after_ms: None,
        usage: rec.usage,
        cost_usd: rec.cost_usd,
        billed: done,
    };
    Some(Box::new(RouteRecord {
        route: r.route.clone()?,
        target: via.target.to_owned(),
        response_model: None,
        step: 0,
        attempts: vec![attempt],
        batch: Some(batch_id.to_owned()),
    }))
}

/// The record of a request the batch has a result for.
fn answered(r: &PartRequest, outcome: RequestOutcome, cost: Option<f64>) -> Record {
    let (state, error_code, error_message) = match outcome.answer {
        Ok(_) => (FinalState::Done, None, None),
        Err(e) => (FinalState::Failed, e.code, Some(e.message)),
    };
    Record {
        seq: r.seq,
        line_no: r.line_no,
        custom_id: Some(r.custom_id.clone()),
        state,
        attempts: 1,
        status_code: outcome.status_code,
        error_code,
        error_message,
        usage: outcome.usage,
        latency_ms: None,
        cost_usd: cost,
        line: outcome.line,
        route: None,
    }
}

/// Why a request has no result: the code and message for all of them, and
/// per part line what a failed validation said about it.
fn missing_reason(
    part: u64,
    batch: &BatchInfo,
    reqs: &[PartRequest],
) -> (&'static str, String, HashMap<u64, String>) {
    match batch.status {
        BatchStatus::Failed => {
            let (summary, per_line) = failure_report(part, batch, reqs);
            ("batch_failed", summary, per_line)
        }
        BatchStatus::Expired => (EXPIRED_CODE, EXPIRED_MESSAGE.into(), HashMap::new()),
        BatchStatus::Cancelled => (
            "batch_cancelled",
            "The batch was cancelled before this request ran.".into(),
            HashMap::new(),
        ),
        _ => (
            "missing_result",
            format!(
                "batch {} finished without a result for this request",
                batch.id
            ),
            HashMap::new(),
        ),
    }
}

fn missing(r: &PartRequest, line_id: &str, code: &str, message: String) -> Record {
    let mut rec = Record::failure(
        r.seq,
        r.line_no,
        Some(r.custom_id.clone()),
        FinalState::Failed,
        line_id,
        code,
        message,
    );
    rec.attempts = 1; // it was sent, in the batch
    rec
}

#[cfg(test)]
mod tests {
    use super::*;
    use batchling_core::Usage;
    use batchling_core::pricing::Catalog;
    use batchling_providers::batch::{BatchCounts, BatchProblem, OutcomeError, ResultRefs};

    fn batch(status: BatchStatus, problems: Vec<BatchProblem>) -> BatchInfo {
        BatchInfo {
            id: "batch_1".into(),
            status,
            counts: BatchCounts::default(),
            results: ResultRefs::default(),
            problems,
        }
    }

    fn reqs() -> Vec<PartRequest> {
        ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, id)| PartRequest {
                seq: i as u64 * 2,
                line_no: i as u64 * 2 + 5,
                custom_id: (*id).into(),
                route: Some("fast".into()),
            })
            .collect()
    }

    fn outcome(id: &str, answer: Result<&str, &str>, input_tokens: u64) -> RequestOutcome {
        RequestOutcome {
            custom_id: id.into(),
            status_code: Some(if answer.is_ok() { 200 } else { 400 }),
            answer: answer
                .map(|b| b.to_owned().into())
                .map_err(|m| OutcomeError {
                    code: None,
                    message: m.into(),
                }),
            usage: Usage {
                input: input_tokens,
                ..Usage::default()
            },
            line: format!("{{\"custom_id\":\"{id}\"}}\n").into_bytes(),
        }
    }

    #[test]
    fn every_request_gets_exactly_one_record() {
        let results = BatchResults {
            outcomes: vec![
                outcome("b", Ok("{}"), 1_000_000),
                outcome("b", Ok("{}"), 0),
                outcome("zzz", Ok("{}"), 0),
                outcome("a", Err("bad"), 0),
            ],
            unreadable: 1,
        };
        let catalog = Catalog::builtin();
        let price = catalog.get("gpt-4o-mini").map(|(_, p)| p.clone());
        let c = collect(
            1,
            &batch(BatchStatus::Completed, vec![]),
            &reqs(),
            results,
            price,
            None,
        );
        assert_eq!(c.records.len(), 3);
        assert_eq!(c.ignored, 3);
        let by_id: HashMap<_, _> = c
            .records
            .iter()
            .map(|r| (r.custom_id.clone().unwrap(), r))
            .collect();
        assert_eq!(by_id["b"].state, FinalState::Done);
        assert_eq!(by_id["b"].line, b"{\"custom_id\":\"b\"}\n");
        assert_eq!(by_id["a"].state, FinalState::Failed);
        assert_eq!(by_id["a"].error_message.as_deref(), Some("bad"));
        assert_eq!(by_id["c"].error_code.as_deref(), Some("missing_result"));
        // A million input tokens at the batch price, below the online one.
        let price = catalog.get("gpt-4o-mini").unwrap().1;
        assert!((c.cost_usd.unwrap() - price.batch_input_price()).abs() < 1e-9);
        assert!(price.batch_input_price() < price.input);
        assert!(c.records.iter().all(|r| r.route.is_none()), "not routed");
    }

    #[test]
    fn a_targets_part_says_its_batch_answered() {
        let results = BatchResults {
            outcomes: vec![outcome("a", Ok("{}"), 10), outcome("b", Err("bad"), 0)],
            unreadable: 0,
        };
        let via = Via {
            target: "claude",
            group: "team",
            key_id: "k1",
        };
        let b = batch(BatchStatus::Completed, vec![]);
        let c = collect(1, &b, &reqs(), results, None, Some(via));
        let route = |id: &str| {
            let r = c
                .records
                .iter()
                .find(|r| r.custom_id.as_deref() == Some(id));
            r.and_then(|r| r.route.clone()).unwrap()
        };
        for id in ["a", "b", "c"] {
            let r = route(id);
            assert_eq!((r.route.as_str(), r.target.as_str()), ("fast", "claude"));
            assert_eq!((r.step, r.batch.as_deref()), (0, Some("batch_1")));
            assert_eq!(r.attempts.len(), 1);
            assert_eq!(r.attempts[0].key_id, "k1");
        }
        assert!(route("a").attempts[0].billed);
        assert_eq!(route("a").attempts[0].error_class, None);
        assert!(!route("b").attempts[0].billed);
        assert_eq!(
            route("c").attempts[0].error_class.as_deref(),
            Some("missing_result")
        );
    }

    #[test]
    fn a_failed_batch_names_input_lines() {
        let b = batch(
            BatchStatus::Failed,
            vec![BatchProblem {
                code: Some("invalid_json_line".into()),
                message: Some("bad line".into()),
                param: None,
                line: Some(2),
            }],
        );
        let c = collect(4, &b, &reqs(), BatchResults::default(), None, None);
        let r = c
            .records
            .iter()
            .find(|r| r.custom_id.as_deref() == Some("b"))
            .unwrap();
        let m = r.error_message.as_deref().unwrap();
        assert!(m.contains("input line 7 (b)"), "{m}");
        let (summary, _) = failure_report(4, &b, &reqs());
        assert!(
            summary.contains("part 4") && summary.contains("input line 7"),
            "{summary}"
        );
        assert!(
            c.records
                .iter()
                .all(|r| r.error_code.as_deref() == Some("batch_failed"))
        );
    }

    #[test]
    fn an_expired_batch_says_so_for_what_it_left() {
        let c = collect(
            1,
            &batch(BatchStatus::Expired, vec![]),
            &reqs(),
            BatchResults::default(),
            None,
            None,
        );
        assert!(c.records.iter().all(|r| {
            r.error_code.as_deref() == Some(EXPIRED_CODE)
                && r.error_message.as_deref() == Some(EXPIRED_MESSAGE)
        }));
    }
}
