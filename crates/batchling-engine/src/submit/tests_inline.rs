//! The submit steps against an in-process Batch API that takes its
//! requests inline (as Anthropic's does): no OpenAI type in sight, so the
//! loop is shown to need nothing of OpenAI's.

use std::sync::Mutex;
use std::time::Duration;

use batchling_core::RetryPolicy;
use batchling_core::Usage;
use batchling_providers::batch::{
    BatchApi, BatchApiError, BatchCounts, BatchInfo, BatchInput, BatchLimits, BatchResults,
    BatchStatus, Lookup, NewBatch, OutcomeError, Refusal, RequestOutcome, ResultRefs,
};
use batchling_store::PartState;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::apis::{Apis, BatchTarget, Placed};
use super::driver::Driver;
use super::job::SubmitJob;
use super::plan::PartLimits;
use super::{cancel_with, prepare};
use crate::report::Silent;

/// Every line to the one API, as it is.
fn as_is(_: &batchling_core::RequestLine) -> Result<Placed<'static>, Refusal> {
    Ok(Placed {
        target: None,
        route: None,
        model: None,
    })
}

/// A Batch API whose batches end at the second retrieve, answering every
/// request but the last; its first retrieve fails with a transient error.
#[derive(Default)]
struct Inline {
    created: Mutex<Vec<(String, Bytes)>>,
    retrieves: Mutex<u32>,
    cancelled: Mutex<Vec<String>>,
}

fn info(id: &str, status: BatchStatus) -> BatchInfo {
    BatchInfo {
        id: id.into(),
        status,
        counts: BatchCounts::default(),
        results: ResultRefs {
            output: Some(format!("results of {id}")),
            errors: None,
        },
        problems: Vec::new(),
    }
}

impl BatchApi for Inline {
    async fn upload(&self, _name: &str, _requests: Bytes) -> Result<Option<String>, BatchApiError> {
        Ok(None)
    }

    async fn create(&self, batch: &NewBatch) -> Result<BatchInfo, BatchApiError> {
        let BatchInput::Inline(requests) = &batch.input else {
            panic!("an inline API is never given a file");
        };
        let mut created = self.created.lock().unwrap();
        created.push((batch.tag.clone(), requests.clone()));
        Ok(info(
            &format!("b{}", created.len()),
            BatchStatus::InProgress,
        ))
    }

    async fn find(&self, _lookup: &Lookup<'_>) -> Result<Option<BatchInfo>, BatchApiError> {
        Ok(None)
    }

    async fn retrieve(&self, id: &str) -> Result<BatchInfo, BatchApiError> {
        let mut n = self.retrieves.lock().unwrap();
        *n += 1;
        match *n {
            1 => Err(BatchApiError::Transport {
                what: format!("checking {id}"),
                message: "connection reset".into(),
            }),
            2 => Ok(info(id, BatchStatus::InProgress)),
            _ => Ok(info(id, BatchStatus::Completed)),
        }
    }

    async fn cancel(&self, id: &str) -> Result<Option<BatchInfo>, BatchApiError> {
        self.cancelled.lock().unwrap().push(id.to_owned());
        Ok(Some(info(id, BatchStatus::Cancelling)))
    }

    async fn results(
        &self,
        _batch: &BatchInfo,
        _endpoint: &str,
    ) -> Result<BatchResults, BatchApiError> {
        let requests = self.created.lock().unwrap()[0].1.clone();
        let ids: Vec<String> = requests
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                serde_json::from_slice::<serde_json::Value>(l).unwrap()["custom_id"].to_string()
            })
            .collect();
        let outcomes = ids[..ids.len() - 1]
            .iter()
            .map(|id| RequestOutcome {
                custom_id: id.trim_matches('"').to_owned(),
                status_code: Some(200),
                answer: Ok(Bytes::from_static(b"{}")),
                usage: Usage::default(),
                line: format!("{{\"custom_id\":{id}}}\n").into_bytes(),
            })
            .chain(std::iter::once(RequestOutcome {
                custom_id: "nobody".into(),
                status_code: Some(400),
                answer: Err(OutcomeError {
                    code: None,
                    message: "no such request".into(),
                }),
                usage: Usage::default(),
                line: b"{}\n".to_vec(),
            }))
            .collect();
        Ok(BatchResults {
            outcomes,
            unreadable: 0,
        })
    }

    fn limits(&self) -> BatchLimits {
        BatchLimits {
            max_requests: 10,
            max_bytes: 1 << 20,
        }
    }

    fn is_transient(&self, error: &BatchApiError) -> bool {
        matches!(error, BatchApiError::Transport { .. })
    }
}

