//! Turning a finished batch's result files into journal records: join on
//! `custom_id`, one record per request of the part, never two. A request
//! the files do not mention (a failed batch, a server that leaves lines
//! out) still gets a record, in the error file, saying why.

use std::collections::HashMap;

use batchling_core::Usage;
use batchling_core::output;
use batchling_core::pricing::{Catalog, TokenCounts};
use batchling_core::usage::{BodyRead, read_body};
use batchling_providers::openai::batches::{Batch, BatchStatus};
use batchling_store::{FinalState, PartRequest, Record};
use serde_json::Value;

/// The records of one part, and what they cost at batch prices.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    pub(crate) records: Vec<Record>,
    pub(crate) cost_usd: Option<f64>,
    /// Result lines naming an id not in the part, or a repeated one.
    pub(crate) ignored: u64,
}

/// Why a failed batch failed, with its line numbers mapped to the input:
/// one text for people, and per part line (1-based) the message for it.
pub(crate) fn failure_report(
    part: u64,
    batch: &Batch,
    reqs: &[PartRequest],
) -> (String, HashMap<u64, String>) {
    let mut per_line = HashMap::new();
    let mut texts = Vec::new();
    for e in batch.errors() {
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

fn failure_record(r: &PartRequest, line_id: &str, code: &str, message: String) -> Record {
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

/// Build the records of a finished part from its result files.
pub(crate) fn collect(
    part: u64,
    batch: &Batch,
    reqs: &[PartRequest],
    files: &[&[u8]],
    model: Option<&str>,
    prices: Option<&Catalog>,
) -> Collected {
    let index: HashMap<&str, usize> = reqs
        .iter()
        .enumerate()
        .map(|(i, r)| (r.custom_id.as_str(), i))
        .collect();
    let mut slots: Vec<Option<Record>> = vec![None; reqs.len()];
    let price = model.and_then(|m| prices?.get(m)).map(|(_, p)| p.clone());
    let mut out = Collected {
        cost_usd: price.as_ref().map(|_| 0.0),
        ..Collected::default()
    };
    for file in files {
        for raw in file.split(|&b| b == b'\n') {
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            if raw.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let Ok(v) = serde_json::from_slice::<Value>(raw) else {
                out.ignored += 1;
                continue;
            };
            let Some(i) = v["custom_id"]
                .as_str()
                .and_then(|id| index.get(id).copied())
            else {
                out.ignored += 1;
                continue;
            };
            if slots[i].is_some() {
                out.ignored += 1;
                continue;
            }
            let r = &reqs[i];
            let status = v["response"]["status_code"].as_u64().map(|s| s as u16);
            let ok = v["error"].is_null() && status.is_some_and(|s| (200..300).contains(&s));
            let body = &v["response"]["body"];
            let usage = if ok {
                match read_body(body.to_string().as_bytes()) {
                    BodyRead::Json(u) => u.unwrap_or_default(),
                    BodyRead::NotJson => Usage::default(),
                }
            } else {
                Usage::default()
            };
            let cost = price
                .as_ref()
                .filter(|_| ok)
                .map(|p| p.cost_batch(&TokenCounts::from(usage)));
            if let (Some(total), Some(c)) = (out.cost_usd.as_mut(), cost) {
                *total += c;
            }
            // OpenAI's `error` is {code, message}; vLLM's may be a plain string.
            let message = v["error"]["message"]
                .as_str()
                .or_else(|| v["error"].as_str())
                .or_else(|| body["error"]["message"].as_str())
                .map(str::to_owned);
            // A raw CR left inside the line by the upstream would split it
            // for text-mode readers.
            let mut line = Vec::with_capacity(raw.len() + 1);
            output::push_one_line(&mut line, raw);
            line.push(b'\n');
            slots[i] = Some(Record {
                seq: r.seq,
                line_no: r.line_no,
                custom_id: Some(r.custom_id.clone()),
                state: if ok {
                    FinalState::Done
                } else {
                    FinalState::Failed
                },
                attempts: 1,
                status_code: status,
                error_code: v["error"]["code"].as_str().map(str::to_owned),
                error_message: if ok {
                    None
                } else {
                    Some(message.unwrap_or_else(|| format!("HTTP {}", status.unwrap_or(0))))
                },
                usage,
                latency_ms: None,
                cost_usd: cost,
                line,
            });
        }
    }
    let (code, message, per_line) = match batch.status {
        BatchStatus::Failed => {
            let (summary, per_line) = failure_report(part, batch, reqs);
            ("batch_failed", summary, per_line)
        }
        BatchStatus::Expired => (
            "batch_expired",
            "This request could not be executed before the completion window expired.".into(),
            HashMap::new(),
        ),
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
    };
    for (i, slot) in slots.iter_mut().enumerate() {
        if slot.is_none() {
            let r = &reqs[i];
            let text = per_line.get(&(i as u64 + 1)).map_or_else(
                || message.clone(),
                |t| format!("batch {} failed validation: {t}", batch.id),
            );
            let line_id = format!("batch_req_{}_{}", batch.id, i + 1);
            *slot = Some(failure_record(r, &line_id, code, text));
        }
    }
    out.records = slots.into_iter().flatten().collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(status: &str, errors: Value) -> Batch {
        serde_json::from_value(serde_json::json!({
            "id": "batch_1", "status": status, "errors": errors,
        }))
        .unwrap()
    }

    fn reqs() -> Vec<PartRequest> {
        ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, id)| PartRequest {
                seq: i as u64 * 2,
                line_no: i as u64 * 2 + 5,
                custom_id: (*id).into(),
            })
            .collect()
    }

    #[test]
    fn every_request_gets_exactly_one_record() {
        let out = br#"{"id":"r1","custom_id":"b","response":{"status_code":200,"request_id":"x","body":{"usage":{"prompt_tokens":1000000,"completion_tokens":0}}},"error":null}
{"id":"r2","custom_id":"b","response":{"status_code":200,"request_id":"x","body":{}},"error":null}
{"id":"r3","custom_id":"zzz","response":{"status_code":200,"request_id":"x","body":{}},"error":null}
"#;
        let err = br#"{"id":"r4","custom_id":"a","response":{"status_code":400,"request_id":"x","body":{"error":{"message":"bad"}}},"error":null}
"#;
        let c = collect(
            1,
            &batch("completed", Value::Null),
            &reqs(),
            &[out, err],
            Some("gpt-4o-mini"),
            Some(&Catalog::builtin()),
        );
        assert_eq!(c.records.len(), 3);
        assert_eq!(c.ignored, 2);
        let by_id: HashMap<_, _> = c
            .records
            .iter()
            .map(|r| (r.custom_id.clone().unwrap(), r))
            .collect();
        assert_eq!(by_id["b"].state, FinalState::Done);
        assert_eq!(by_id["a"].state, FinalState::Failed);
        assert_eq!(by_id["a"].error_message.as_deref(), Some("bad"));
        assert_eq!(by_id["c"].error_code.as_deref(), Some("missing_result"));
        // A million input tokens at the batch price, below the online one.
        let catalog = Catalog::builtin();
        let price = catalog.get("gpt-4o-mini").unwrap().1;
        assert!((c.cost_usd.unwrap() - price.batch_input_price()).abs() < 1e-9);
        assert!(price.batch_input_price() < price.input);
    }

    #[test]
    fn a_failed_batch_names_input_lines() {
        let b = batch(
            "failed",
            serde_json::json!({"object":"list","data":[{"code":"invalid_json_line","line":2,"message":"bad line"}]}),
        );
        let c = collect(4, &b, &reqs(), &[], None, None);
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
}
