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
use super::{BatchApi, BatchEnd, StoredBatch, StoredFile, injected_failure, lock, now, take};
use crate::server::Shared;

pub(crate) async fn create(api: &BatchApi, body: &[u8]) -> Response<Body> {
    if let Some(r) = injected_failure(api, &api.fail_creates) {
        return r;
    }
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return error(
            400,
            "We could not parse the JSON body of your request.",
            None,
            None,
        );
    };
    let Some(file_id) = req["input_file_id"].as_str() else {
        return error(
            400,
            "Missing required parameter: 'input_file_id'.",
            Some("input_file_id"),
            None,
        );
    };
    let Some(endpoint) = req["endpoint"]
        .as_str()
        .filter(|e| e.parse::<Endpoint>().is_ok())
    else {
        return error(400, "Invalid value for 'endpoint'.", Some("endpoint"), None);
    };
    if req["completion_window"] != "24h" {
        return error(
            400,
            "Invalid value for 'completion_window': only '24h' is supported.",
            Some("completion_window"),
            None,
        );
    }
    let object = {
        let mut store = lock(&api.store);
        let Some(file) = store.files.iter().find(|f| f.id == file_id) else {
            return error(
                400,
                &format!("No such File object: {file_id}"),
                Some("input_file_id"),
                None,
            );
        };
        if file.purpose != "batch" {
            return error(
                400,
                "The input file must have purpose 'batch'.",
                Some("input_file_id"),
                None,
            );
        }
        let total = file
            .content
            .split(|&b| b == b'\n')
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
            .count();
        let created = now();
        let object = json!({
            "id": api.new_id("batch_", 32), "object": "batch", "endpoint": endpoint, "model": null,
            "errors": null, "input_file_id": file_id, "completion_window": "24h",
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
        object
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
    let polls = store.batches[index].polls;
    let file_id = store.batches[index].object["input_file_id"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let content = store
        .files
        .iter()
        .find(|f| f.id == file_id)
        .map(|f| f.content.clone())
        .unwrap_or_default();
    let endpoint = store.batches[index].object["endpoint"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let t = now();
    if status == "validating" {
        if let Some(e) = validate_file(&content, &endpoint) {
            let b = &mut store.batches[index].object;
            b["status"] = "failed".into();
            b["failed_at"] = t.into();
            b["errors"] = json!({"object": "list", "data": [e]});
            return ok_json(b);
        }
        let b = &mut store.batches[index].object;
        b["status"] = "in_progress".into();
        b["in_progress_at"] = t.into();
    }
    let end = if store.batches[index].cancel_requested {
        Some((
            "cancelled",
            "batch_cancelled",
            "This request was not executed because the batch was cancelled.",
            behavior.answered_before_stop,
        ))
    } else if polls >= behavior.polls_to_finish.max(1) {
        match behavior.end {
            BatchEnd::Complete => Some(("completed", "", "", usize::MAX)),
            BatchEnd::Expire => Some((
                "expired",
                "batch_expired",
                "This request could not be executed before the completion window expired.",
                behavior.answered_before_stop,
            )),
            BatchEnd::Hold => None,
        }
    } else {
        None
    };
    let Some((final_status, code, message, answered)) = end else {
        return ok_json(&store.batches[index].object);
    };
    let (out, err, done, failed) = execute(shared, &content, answered, code, message);
    let mut new_file = |lines: Vec<u8>, kind: &str| -> Value {
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
    };
    let out_id = new_file(out, "output");
    let err_id = new_file(err, "error");
    let b = &mut store.batches[index].object;
    b["status"] = final_status.into();
    b["output_file_id"] = out_id;
    b["error_file_id"] = err_id;
    b["finalizing_at"] = t.into();
    b[format!("{final_status}_at").as_str()] = t.into();
    b["request_counts"]["completed"] = done.into();
    b["request_counts"]["failed"] = failed.into();
    ok_json(b)
}
