//! `batchling serve` on a routes config (`--config` with providers, groups,
//! models and routes): batches through the Files + Batches API over real
//! HTTP, in front of two fake providers, a primary that fails and a
//! fallback that answers.

// A test crate sees every dependency of its package and uses a few.
#![allow(unused_crate_dependencies)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use batchling_mock::{Faults, MockConfig, MockServer};
use batchling_providers::ApiKey;
use batchling_server::Server;
use batchling_server::config::{
    ConfigError, ConfigFile, RoutesSetupDefaults, ServeConfig, load_any,
};
use batchling_store::Journal;
use reqwest::StatusCode;
use serde_json::{Value, json};

const CLIENT_KEY: &str = "client-key";

/// The provider keys, as the environment gives them (plain test values).
fn getenv(var: &str) -> Option<String> {
    match var {
        "PRIMARY_KEY" => Some("test-primary-key".into()),
        "BACKUP_KEY" => Some("test-backup-key".into()),
        _ => None,
    }
}

/// Lines naming `gpt-4o-mini` go to `primary`, then to `backup` (its own
/// model name `gpt-4.1-mini`).
fn routes_config(primary: &str, backup: &str) -> String {
    format!(
        r#"[serve]
concurrency = 8

[providers.first]
kind = "openai-compatible"
base_url = "{primary}"

[providers.second]
kind = "openai-compatible"
base_url = "{backup}"

[groups.first-proj]
provider = "first"
keys = [{{ id = "first-1", env = "PRIMARY_KEY" }}]

[groups.second-proj]
provider = "second"
keys = [{{ id = "second-1", env = "BACKUP_KEY" }}]

[models.primary]
provider = "first"
model = "gpt-4o-mini"
groups = ["first-proj"]

[models.backup]
provider = "second"
model = "gpt-4.1-mini"
groups = ["second-proj"]

[routes.gpt-4o-mini]
chain = ["primary", "backup"]
max_price_ratio = 3.0
"#
    )
}

