//! `run --config FILE`: lines over a config's routes, against several fake
//! providers (one `Mock` per provider).

use std::time::Duration;

use batchling_mock::{Faults, MockConfig};
use serde_json::Value;

use crate::support::{Mock, Run, chat_file, chat_line};

/// The keys the tests put in the environment; they must never show up in
/// an output, a message or the journal.
const PRIMARY_KEY: &str = "test-value-of-the-primary-key";
const BACKUP_KEY: &str = "test-value-of-the-backup-key";

/// A config routing `gpt-4o-mini` to `primary`, then `backup`.
fn config(primary: &Mock, backup: &Mock, extra: &str) -> String {
    format!(
        r#"
[providers.first]
kind = "openai-compatible"
base_url = "{}"

[providers.second]
kind = "openai-compatible"
base_url = "{}"

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
{extra}
"#,
        primary.base_url(),
        backup.base_url()
    )
}

fn routed(input: &str, config: &str) -> Run {
    let run = Run::new(input)
        .without_key()
        .env("PRIMARY_KEY", PRIMARY_KEY)
        .env("BACKUP_KEY", BACKUP_KEY);
    let path = run.dir().join("routes.toml");
    std::fs::write(&path, config).expect("the config is written");
    let path = path.to_str().expect("a UTF-8 path").to_owned();
    run.args(&["--config", &path])
}

/// No key value anywhere: stdout, stderr, the output files, the journal.
#[track_caller]
fn assert_no_key_leaked(o: &crate::support::Outcome, state: &std::path::Path) {
    let mut texts = vec![o.stdout.clone(), o.stderr.clone()];
    for p in [o.out_path(), o.errors_path(), state.to_path_buf()] {
        let bytes = std::fs::read(&p).unwrap_or_default();
        texts.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    for t in texts {
        assert!(
            !t.contains(PRIMARY_KEY) && !t.contains(BACKUP_KEY),
            "a key leaked"
        );
    }
}

#[test]
fn a_primary_that_fails_everything_hands_its_lines_to_the_fallback() {
    let primary = Mock::start(MockConfig {
        faults: Faults {
            error_503: 1.0,
            ..Faults::default()
        },
        ..MockConfig::default()
    });
    let backup = Mock::plain();
    let (input, ids) = chat_file("fb", 200);
    let run = routed(&input, &config(&primary, &backup, ""));
    let state = run.state_path();

    let o = run.run();

    o.assert_code(0);
    let out = o.out_lines();
    assert_eq!(out.len(), ids.len(), "{}", o.err_text());
    let mut answered: Vec<&str> = out.iter().filter_map(|l| l["custom_id"].as_str()).collect();
    answered.sort_unstable();
    assert_eq!(answered, ids.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(
        backup.stats().ok,
        200,
        "the fallback answered each line once"
    );
    for line in &out {
        // The fallback was sent its own model name, and answered as such.
        let model = line["response"]["body"]["model"]
            .as_str()
            .unwrap_or_default();
        assert!(model.starts_with("gpt-4.1-mini"), "{line}");
    }
    // Each line had at most its three attempts on the primary.
    assert!(primary.stats().requests <= 3 * 200);
    assert_no_key_leaked(&o, &state);

    // The journal tells who answered, per target and key.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_batchling"))
        .args(["status", "--json"])
        .arg(&state)
        .output()
        .expect("status runs");
    let s: Value = serde_json::from_slice(&status.stdout).expect("status --json is JSON");
    let targets = s["routes"]["targets"].as_array().expect("a routes section");
    let of = |name: &str| targets.iter().find(|t| t["target"] == name).cloned();
    let backup_row = of("backup").expect("the backup's row");
    assert_eq!(backup_row["answered"], 200, "{s}");
    let primary_row = of("primary").expect("the primary's row");
    assert_eq!(primary_row["answered"], 0, "{s}");
    assert_eq!(
        primary_row["attempts"].as_u64(),
        Some(primary.stats().requests),
        "every attempt on the primary is in the journal: {s}"
    );
    let keys = s["routes"]["keys"].as_array().expect("keys");
    assert!(
        keys.iter()
            .any(|k| k["key_id"] == "second-1" && k["ok"] == 200),
        "{s}"
    );
    // A primary failing everything had its circuit opened.
    let health = &s["routes"]["health"]["targets"];
    let primary_health = (health.as_array().expect("the routes' health").iter())
        .find(|t| t["target"] == "primary")
        .expect("the primary's health");
    assert!(primary_health["opened"].as_u64() >= Some(1), "{s}");
    let exported = o.dir().join("who.jsonl");
    let e = std::process::Command::new(env!("CARGO_BIN_EXE_batchling"))
        .args(["export", "--who-answered", "-o"])
        .arg(&exported)
        .arg(&state)
        .output()
        .expect("export runs");
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
    let text = std::fs::read_to_string(&exported).expect("the export");
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).expect("JSON");
        assert_eq!(v["x_batchling"]["answered_by"], "backup", "{v}");
        assert_eq!(v["x_batchling"]["route_step"], 1, "{v}");
    }
}