fn job(dir: &std::path::Path) -> SubmitJob {
    let input = dir.join("in.jsonl");
    let line = |id: &str| {
        format!(
            r#"{{"custom_id":"{id}","method":"POST","url":"/v1/chat/completions","body":{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"hi"}}]}}}}"#
        )
    };
    std::fs::write(&input, [line("a"), line("b"), line("c")].join("\n")).unwrap();
    SubmitJob {
        input: input.clone(),
        output: dir.join("out.jsonl"),
        errors: dir.join("out.errors.jsonl"),
        state: dir.join("out.journal"),
        api_retry: RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        },
        ..super::tests::test_job()
    }
}

#[tokio::test(start_paused = true)]
async fn an_inline_api_runs_a_part_from_plan_to_records() {
    let dir = tempfile::tempdir().unwrap();
    let job = job(dir.path());
    let opened =
        prepare::prepare(&job, (&as_is, &|_| PartLimits::default(), None), &Silent).unwrap();
    let apis = Apis::one(Inline::default());
    let api = apis.api(None).unwrap();
    let mut d = Driver::new(
        &apis,
        &job.input,
        opened.journal,
        &Silent,
        job.api_retry,
        None,
    )
    .unwrap();
    d.launch(&job.input, &CancellationToken::new())
        .await
        .unwrap();
    {
        let created = api.created.lock().unwrap();
        assert_eq!(created.len(), 1, "one part, one batch");
        assert!(created[0].0.ends_with(":1"), "tagged with its part");
        assert_eq!(
            created[0]
                .1
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .count(),
            3
        );
    }
    // The first retrieve fails and is retried (paused time: the backoff
    // costs nothing); the batch is still running.
    let (changed, parts) = d.cycle().await.unwrap();
    assert!(changed);
    assert_eq!(parts[0].state, PartState::Submitted);
    assert_eq!(parts[0].batch_status, Some(BatchStatus::InProgress));
    assert_eq!(parts[0].file_id, None, "nothing was uploaded");
    assert_eq!(d.journal.parts().unwrap(), parts);
    let (_, parts) = d.cycle().await.unwrap();
    assert_eq!(parts[0].state, PartState::Collected);
    let c = d.journal.counts().unwrap();
    assert_eq!(
        (c.done, c.failed),
        (2, 1),
        "the unanswered one is an error line"
    );
    assert_eq!(
        d.journal.parts().unwrap(),
        parts,
        "what the cycle returns is the journal"
    );
    assert_eq!(
        *api.retrieves.lock().unwrap(),
        3,
        "an ended batch is not retrieved again"
    );
}

#[tokio::test(start_paused = true)]
async fn cancel_drives_the_same_parts_to_an_end() {
    let dir = tempfile::tempdir().unwrap();
    let job = job(dir.path());
    let opened =
        prepare::prepare(&job, (&as_is, &|_| PartLimits::default(), None), &Silent).unwrap();
    let apis = Apis::one(Inline::default());
    let mut d = Driver::new(
        &apis,
        &job.input,
        opened.journal,
        &Silent,
        job.api_retry,
        None,
    )
    .unwrap();
    d.launch(&job.input, &CancellationToken::new())
        .await
        .unwrap();
    drop(d);
    let summary = cancel_with(
        super::CancelJob {
            state: job.state.clone(),
            input: job.input.clone(),
            output: job.output.clone(),
            errors: job.errors.clone(),
            poll_interval: Duration::from_secs(1),
            prices: None,
        },
        apis,
        std::sync::Arc::new(Silent),
    )
    .await
    .unwrap();
    assert_eq!(summary.cancelled, 1);
    assert_eq!((summary.succeeded, summary.failed), (2, 1));
    let out = std::fs::read_to_string(&job.output).unwrap();
    assert_eq!(out.lines().count(), 2);
    let records = std::fs::read_to_string(&job.errors).unwrap();
    assert!(records.lines().all(|l| l.contains("\"c\"")), "{records}");
}

#[test]
fn a_journal_keeps_the_batch_api_settings_it_was_started_with() {
    let dir = tempfile::tempdir().unwrap();
    let job = job(dir.path());
    let open = |settings: Option<&str>| {
        prepare::prepare(
            &job,
            (&as_is, &|_| PartLimits::default(), settings),
            &Silent,
        )
    };
    drop(open(Some("lenient")).unwrap());
    drop(open(Some("lenient")).unwrap());
    match open(Some("strict")) {
        Err(super::SubmitError::SettingsChanged { recorded, given }) => {
            assert_eq!((recorded.as_str(), given.as_str()), ("lenient", "strict"));
        }
        other => panic!("expected SettingsChanged, got {:?}", other.err()),
    }
    // An API without settings has nothing to keep.
    drop(open(None).unwrap());
    let restart = SubmitJob {
        restart: true,
        ..job.clone()
    };
    drop(
        prepare::prepare(
            &restart,
            (&as_is, &|_| PartLimits::default(), Some("strict")),
            &Silent,
        )
        .unwrap(),
    );
}

