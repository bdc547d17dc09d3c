//! Deserialize JSON that `batchling serve` produced into async-openai's
//! types, as an async-openai client would.
//!
//!     async-openai-check KIND FILE [KIND FILE ...]
//!
//! KIND is `batch` (a Batch object), `files-list` (a `files.list()` page),
//! or `output-chat`, `output-responses`, `output-embeddings` (a batch output
//! file: each line a `BatchRequestOutput` whose body is that endpoint's
//! answer). Prints `OK` and exits 0 when every file parses; otherwise names
//! the file, the line and serde's reason, and exits 1.

use async_openai::types::batches::{Batch, BatchRequestOutput};
use async_openai::types::chat::CreateChatCompletionResponse;
use async_openai::types::embeddings::CreateEmbeddingResponse;
use async_openai::types::files::ListFilesResponse;
use async_openai::types::responses::Response;
use serde::de::DeserializeOwned;

fn parse<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_json::from_str(text).map_err(|e| e.to_string())
}

fn body<T: DeserializeOwned>(line: &str) -> Result<(), String> {
    let out: BatchRequestOutput = parse(line)?;
    let response = out
        .response
        .ok_or_else(|| format!("{}: no response", out.custom_id))?;
    serde_json::from_value::<T>(response.body)
        .map(drop)
        .map_err(|e| format!("{}: body: {e}", out.custom_id))
}

fn check(kind: &str, text: &str) -> Result<usize, String> {
    let lines = || text.lines().filter(|l| !l.trim().is_empty());
    let each = |f: fn(&str) -> Result<(), String>| {
        lines()
            .enumerate()
            .try_for_each(|(i, l)| f(l).map_err(|e| format!("line {}: {e}", i + 1)))?;
        Ok(lines().count())
    };
    match kind {
        "batch" => parse::<Batch>(text).map(|_| 1),
        "files-list" => parse::<ListFilesResponse>(text).map(|p| p.data.len()),
        "output-chat" => each(body::<CreateChatCompletionResponse>),
        "output-responses" => each(body::<Response>),
        "output-embeddings" => each(body::<CreateEmbeddingResponse>),
        other => Err(format!("unknown kind {other:?}")),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut failed = false;
    for pair in args.chunks(2) {
        let [kind, path] = pair else {
            eprintln!("usage: async-openai-check KIND FILE [KIND FILE ...]");
            std::process::exit(2);
        };
        let result = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| check(kind, &text));
        match result {
            Ok(n) => println!("{kind} {path}: {n} parsed"),
            Err(e) => {
                eprintln!("{kind} {path}: {e}");
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
    println!("OK");
}
