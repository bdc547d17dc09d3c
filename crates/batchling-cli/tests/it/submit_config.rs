//! `submit --config FILE`: each line in a batch of its route's primary, on
//! that target's Batch API (an OpenAI-shaped mock and an Anthropic-shaped
//! one), what the batches leave answered online over the chain, a resume
//! after a kill and a cancel each on the API that holds the batch.

use batchling_mock::{BatchBehavior, BatchEnd, Faults};
use serde_json::Value;

use crate::support::*;

/// The keys the tests put in the environment (plain test values); they
/// must never show up in an output, a message or the journal.
const OPENAI_KEY: &str = "test-value-of-the-openai-key";
const CLAUDE_KEY: &str = "test-value-of-the-claude-key";

/// `fast` starts on OpenAI's `mini` and falls back to Claude's `haiku`;
/// `smart` the other way round.
fn config(openai: &Mock, claude: &Mock) -> String {
    format!(
        r#"
[providers.oa]
kind = "openai-compatible"
base_url = "{}"

[providers.claude]
kind = "anthropic"
base_url = "{}"

[groups.oa-proj]
provider = "oa"
keys = [{{ id = "oa-1", env = "OA_KEY" }}]

[groups.claude-ws]
provider = "claude"
keys = [{{ id = "claude-1", env = "CLAUDE_KEY" }}]

[models.mini]
provider = "oa"
model = "gpt-4o-mini"
groups = ["oa-proj"]

[models.haiku]
provider = "claude"
model = "claude-haiku-4-5"
groups = ["claude-ws"]

[routes.fast]
chain = ["mini", "haiku"]

[routes.smart]
chain = ["haiku", "mini"]
"#,
        openai.base_url(),
        claude.anthropic_base_url()
    )
}

/// An OpenAI chat line for route (or model) `model`.
fn routed_line(id: &str, model: &str) -> String {
    let body = format!(
        r#"{{"model":"{model}","max_tokens":16,"messages":[{{"role":"user","content":"q {id}"}}]}}"#
    );
    line(id, "/v1/chat/completions", &body)
}

/// `n` lines of each route: the file, and the ids of each.
fn input(n: usize) -> (String, Vec<String>, Vec<String>) {
    let fast: Vec<String> = (0..n).map(|i| format!("fast-{i:02}")).collect();
    let smart: Vec<String> = (0..n).map(|i| format!("smart-{i:02}")).collect();
    let text = fast
        .iter()
        .zip(&smart)
        .flat_map(|(f, s)| [routed_line(f, "fast"), routed_line(s, "smart")])
        .map(|l| l + "\n")
        .collect();
    (text, fast, smart)
}

/// A submit of `input` over `config(openai, claude)`.
fn submit(input: &str, openai: &Mock, claude: &Mock) -> Run {
    let run = Run::submit(input)
        .without_key()
        .env("OA_KEY", OPENAI_KEY)
        .env("CLAUDE_KEY", CLAUDE_KEY);
    let path = run.dir().join("routes.toml");
    std::fs::write(&path, config(openai, claude)).expect("the config is written");
    let path = path.to_str().expect("a UTF-8 path").to_owned();
    run.args(&["--config", &path])
}

/// Both mocks want their own key on their Batch API.
fn mocks() -> (Mock, Mock) {
    let (openai, claude) = (Mock::plain(), Mock::plain());
    openai.require_batch_api_key(Some(OPENAI_KEY));
    claude.require_anthropic_key(Some(CLAUDE_KEY));
    (openai, claude)
}

fn batchling(args: &[&str], state: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_batchling"))
        .args(args)
        .arg(state)
        .env_remove("OPENAI_API_KEY")
        .env("OA_KEY", OPENAI_KEY)
        .env("CLAUDE_KEY", CLAUDE_KEY)
        .output()
        .expect("batchling runs")
}

/// `export --who-answered` of the journal: its output lines, then its
/// error lines.
fn who_answered(dir: &std::path::Path, state: &std::path::Path) -> Vec<Value> {
    let path = dir.join("who.jsonl");
    let e = batchling(
        &["export", "--who-answered", "-o", path.to_str().unwrap()],
        state,
    );
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
    let mut lines = parse_lines(&std::fs::read_to_string(&path).unwrap(), "who.jsonl");
    let errors = std::fs::read_to_string(dir.join("who.errors.jsonl")).unwrap_or_default();
    lines.extend(parse_lines(&errors, "who.errors.jsonl"));
    lines
}

