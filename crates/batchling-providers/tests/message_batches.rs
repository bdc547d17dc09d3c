//! The Message Batches client (`anthropic::batches`) against the mock's
//! fake Message Batches API over loopback: create, poll, results, cancel,
//! and how a part's batch is found again without metadata.

// A test crate sees every dependency of its package and uses a few.
#![allow(unused_crate_dependencies)]

use batchling_core::clock::unix_now;
use batchling_mock::{BatchBehavior, BatchEnd, MockConfig, MockServer};
use batchling_providers::ApiKey;
use batchling_providers::anthropic::{AnthropicConfig, MessageBatchClient};
use batchling_providers::batch::{
    BatchApi, BatchApiError, BatchInput, BatchStatus, Lookup, NewBatch,
};
use bytes::Bytes;

async fn start() -> MockServer {
    MockServer::start(MockConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .expect("the mock starts")
}

fn client(server: &MockServer) -> MessageBatchClient {
    MessageBatchClient::new(&AnthropicConfig {
        base_url: server.anthropic_base_url(),
        api_key: Some(ApiKey::new("sk-ant-test")),
        ..AnthropicConfig::default()
    })
    .expect("client")
}

fn part(ids: &[&str]) -> NewBatch {
    let lines: String = ids
        .iter()
        .map(|id| {
            format!(
                r#"{{"custom_id":"{id}","method":"POST","url":"/v1/messages","body":{{"model":"claude-haiku-4-5","max_tokens":8,"messages":[{{"role":"user","content":"q {id}"}}]}}}}"#
            ) + "\n"
        })
        .collect();
    NewBatch {
        input: BatchInput::Inline(Bytes::from(lines)),
        endpoint: "/v1/messages".into(),
        tag: "job:1".into(),
        requests: ids.len() as u64,
    }
}

#[tokio::test]
async fn a_batch_runs_and_its_results_join_on_custom_id() {
    let server = start().await;
    server.set_message_batch_behavior(BatchBehavior {
        polls_to_finish: 2,
        end: BatchEnd::Complete,
        answered_before_stop: 0,
    });
    let c = client(&server);
    let b = c.create(&part(&["a", "b", "c"])).await.unwrap();
    assert_eq!(b.status, BatchStatus::InProgress);
    assert_eq!(b.counts.total, 3);
    assert_eq!(
        c.retrieve(&b.id).await.unwrap().status,
        BatchStatus::InProgress
    );
    let ended = c.retrieve(&b.id).await.unwrap();
    assert_eq!(ended.status, BatchStatus::Completed);
    assert_eq!(ended.counts.completed, 3);
    let r = c.results(&ended, "/v1/messages").await.unwrap();
    let mut ids: Vec<&str> = r.outcomes.iter().map(|o| o.custom_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["a", "b", "c"]);
    assert!(r.outcomes.iter().all(|o| o.succeeded()));
    assert_eq!(c.cancel(&b.id).await.unwrap(), None, "an ended batch");
}

#[tokio::test]
async fn a_part_is_found_by_size_and_time_not_by_what_is_known_or_older() {
    let server = start().await;
    let c = client(&server);
    let since = unix_now();
    let ours = c.create(&part(&["a", "b"])).await.unwrap();
    c.create(&part(&["x"])).await.unwrap();
    let look = |requests, known: &'static [String], since_unix| Lookup {
        tag: "job:1",
        since_unix,
        requests,
        known,
    };
    let found = c.find(&look(2, &[], since)).await.unwrap();
    assert_eq!(found.map(|b| b.id), Some(ours.id.clone()));
    assert_eq!(
        c.find(&look(5, &[], since)).await.unwrap(),
        None,
        "no batch of 5"
    );
    // Created long before the part's create: not it.
    assert_eq!(c.find(&look(2, &[], since + 3600)).await.unwrap(), None);
    // A second batch of the same size since then: which one is ours
    // cannot be told, and nothing is guessed.
    let twin = c.create(&part(&["c", "d"])).await.unwrap();
    let e = c.find(&look(2, &[], since)).await.unwrap_err();
    assert!(matches!(e, BatchApiError::Ambiguous { .. }), "{e}");
    assert!(!c.is_transient(&e));
    // Once the other is known to be another part's, ours is found.
    let known: &'static [String] = Box::leak(vec![twin.id.clone()].into_boxed_slice());
    let found = c.find(&look(2, known, since)).await.unwrap();
    assert_eq!(found.map(|b| b.id), Some(ours.id));
}

#[tokio::test]
async fn a_cancel_ends_the_batch_with_canceled_results() {
    let server = start().await;
    server.set_message_batch_behavior(BatchBehavior {
        polls_to_finish: 1,
        end: BatchEnd::Hold,
        answered_before_stop: 1,
    });
    let c = client(&server);
    let b = c.create(&part(&["a", "b"])).await.unwrap();
    let cancelling = c.cancel(&b.id).await.unwrap().unwrap();
    assert_eq!(cancelling.status, BatchStatus::Cancelling);
    let ended = c.retrieve(&b.id).await.unwrap();
    assert_eq!(ended.status, BatchStatus::Cancelled);
    let r = c.results(&ended, "/v1/messages").await.unwrap();
    let cancelled: Vec<_> = r
        .outcomes
        .iter()
        .filter(|o| {
            o.answer.as_ref().err().and_then(|e| e.code.as_deref()) == Some("batch_cancelled")
        })
        .collect();
    assert_eq!((r.outcomes.len(), cancelled.len()), (2, 1));
}
