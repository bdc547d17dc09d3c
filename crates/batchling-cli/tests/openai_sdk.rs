//! The official `openai` Python package against `batchling serve`, in front of
//! the fake provider: `scripts/openai-sdk/client_test.py` uploads, creates,
//! polls, downloads, auto-paginates, cancels, deletes, and checks 404s and a
//! bad key, exactly as user code would; refusals of 20 MB uploads (401, 413)
//! read as such, never as connection errors; purposes a File cannot carry
//! refused; the fake provider's answers valid for the SDK's types.
//!
//! The package (pinned) is installed by `scripts/openai-sdk/setup.sh`; the test
//! is skipped, with a `SKIPPED:` line, only when that script exits 3 (cannot
//! install). Any other failure fails the test.

// A test crate sees every dependency of its package and uses a few; it may
// print what it measured or skipped.
#![allow(unused_crate_dependencies, clippy::print_stdout, clippy::print_stderr)]

use std::process::{Command, Stdio};

mod support;
use support::{log_tail, repo, start, start_serve};

/// The venv's python with the pinned SDK (setup.sh installs it once), or
/// `None` when it cannot be installed (the test skips).
fn sdk_python() -> Option<String> {
    let setup = Command::new("bash")
        .arg(repo().join("scripts/openai-sdk/setup.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run setup.sh");
    if setup.status.code() == Some(3) {
        support::skip("the openai package cannot be installed (see the setup.sh message above)");
        return None;
    }
    assert!(
        setup.status.success(),
        "setup.sh failed: {:?}",
        setup.status
    );
    Some(String::from_utf8(setup.stdout).unwrap().trim().to_owned())
}

#[test]
fn the_official_openai_sdk_works_against_batchling_serve() {
    let Some(python) = sdk_python() else { return };

    let dir = tempfile::tempdir().unwrap();
    let (_mock, mock_url) = start(
        &["mock", "--port", "0", "--latency-ms", "50"],
        &[],
        &dir.path().join("mock.log"),
    );
    let serve_log = dir.path().join("serve.log");
    let (mut serve, url) = start_serve(
        dir.path(),
        &mock_url,
        "SDK_TEST_KEYS",
        "sdk-key-a,sdk-key-b",
        &["--concurrency", "2", "--max-upload-mb", "2"],
    );

    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let client = Command::new(&python)
        .arg(repo().join("scripts/openai-sdk/client_test.py"))
        .args([
            &url,
            "sdk-key-a",
            "sdk-key-b",
            work.to_str().unwrap(),
            &mock_url,
        ])
        .output()
        .expect("run the client script");
    let stdout = String::from_utf8_lossy(&client.stdout);
    assert!(
        client.status.success() && stdout.trim_end().ends_with("OK"),
        "client script failed\nstdout: {stdout}\nstderr: {}\nserver log tail: {}",
        String::from_utf8_lossy(&client.stderr),
        log_tail(&serve_log)
    );

    // SIGTERM: a graceful stop, exit 0.
    let pid = serve.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = serve.0.wait().unwrap();
    assert_eq!(status.code(), Some(0), "serve exits 0 after SIGTERM");
    let log = std::fs::read_to_string(&serve_log).unwrap();
    for key in ["sdk-key-a", "sdk-key-b"] {
        assert!(!log.contains(key), "a client key reached the log");
    }
    assert!(log.contains("shutting down"), "{log}");
}

/// Issue #16: `serve --mock --provider anthropic` in front of the fake's
/// Messages API; `scripts/openai-sdk/claude_test.py` uploads OpenAI batch
/// files naming Claude models and reads the answers with the SDK's
/// `ChatCompletion` (and a native `/v1/messages` batch's message objects).
#[test]
fn the_official_openai_sdk_reads_claude_answers_through_serve() {
    let Some(python) = sdk_python() else { return };

    let dir = tempfile::tempdir().unwrap();
    let serve_log = dir.path().join("serve.log");
    let (_serve, url) = start(
        &[
            "serve",
            "--mock",
            "--provider",
            "anthropic",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
            "--auth-keys-env",
            "SDK_CLAUDE_KEYS",
        ],
        &[("SDK_CLAUDE_KEYS", "sdk-claude-key")],
        &serve_log,
    );
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let o = Command::new(&python)
        .arg(repo().join("scripts/openai-sdk/claude_test.py"))
        .args([&url, "sdk-claude-key", work.to_str().unwrap()])
        .output()
        .expect("run the client script");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && stdout.trim_end().ends_with("OK"),
        "claude_test.py failed\nstdout: {stdout}\nstderr: {}\nserver log tail: {}",
        String::from_utf8_lossy(&o.stderr),
        log_tail(&serve_log)
    );
}

/// Issue #13: the README's Python snippet for `serve`, run as written (only
/// the port differs: the server picks a free one) against the server it
/// names, `serve --mock` with the key of the snippet.
#[test]
fn the_readme_serve_snippet_runs_as_written() {
    let Some(python) = sdk_python() else { return };

    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let serve = &readme[readme
        .find("## `batchling serve`")
        .expect("the serve section")..];
    let from = serve.find("```python\n").expect("a Python snippet") + "```python\n".len();
    let snippet = &serve[from..from + serve[from..].find("```").unwrap()];
    assert!(snippet.contains("http://127.0.0.1:8080/v1"), "{snippet}");

    let dir = tempfile::tempdir().unwrap();
    let (_serve, url) = start(
        &[
            "serve",
            "--mock",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
            "--auth-keys-env",
            "BATCHLING_CLIENT_KEYS",
        ],
        &[("BATCHLING_CLIENT_KEYS", "key-for-alice")],
        &dir.path().join("serve.log"),
    );
    let snippet = snippet.replace("http://127.0.0.1:8080/v1", &url);
    let o = Command::new(&python)
        .args(["-c", &snippet])
        .current_dir(repo())
        .output()
        .expect("run the snippet");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "the snippet failed: {}\n{stdout}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.starts_with("completed"), "{stdout}");
    let answers = stdout
        .lines()
        .filter(|l| l.contains("\"custom_id\""))
        .count();
    assert_eq!(
        answers, 40,
        "every line of examples/chat.jsonl answered: {stdout}"
    );
}
