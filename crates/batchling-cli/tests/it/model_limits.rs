//! `--limits FILE`: limits per model and a family sharing one, the same
//! file given to the fake provider; the summary's and `status`'s lanes.
//! No timing assertions.

use std::path::Path;
use std::process::Command;

use batchling_mock::{LimitsFile, MockConfig};
use serde_json::Value;

use crate::support::*;

/// One limits file for both sides: the fake provider enforces it (per
/// second), batchling paces by it.
const LIMITS: &str = r#"window = "second"

[default]
rpm = 6000

[models.model-a]
rpm = 1200
tpm = 600000

[models.fam]
models = ["fam-x", "fam-y"]
rpm = 600
tpm = 300000
"#;

/// `n` chat requests of each model, interleaved.
fn mixed_file(models: &[&str], n: usize) -> (String, Vec<String>) {
    let mut text = String::new();
    let mut ids = Vec::new();
    for i in 0..n {
        for m in models {
            let id = format!("{m}-{i:03}");
            let body = serde_json::json!({
                "model": m,
                "messages": [{"role": "user", "content": format!("question {id}")}],
                "max_tokens": 5,
            });
            text += &(line(&id, "/v1/chat/completions", &body.to_string()) + "\n");
            ids.push(id);
        }
    }
    (text, ids)
}

fn status(state: &Path, json: bool) -> (i32, String) {
    let mut args = vec!["status".to_owned(), state.display().to_string()];
    if json {
        args.push("--json".into());
    }
    let o = Command::new(env!("CARGO_BIN_EXE_batchling"))
        .args(&args)
        .output()
        .expect("run batchling status");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

/// The lane of the summary named `model`.
fn lane<'a>(s: &'a Value, model: &str) -> &'a Value {
    let lanes = s["lanes"].as_array().expect("lanes is a list");
    lanes
        .iter()
        .find(|l| l["model"] == model)
        .unwrap_or_else(|| panic!("no lane {model}: {s}"))
}

#[test]
fn a_limits_file_gives_each_model_and_family_its_own_lane() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("limits.toml");
    std::fs::write(&path, LIMITS).unwrap();
    let mut config = MockConfig::default();
    config.apply_limits(LimitsFile::load(&path).unwrap());
    let mock = Mock::start(config);
    let (input, want) = mixed_file(&["model-a", "fam-x", "fam-y", "model-c"], 8);
    let o = Run::new(&input)
        .against(&mock)
        // Wins over the file's [default] rpm (6000) for model-c.
        .args(&["--limits", path.to_str().unwrap(), "--rpm", "3000"])
        .run();
    o.assert_code(0);
    assert_each_once(&o.out_lines(), &want);
    let s = o.summary();
    assert_eq!(s["lanes"].as_array().unwrap().len(), 3, "{s}");
    let a = lane(&s, "model-a");
    assert_eq!(
        (a["rpm_limit"].as_u64(), a["tpm_limit"].as_u64()),
        (Some(1200), Some(600_000))
    );
    assert_eq!(a["sources"]["rpm"], "given", "{a}");
    assert_eq!(a["family"], false);
    assert_eq!(a["succeeded"], 8);
    let fam = lane(&s, "fam");
    assert_eq!(fam["family"], true, "{fam}");
    assert_eq!(fam["rpm_limit"], 600);
    assert_eq!(
        fam["succeeded"], 16,
        "both models of the family in one lane"
    );
    let c = lane(&s, "model-c");
    assert_eq!(
        c["rpm_limit"], 3000,
        "the flag over the file's default: {c}"
    );
    assert_eq!(c["sources"]["rpm"], "given");
    assert!(c["tpm_limit"].is_null(), "no default tpm anywhere: {c}");
    for l in [a, fam, c] {
        assert!(l["achieved_rpm"].as_f64().unwrap() > 0.0, "{l}");
        assert_eq!(l["rate_limited"], 0, "{l}");
    }
    // `status` shows the lanes of the last run.
    let state = o.dir().join("out.jsonl.journal");
    let (code, text) = status(&state, false);
    assert_eq!(code, 0);
    assert!(text.contains("lanes     3 in the last run"), "{text}");
    assert!(
        text.contains("model-a: rpm 1.2k (given), tpm 600.0k (given)"),
        "{text}"
    );
    assert!(text.contains("fam (family): rpm 600 (given)"), "{text}");
    let (code, json) = status(&state, true);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["lanes"].as_array().map(Vec::len), Some(3), "{v}");
    assert_eq!(v["lanes"][0]["model"], "model-a");
}

#[test]
fn a_lower_learned_limit_is_shown_as_learned() {
    // The file gives model-a more than the provider allows.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("limits.toml");
    std::fs::write(&path, "[models.model-a]\nrpm = 100000\ntpm = 600000\n").unwrap();
    let mock = Mock::start(MockConfig {
        rpm: Some(1200),
        ..MockConfig::default()
    });
    let (input, want) = mixed_file(&["model-a"], 5);
    let o = Run::new(&input)
        .against(&mock)
        .args(&["--limits", path.to_str().unwrap()])
        .run();
    o.assert_code(0);
    assert_eq!(ids(&o.out_lines()), want);
    let s = o.summary();
    let a = lane(&s, "model-a");
    assert_eq!(a["rpm_limit"], 1200, "{a}");
    assert_eq!(a["sources"]["rpm"], "learned", "{a}");
    assert_eq!(a["sources"]["tpm"], "given", "{a}");
}

#[test]
fn a_bad_limits_file_is_named_with_its_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("limits.toml");
    std::fs::write(&path, "[models.a]\nrpm = 5\ntpm = -3\n").unwrap();
    let (input, _) = chat_file("bad", 1);
    let mock = Mock::plain();
    let o = Run::new(&input)
        .against(&mock)
        .args(&["--limits", path.to_str().unwrap()])
        .run();
    assert_ne!(o.code(), 0);
    let err = o.stderr.clone();
    assert!(
        err.contains("limits.toml line 3, models.a.tpm: expected a positive integer"),
        "{err}"
    );
    assert_eq!(mock.stats().requests, 0, "nothing sent");
}

#[test]
fn old_journals_without_lanes_still_show_their_status() {
    let mock = Mock::plain();
    let (input, _) = chat_file("old", 2);
    let o = Run::new(&input).against(&mock).run();
    o.assert_code(0);
    let state = o.dir().join("out.jsonl.journal");
    // As an older batchling left it: no lanes recorded.
    let conn = rusqlite::Connection::open(&state).unwrap();
    conn.execute("DELETE FROM meta WHERE key = 'lanes'", [])
        .unwrap();
    drop(conn);
    let (code, text) = status(&state, false);
    assert_eq!(code, 0, "{text}");
    assert!(!text.contains("lanes"), "{text}");
    assert!(text.contains("requests  2"), "{text}");
}