#[test]
fn killed_during_a_fallback_storm_each_line_is_answered_once() {
    let primary = Mock::start(MockConfig {
        latency: Duration::from_millis(5),
        latency_jitter: Duration::from_millis(20),
        faults: Faults {
            overloaded: 0.3,
            ..Faults::default()
        },
        seed: 11,
        ..MockConfig::default()
    });
    let backup = Mock::start(MockConfig {
        latency: Duration::from_millis(5),
        latency_jitter: Duration::from_millis(20),
        seed: 12,
        ..MockConfig::default()
    });
    let (input, ids) = chat_file("storm", 1500);
    let mut run = routed(&input, &config(&primary, &backup, "")).args(&["--concurrency", "16"]);
    for pause in [200u64, 450, 300, 700, 250, 500, 350, 600, 400, 300] {
        let running = run.spawn();
        std::thread::sleep(Duration::from_millis(pause));
        run = running.kill();
    }
    let state = run.state_path();
    let o = run.run();

    o.assert_code(0);
    let out = o.out_lines();
    let mut answered: Vec<String> = out
        .iter()
        .filter_map(|l| l["custom_id"].as_str().map(str::to_owned))
        .collect();
    answered.sort_unstable();
    let mut want = ids.clone();
    want.sort_unstable();
    assert_eq!(answered, want, "each line once in the output");
    for id in &ids {
        let paid = primary.ok_count_for(id) + backup.ok_count_for(id);
        assert!(paid >= 1, "{id} was never answered");
    }
    assert_no_key_leaked(&o, &state);
}

