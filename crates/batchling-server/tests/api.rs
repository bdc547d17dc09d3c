//! `batchling serve` over real HTTP, in front of the fake provider.

// A test crate sees every dependency of its package and uses a few; it may
// print what it measured or skipped.
#![allow(unused_crate_dependencies, clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use batchling_mock::{MockConfig, MockServer};
use batchling_providers::ApiKey;
use batchling_server::Server;
use batchling_server::config::{ServeConfig, UpstreamConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};

const KEY_A: &str = "client-a-key";
const KEY_B: &str = "client-b-key";

struct Env {
    mock: MockServer,
    server: Option<Server>,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn start_server(
    dir: &Path,
    mock: &MockServer,
    tweak: impl FnOnce(&mut ServeConfig),
) -> Server {
    let mut up = UpstreamConfig::new("fake", &mock.base_url());
    up.concurrency = 16;
    let mut cfg = ServeConfig::new(dir.to_owned(), vec![up]);
    cfg.auth_keys = vec![ApiKey::new(KEY_A), ApiKey::new(KEY_B)];
    tweak(&mut cfg);
    Server::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("server starts")
}

impl Env {
    async fn new(mock: MockConfig, tweak: impl FnOnce(&mut ServeConfig)) -> Env {
        let mock = MockServer::start(mock, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let server = start_server(dir.path(), &mock, tweak).await;
        Env {
            mock,
            server: Some(server),
            dir,
            http: http(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.as_ref().unwrap().base_url())
    }

    /// A request with client A's key, to finish by hand.
    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path)).bearer_auth(KEY_A)
    }

