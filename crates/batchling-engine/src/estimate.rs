//! Counting a whole file's tokens before anything is sent
//! (`batchling estimate`). Lines are read and validated in order on one
//! thread; token counting, the expensive part, is spread over worker
//! threads.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};

use batchling_core::Endpoint;
use batchling_core::tokens::{Encoding, encoding_for_model, estimate_with};
use serde::Serialize;
use serde_json::Value;

use crate::reader::for_each_request;

/// Token totals of the file for one model.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ModelTokens {
    /// Requests priced for this model.
    pub requests: u64,
    /// Input tokens.
    pub input_tokens: u64,
    /// The most output tokens the requests may generate (their caps).
    pub output_tokens_max: u64,
    /// False when the model's tokenizer is not OpenAI's (an approximation).
    pub exact: bool,
}

/// What a whole file holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FileTokens {
    /// Valid request lines.
    pub requests: u64,
    /// Lines that would be rejected.
    pub invalid: u64,
    /// Lines whose tokens could not be counted, with the first few reasons
    /// (line number and why).
    pub uncounted: u64,
    /// Up to 10 of those reasons.
    pub uncounted_examples: Vec<(u64, String)>,
    /// Per model: the models asked for, or each line's own model.
    pub models: BTreeMap<String, ModelTokens>,
}

/// The models named by a file's valid lines (a budget checks they all
/// have a price before anything is sent).
pub fn models_in_file(path: &Path) -> std::io::Result<std::collections::BTreeSet<String>> {
    let mut models = std::collections::BTreeSet::new();
    for_each_request(path, |r| {
        if let Ok(req) = r {
            models.insert(req.model.unwrap_or_default());
        }
        true
    })?;
    Ok(models)
}

struct Work {
    line_no: u64,
    endpoint: Endpoint,
    body: String,
}

/// Count `path`'s tokens for `models` (empty: each line's own model).
/// `default_max_output` is the output cap assumed for a request without one.
pub fn count_file(
    path: &Path,
    models: &[String],
    default_max_output: u64,
) -> std::io::Result<FileTokens> {
    count_file_as(path, models, default_max_output, &HashMap::new())
}

/// As [`count_file`], a line whose own model is a key of `tokenize_as`
/// counted with the tokenizer of the model it maps to (a route's name, as
/// its primary target sends it), and reported under its own.
pub fn count_file_as(
    path: &Path,
    models: &[String],
    default_max_output: u64,
    tokenize_as: &HashMap<String, String>,
) -> std::io::Result<FileTokens> {
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8);
    let (tx, rx) = sync_channel::<Vec<Work>>(threads * 4);
    let rx = Arc::new(Mutex::new(rx));
    let encodings: Vec<(String, Encoding)> = models
        .iter()
        .map(|m| (m.clone(), encoding_for_model(m)))
        .collect();
    let mut total = FileTokens::default();
    let mut read_err = None;
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let rx = rx.clone();
                let encodings = &encodings;
                scope.spawn(move || {
                    let mut acc = FileTokens::default();
                    loop {
                        let batch = match rx.lock().unwrap_or_else(|p| p.into_inner()).recv() {
                            Ok(b) => b,
                            Err(_) => return acc,
                        };
                        for w in batch {
                            count_one(&w, (encodings, tokenize_as), default_max_output, &mut acc);
                        }
                    }
                })
            })
            .collect();
        let mut batch = Vec::with_capacity(256);
        let read = for_each_request(path, |r| {
            match r {
                Ok(req) => {
                    total.requests += 1;
                    batch.push(Work {
                        line_no: req.line_no,
                        endpoint: req.endpoint,
                        body: req.body,
                    });
                    if batch.len() == 256 {
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(256));
                        return tx.send(full).is_ok();
                    }
                }
                Err(_) => total.invalid += 1,
            }
            true
        });
        if !batch.is_empty() {
            let _ = tx.send(batch);
        }
        drop(tx);
        if let Err(e) = read {
            read_err = Some(e);
        }
        for w in workers {
            let part = w.join().expect("a counting thread does not panic");
            merge(&mut total, part);
        }
    });
    match read_err {
        Some(e) => Err(e),
        None => {
            total.uncounted_examples.sort();
            total.uncounted_examples.truncate(10);
            Ok(total)
        }
    }
}