#[test]
fn a_model_no_route_takes_fails_alone_naming_it() {
    let (primary, backup) = (Mock::plain(), Mock::plain());
    let input = format!(
        "{}\n{}\n",
        chat_line("routed", "hi"),
        chat_line("lost", "hi").replace("gpt-4o-mini", "gpt-9")
    );

    let o = routed(&input, &config(&primary, &backup, "")).run();

    o.assert_code(1);
    assert_eq!(o.out_lines().len(), 1);
    let err: Vec<Value> = o.err_lines();
    assert_eq!(err.len(), 1);
    assert_eq!(err[0]["error"]["code"], "no_route", "{}", err[0]);
    assert!(
        err[0]["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("gpt-9")
    );
    assert_eq!(primary.stats().requests + backup.stats().requests, 1);
}

#[test]
fn a_bad_config_and_upstream_flags_are_refused_before_anything_is_sent() {
    let (primary, backup) = (Mock::plain(), Mock::plain());
    let (input, _) = chat_file("bad", 3);
    let looped = config(
        &primary,
        &backup,
        "\n[routes.a]\nchain = [\"b\"]\n\n[routes.b]\nchain = [\"a\"]\n",
    );
    let o = routed(&input, &looped).run();
    o.assert_code(2);
    assert!(
        o.stderr.contains("routes.toml") && o.stderr.contains("line"),
        "{}",
        o.stderr
    );

    let o = routed(&input, &config(&primary, &backup, ""))
        .args(&["--base-url", &primary.base_url()])
        .run();
    o.assert_code(2);
    assert!(
        o.stderr.contains("--base-url") && o.stderr.contains("--config"),
        "{}",
        o.stderr
    );

    let o = Run::new(&input)
        .without_key()
        .env("PRIMARY_KEY", PRIMARY_KEY)
        .args(&["--config", "/nonexistent/routes.toml"])
        .run();
    o.assert_code(2);
    assert_eq!(primary.stats().requests + backup.stats().requests, 0);
}

#[test]
fn a_dead_key_of_a_pool_is_out_and_status_says_so() {
    const GOOD_KEY: &str = "test-value-of-the-good-key";
    let claude = Mock::plain();
    claude.require_anthropic_key(Some(GOOD_KEY));
    let config = format!(
        r#"
[providers.anthropic]
kind = "anthropic"
base_url = "{}"

[groups.claude-proj]
provider = "anthropic"
keys = [{{ id = "revoked", env = "PRIMARY_KEY" }}, {{ id = "good", env = "GOOD_KEY" }}]

[models.sonnet]
provider = "anthropic"
model = "claude-sonnet-4-5"
groups = ["claude-proj"]

[routes.gpt-4o-mini]
chain = ["sonnet"]
"#,
        claude.anthropic_base_url()
    );
    let (input, ids) = chat_file("pool", 60);
    let run = routed(&input, &config).env("GOOD_KEY", GOOD_KEY);
    let state = run.state_path();

    let o = run.run();

    o.assert_code(0);
    assert_eq!(o.out_lines().len(), ids.len(), "{}", o.err_text());
    assert_no_key_leaked(&o, &state);
    let status = |json: bool| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_batchling"));
        c.arg("status");
        if json {
            c.arg("--json");
        }
        let out = c.arg(&state).output().expect("status runs");
        assert!(out.status.success());
        String::from_utf8(out.stdout).expect("UTF-8")
    };
    let s: Value = serde_json::from_str(&status(true)).expect("JSON");
    let keys = s["routes"]["health"]["keys"]
        .as_array()
        .expect("keys' health");
    let state_of = |id: &str| {
        (keys.iter().find(|k| k["key_id"] == id))
            .map(|k| k["state"].clone())
            .unwrap_or_default()
    };
    assert_eq!(state_of("revoked"), "dead", "{s}");
    assert_eq!(state_of("good"), "live", "{s}");
    let refused: u64 = (s["routes"]["keys"].as_array().expect("keys").iter())
        .filter(|k| k["key_id"] == "revoked")
        .map(|k| k["attempts"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(refused, 1, "one request ever on the dead key: {s}");
    let text = status(false);
    let health: Vec<&str> = (text.lines())
        .filter(|l| l.trim_start().starts_with("health"))
        .collect();
    assert!(
        health
            .iter()
            .any(|l| l.contains("claude-proj/revoked") && l.contains("dead")),
        "{text}"
    );
    assert!(
        !health.iter().any(|l| l.contains("claude-proj/good")),
        "a live key has no health line: {text}"
    );
}

#[test]
fn a_resume_with_an_edited_config_goes_on_with_a_note_and_one_without_it_is_refused() {
    let (primary, backup) = (Mock::plain(), Mock::plain());
    let (input, ids) = chat_file("edit", 20);
    let first = routed(&input, &config(&primary, &backup, ""));
    let path = first.dir().join("routes.toml");
    let o = first.run();
    o.assert_code(0);
    let requests = primary.stats().requests;

    // The same command, the config edited (a comment is a change of text).
    let edited = format!("{}\n# edited\n", config(&primary, &backup, ""));
    std::fs::write(&path, edited).expect("the config is rewritten");
    let o = o.again().loud().run();
    o.assert_code(0);
    assert!(
        o.stderr.contains("was last run with the config") && o.stderr.contains("routes.toml"),
        "{}",
        o.stderr
    );
    assert_eq!(o.out_lines().len(), ids.len());
    assert_eq!(primary.stats().requests, requests, "nothing was sent twice");

    // Without --config: refused, saying what to give.
    let o = o.again().clear_args().run();
    o.assert_code(2);
    assert!(
        o.stderr.contains("--config") && o.stderr.contains("routes.toml"),
        "{}",
        o.stderr
    );
}