async fn mock(config: MockConfig) -> MockServer {
    MockServer::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// A mock whose every online answer is a 500.
async fn failing() -> MockServer {
    mock(MockConfig {
        faults: Faults {
            error_500: 1.0,
            ..Faults::default()
        },
        ..MockConfig::default()
    })
    .await
}

struct Env {
    server: Option<Server>,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Env {
    /// A server on the routes config `text`, keeping its journals.
    async fn new(text: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serve.toml");
        std::fs::write(&path, text).unwrap();
        let ConfigFile::Routes { setup, .. } =
            load_any(&path, &RoutesSetupDefaults::default(), getenv).expect("the config loads")
        else {
            panic!("not read as a routes config")
        };
        let mut cfg = ServeConfig::new(dir.path().join("data"), Vec::new());
        cfg.routes = Some(*setup);
        cfg.auth_keys = vec![ApiKey::new(CLIENT_KEY)];
        cfg.keep_journals = true;
        let server = Server::start(cfg, "127.0.0.1:0".parse().unwrap())
            .await
            .expect("server starts");
        let _ = rustls::crypto::ring::default_provider().install_default();
        Env {
            server: Some(server),
            dir,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.as_ref().unwrap().base_url())
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = (self.http.get(self.url(path)).bearer_auth(CLIENT_KEY))
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn text(&self, path: &str) -> String {
        let r = (self.http.get(self.url(path)).bearer_auth(CLIENT_KEY))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        r.text().await.unwrap()
    }

    /// Upload `lines` and create a chat batch; its id.
    async fn batch(&self, lines: &str) -> String {
        let form = reqwest::multipart::Form::new()
            .text("purpose", "batch")
            .part(
                "file",
                reqwest::multipart::Part::bytes(lines.as_bytes().to_vec()).file_name("in.jsonl"),
            );
        let r = (self.http.post(self.url("/files")).bearer_auth(CLIENT_KEY))
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let file: Value = r.json().await.unwrap();
        let body = json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"});
        let r = (self.http.post(self.url("/batches")).bearer_auth(CLIENT_KEY))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let b: Value = r.json().await.unwrap();
        b["id"].as_str().unwrap().to_owned()
    }

    /// Poll until the batch reaches a terminal status.
    async fn wait(&self, id: &str) -> Value {
        loop {
            let (s, b) = self.get(&format!("/batches/{id}")).await;
            assert_eq!(s, 200, "{b}");
            if ["completed", "failed", "expired", "cancelled"]
                .contains(&b["status"].as_str().unwrap())
            {
                return b;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A completed batch's output lines.
    async fn output(&self, batch: &Value) -> Vec<Value> {
        let id = batch["output_file_id"].as_str().expect("an output file");
        let text = self.text(&format!("/files/{id}/content")).await;
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn journal(&self, id: &str) -> PathBuf {
        self.dir
            .path()
            .join("data/batches")
            .join(id)
            .join("journal")
    }
}

fn chat_lines(prefix: &str, models: &[&str]) -> String {
    models
        .iter()
        .enumerate()
        .map(|(i, model)| {
            format!(
                "{{\"custom_id\":\"{prefix}{i}\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{{\"model\":\"{model}\",\"messages\":[{{\"role\":\"user\",\"content\":\"hello {i}\"}}],\"max_tokens\":5}}}}\n"
            )
        })
        .collect()
}

/// Each custom id of the output once, sorted.
fn ids_of(out: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = (out.iter())
        .map(|l| l["custom_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn expected_ids(prefix: &str, n: usize) -> Vec<String> {
    let mut ids: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    ids.sort();
    ids
}

/// The `/metrics` value of one family for the `routes` upstream.
async fn routes_metric(env: &Env, family: &str) -> f64 {
    let addr = env.server.as_ref().unwrap().local_addr();
    let r = env.http.get(format!("http://{addr}/metrics")).send().await;
    let text = r.unwrap().text().await.unwrap();
    let prefix = format!("{family}{{upstream=\"routes\"}} ");
    let line = (text.lines())
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in {text}"));
    line.parse().unwrap()
}

#[tokio::test]
async fn a_failing_primary_hands_every_line_of_a_batch_to_the_fallback() {
    let primary = failing().await;
    let backup = mock(MockConfig::default()).await;
    let env = Env::new(&routes_config(&primary.base_url(), &backup.base_url())).await;
    let n = 40;
    let id = env.batch(&chat_lines("fb-", &vec!["gpt-4o-mini"; n])).await;

    let b = env.wait(&id).await;

    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(b["request_counts"]["completed"], n, "{b}");
    assert_eq!(b["request_counts"]["failed"], 0, "{b}");
    let out = env.output(&b).await;
    assert_eq!(ids_of(&out), expected_ids("fb-", n), "every line once");
    for line in &out {
        // OpenAI's output format, exactly: no routing fields in it.
        let mut keys: Vec<&str> = line
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["custom_id", "error", "id", "response"], "{line}");
        assert_eq!(line["response"]["status_code"], 200, "{line}");
        let model = line["response"]["body"]["model"].as_str().unwrap();
        assert!(
            model.starts_with("gpt-4.1-mini"),
            "the fallback's answer: {line}"
        );
    }
    assert_eq!(
        backup.stats().ok,
        n as u64,
        "the fallback answered each line once"
    );
    assert!(primary.stats().requests >= 1, "the primary was tried");

    // The journal tells who answered, and holds every attempt.
    let journal = Journal::open_read_only(&env.journal(&id)).expect("the kept journal");
    let report = journal.route_report().unwrap().expect("a routed journal");
    let of = |name: &str| {
        (report.targets.iter())
            .find(|t| t.target == name)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(of("backup").answered, n as u64, "{report:?}");
    assert_eq!(of("primary").answered, 0, "{report:?}");
    assert_eq!(
        of("primary").attempts,
        primary.stats().requests,
        "{report:?}"
    );
    let key_ids: Vec<&str> = report.keys.iter().map(|k| k.key_id.as_str()).collect();
    assert_eq!(key_ids, ["first-1", "second-1"], "key ids, never the keys");

    // /metrics counts every attempt, to either provider, as `routes`.
    let sent = routes_metric(&env, "batchling_upstream_requests_total").await;
    assert_eq!(
        sent as u64,
        primary.stats().requests + backup.stats().requests
    );
    env.server.unwrap().shutdown().await;
}

#[tokio::test]
async fn a_model_gone_at_the_primary_is_gone_for_every_later_batch() {
    let primary = mock(MockConfig::default()).await;
    let not_found = json!({"error": {"message": "The model `gpt-4o-mini` does not exist or you do not have access to it.", "type": "invalid_request_error", "param": null, "code": "model_not_found"}});
    primary.set_status_override(Some((404, not_found.to_string(), Vec::new())));
    let backup = mock(MockConfig::default()).await;
    let env = Env::new(&routes_config(&primary.base_url(), &backup.base_url())).await;

    let first = env.batch(&chat_lines("a-", &["gpt-4o-mini"; 10])).await;
    let b = env.wait(&first).await;
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(ids_of(&env.output(&b).await), expected_ids("a-", 10));
    let tried = primary.stats().requests;
    assert!(tried >= 1, "the first batch found the model gone");

    // One set of routes for the server: the second batch does not ask the
    // primary again.
    let second = env.batch(&chat_lines("b-", &["gpt-4o-mini"; 10])).await;
    let b = env.wait(&second).await;
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(ids_of(&env.output(&b).await), expected_ids("b-", 10));
    assert_eq!(
        primary.stats().requests,
        tried,
        "the primary is out for the server"
    );
    assert_eq!(backup.stats().ok, 20);
    env.server.unwrap().shutdown().await;
}

#[tokio::test]
async fn a_line_naming_no_route_or_model_fails_validation_with_its_line() {
    let primary = mock(MockConfig::default()).await;
    let backup = mock(MockConfig::default()).await;
    let env = Env::new(&routes_config(&primary.base_url(), &backup.base_url())).await;
    // A route, a target named directly, then a name the config lacks.
    let id = env
        .batch(&chat_lines("v-", &["gpt-4o-mini", "backup", "gpt-5-turbo"]))
        .await;

    let b = env.wait(&id).await;

    assert_eq!(b["status"], "failed", "{b}");
    let errors = b["errors"]["data"].as_array().expect("errors.data");
    assert_eq!(errors.len(), 1, "{b}");
    assert_eq!(errors[0]["line"], 3, "{b}");
    assert_eq!(errors[0]["code"], "model_not_found", "{b}");
    let message = errors[0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("line 3: model \"gpt-5-turbo\" is not a route or model of this server")
            && message.contains("gpt-4o-mini"),
        "{message}"
    );
    assert_eq!(primary.stats().requests + backup.stats().requests, 0);
    env.server.unwrap().shutdown().await;
}

fn write(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("serve.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_file_mixing_both_forms_is_refused_naming_the_file_and_lines() {
    let dir = tempfile::tempdir().unwrap();
    let routes = routes_config("http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1");
    let text =
        format!("{routes}\n[[upstream]]\nname = \"old\"\nbase_url = \"http://127.0.0.1:9/v1\"\n");
    let path = write(dir.path(), &text);
    let upstream_line = text.lines().position(|l| l == "[[upstream]]").unwrap() + 1;

    let e = load_any(&path, &RoutesSetupDefaults::default(), getenv).unwrap_err();

    assert!(matches!(e, ConfigError::Invalid { .. }), "{e:?}");
    let e = e.to_string();
    let want = format!(
        "config file {}: line {upstream_line} has upstream (serve's older [[upstream]] form) and line 1 has serve (the routes form)",
        path.display()
    );
    assert!(e.starts_with(&want), "{e}");
}

#[test]
fn an_upstream_file_still_loads_as_upstreams_and_a_routes_file_as_routes() {
    let dir = tempfile::tempdir().unwrap();
    let old = "auth_keys_env = \"CLIENT_KEYS\"\n\n[[upstream]]\nname = \"local\"\nbase_url = \"http://127.0.0.1:9/v1\"\nconcurrency = 4\n";
    let path = write(dir.path(), old);
    let ConfigFile::Upstreams(loaded) =
        load_any(&path, &RoutesSetupDefaults::default(), getenv).unwrap()
    else {
        panic!("not read as [[upstream]] tables")
    };
    assert_eq!(loaded.upstreams.len(), 1);
    assert_eq!(loaded.upstreams[0].concurrency, 4);
    assert_eq!(loaded.auth_keys_env.as_deref(), Some("CLIENT_KEYS"));

    let routes = routes_config("http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1").replace(
        "[serve]\n",
        "[serve]\nauth_keys_env = \"CLIENT_KEYS\"\ntimeout_secs = 7\n",
    );
    let path = write(dir.path(), &routes);
    let ConfigFile::Routes {
        setup,
        auth_keys_env,
        ..
    } = load_any(&path, &RoutesSetupDefaults::default(), getenv).unwrap()
    else {
        panic!("not read as a routes config")
    };
    assert_eq!(auth_keys_env.as_deref(), Some("CLIENT_KEYS"));
    assert_eq!(setup.concurrency, 8);
    assert_eq!(setup.timeout, Duration::from_secs(7));
    let ids: Vec<&str> = setup.keys.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(ids, ["first-1", "second-1"]);

    // A routes config whose key variable is not set names the variable.
    let e = load_any(&path, &RoutesSetupDefaults::default(), |_| None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("PRIMARY_KEY is not set"), "{e}");
}

#[test]
fn the_example_routes_config_is_a_serve_config_too() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/routes.toml");
    let any_key = |_: &str| Some("test-key".to_owned());
    let ConfigFile::Routes {
        setup,
        auth_keys_env,
        ..
    } = load_any(&path, &RoutesSetupDefaults::default(), any_key).expect("it loads")
    else {
        panic!("not read as a routes config")
    };
    assert_eq!(auth_keys_env.as_deref(), Some("BATCHLING_CLIENT_KEYS"));
    assert_eq!(setup.concurrency, 64);
    assert_eq!(setup.keys.len(), 5);
}

#[tokio::test]
async fn an_overloaded_claude_primary_falls_back_to_an_azure_deployment() {
    let claude = mock(MockConfig {
        faults: Faults {
            overloaded: 1.0,
            ..Faults::default()
        },
        ..MockConfig::default()
    })
    .await;
    let azure = mock(MockConfig {
        shape: batchling_mock::Shape::Azure,
        ..MockConfig::default()
    })
    .await;
    let text = format!(
        r#"[providers.claude]
kind = "anthropic"
base_url = "{}"

[providers.east]
kind = "azure"
base_url = "{}"

[groups.ws]
provider = "claude"
keys = [{{ id = "ant-1", env = "PRIMARY_KEY" }}]

[groups.res]
provider = "east"
keys = [{{ id = "az-1", env = "BACKUP_KEY" }}]

[models.haiku]
provider = "claude"
model = "claude-haiku-4-5"
groups = ["ws"]

[models.azure-mini]
provider = "east"
model = "gpt-4o-mini-deploy"
groups = ["res"]

[routes.gpt-4o-mini]
chain = ["haiku", "azure-mini"]
"#,
        claude.anthropic_base_url(),
        azure.base_url().trim_end_matches("/v1")
    );
    let env = Env::new(&text).await;
    let n = 12;
    let id = env.batch(&chat_lines("az-", &vec!["gpt-4o-mini"; n])).await;

    let b = env.wait(&id).await;

    assert_eq!(b["status"], "completed", "{b}");
    let out = env.output(&b).await;
    assert_eq!(ids_of(&out), expected_ids("az-", n));
    assert!(out.iter().all(|l| l["response"]["status_code"] == 200));
    assert_eq!(azure.stats().ok, n as u64, "Azure answered each line once");
    assert!(claude.stats().requests >= 1, "the primary was tried");
    let journal = Journal::open_read_only(&env.journal(&id)).expect("the kept journal");
    let report = journal.route_report().unwrap().expect("a routed journal");
    let answered: Vec<(&str, u64)> = (report.targets.iter())
        .map(|t| (t.target.as_str(), t.answered))
        .collect();
    assert_eq!(
        answered,
        [("azure-mini", n as u64), ("haiku", 0)],
        "{report:?}"
    );
    env.server.unwrap().shutdown().await;
}