fn count_one(
    w: &Work,
    (encodings, tokenize_as): (&[(String, Encoding)], &HashMap<String, String>),
    default_max_output: u64,
    acc: &mut FileTokens,
) {
    let fail = |acc: &mut FileTokens, why: String| {
        acc.uncounted += 1;
        if acc.uncounted_examples.len() < 10 {
            acc.uncounted_examples.push((w.line_no, why));
        }
    };
    let body: Value = match serde_json::from_str(&w.body) {
        Ok(b) => b,
        Err(e) => return fail(acc, e.to_string()),
    };
    let own;
    let targets: &[(String, Encoding)] = if encodings.is_empty() {
        let Some(model) = body.get("model").and_then(Value::as_str) else {
            return fail(acc, "body has no \"model\" string".into());
        };
        let sent_as = tokenize_as.get(model).map_or(model, String::as_str);
        own = [(model.to_owned(), encoding_for_model(sent_as))];
        &own
    } else {
        encodings
    };
    // Models sharing an encoding share one count.
    let mut by_encoding: Vec<(Encoding, Result<_, String>)> = Vec::with_capacity(2);
    for (model, enc) in targets {
        let counted = match by_encoding.iter().find(|(e, _)| e == enc) {
            Some((_, c)) => c.clone(),
            None => {
                let c = estimate_with(w.endpoint, &body, *enc, default_max_output)
                    .map_err(|e| e.to_string());
                by_encoding.push((*enc, c.clone()));
                c
            }
        };
        match counted {
            Ok(t) => {
                let m = acc
                    .models
                    .entry(model.clone())
                    .or_insert_with(|| ModelTokens {
                        exact: true,
                        ..ModelTokens::default()
                    });
                m.requests += 1;
                m.input_tokens += t.input;
                m.output_tokens_max += t.max_output;
                m.exact &= t.exact;
            }
            Err(why) => return fail(acc, why),
        }
    }
}

fn merge(total: &mut FileTokens, part: FileTokens) {
    total.uncounted += part.uncounted;
    total.uncounted_examples.extend(part.uncounted_examples);
    for (model, t) in part.models {
        let m = total.models.entry(model).or_insert_with(|| ModelTokens {
            exact: true,
            ..ModelTokens::default()
        });
        m.requests += t.requests;
        m.input_tokens += t.input_tokens;
        m.output_tokens_max += t.output_tokens_max;
        m.exact &= t.exact;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn totals_per_model_and_bad_lines() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let chat = |id: &str, model: &str| {
            format!(
                r#"{{"custom_id":"{id}","method":"POST","url":"/v1/chat/completions","body":{{"model":"{model}","messages":[{{"role":"user","content":"Hello world"}}],"max_tokens":10}}}}"#
            )
        };
        writeln!(f, "{}", chat("a", "gpt-4o-mini")).unwrap();
        writeln!(f, "{}", chat("b", "gpt-4o-mini")).unwrap();
        writeln!(f, "{}", chat("c", "claude-haiku-4-5")).unwrap();
        writeln!(f, "not json").unwrap();
        writeln!(
            f,
            r#"{{"custom_id":"d","method":"POST","url":"/v1/embeddings","body":{{"input":"x"}}}}"#
        )
        .unwrap();
        let t = count_file(f.path(), &[], 100).unwrap();
        assert_eq!(t.requests, 4);
        assert_eq!(t.invalid, 1);
        assert_eq!(t.uncounted, 1, "{:?}", t.uncounted_examples);
        assert_eq!(t.uncounted_examples[0].0, 5);
        let g = &t.models["gpt-4o-mini"];
        // 3 per message + "user" (1) + "Hello world" (2) + 3 priming = 9.
        assert_eq!(
            (g.requests, g.input_tokens, g.output_tokens_max, g.exact),
            (2, 18, 20, true)
        );
        assert!(!t.models["claude-haiku-4-5"].exact);

        let t = count_file(f.path(), &["gpt-4".into(), "gpt-4o".into()], 100).unwrap();
        // Priced for chosen models, even the embedding line without one counts.
        assert_eq!(t.models["gpt-4"].requests, 4);
        assert_eq!(t.models["gpt-4o"].requests, 4);
        assert_eq!(t.uncounted, 0);
    }
}
