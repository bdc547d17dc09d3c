//! `batchling serve`'s JSON as the Rust `async-openai` crate reads it: a
//! batch, a `files.list()` page and output files of chat, responses and
//! embeddings batches (bodies from the fake provider) deserialize into its
//! types (`Batch`, `ListFilesResponse`, `BatchRequestOutput` and each
//! endpoint's answer).
//!
//! async-openai stays out of the workspace's build: the checker is a separate
//! project, `scripts/async-openai-check/` (own Cargo.lock, pinned 0.43.0,
//! types-only features), built here into `target/async-openai-check`. The
//! test prints `SKIPPED:` and passes when it cannot be built (crates.io
//! unreachable on a cold cache) or when curl, which plays the client here, is
//! missing.

// A test crate sees every dependency of its package and uses a few; it may
// print what it measured or skipped.
#![allow(unused_crate_dependencies, clippy::print_stdout, clippy::print_stderr)]

use std::path::Path;
use std::process::{Command, Stdio};

mod support;
use support::{log_tail, repo, start, start_serve};

const KEY: &str = "async-openai-key";

/// `curl ARGS` with the client key; the body of a 2xx answer.
fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--fail-with-body", "-H"])
        .arg(format!("Authorization: Bearer {KEY}"))
        .args(args)
        .output()
        .expect("run curl");
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl {args:?}: {body} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    body
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Upload `lines` for `endpoint`, run the batch to completion; the batch's
/// JSON and its output file's content.
fn run_batch(url: &str, dir: &Path, endpoint: &str, body: &str) -> (String, String) {
    let name = endpoint.trim_start_matches("/v1/").replace('/', "_");
    let input = dir.join(format!("{name}.jsonl"));
    let lines: String = (0..3)
        .map(|i| format!("{{\"custom_id\":\"{name}-{i}\",\"method\":\"POST\",\"url\":\"{endpoint}\",\"body\":{body}}}\n"))
        .collect();
    std::fs::write(&input, lines).unwrap();
    let file = json(&curl(&[
        "-F",
        "purpose=batch",
        "-F",
        &format!("file=@{}", input.display()),
        &format!("{url}/files"),
    ]));
    let create = format!(
        "{{\"input_file_id\":{},\"endpoint\":\"{endpoint}\",\"completion_window\":\"24h\"}}",
        file["id"]
    );
    let batch = json(&curl(&[
        "-H",
        "Content-Type: application/json",
        "-d",
        &create,
        &format!("{url}/batches"),
    ]));
    let id = batch["id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let text = curl(&[&format!("{url}/batches/{id}")]);
        let b = json(&text);
        if b["status"] == "completed" {
            let out = curl(&[&format!(
                "{url}/files/{}/content",
                b["output_file_id"].as_str().unwrap()
            )]);
            return (text, out);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "batch did not finish: {text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn async_openai_reads_serves_batches_files_and_outputs() {
    if Command::new("curl").arg("--version").output().is_err() {
        support::skip("curl not found (it plays the client in this test)");
        return;
    }
    let project = repo().join("scripts/async-openai-check");
    let target = repo().join("target/async-openai-check");
    eprintln!(
        "building scripts/async-openai-check (async-openai 0.43.0; a few minutes when cold) ..."
    );
    let build = Command::new(env!("CARGO"))
        .args(["build", "--locked", "--quiet", "--manifest-path"])
        .arg(project.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .stderr(Stdio::inherit())
        .status()
        .expect("run cargo");
    if !build.success() {
        support::skip("scripts/async-openai-check does not build here (see cargo's message above)");
        return;
    }
    let checker = target.join("debug/async-openai-check");

    let dir = tempfile::tempdir().unwrap();
    let (_mock, mock_url) = start(&["mock", "--port", "0"], &[], &dir.path().join("mock.log"));
    let (_serve, url) = start_serve(dir.path(), &mock_url, "ASYNC_OPENAI_KEYS", KEY, &[]);
    let mut args = Vec::new();
    let mut save = |kind: &str, name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        args.push(kind.to_owned());
        args.push(p.display().to_string());
    };
    for (endpoint, kind, body) in [
        (
            "/v1/chat/completions",
            "output-chat",
            r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#,
        ),
        (
            "/v1/responses",
            "output-responses",
            r#"{"model":"gpt-4o-mini","input":"hello","max_output_tokens":16}"#,
        ),
        (
            "/v1/embeddings",
            "output-embeddings",
            r#"{"model":"text-embedding-3-small","input":"hello"}"#,
        ),
    ] {
        let (batch, output) = run_batch(&url, dir.path(), endpoint, body);
        save("batch", &format!("{kind}.batch.json"), &batch);
        save(kind, &format!("{kind}.jsonl"), &output);
    }
    save(
        "files-list",
        "files.json",
        &curl(&[&format!("{url}/files")]),
    );
    let check = Command::new(&checker)
        .args(&args)
        .output()
        .expect("run the checker");
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success() && stdout.trim_end().ends_with("OK"),
        "async-openai cannot read serve's JSON\nstdout: {stdout}\nstderr: {}\nserver log tail: {}",
        String::from_utf8_lossy(&check.stderr),
        log_tail(&dir.path().join("serve.log"))
    );
}