/// Five lines: two of route `fast`, two of `smart`, one of no route.
fn write_routed_input(path: &std::path::Path) {
    let line = |id: &str, model: &str| {
        format!(
            r#"{{"custom_id":"{id}","method":"POST","url":"/v1/chat/completions","body":{{"model":"{model}","messages":[]}}}}"#
        )
    };
    let lines = [
        line("a1", "fast"),
        line("b1", "smart"),
        line("a2", "fast"),
        line("x", "nowhere"),
        line("b2", "smart"),
    ];
    std::fs::write(path, lines.join("\n")).unwrap();
}

/// Targets `t-a` (model-a) and `t-b` (model-b), each an [`Inline`] API;
/// `fast` starts on `t-a`, `smart` on `t-b`.
fn two_targets() -> Apis<Inline> {
    let target = |model: &str| BatchTarget {
        api: Inline::default(),
        model: model.into(),
        group: "team".into(),
        key_id: "k1".into(),
        price: None,
    };
    let mut apis = Apis::routed();
    apis.target("t-a", target("model-a"));
    apis.target("t-b", target("model-b"));
    assert!(apis.route("fast", "t-a") && apis.route("smart", "t-b"));
    assert!(!apis.route("slow", "no-such-target"));
    apis
}

/// The custom_id and body model of each line of `name`'s one batch.
fn sent_to(apis: &Apis<Inline>, name: &str) -> Vec<(String, String)> {
    let created = apis
        .api(Some(name))
        .unwrap()
        .created
        .lock()
        .unwrap()
        .clone();
    assert_eq!(created.len(), 1, "one batch on {name}'s API");
    created[0]
        .1
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_slice(l).unwrap();
            let field = |x: &serde_json::Value| x.as_str().unwrap_or_default().to_owned();
            (field(&v["custom_id"]), field(&v["body"]["model"]))
        })
        .collect()
}

/// A routes config's submit: each line goes to its route's primary's API,
/// its body naming that target's model; a line no route takes fails alone;
/// each record says which batch (and target) answered it.
#[tokio::test(start_paused = true)]
async fn routed_lines_go_to_their_targets_api_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let job = job(dir.path());
    write_routed_input(&job.input);
    let apis = two_targets();
    let limits = |t: Option<&str>| match apis.api(t) {
        Some(api) => job.limits.within(api.limits()),
        None => job.limits,
    };
    let opened =
        prepare::prepare(&job, (&|l| super::place(&apis, l), &limits, None), &Silent).unwrap();
    let mut d = Driver::new(
        &apis,
        &job.input,
        opened.journal,
        &Silent,
        job.api_retry,
        None,
    )
    .unwrap();
    d.launch(&job.input, &CancellationToken::new())
        .await
        .unwrap();
    let pair = |id: &str, m: &str| (id.to_owned(), m.to_owned());
    assert_eq!(
        sent_to(&apis, "t-a"),
        [pair("a1", "model-a"), pair("a2", "model-a")]
    );
    assert_eq!(
        sent_to(&apis, "t-b"),
        [pair("b1", "model-b"), pair("b2", "model-b")]
    );
    let parts = d.journal.parts().unwrap();
    let targets: Vec<Option<&str>> = parts.iter().map(|p| p.target.as_deref()).collect();
    assert_eq!(targets, [Some("t-a"), Some("t-b")]);
    while d
        .cycle()
        .await
        .unwrap()
        .1
        .iter()
        .any(|p| p.state != PartState::Collected)
    {}
    let c = d.journal.counts().unwrap();
    // Inline answers all but each batch's last line; "x" has no route.
    assert_eq!((c.done, c.failed, c.invalid), (2, 2, 1));
    let route = d.journal.request_route(0).unwrap().expect("a1 is routed");
    assert_eq!(
        (route.route.as_str(), route.answered_by.as_deref()),
        ("fast", Some("t-a"))
    );
    assert_eq!(route.attempts, 1, "the batch's one attempt");
    let report = d.journal.route_report().unwrap().unwrap();
    let t_b = report.targets.iter().find(|t| t.target == "t-b").unwrap();
    assert_eq!((t_b.answered, t_b.answered_in_batch, t_b.failed), (1, 1, 1));
}