    async fn get(&self, key: &str, path: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, key: &str, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn upload(
        &self,
        key: &str,
        name: &str,
        purpose: &str,
        content: Vec<u8>,
    ) -> (StatusCode, Value) {
        let form = reqwest::multipart::Form::new()
            .text("purpose", purpose.to_owned())
            .part(
                "file",
                reqwest::multipart::Part::bytes(content).file_name(name.to_owned()),
            );
        let r = self
            .http
            .post(self.url("/files"))
            .bearer_auth(key)
            .multipart(form)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn content(&self, key: &str, file_id: &str) -> String {
        let r = self
            .http
            .get(self.url(&format!("/files/{file_id}/content")))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }

    /// Upload `lines` and create a batch; returns the batch.
    async fn batch(&self, key: &str, lines: &str) -> Value {
        let (s, f) = self
            .upload(key, "in.jsonl", "batch", lines.as_bytes().to_vec())
            .await;
        assert_eq!(s, 200, "{f}");
        let (s, b) = self
            .post(
                key,
                "/batches",
                json!({"input_file_id": f["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h", "metadata": {"job": "t"}}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["status"], "validating");
        b
    }

    /// A mock answering after `latency_ms`, behind an upstream with
    /// `concurrency` slots.
    async fn slow(
        latency_ms: u64,
        concurrency: usize,
        tweak: impl FnOnce(&mut ServeConfig),
    ) -> Env {
        let mock = MockConfig {
            latency: Duration::from_millis(latency_ms),
            ..MockConfig::default()
        };
        Env::new(mock, move |c| {
            c.upstreams[0].concurrency = concurrency;
            tweak(c);
        })
        .await
    }

    /// Poll until the batch has at least `n` answers.
    async fn wait_completed(&self, key: &str, id: &str, n: u64) {
        loop {
            let (_, b) = self.get(key, &format!("/batches/{id}")).await;
            if b["request_counts"]["completed"].as_u64().unwrap() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Poll until the batch reaches a terminal status.
    async fn wait(&self, key: &str, id: &str) -> Value {
        loop {
            let (s, b) = self.get(key, &format!("/batches/{id}")).await;
            assert_eq!(s, 200, "{b}");
            if ["completed", "failed", "expired", "cancelled"]
                .contains(&b["status"].as_str().unwrap())
            {
                return b;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn chat_lines(prefix: &str, n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "{{\"custom_id\":\"{prefix}{i}\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{{\"model\":\"gpt-4o-mini\",\"messages\":[{{\"role\":\"user\",\"content\":\"hello {i}\"}}],\"max_tokens\":5}}}}\n"
            )
        })
        .collect()
}

fn parse_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[expect(
    clippy::too_many_lines,
    reason = "one batch's whole life, step by step, as a client sees it"
)]
#[tokio::test]
async fn a_batch_runs_to_completion_with_output_and_error_files() {
    let env = Env::new(MockConfig::default(), |_| {}).await;
    let mut lines = chat_lines("ok-", 40);
    lines.push_str("{\"custom_id\":\"bad-1\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"__fail_400__\"}]}}\n");
    let b = env.batch(KEY_A, &lines).await;
    let id = b["id"].as_str().unwrap();
    assert!(id.starts_with("batch_"));
    assert_eq!(
        b["expires_at"].as_u64().unwrap(),
        b["created_at"].as_u64().unwrap() + 86400
    );
    for key in [
        "in_progress_at",
        "finalizing_at",
        "completed_at",
        "failed_at",
        "expired_at",
        "cancelling_at",
        "cancelled_at",
        "output_file_id",
        "error_file_id",
        "errors",
    ] {
        assert!(
            b.get(key).is_some_and(Value::is_null),
            "{key} must be present and null: {b}"
        );
    }

    let done = env.wait(KEY_A, id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        done["request_counts"],
        json!({"total": 41, "completed": 40, "failed": 1})
    );
    assert_eq!(done["metadata"], json!({"job": "t"}));
    assert_eq!(done["model"], "gpt-4o-mini");
    for key in ["in_progress_at", "finalizing_at", "completed_at"] {
        assert!(done[key].is_u64(), "{key}: {done}");
    }
    assert!(done["usage"]["input_tokens"].as_u64().unwrap() > 0);

    let out_id = done["output_file_id"].as_str().unwrap();
    let (s, f) = env.get(KEY_A, &format!("/files/{out_id}")).await;
    assert_eq!(s, 200);
    assert_eq!(f["purpose"], "batch_output");
    assert_eq!(f["filename"], format!("{id}_output.jsonl"));
    let out = parse_lines(&env.content(KEY_A, out_id).await);
    assert_eq!(out.len(), 40);
    let mut ids: Vec<&str> = out
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 40, "every custom_id exactly once");
    for l in &out {
        assert_eq!(l["response"]["status_code"], 200);
        assert!(
            l["response"]["body"].is_object(),
            "body is an object, not a string"
        );
        assert!(l["error"].is_null());
        assert_eq!(env.mock.ok_count_for(l["custom_id"].as_str().unwrap()), 1);
    }
    let errs = parse_lines(
        &env.content(KEY_A, done["error_file_id"].as_str().unwrap())
            .await,
    );
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0]["custom_id"], "bad-1");
    assert_eq!(errs[0]["response"]["status_code"], 400);

    // Files list shows the input and both results, newest first by default.
    let (_, list) = env.get(KEY_A, "/files").await;
    let purposes: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["purpose"].as_str().unwrap())
        .collect();
    assert_eq!(purposes, ["batch_output", "batch_output", "batch"]);
    let (_, only) = env.get(KEY_A, "/files?purpose=batch&order=asc").await;
    assert_eq!(only["data"].as_array().unwrap().len(), 1);
    assert_eq!(only["has_more"], false);

    // Metrics saw the requests and the batch.
    let m = env
        .http
        .get(env.url("/../metrics").replace("/v1/../", "/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("batchling_batches{status=\"completed\"} 1"),
        "{m}"
    );
    let sent: f64 = m
        .lines()
        .find(|l| l.starts_with("batchling_upstream_requests_total{upstream=\"fake\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(sent, 41.0);
    let value = |name: &str| -> f64 {
        m.lines()
            .find(|l| l.starts_with(&format!("{name}{{upstream=\"fake\"}}")))
            .and_then(|l| l.rsplit(' ').next())
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(value("batchling_upstream_errors_total"), 1.0, "the one 400");
    assert_eq!(value("batchling_upstream_rate_limited_total"), 0.0);
    assert_eq!(
        value("batchling_upstream_input_tokens_total"),
        done["usage"]["input_tokens"].as_f64().unwrap()
    );
    assert!(
        value("batchling_upstream_cost_usd_total") > 0.0,
        "gpt-4o-mini has a price"
    );
}

#[tokio::test]
async fn batches_go_to_the_upstream_that_serves_their_model() {
    let other = MockServer::start(MockConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let other_url = other.base_url();
    let env = Env::new(MockConfig::default(), move |c| {
        c.upstreams[0].name = "mini".into();
        c.upstreams[0].models = vec!["gpt-4o-mini*".into()];
        c.upstreams.push(UpstreamConfig::new("rest", &other_url));
    })
    .await;
    let b = env.batch(KEY_A, &chat_lines("m", 3)).await;
    assert_eq!(
        env.wait(KEY_A, b["id"].as_str().unwrap()).await["status"],
        "completed"
    );
    let other_model = chat_lines("o", 2).replace("gpt-4o-mini", "llama-local");
    let b = env.batch(KEY_A, &other_model).await;
    assert_eq!(
        env.wait(KEY_A, b["id"].as_str().unwrap()).await["status"],
        "completed"
    );
    assert_eq!(
        env.mock.stats().ok,
        3,
        "gpt-4o-mini went to the first upstream"
    );
    assert_eq!(other.stats().ok, 2, "everything else to the second");
    // One batch cannot need two upstreams.
    let mixed = chat_lines("x", 1) + &chat_lines("y", 1).replace("gpt-4o-mini", "llama-local");
    let b = env.batch(KEY_A, &mixed).await;
    let done = env.wait(KEY_A, b["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["errors"]["data"][0]["code"], "model_mismatch");
    assert_eq!(done["errors"]["data"][0]["line"], 2);
    other.shutdown().await;
}

#[tokio::test]
async fn an_invalid_file_fails_the_batch_with_line_numbers() {
    let env = Env::new(MockConfig::default(), |_| {}).await;
    let mut lines = chat_lines("a", 2);
    lines.push_str("not json\n");
    lines.push_str(&chat_lines("a", 1)); // duplicate of a0
    lines.push_str("{\"custom_id\":\"e\",\"method\":\"POST\",\"url\":\"/v1/embeddings\",\"body\":{\"model\":\"m\",\"input\":\"x\"}}\n");
    let b = env.batch(KEY_A, &lines).await;
    let done = env.wait(KEY_A, b["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "failed");
    assert!(done["failed_at"].is_u64());
    assert!(done["output_file_id"].is_null() && done["error_file_id"].is_null());
    let errors = done["errors"]["data"].as_array().unwrap();
    let got: Vec<(u64, &str)> = errors
        .iter()
        .map(|e| (e["line"].as_u64().unwrap(), e["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            (3, "invalid_json_line"),
            (4, "duplicate_custom_id"),
            (5, "url_mismatch")
        ]
    );
    assert_eq!(done["errors"]["object"], "list");
    assert_eq!(
        env.mock.stats().ok,
        0,
        "nothing is sent for an invalid file"
    );

    let (_, empty) = env
        .upload(KEY_A, "e.jsonl", "batch", b"\n\n".to_vec())
        .await;
    let (_, b) = env.post(KEY_A, "/batches", json!({"input_file_id": empty["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"})).await;
    let done = env.wait(KEY_A, b["id"].as_str().unwrap()).await;
    assert_eq!(done["errors"]["data"][0]["code"], "empty_file");
}

#[tokio::test]
async fn keys_are_required_and_owners_are_isolated() {
    let env = Env::new(MockConfig::default(), |_| {}).await;
    let r = env.http.get(env.url("/files")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(body["error"].get("param").is_some());
    let (s, body) = env.get("wrong-key-123", "/batches").await;
    assert_eq!(s, 401);
    assert!(
        !body.to_string().contains("wrong-key-123"),
        "the key is never echoed"
    );

    let b = env.batch(KEY_A, &chat_lines("x", 3)).await;
    let id = b["id"].as_str().unwrap();
    let file = b["input_file_id"].as_str().unwrap();
    let (s, e) = env.get(KEY_B, &format!("/batches/{id}")).await;
    assert_eq!(s, 404);
    assert_eq!(e["error"]["message"], format!("No such Batch object: {id}"));
    assert_eq!(env.get(KEY_B, &format!("/files/{file}")).await.0, 404);
    assert_eq!(
        env.get(KEY_B, &format!("/files/{file}/content")).await.0,
        404
    );
    let (s, _) = env
        .post(KEY_B, &format!("/batches/{id}/cancel"), json!({}))
        .await;
    assert_eq!(s, 404);
    let (s, e) = env.post(KEY_B, "/batches", json!({"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h"})).await;
    assert_eq!(
        (s, e["error"]["param"].as_str()),
        (StatusCode::BAD_REQUEST, Some("input_file_id"))
    );
    assert_eq!(env.get(KEY_B, "/batches").await.1["data"], json!([]));
    assert_eq!(env.get(KEY_B, "/files").await.1["data"], json!([]));
    env.wait(KEY_A, id).await;
}

#[expect(
    clippy::too_many_lines,
    reason = "a list of bad requests and the answer each gets"
)]
#[tokio::test]
async fn bad_requests_get_clear_400s_never_a_crash() {
    let env = Env::new(MockConfig::default(), |c| c.max_upload_bytes = 1000).await;
    // Over the cap: 413.
    let (s, e) = env
        .upload(KEY_A, "big.jsonl", "batch", vec![b'x'; 5000])
        .await;
    assert_eq!(s, 413, "{e}");
    assert_eq!(e["error"]["code"], "file_too_large");
    // Not multipart.
    let r = env
        .req(reqwest::Method::POST, "/files")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Malformed multipart.
    let r = env.req(reqwest::Method::POST, "/files")
        .header("content-type", "multipart/form-data; boundary=XYZ")
        .body("--XYZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jsonl\"\r\n\r\nabc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("multipart"),
        "{e}"
    );
    // Wrong purpose, wrong extension, missing purpose.
    assert_eq!(
        env.upload(KEY_A, "a.jsonl", "nonsense", b"{}".to_vec())
            .await
            .0,
        400
    );
    // OpenAI takes `evals` on upload, but no File type can carry it (one such
    // file breaks a typed files.list()), so it is refused by name.
    for purpose in [
        "evals",
        "batch_output",
        "assistants_output",
        "fine-tune-results",
    ] {
        let (s, e) = env.upload(KEY_A, "a.jsonl", purpose, b"{}".to_vec()).await;
        assert_eq!(s, 400, "{purpose}: {e}");
        assert_eq!(e["error"]["param"], "purpose");
        let msg = e["error"]["message"].as_str().unwrap();
        assert!(msg.contains(&format!("{purpose:?}")), "{msg}");
        assert!(
            msg.contains("assistants, batch, fine-tune, vision, user_data"),
            "{msg}"
        );
    }
    let (_, list) = env.get(KEY_A, "/files").await;
    assert!(
        list["data"].as_array().unwrap().iter().all(|f| [
            "assistants",
            "assistants_output",
            "batch",
            "batch_output",
            "fine-tune",
            "fine-tune-results",
            "vision",
            "user_data"
        ]
        .contains(&f["purpose"].as_str().unwrap())),
        "{list}"
    );
    let (s, e) = env.upload(KEY_A, "a.txt", "batch", b"{}".to_vec()).await;
    assert_eq!(
        (s, e["error"]["message"].as_str().unwrap()),
        (
            StatusCode::BAD_REQUEST,
            "Invalid file format for Batch API. Must be .jsonl"
        )
    );
    // A traversal-looking filename is stored as its last component only.
    let (s, f) = env
        .upload(KEY_A, "../../etc/passwd.jsonl", "batch", b"{}".to_vec())
        .await;
    assert_eq!(s, 200);
    assert_eq!(f["filename"], "passwd.jsonl");
    // Ids that are not ours.
    for id in ["file-..%2F..%2Fmeta.sqlite", "file-abc.def", "nope"] {
        assert_eq!(env.get(KEY_A, &format!("/files/{id}")).await.0, 404, "{id}");
    }
    // Bad JSON and bad fields on create.
    let r = env
        .req(reqwest::Method::POST, "/batches")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    for (body, param) in [
        (
            json!({"endpoint": "/v1/chat/completions", "completion_window": "24h"}),
            "input_file_id",
        ),
        (
            json!({"input_file_id": f["id"], "endpoint": "/v1/images/generations", "completion_window": "24h"}),
            "endpoint",
        ),
        (
            json!({"input_file_id": f["id"], "endpoint": "/v1/chat/completions", "completion_window": "1h"}),
            "completion_window",
        ),
        (
            json!({"input_file_id": f["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h", "metadata": {"k": 1}}),
            "metadata",
        ),
    ] {
        let (s, e) = env.post(KEY_A, "/batches", body).await;
        assert_eq!(s, 400, "{e}");
        assert_eq!(e["error"]["param"], param, "{e}");
    }
    // Unknown routes and methods still answer in the envelope.
    let (s, e) = env.get(KEY_A, "/nothing-here").await;
    assert_eq!(s, 404);
    assert!(e["error"]["message"].is_string());
    let r = env
        .req(reqwest::Method::PUT, "/files")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    // A trailing slash is fine; so is health.
    assert_eq!(env.get(KEY_A, "/files/").await.0, 200);
    let h = env
        .http
        .get(env.url("/../health").replace("/v1/../", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(h.status(), 200);
}

#[tokio::test]
async fn lists_page_with_cursors() {
    let env = Env::new(MockConfig::default(), |_| {}).await;
    let mut created = Vec::new();
    for i in 0..5 {
        let b = env.batch(KEY_A, &chat_lines(&format!("p{i}-"), 1)).await;
        created.push(b["id"].as_str().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/batches?limit=2&after={a}"),
            None => "/batches?limit=2".into(),
        };
        let (s, page) = env.get(KEY_A, &path).await;
        assert_eq!(s, 200);
        let data = page["data"].as_array().unwrap();
        seen.extend(data.iter().map(|b| b["id"].as_str().unwrap().to_owned()));
        assert_eq!(page["first_id"], data[0]["id"]);
        if page["has_more"] == false {
            break;
        }
        after = Some(data.last().unwrap()["id"].as_str().unwrap().to_owned());
    }
    created.reverse();
    assert_eq!(seen, created, "newest first, each once");
    assert_eq!(env.get(KEY_A, "/batches?limit=0").await.0, 400);
    assert_eq!(env.get(KEY_A, "/batches?limit=101").await.0, 400);
    for id in &created {
        env.wait(KEY_A, id).await;
    }
}

#[tokio::test]
async fn cancel_keeps_finished_answers_and_closes_the_rest() {
    let env = Env::slow(100, 2, |_| {}).await;
    let b = env.batch(KEY_A, &chat_lines("c", 200)).await;
    let id = b["id"].as_str().unwrap();
    // Wait until it is running and has answers.
    env.wait_completed(KEY_A, id, 4).await;
    let (s, c) = env
        .post(KEY_A, &format!("/batches/{id}/cancel"), json!(null))
        .await;
    assert_eq!(s, 200);
    assert!(
        ["cancelling", "cancelled"].contains(&c["status"].as_str().unwrap()),
        "{c}"
    );
    assert!(c["cancelling_at"].is_u64());
    let done = env.wait(KEY_A, id).await;
    assert_eq!(done["status"], "cancelled");
    assert!(done["cancelled_at"].is_u64());
    let counts = &done["request_counts"];
    let (ok, failed) = (
        counts["completed"].as_u64().unwrap(),
        counts["failed"].as_u64().unwrap(),
    );
    assert_eq!(ok + failed, 200, "every request accounted for: {done}");
    assert!(ok >= 4 && failed > 0);
    let out = parse_lines(
        &env.content(KEY_A, done["output_file_id"].as_str().unwrap())
            .await,
    );
    let errs = parse_lines(
        &env.content(KEY_A, done["error_file_id"].as_str().unwrap())
            .await,
    );
    assert_eq!(out.len() as u64, ok);
    assert_eq!(errs.len() as u64, failed);
    assert!(
        errs.iter()
            .all(|e| e["error"]["code"] == "batch_cancelled" && e["response"].is_null())
    );
    let mut ids: Vec<_> = out
        .iter()
        .chain(&errs)
        .map(|l| l["custom_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 200);
    // Cancelling again is idempotent; cancelling a finished batch is refused.
    let (s, again) = env
        .post(KEY_A, &format!("/batches/{id}/cancel"), json!(null))
        .await;
    assert_eq!(
        (s, again["status"].as_str()),
        (StatusCode::OK, Some("cancelled"))
    );
    let other = env.batch(KEY_A, &chat_lines("d", 1)).await;
    let oid = other["id"].as_str().unwrap();
    env.wait(KEY_A, oid).await;
    let r = env
        .req(reqwest::Method::POST, &format!("/batches/{oid}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(r.headers()["x-should-retry"], "false");
}

#[tokio::test]
async fn an_expired_batch_keeps_answers_and_marks_the_rest() {
    let env = Env::slow(50, 1, |c| c.completion_window = Duration::from_secs(2)).await;
    let b = env.batch(KEY_A, &chat_lines("e", 500)).await;
    let done = env.wait(KEY_A, b["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "expired", "{done}");
    assert!(done["expired_at"].is_u64());
    let ok = done["request_counts"]["completed"].as_u64().unwrap();
    let failed = done["request_counts"]["failed"].as_u64().unwrap();
    assert_eq!(ok + failed, 500);
    assert!(failed > 0);
    let errs = parse_lines(
        &env.content(KEY_A, done["error_file_id"].as_str().unwrap())
            .await,
    );
    assert!(errs.iter().all(|e| e["error"]["code"] == "batch_expired"));
    assert_eq!(
        errs[0]["error"]["message"],
        "This request could not be executed before the completion window expired."
    );
}

#[tokio::test]
async fn a_restart_resumes_batches_without_running_anything_twice() {
    let mut env = Env::slow(20, 4, |_| {}).await;
    let b = env.batch(KEY_A, &chat_lines("r", 300)).await;
    let id = b["id"].as_str().unwrap().to_owned();
    env.wait_completed(KEY_A, &id, 20).await;
    env.server.take().unwrap().shutdown().await;
    let sent_before = env.mock.stats().ok;
    assert!(sent_before < 300, "stopped mid-run");

    // A second server on the same directory while the first holds it is refused.
    let server = start_server(env.dir.path(), &env.mock, |_| {}).await;
    let mut up = UpstreamConfig::new("fake", &env.mock.base_url());
    up.concurrency = 4;
    let mut cfg = ServeConfig::new(env.dir.path().to_owned(), vec![up]);
    cfg.no_auth = true;
    let refused = Server::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("in use"), "{refused}");
    env.server = Some(server);

    let done = env.wait(KEY_A, &id).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(
        done["request_counts"],
        json!({"total": 300, "completed": 300, "failed": 0})
    );
    let out = parse_lines(
        &env.content(KEY_A, done["output_file_id"].as_str().unwrap())
            .await,
    );
    assert_eq!(out.len(), 300);
    let counts: HashMap<String, u64> = env.mock.ok_counts();
    assert_eq!(counts.len(), 300);
    assert!(
        counts.values().all(|&n| n == 1),
        "a graceful stop pays for nothing twice"
    );
}

#[tokio::test]
async fn a_small_batch_is_not_starved_by_a_large_one() {
    let env = Env::slow(10, 2, |_| {}).await;
    let big = env.batch(KEY_A, &chat_lines("big", 600)).await;
    let big_id = big["id"].as_str().unwrap();
    env.wait_completed(KEY_A, big_id, 10).await;
    let small = env.batch(KEY_A, &chat_lines("small", 10)).await;
    let done = env.wait(KEY_A, small["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed");
    let (_, b) = env.get(KEY_A, &format!("/batches/{big_id}")).await;
    assert_eq!(
        b["status"], "in_progress",
        "the small batch finished while the big one still runs"
    );
    assert!(
        b["request_counts"]["completed"].as_u64().unwrap() < 300,
        "{b}"
    );
    let (s, _) = env
        .post(KEY_A, &format!("/batches/{big_id}/cancel"), json!(null))
        .await;
    assert_eq!(s, 200);
    env.wait(KEY_A, big_id).await;
}

#[tokio::test]
async fn deleting_a_file_hides_it_and_frees_its_content() {
    let env = Env::new(MockConfig::default(), |_| {}).await;
    let (_, f) = env
        .upload(KEY_A, "d.jsonl", "batch", chat_lines("z", 2).into_bytes())
        .await;
    let id = f["id"].as_str().unwrap();
    let r = env
        .req(reqwest::Method::DELETE, &format!("/files/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body, json!({"id": id, "object": "file", "deleted": true}));
    assert_eq!(env.get(KEY_A, &format!("/files/{id}")).await.0, 404);
    assert!(!env.dir.path().join("files").join(id).exists());
    let r = env
        .req(reqwest::Method::DELETE, &format!("/files/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn a_down_upstream_never_loses_requests_the_batch_expires_with_every_line() {
    // Nothing listens on port 9: every attempt is refused. The engine keeps
    // probing (an outage, not a per-request failure) until the window ends.
    let env = Env::new(MockConfig::default(), |c| {
        c.upstreams[0].base_url = "http://127.0.0.1:9/v1".into();
        c.completion_window = Duration::from_secs(2);
    })
    .await;
    let b = env.batch(KEY_A, &chat_lines("down", 30)).await;
    let done = env.wait(KEY_A, b["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "expired", "{done}");
    assert_eq!(
        done["request_counts"],
        json!({"total": 30, "completed": 0, "failed": 30})
    );
    assert!(done["output_file_id"].is_null());
    let errs = parse_lines(
        &env.content(KEY_A, done["error_file_id"].as_str().unwrap())
            .await,
    );
    let mut ids: Vec<&str> = errs
        .iter()
        .map(|e| e["custom_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 30, "every request has its line");
    assert!(errs.iter().all(|e| e["error"]["code"] == "batch_expired"));
}

/// `expires_after` as bracketed fields (the SDKs) or as one JSON part
/// (generic multipart clients) sets the same expiry; a malformed or
/// out-of-range policy is a 400, never silently ignored.
#[tokio::test]
async fn upload_expiry_as_fields_or_one_json_part() {
    let env = Env::new(MockConfig::default(), |_| {}).await;
    let send = |extra: Vec<(&'static str, String)>| {
        let mut form = reqwest::multipart::Form::new().text("purpose", "user_data");
        for (k, v) in extra {
            form = form.text(k, v);
        }
        let form = form.part(
            "file",
            reqwest::multipart::Part::bytes(b"hello".to_vec()).file_name("a.txt"),
        );
        let r = env
            .req(reqwest::Method::POST, "/files")
            .multipart(form)
            .send();
        async move {
            let r = r.await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    let lifetime =
        |f: &Value| f["expires_at"].as_u64().unwrap() - f["created_at"].as_u64().unwrap();
    let (s, f) = send(vec![
        ("expires_after[anchor]", "created_at".into()),
        ("expires_after[seconds]", "7200".into()),
    ])
    .await;
    assert_eq!(s, 200, "{f}");
    assert_eq!(lifetime(&f), 7200);
    let (s, f) = send(vec![(
        "expires_after",
        r#"{"anchor":"created_at","seconds":3600}"#.into(),
    )])
    .await;
    assert_eq!(s, 200, "{f}");
    assert_eq!(lifetime(&f), 3600);
    for bad in [
        r#"{"seconds":3600}"#,
        r#"{"anchor":"created_at","seconds":2592001}"#,
        r#"{"anchor":"last_active_at","seconds":3600}"#,
        "not json",
    ] {
        let (s, e) = send(vec![("expires_after", bad.into())]).await;
        assert_eq!(s, 400, "{bad}: {e}");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("expires_after"),
            "{e}"
        );
    }
}
