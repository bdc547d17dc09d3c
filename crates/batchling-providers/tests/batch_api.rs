//! The Files + Batches client (`batchling-providers`) against the mock's
//! fake Batch API (`batchling-mock`), over real HTTP on loopback: the
//! calls `batchling submit` relies on, pagination and error shapes.

// A test crate sees every dependency of its package and uses a few; it may
// print what it measured or skipped.
#![allow(unused_crate_dependencies, clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;

use batchling_mock::{BatchBehavior, BatchEnd, MockConfig, MockServer};
use batchling_providers::ApiKey;
use batchling_providers::openai::classify::is_transient;
use batchling_providers::openai::{BatchClient, BatchStatus, ClientConfig};

async fn start() -> MockServer {
    MockServer::start(MockConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .expect("the mock starts")
}

fn client(server: &MockServer, key: &str) -> BatchClient {
    BatchClient::new(&ClientConfig {
        base_url: server.base_url(),
        api_key: Some(ApiKey::new(key)),
        ..ClientConfig::default()
    })
    .expect("client")
}

const LINE: &str = r#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}}
"#;

#[tokio::test]
async fn a_batch_is_found_by_its_metadata_across_pages() {
    let server = start().await;
    let c = client(&server, "sk-test-key-1");
    let file = c
        .upload_file("x.jsonl", bytes::Bytes::from_static(LINE.as_bytes()))
        .await
        .unwrap();
    for i in 0..130 {
        let meta = HashMap::from([("batchling_part".to_owned(), format!("job:{i}"))]);
        c.create_batch(&file.id, "/v1/chat/completions", &meta)
            .await
            .unwrap();
    }
    // Newest first, 100 a page: the oldest is on the second page.
    let (page, more) = c.list_batches(None, 100).await.unwrap();
    assert_eq!(page.len(), 100);
    assert!(more);
    let (rest, more) = c.list_batches(Some(&page[99].id), 100).await.unwrap();
    assert_eq!(rest.len(), 30);
    assert!(!more);
    let found = c.find_batch("batchling_part", "job:0", 0).await.unwrap();
    assert_eq!(found.unwrap().metadata_str("batchling_part"), Some("job:0"));
    assert!(
        c.find_batch("batchling_part", "job:999", 0)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_batch_runs_and_its_files_download() {
    let server = start().await;
    server.set_batch_behavior(BatchBehavior {
        polls_to_finish: 2,
        end: BatchEnd::Complete,
        answered_before_stop: 0,
    });
    let c = client(&server, "sk-test-key-2");
    let file = c
        .upload_file("x.jsonl", bytes::Bytes::from_static(LINE.as_bytes()))
        .await
        .unwrap();
    assert_eq!(
        &c.file_content(&file.id).await.unwrap()[..],
        LINE.as_bytes()
    );
    let b = c
        .create_batch(&file.id, "/v1/chat/completions", &HashMap::new())
        .await
        .unwrap();
    assert_eq!(b.status, BatchStatus::Validating);
    let b = c.retrieve_batch(&b.id).await.unwrap();
    assert_eq!(b.status, BatchStatus::InProgress);
    let b = c.retrieve_batch(&b.id).await.unwrap();
    assert_eq!(b.status, BatchStatus::Completed);
    assert_eq!(b.request_counts.unwrap().completed, 1);
    assert!(b.error_file_id.is_none());
    let out = c
        .file_content(b.output_file_id.as_deref().unwrap())
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["custom_id"], "a");
    assert_eq!(v["response"]["status_code"], 200);
    assert_eq!(
        v["response"]["body"]["choices"][0]["message"]["content"],
        "echo:hi"
    );
    // Cancelling a finished batch is refused, and not worth retrying.
    let e = c.cancel_batch(&b.id).await.unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert!(!is_transient(&e));
}

#[tokio::test]
async fn errors_are_typed_and_never_show_the_key() {
    let server = start().await;
    let c = client(&server, "sk-test-key-3");
    let e = c.retrieve_batch("batch_nope").await.unwrap_err();
    assert_eq!(e.status(), Some(404));
    assert!(!is_transient(&e));
    assert!(e.to_string().contains("No such Batch object"), "{e}");

    server.require_batch_api_key(Some("sk-right"));
    let e = c.list_batches(None, 10).await.unwrap_err();
    assert!(e.is_auth());
    let text = format!("{e} {e:?}");
    assert!(!text.contains("sk-test-key-3"), "{text}");

    server.require_batch_api_key(None);
    server.fail_next_batch_calls(1, 0, 503);
    let e = c
        .upload_file("x.jsonl", bytes::Bytes::from_static(LINE.as_bytes()))
        .await
        .unwrap_err();
    assert!(is_transient(&e));
    server.fail_next_batch_calls(0, 1, 429);
    let file = c
        .upload_file("x.jsonl", bytes::Bytes::from_static(LINE.as_bytes()))
        .await
        .unwrap();
    let e = c
        .create_batch(&file.id, "/v1/chat/completions", &HashMap::new())
        .await
        .unwrap_err();
    assert!(is_transient(&e));
    assert!(e.retry_after().is_some(), "429 carries retry-after-ms");
}
