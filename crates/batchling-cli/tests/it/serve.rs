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

/// `batchling serve ARGS` that must refuse to start: exit 2 and a message
/// containing `want` on stderr.
fn refuses(args: &[&str], env: &[(&str, &str)], want: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_batchling"));
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(args)
        .env_remove("OPENAI_BASE_URL")
        .env_remove("OPENAI_API_KEY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(
        stderr.contains(want),
        "{args:?}: expected {want:?} in {stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing listened: {:?}", out.stdout);
}

#[test]
fn serve_refuses_to_start_without_keys_upstream_or_a_sound_config() {
    let up = ["--base-url", "http://127.0.0.1:9/v1"];
    refuses(&up, &[], "no client keys");
    refuses(
        &[&up[..], &["--auth-keys-env", "SERVE_TEST_KEYS"]].concat(),
        &[("SERVE_TEST_KEYS", " , ")],
        "holds no client keys",
    );
    refuses(&["--no-auth"], &[], "no upstream");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "[[upstream]]\nname = \"a\"\nbase_url = \"http://127.0.0.1:9/v1\"\napi_key_env = \"SERVE_TEST_MISSING\"\n",
    )
    .unwrap();
    refuses(
        &["--no-auth", "--config", config.to_str().unwrap()],
        &[],
        "$SERVE_TEST_MISSING is not set",
    );
    std::fs::write(
        &config,
        "[[upstream]]\nname = \"a\"\nbase_url = \"ftp://x\"\n",
    )
    .unwrap();
    refuses(
        &["--no-auth", "--config", config.to_str().unwrap()],
        &[],
        "invalid base URL",
    );
    refuses(
        &["--no-auth", "--mock", "--batch-window", "soon"],
        &[],
        "--batch-window",
    );
    refuses(
        &[
            "--no-auth",
            "--provider",
            "anthropic",
            "--api-key-env",
            "SERVE_TEST_NO_ANTHROPIC_KEY",
        ],
        &[],
        "$SERVE_TEST_NO_ANTHROPIC_KEY is not set",
    );
    std::fs::write(
        &config,
        "[[upstream]]\nname = \"c\"\nbase_url = \"http://127.0.0.1:9\"\nkind = \"claude\"\n",
    )
    .unwrap();
    refuses(
        &["--no-auth", "--config", config.to_str().unwrap()],
        &[],
        "line 4, upstream \"c\", kind: \"claude\" is not a kind",
    );
    // Both forms in one file: refused, naming a line of each.
    std::fs::write(
        &config,
        "[[upstream]]\nname = \"a\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\n[providers.p]\nkind = \"openai-compatible\"\nbase_url = \"http://127.0.0.1:9/v1\"\n",
    )
    .unwrap();
    refuses(
        &["--no-auth", "--config", config.to_str().unwrap()],
        &[],
        "line 1 has upstream (serve's older [[upstream]] form) and line 5 has providers (the routes form)",
    );
}

/// `serve --mock --provider anthropic`: an OpenAI batch file naming a
/// Claude model, answered through the fake's Messages API as
/// `chat.completion` objects.
#[test]
fn serve_in_front_of_claude_answers_openai_chat_lines() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start_with(
        &dir.path().join("data"),
        &["--mock", "--provider", "anthropic"],
    );
    let (text, ids) = chat_file("c", 6);
    let text = text.replace("gpt-4o-mini", "claude-haiku-4-5");
    let batch = serve.create_batch(text.as_bytes());
    let done = serve.wait(batch["id"].as_str().unwrap(), Duration::from_secs(60));
    assert_eq!(done["status"], "completed", "{done}");
    let lines = serve.lines(done["output_file_id"].as_str().unwrap());
    let got: Vec<&str> = lines
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap())
        .collect();
    assert_eq!(got, ids, "every line once, in input order");
    for l in &lines {
        let body = &l["response"]["body"];
        assert_eq!(body["object"], "chat.completion", "{l}");
        assert_eq!(body["model"], "claude-haiku-4-5");
        assert!(body["x_anthropic"]["stop_reason"].is_string(), "{body}");
        assert!(body["id"].as_str().unwrap().starts_with("msg_"), "{body}");
    }
}

/// Our two halves against each other: `batchling submit` through
/// `batchling serve` (in front of the fake provider), split into parts by
/// model and count, every id answered once.
#[test]
fn submit_runs_through_serve() {
    use crate::support::{Run, assert_each_once, chat_line};
    let mock = Mock::plain();
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(&dir.path().join("data"), &mock.base_url(), 8);
    let mut text = String::new();
    let mut want = Vec::new();
    for i in 0..90 {
        let id = format!("s-{i:02}");
        let line = chat_line(&id, &format!("question {i}"));
        // A third of the requests name another model: their own parts.
        let line = if i % 3 == 0 {
            line.replace("gpt-4o-mini", "gpt-4o")
        } else {
            line
        };
        text.push_str(&line);
        text.push('\n');
        want.push(id);
    }
    let o = Run::submit(&text)
        .args(&[
            "--base-url",
            &format!("http://{}/v1", serve.addr),
            "--max-requests-per-batch",
            "25",
        ])
        .run();
    o.assert_code(0);
    let out = o.out_lines();
    assert_each_once(&out, &want);
    assert!(o.err_lines().is_empty());
    // 30 gpt-4o requests → 2 parts, 60 gpt-4o-mini → 3 parts: five batches
    // on the server, all completed.
    let list = serve.json("GET", "/v1/batches?limit=100", "");
    let batches = list["data"].as_array().unwrap();
    assert_eq!(batches.len(), 5, "{list}");
    assert!(batches.iter().all(|b| b["status"] == "completed"));
    assert_eq!(mock.stats().ok, 90, "each request sent upstream once");
}
