//! Input lines over the cap (64 MiB before the `\n`): each becomes a
//! `line_too_large` error line naming its line number, read past without
//! being held, and the lines after it still run. The same in `--strict`,
//! `estimate` and `submit`.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use crate::support::*;

/// `batchling_engine::MAX_LINE_BYTES`.
const CAP: usize = 64 << 20;

/// `good-1`, a line one byte over the cap (a string of `x`s in a valid
/// request, so only its length is wrong), then `good-3`.
fn write_file_with_a_long_line(path: &Path) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(f, "{}", chat_line("good-1", "one")).unwrap();
    let head = r#"{"custom_id":"huge","method":"POST","url":"/v1/embeddings","body":{"model":"text-embedding-3-small","input":""#;
    let tail = r#""}}"#;
    f.write_all(head.as_bytes()).unwrap();
    let filler = vec![b'x'; 1 << 20];
    let mut left = CAP + 1 - head.len() - tail.len();
    while left > 0 {
        let k = left.min(filler.len());
        f.write_all(&filler[..k]).unwrap();
        left -= k;
    }
    writeln!(f, "{tail}").unwrap();
    writeln!(f, "{}", chat_line("good-3", "three")).unwrap();
    f.flush().unwrap();
}

fn assert_too_large_on_line_2(err: &[serde_json::Value]) {
    assert_eq!(err.len(), 1, "{err:?}");
    assert_eq!(err[0]["error"]["code"], "line_too_large", "{}", err[0]);
    let msg = err[0]["error"]["message"].as_str().unwrap();
    assert!(msg.contains("line 2") && msg.contains("64 MiB"), "{msg}");
}

#[test]
fn run_writes_an_error_line_and_goes_on() {
    let mock = Mock::plain();
    let run = Run::new("");
    write_file_with_a_long_line(&run.input_path());
    let o = run.against(&mock).run();
    o.assert_code(1);
    assert_eq!(ids(&o.out_lines()), ["good-1", "good-3"]);
    assert_too_large_on_line_2(&o.err_lines());
    assert_eq!(mock.stats().requests, 2, "the long line is never sent");
}

#[test]
fn strict_lists_the_long_line() {
    let mock = Mock::plain();
    let run = Run::new("");
    write_file_with_a_long_line(&run.input_path());
    let o = run.against(&mock).args(&["--strict"]).run();
    o.assert_code(2);
    assert!(o.stderr.contains("line 2:"), "{}", o.stderr);
    assert!(o.stderr.contains("64 MiB"), "{}", o.stderr);
    assert_eq!(mock.stats().requests, 0);
}

#[test]
fn estimate_leaves_the_long_line_out() {
    let run = Run::new("");
    write_file_with_a_long_line(&run.input_path());
    let o = Command::new(env!("CARGO_BIN_EXE_batchling"))
        .args(["estimate", run.input_path().to_str().unwrap(), "--json"])
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["invalid_lines"], 1, "{v}");
    assert_eq!(v["requests"], 2, "{v}");
}

#[test]
fn submit_refuses_then_skips_the_long_line() {
    let mock = Mock::plain();
    let run = Run::submit("");
    write_file_with_a_long_line(&run.input_path());
    let o = run.against(&mock).run();
    o.assert_code(2);
    assert!(o.stderr.contains("in.jsonl:line 2"), "{}", o.stderr);
    assert_eq!(mock.batch_stats().files_uploaded, 0);

    let o = o.again().args(&["--skip-invalid"]).run();
    o.assert_code(1);
    assert_eq!(ids(&o.out_lines()), ["good-1", "good-3"]);
    assert_too_large_on_line_2(&o.err_lines());
}
