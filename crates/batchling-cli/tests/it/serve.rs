//! `batchling serve` as a process: killed with SIGKILL in the middle of a
//! batch, restarted on the same data directory, the batch finishes with every
//! request once and the upstream answering at most the in-flight ones twice.

use std::time::Duration;

use batchling_mock::MockConfig;

use crate::serve_client::Serve;
use crate::support::{Mock, chat_file};

const CONCURRENCY: u64 = 8;

#[test]
fn a_killed_server_resumes_its_batch_and_pays_only_for_what_was_in_flight() {
    let mock = Mock::start(MockConfig {
        latency: Duration::from_millis(20),
        ..MockConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (text, ids) = chat_file("k", 400);

    let first = Serve::start(&data, &mock.base_url(), CONCURRENCY);
    let batch = first.create_batch(text.as_bytes());
    let id = batch["id"].as_str().unwrap().to_owned();
    while first.batch(&id)["request_counts"]["completed"]
        .as_u64()
        .unwrap()
        < 100
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(first); // SIGKILL
    let answered_before: u64 = mock.ok_counts().values().sum();
    assert!(answered_before < 400, "killed mid-batch");

    let second = Serve::start(&data, &mock.base_url(), CONCURRENCY);
    let done = second.wait(&id, Duration::from_secs(60));
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["request_counts"]["completed"], 400);
    let mut got: Vec<String> = second
        .lines(done["output_file_id"].as_str().unwrap())
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap().to_owned())
        .collect();
    got.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(got, want, "every request exactly once in the output");
    let counts = mock.ok_counts();
    let twice = counts.values().filter(|&&n| n > 1).count() as u64;
    assert!(counts.values().all(|&n| n <= 2), "{counts:?}");
    assert!(
        twice <= CONCURRENCY,
        "{twice} requests answered twice; at most the {CONCURRENCY} in flight may be"
    );
}
