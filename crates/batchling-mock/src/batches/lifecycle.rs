//! A batch's life: create, list, cancel, and the poll that moves it on.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use axum::body::Body;
use batchling_core::endpoint::Endpoint;
use bytes::Bytes;
use hyper::Response;
use hyper::header::HeaderValue;
use serde_json::{Value, json};

use super::http::{error, ok_json, page};
use super::run::{execute, validate_file};
use super::{
    BatchApi, BatchBehavior, BatchEnd, Store, StoredBatch, StoredFile, injected_failure, lock, now,
    take,
};
use crate::server::Shared;
use crate::shape::{Shape, accepts_window};

/// `POST /v1/batches`: check the request, store the batch, answer (or
/// fail or hang, as the test asked).
pub(crate) async fn create(api: &BatchApi, shape: Shape, body: &[u8]) -> Response<Body> {
    if let Some(r) = injected_failure(api, &api.fail_creates) {
        return r;
    }
    let object = match checked_create(body, shape).and_then(|req| store_batch(api, &req)) {
        Ok(object) => object,
        Err(r) => return error(400, &r.message, r.param, None),
    };
    if take(&api.lose_creates) {
        // Stored, but the answer says otherwise: a retry must find it.
        return error(
            502,
            "Bad gateway (the batch was created all the same).",
            None,
            None,
        );
    }
    if api.hang_creates.load(Relaxed) {
        // The batch exists; the client never hears of it (it times out or
        // is killed): the crash window between create and journal write.
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    ok_json(&object)
}

/// Why a create is refused with 400.
struct Refusal {
    message: String,
    param: Option<&'static str>,
}

impl Refusal {
    fn new(message: impl Into<String>, param: Option<&'static str>) -> Self {
        Refusal {
            message: message.into(),
            param,
        }
    }
}

/// A create request's body, once its fields are checked.
fn checked_create(body: &[u8], shape: Shape) -> Result<Value, Refusal> {
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return Err(Refusal::new(
            "We could not parse the JSON body of your request.",
            None,
        ));
    };
    if !req["input_file_id"].is_string() {
        return Err(Refusal::new(
            "Missing required parameter: 'input_file_id'.",
            Some("input_file_id"),
        ));
    }
    if (req["endpoint"].as_str()).is_none_or(|e| e.parse::<Endpoint>().is_err()) {
        return Err(Refusal::new(
            "Invalid value for 'endpoint'.",
            Some("endpoint"),
        ));
    }
    if !accepts_window(shape, &req["completion_window"]) {
        let message = match shape {
            Shape::Groq => "Invalid value for 'completion_window': from '24h' to '7d'.",
            Shape::OpenAi | Shape::Azure => {
                "Invalid value for 'completion_window': only '24h' is supported."
            }
        };
        return Err(Refusal::new(message, Some("completion_window")));
    }
    Ok(req)
}

/// Store a new batch of a checked request; its object, or the 400 when the
/// input file is missing or not for batches.
fn store_batch(api: &BatchApi, req: &Value) -> Result<Value, Refusal> {
    let file_id = req["input_file_id"].as_str().unwrap_or("");
    let mut store = lock(&api.store);
    let Some(file) = store.files.iter().find(|f| f.id == file_id) else {
        return Err(Refusal::new(
            format!("No such File object: {file_id}"),
            Some("input_file_id"),
        ));
    };
    if file.purpose != "batch" {
        return Err(Refusal::new(
            "The input file must have purpose 'batch'.",
            Some("input_file_id"),
        ));
    }
    let total = file
        .content
        .split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .count();
    let created = now();
    let object = json!({
        "id": api.new_id("batch_", 32), "object": "batch", "endpoint": req["endpoint"],
        "model": null, "errors": null, "input_file_id": file_id,
        "completion_window": req["completion_window"],
        "status": "validating", "output_file_id": null, "error_file_id": null,
        "created_at": created, "in_progress_at": null, "expires_at": created + 86_400,
        "finalizing_at": null, "completed_at": null, "failed_at": null, "expired_at": null,
        "cancelling_at": null, "cancelled_at": null,
        "request_counts": {"total": total, "completed": 0, "failed": 0},
        "usage": null, "metadata": req.get("metadata").cloned().unwrap_or(Value::Null),
    });
    store.batches.push(StoredBatch {
        object: object.clone(),
        polls: 0,
        cancel_requested: false,
    });
    api.batches_created.fetch_add(1, Relaxed);
    Ok(object)
}

pub(crate) fn list(api: &BatchApi, q: &HashMap<String, String>) -> Response<Body> {
    let limit = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(20usize)
        .min(100);
    page(api.batches(), q.get("after"), limit)
}