/// No key value anywhere: stdout, stderr, the output files, the journal.
#[track_caller]
fn assert_no_key_leaked(o: &Outcome, state: &std::path::Path) {
    let mut texts = vec![o.stdout.clone(), o.stderr.clone()];
    for p in [o.out_path(), o.errors_path(), state.to_path_buf()] {
        let bytes = std::fs::read(&p).unwrap_or_default();
        texts.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    for t in texts {
        assert!(
            !t.contains(OPENAI_KEY) && !t.contains(CLAUDE_KEY),
            "a key leaked"
        );
    }
}

#[test]
fn each_route_goes_in_batches_of_its_primarys_api() {
    let (openai, claude) = mocks();
    let (text, fast, smart) = input(6);
    let run = submit(&text, &openai, &claude);
    let state = run.state_path();
    let o = run.run();

    o.assert_code(0);
    let out = o.out_lines();
    let mut want = [fast.clone(), smart.clone()].concat();
    want.sort_unstable();
    assert_each_once(&out, &want);
    assert_eq!(openai.batch_stats().batches_created, 1, "fast's part");
    assert_eq!(claude.message_batch_stats().batches_created, 1, "smart's");
    assert_eq!(claude.message_batch_stats().requests_succeeded, 6);
    assert_eq!(openai.stats().ok + claude.stats().ok, 0, "nothing online");
    for l in &out {
        // OpenAI's batch output format, whichever API answered.
        let id = l["custom_id"].as_str().unwrap();
        assert_eq!(l["response"]["status_code"], 200, "{l}");
        let body = &l["response"]["body"];
        assert_eq!(body["object"], "chat.completion", "{l}");
        let model = body["model"].as_str().unwrap_or_default();
        let want = if id.starts_with("fast") {
            "gpt-4o-mini"
        } else {
            "claude-haiku-4-5"
        };
        assert!(model.starts_with(want), "{id} answered by {model}");
    }
    for l in who_answered(o.dir(), &state) {
        let x = &l["x_batchling"];
        let id = l["custom_id"].as_str().unwrap();
        let target = if id.starts_with("fast") {
            "mini"
        } else {
            "haiku"
        };
        assert_eq!(x["answered_by"], target, "{l}");
        assert_eq!(
            (x["via"].as_str(), x["route_step"].as_u64()),
            (Some("batch"), Some(0))
        );
        assert!(x["batch_id"].is_string(), "{l}");
        // The answer's own model, as for an online answer.
        let answered = l["response"]["body"]["model"].as_str();
        assert_eq!(x["response_model"].as_str(), answered, "{l}");
        assert!(answered.is_some(), "{l}");
    }
    assert_no_key_leaked(&o, &state);
}

#[test]
fn expired_batch_lines_reenter_the_chain_online_and_the_fallback_answers() {
    let (openai, claude) = mocks();
    // Claude's batch answers 2 of smart's 5 lines, then expires; online,
    // Claude is overloaded: its lines go down the chain to OpenAI's mini.
    claude.set_message_batch_behavior(BatchBehavior {
        polls_to_finish: 2,
        end: BatchEnd::Expire,
        answered_before_stop: 2,
    });
    claude.set_faults(Faults {
        error_503: 1.0,
        ..Faults::default()
    });
    let (text, fast, smart) = input(5);
    let run = submit(&text, &openai, &claude).args(&["--finish-online"]);
    let state = run.state_path();
    let o = run.run();

    o.assert_code(0);
    let mut want = [fast.clone(), smart.clone()].concat();
    want.sort_unstable();
    assert_each_once(&o.out_lines(), &want);
    assert_eq!(num(&o.summary(), "online_requests"), 3, "{}", o.err_text());
    assert_eq!(openai.stats().ok, 3, "the fallback answered the 3 expired");
    let who = who_answered(o.dir(), &state);
    let path = |l: &Value| {
        let x = &l["x_batchling"];
        (
            x["via"].as_str().unwrap_or_default().to_owned(),
            x["answered_by"].as_str().unwrap_or_default().to_owned(),
            x["route_step"].as_u64(),
        )
    };
    let smart_paths: Vec<_> = who
        .iter()
        .filter(|l| l["custom_id"].as_str().unwrap().starts_with("smart"))
        .map(path)
        .collect();
    let in_batch = ("batch".to_owned(), "haiku".to_owned(), Some(0));
    let online = ("online".to_owned(), "mini".to_owned(), Some(1));
    assert_eq!(
        smart_paths.iter().filter(|p| **p == in_batch).count(),
        2,
        "{smart_paths:?}"
    );
    assert_eq!(
        smart_paths.iter().filter(|p| **p == online).count(),
        3,
        "{smart_paths:?}"
    );
    // status counts the batch answers per target.
    let s = batchling(&["status", "--json"], &state);
    let s: Value = serde_json::from_slice(&s.stdout).expect("status --json is JSON");
    let targets = s["routes"]["targets"].as_array().expect("a routes section");
    let of = |name: &str| {
        targets
            .iter()
            .find(|t| t["target"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        (
            of("haiku")["answered"].as_u64(),
            of("haiku")["answered_in_batch"].as_u64()
        ),
        (Some(2), Some(2)),
        "{s}"
    );
    assert_eq!(
        (
            of("mini")["answered"].as_u64(),
            of("mini")["answered_in_batch"].as_u64()
        ),
        (Some(8), Some(5)),
        "{s}"
    );
    assert_no_key_leaked(&o, &state);
}

#[test]
fn a_line_its_batch_refused_for_good_does_not_go_online() {
    let (openai, claude) = mocks();
    let (mut text, fast, smart) = input(3);
    // Claude's batch answers it with a 400 (the mock's marker).
    let marker = batchling_mock::MARKER_FAIL_400;
    text.push_str(&routed_line("smart-bad", "smart").replace("q smart-bad", marker));
    text.push('\n');
    let run = submit(&text, &openai, &claude).args(&["--finish-online"]);
    let state = run.state_path();
    let o = run.run();

    o.assert_code(1);
    let mut want = [fast, smart].concat();
    want.sort_unstable();
    assert_each_once(&o.out_lines(), &want);
    let errors = o.err_lines();
    assert_eq!(ids(&errors), ["smart-bad"]);
    assert_eq!(errors[0]["response"]["status_code"], 400, "{errors:?}");
    assert_eq!(num(&o.summary(), "online_requests"), 0);
    // No online attempt of it anywhere (the key is its custom_id header).
    assert_eq!(
        openai.attempts_for("smart-bad") + claude.attempts_for("smart-bad"),
        0
    );
    assert_eq!(openai.stats().bad_request + claude.stats().bad_request, 0);
    let who = who_answered(o.dir(), &state);
    let bad = who.iter().find(|l| l["custom_id"] == "smart-bad").unwrap();
    assert_eq!(bad["x_batchling"]["via"], "batch", "{bad}");
    assert_eq!(bad["x_batchling"]["answered_by"], "haiku", "{bad}");
}

/// Both mocks' batches created (and held).
fn wait_for_both_batches(openai: &Mock, claude: &Mock) {
    wait_for("both batches", || {
        openai.batch_stats().batches_created == 1
            && claude.message_batch_stats().batches_created == 1
    });
}

fn held() -> BatchBehavior {
    BatchBehavior {
        polls_to_finish: 1,
        end: BatchEnd::Hold,
        answered_before_stop: 0,
    }
}

#[test]
fn a_resume_after_a_kill_finds_each_part_on_its_api() {
    let (openai, claude) = mocks();
    openai.set_batch_behavior(held());
    claude.set_message_batch_behavior(held());
    let (text, fast, smart) = input(4);
    let running = submit(&text, &openai, &claude).spawn();
    wait_for_both_batches(&openai, &claude);
    let run = running.kill();
    openai.set_batch_behavior(BatchBehavior::default());
    claude.set_message_batch_behavior(BatchBehavior::default());
    let state = run.state_path();
    let o = run.run();

    o.assert_code(0);
    let mut want = [fast, smart].concat();
    want.sort_unstable();
    assert_each_once(&o.out_lines(), &want);
    assert_eq!(openai.batch_stats().batches_created, 1, "no second batch");
    assert_eq!(claude.message_batch_stats().batches_created, 1);
    assert_eq!(openai.stats().ok + claude.stats().ok, 0, "nothing online");
    assert_no_key_leaked(&o, &state);
}

#[test]
fn cancel_on_a_config_journal_cancels_each_part_on_its_api() {
    let (openai, claude) = mocks();
    openai.set_batch_behavior(held());
    claude.set_message_batch_behavior(held());
    let (text, _, _) = input(3);
    let running = submit(&text, &openai, &claude).spawn();
    wait_for_both_batches(&openai, &claude);
    let run = running.kill();
    let state = run.state_path();

    // The journal names the config: `cancel` needs no flag.
    let c = batchling(&["cancel", "--quiet", "--poll-interval", "10ms"], &state);
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    assert_eq!(openai.batch_stats().batches_cancelled, 1);
    assert_eq!(claude.message_batch_stats().batches_canceled, 1);
    let errors = parse_lines(
        &std::fs::read_to_string(run.dir().join("out.errors.jsonl")).unwrap(),
        "errors",
    );
    assert_eq!(errors.len(), 6, "every line cancelled, once");
    assert!(
        errors
            .iter()
            .all(|l| l["error"]["code"] == "batch_cancelled"),
        "{errors:?}"
    );

    // A config's journal is not resumed on one provider.
    let o = run.clear_args().run();
    assert_ne!(o.code(), 0);
    assert!(
        o.stderr.contains("was started with --config"),
        "{}",
        o.stderr
    );
}

#[test]
fn a_config_names_the_upstreams_so_provider_flags_are_refused() {
    let (openai, claude) = mocks();
    let (text, _, _) = input(1);
    for flags in [
        &["--provider", "anthropic"][..],
        &["--base-url", "http://127.0.0.1:9/v1"][..],
        &["--api-key-env", "OA_KEY"][..],
        &["--mock"][..],
    ] {
        let o = submit(&text, &openai, &claude).args(flags).run();
        assert_ne!(o.code(), 0, "{flags:?}");
        assert!(
            o.stderr
                .contains(&format!("{} names an upstream", flags[0])),
            "{flags:?}: {}",
            o.stderr
        );
    }
    assert_eq!(openai.batch_stats().batches_created, 0);
    assert_eq!(claude.message_batch_stats().batches_created, 0);
}
