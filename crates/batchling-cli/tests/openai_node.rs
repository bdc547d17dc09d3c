//! The official `openai` npm package, 4.x and 7.x, against `batchling serve`
//! in front of the fake provider: `scripts/openai-node/client_test.mjs`
//! uploads, creates, polls, downloads, auto-paginates, cancels, and checks
//! that refusals of 20 MB uploads (a wrong key: `AuthenticationError`; over
//! the cap: a 413 `APIError`) never read as connection errors.
//!
//! Each pinned version is installed by `scripts/openai-node/setup.sh`; a
//! version is skipped, with a `SKIPPED:` line, only when that script exits 3
//! (no node or npm, registry unreachable). Any other failure fails the test.

// A test crate sees every dependency of its package and uses a few; it may
// print what it measured or skipped.
#![allow(unused_crate_dependencies, clippy::print_stdout, clippy::print_stderr)]

use std::path::Path;
use std::process::{Command, Stdio};

mod support;
use support::{log_tail, repo, start, start_serve};

/// Install the SDK of `major`: its directory and the node to run it with,
/// or `None` (skipped) when it cannot be installed.
fn install(major: &str) -> Option<(String, String)> {
    let setup = Command::new("bash")
        .arg(repo().join("scripts/openai-node/setup.sh"))
        .arg(major)
        .stderr(Stdio::inherit())
        .output();
    let setup = match setup {
        Ok(s) => s,
        Err(e) => {
            support::skip(&format!("openai {major}.x: cannot run bash: {e}"));
            return None;
        }
    };
    if setup.status.code() == Some(3) {
        support::skip(&format!(
            "openai {major}.x cannot be installed (see the setup.sh message above)"
        ));
        return None;
    }
    assert!(
        setup.status.success(),
        "setup.sh {major} failed: {:?}",
        setup.status
    );
    let out = String::from_utf8(setup.stdout).unwrap();
    let mut lines = out.lines();
    let dir = lines
        .next()
        .expect("setup.sh prints the directory")
        .to_owned();
    let node = lines.next().expect("setup.sh prints the node").to_owned();
    Some((dir, node))
}

fn run_against_serve(major: &str, sdk_dir: &str, node: &str, dir: &Path) {
    let (_mock, mock_url) = start(
        &["mock", "--port", "0", "--latency-ms", "50"],
        &[],
        &dir.join("mock.log"),
    );
    let serve_log = dir.join("serve.log");
    let (_serve, url) = start_serve(
        dir,
        &mock_url,
        "NODE_TEST_KEYS",
        "node-key-a,node-key-b",
        &["--concurrency", "2", "--max-upload-mb", "2"],
    );
    let work = dir.join("work");
    std::fs::create_dir(&work).unwrap();
    let client = Command::new(node)
        .arg(repo().join("scripts/openai-node/client_test.mjs"))
        .args([
            sdk_dir,
            &url,
            "node-key-a",
            "node-key-b",
            work.to_str().unwrap(),
        ])
        .output()
        .expect("run the client script");
    let stdout = String::from_utf8_lossy(&client.stdout);
    eprint!("{stdout}");
    assert!(
        client.status.success() && stdout.trim_end().ends_with("OK"),
        "openai {major}.x client script failed\nstdout: {stdout}\nstderr: {}\nserver log tail: {}",
        String::from_utf8_lossy(&client.stderr),
        log_tail(&serve_log)
    );
    let log = std::fs::read_to_string(&serve_log).unwrap();
    for key in ["node-key-a", "node-key-b", "not-a-key"] {
        assert!(!log.contains(key), "a client key reached the log");
    }
}

#[test]
fn the_official_openai_node_sdk_4_works_against_batchling_serve() {
    if let Some((sdk, node)) = install("4") {
        run_against_serve("4", &sdk, &node, tempfile::tempdir().unwrap().path());
    }
}

#[test]
fn the_official_openai_node_sdk_7_works_against_batchling_serve() {
    if let Some((sdk, node)) = install("7") {
        run_against_serve("7", &sdk, &node, tempfile::tempdir().unwrap().path());
    }
}
