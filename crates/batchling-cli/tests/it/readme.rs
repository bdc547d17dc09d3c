//! The README's first command, run as written: no key, no base URL, so
//! batchling rehearses against its built-in fake provider.

use std::path::Path;

use crate::support::*;

#[test]
fn the_readme_demo_runs_against_the_built_in_fake() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let example = root.join("examples/requests.jsonl");
    let text = std::fs::read_to_string(&example).expect("examples/requests.jsonl exists");
    let want: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("the example is JSONL");
            v["custom_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(want.len(), 50, "the README promises 50 requests");

    // `cargo run --release -- run examples/requests.jsonl -o results.jsonl`,
    // from the workspace root (the output goes to a temp dir instead).
    let o = Run::new("")
        .input_arg("examples/requests.jsonl")
        .current_dir(&root)
        .without_key()
        .run();
    o.assert_code(0);
    assert!(
        o.stderr.contains("fake provider"),
        "the user must be told the answers are fake:\n{}",
        o.stderr
    );
    let out = o.out_lines();
    assert_eq!(out.len(), 50);
    assert_eq!(ids(&out), want);
    for l in &out {
        assert_eq!(l["response"]["status_code"], 200, "{l}");
        assert!(l["response"]["body"].is_object(), "{l}");
    }
    assert_eq!(o.err_text(), "");
    assert_eq!(num(&o.summary(), "succeeded"), 50);
}