pub(crate) fn cancel(api: &BatchApi, id: &str) -> Response<Body> {
    let mut store = lock(&api.store);
    let Some(b) = store.batches.iter_mut().find(|b| b.object["id"] == id) else {
        return error(
            404,
            &format!("No such Batch object: {id}"),
            Some("batch_id"),
            None,
        );
    };
    match b.object["status"].as_str().unwrap_or("") {
        "validating" | "in_progress" | "finalizing" => {
            b.cancel_requested = true;
            b.object["status"] = "cancelling".into();
            b.object["cancelling_at"] = now().into();
            api.batches_cancelled.fetch_add(1, Relaxed);
            ok_json(&b.object)
        }
        "cancelling" | "cancelled" => ok_json(&b.object),
        other => {
            let mut r = error(
                400,
                &format!("Cannot cancel a batch with status '{other}'."),
                None,
                None,
            );
            r.headers_mut()
                .insert("x-should-retry", HeaderValue::from_static("false"));
            r
        }
    }
}

/// One poll: advance the batch, then return it.
pub(crate) fn poll(shared: &Shared, id: &str) -> Response<Body> {
    let api = &shared.batches;
    api.polls.fetch_add(1, Relaxed);
    let behavior = *lock(&api.behavior);
    let mut store = lock(&api.store);
    let Some(index) = store.batches.iter().position(|b| b.object["id"] == id) else {
        return error(
            404,
            &format!("No such Batch object: {id}"),
            Some("batch_id"),
            None,
        );
    };
    let status = store.batches[index].object["status"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    if matches!(
        status.as_str(),
        "completed" | "failed" | "expired" | "cancelled"
    ) {
        return ok_json(&store.batches[index].object);
    }
    store.batches[index].polls += 1;
    let content = input_of(&store, index);
    let t = now();
    if status == "validating" && !start(&mut store.batches[index].object, &content, t) {
        return ok_json(&store.batches[index].object);
    }
    let Some(end) = end_of(&store.batches[index], &behavior) else {
        return ok_json(&store.batches[index].object);
    };
    let (out, err, done, failed) = execute(shared, &content, end.answered, end.code, end.message);
    let out_id = output_file(api, &mut store, id, "output", out, t);
    let err_id = output_file(api, &mut store, id, "error", err, t);
    let b = &mut store.batches[index].object;
    b["status"] = end.status.into();
    b["output_file_id"] = out_id;
    b["error_file_id"] = err_id;
    b["finalizing_at"] = t.into();
    b[format!("{}_at", end.status).as_str()] = t.into();
    b["request_counts"]["completed"] = done.into();
    b["request_counts"]["failed"] = failed.into();
    ok_json(b)
}

/// The content of a batch's input file.
fn input_of(store: &Store, index: usize) -> Bytes {
    let file_id = store.batches[index].object["input_file_id"]
        .as_str()
        .unwrap_or("");
    store
        .files
        .iter()
        .find(|f| f.id == file_id)
        .map(|f| f.content.clone())
        .unwrap_or_default()
}

/// The first poll: validate the input file and move the batch to
/// `in_progress`, or to `failed` (then false) naming the bad line.
fn start(batch: &mut Value, content: &[u8], t: u64) -> bool {
    let endpoint = batch["endpoint"].as_str().unwrap_or("");
    if let Some(e) = validate_file(content, endpoint) {
        batch["status"] = "failed".into();
        batch["failed_at"] = t.into();
        batch["errors"] = json!({"object": "list", "data": [e]});
        return false;
    }
    batch["status"] = "in_progress".into();
    batch["in_progress_at"] = t.into();
    true
}

/// How a batch ends: its final status, how many lines are answered, and
/// the error the others get.
struct End {
    status: &'static str,
    answered: usize,
    code: &'static str,
    message: &'static str,
}

/// Whether this poll ends the batch, and how.
fn end_of(batch: &StoredBatch, behavior: &BatchBehavior) -> Option<End> {
    if batch.cancel_requested {
        return Some(End {
            status: "cancelled",
            answered: behavior.answered_before_stop,
            code: "batch_cancelled",
            message: "This request was not executed because the batch was cancelled.",
        });
    }
    if batch.polls < behavior.polls_to_finish.max(1) {
        return None;
    }
    match behavior.end {
        BatchEnd::Complete => Some(End {
            status: "completed",
            answered: usize::MAX,
            code: "",
            message: "",
        }),
        BatchEnd::Expire => Some(End {
            status: "expired",
            answered: behavior.answered_before_stop,
            code: "batch_expired",
            message: "This request could not be executed before the completion window expired.",
        }),
        BatchEnd::Hold => None,
    }
}

/// Store an output or error file of batch `id`; its id, or null when it
/// has no lines.
fn output_file(
    api: &BatchApi,
    store: &mut Store,
    id: &str,
    kind: &str,
    lines: Vec<u8>,
    t: u64,
) -> Value {
    if lines.is_empty() {
        return Value::Null;
    }
    let f = StoredFile {
        id: api.new_id("file-", 24),
        filename: format!("{id}_{kind}.jsonl"),
        purpose: "batch_output".into(),
        created_at: t,
        content: Bytes::from(lines),
    };
    let fid = f.id.clone();
    store.files.push(f);
    Value::from(fid)
}
