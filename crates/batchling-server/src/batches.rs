//! The Batches API: create, retrieve, cancel, list.

use std::collections::HashMap;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query};
use axum::response::{IntoResponse, Response};
use batchling_core::Endpoint;
use serde_json::{Value, json};

use crate::api::{ApiError, ApiResult, Owner, Shared, json_body, new_batch_id, plausible_id};
use crate::files::{limit_param, page};
use batchling_core::batch::BatchStatus;

use crate::meta::{BatchRow, FileRow};
use crate::runner::LiveCounts;
use crate::unix_now;

/// The Batch object, every field present (null when unknown), with live
/// counts for a running batch.
pub(crate) fn batch_json(b: &BatchRow, live: Option<LiveCounts>) -> Value {
    let (completed, failed) = match live {
        Some(l) => (l.completed, l.failed),
        None => (b.completed, b.failed),
    };
    let usage = match live {
        Some(l) => Some(l.usage),
        None => b.usage,
    };
    let errors = b
        .errors
        .as_deref()
        .and_then(|e| serde_json::from_str::<Value>(e).ok())
        .map(|data| json!({"object": "list", "data": data}));
    let metadata = b
        .metadata
        .as_deref()
        .and_then(|m| serde_json::from_str::<Value>(m).ok());
    json!({
        "id": b.id,
        "object": "batch",
        "endpoint": b.endpoint,
        "model": b.model,
        "errors": errors,
        "input_file_id": b.input_file_id,
        "completion_window": b.completion_window,
        "status": b.status.as_str(),
        "output_file_id": b.output_file_id,
        "error_file_id": b.error_file_id,
        "created_at": b.created_at,
        "in_progress_at": b.in_progress_at,
        "expires_at": b.expires_at,
        "finalizing_at": b.finalizing_at,
        "completed_at": b.completed_at,
        "failed_at": b.failed_at,
        "expired_at": b.expired_at,
        "cancelling_at": b.cancelling_at,
        "cancelled_at": b.cancelled_at,
        "request_counts": {"total": b.total, "completed": completed, "failed": failed},
        "usage": usage.map(|u| json!({
            "input_tokens": u.input,
            "input_tokens_details": {"cached_tokens": u.cached_input},
            "output_tokens": u.output,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": u.input + u.output,
        })),
        "metadata": metadata,
    })
}

fn render(state: &Shared, b: &BatchRow) -> Value {
    // Once an end is recorded, the database has the final counts; the live
    // ones (about to be dropped) may be a tick behind.
    let running = matches!(
        b.status,
        BatchStatus::InProgress | BatchStatus::Finalizing | BatchStatus::Cancelling
    );
    batch_json(b, running.then(|| state.runner.live(&b.id)).flatten())
}

/// Check `metadata`: at most 16 pairs, string keys ≤ 64 characters, string
/// values ≤ 512. Returns its JSON text.
fn check_metadata(v: Option<&Value>) -> ApiResult<Option<String>> {
    let bad = |m: String| ApiError::bad_request(m, Some("metadata"));
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => {
            if map.len() > 16 {
                return Err(bad(format!("metadata has {} pairs; at most 16", map.len())));
            }
            for (k, v) in map {
                if k.chars().count() > 64 {
                    return Err(bad(format!(
                        "metadata key {k:?} is longer than 64 characters"
                    )));
                }
                match v {
                    Value::String(s) if s.chars().count() <= 512 => {}
                    Value::String(_) => {
                        return Err(bad(format!(
                            "metadata value of {k:?} is longer than 512 characters"
                        )));
                    }
                    _ => return Err(bad(format!("metadata value of {k:?} must be a string"))),
                }
            }
            Ok(Some(Value::Object(map.clone()).to_string()))
        }
        Some(_) => Err(bad("metadata must be an object of strings".into())),
    }
}

fn required_str<'a>(body: &'a Value, name: &'static str) -> ApiResult<&'a str> {
    match body.get(name) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(ApiError::bad_request(
            format!("Missing required parameter: '{name}'."),
            Some(name),
        )),
        Some(_) => Err(ApiError::bad_request(
            format!("Invalid type for '{name}': expected a string."),
            Some(name),
        )),
    }
}

/// `POST /v1/batches`: check the request and its input file, record the
/// batch (`validating`) and start its runner.
pub(crate) async fn create(
    state: Shared,
    Extension(owner): Extension<Owner>,
    body: Body,
) -> ApiResult<Response> {
    let body = json_body(body, state.limits.max_json_bytes).await?;
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "The request body must be a JSON object.",
            None,
        ));
    }
    let input_file_id = required_str(&body, "input_file_id")?;
    let endpoint = required_str(&body, "endpoint")?;
    let window = required_str(&body, "completion_window")?;
    check_endpoint(&state, endpoint)?;
    if window != "24h" {
        return Err(ApiError::bad_request(
            format!("Invalid 'completion_window': {window:?}; the only supported value is \"24h\""),
            Some("completion_window"),
        ));
    }
    let metadata = check_metadata(body.get("metadata"))?;
    let output_expires_after = check_output_expiry(body.get("output_expires_after"))?;
    let file = batch_input(&state, &owner, input_file_id)?;
    let now = unix_now();
    let row = BatchRow {
        id: new_batch_id(),
        owner: owner.0,
        endpoint: endpoint.to_owned(),
        input_file_id: file.id,
        completion_window: window.to_owned(),
        metadata,
        output_expires_after,
        created_at: now,
        expires_at: now + state.runner.completion_window().as_secs(),
        ..BatchRow::default()
    };
    state.meta.insert_batch(&row)?;
    tracing::info!(batch = %row.id, input_file = %row.input_file_id, "batch created");
    state.runner.start(&row.id);
    Ok(axum::Json(render(&state, &row)).into_response())
}

/// Refuse an endpoint this server does not run batches for: OpenAI's
/// batch endpoints, and `/v1/messages` (native Anthropic lines) when an
/// upstream (or a provider of the routes config) speaks it.
fn check_endpoint(state: &Shared, endpoint: &str) -> ApiResult<()> {
    let routed = state.runner.routed().map(|r| &r.config);
    let spoken = |e: &Endpoint| {
        (state.runner.upstreams().iter()).any(|u| u.config.kind.speaks(*e))
            || (routed.iter())
                .flat_map(|c| c.providers.values())
                .any(|p| crate::upstream::kind_speaks(p.kind, *e))
    };
    let known: Vec<Endpoint> = Endpoint::EVERY.into_iter().filter(spoken).collect();
    if known.iter().any(|e| e.path() == endpoint) {
        return Ok(());
    }
    let known: Vec<_> = known.iter().map(|e| e.path()).collect();
    Err(ApiError::bad_request(
        format!(
            "Invalid 'endpoint': {endpoint:?}; this server runs batches for {}",
            known.join(", ")
        ),
        Some("endpoint"),
    ))
}

/// `output_expires_after`: the result files' lifetime in seconds, if given.
fn check_output_expiry(v: Option<&Value>) -> ApiResult<Option<u64>> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let anchor = v.get("anchor").and_then(Value::as_str);
    let seconds = v.get("seconds").and_then(Value::as_u64);
    match (anchor, seconds) {
        (Some("created_at"), Some(s)) if (3600..=2_592_000).contains(&s) => Ok(Some(s)),
        _ => Err(ApiError::bad_request(
            "output_expires_after must be {\"anchor\": \"created_at\", \"seconds\": 3600..2592000}",
            Some("output_expires_after"),
        )),
    }
}

/// The owner's file `id`, uploaded with purpose `batch`.
fn batch_input(state: &Shared, owner: &Owner, id: &str) -> ApiResult<FileRow> {
    let file = plausible_id(id, "file-")
        .then(|| state.meta.file(&owner.0, id))
        .transpose()?
        .flatten()
        .ok_or_else(|| {
            ApiError::bad_request(
                format!("Invalid 'input_file_id': no file {id:?}"),
                Some("input_file_id"),
            )
        })?;
    if file.purpose != "batch" {
        return Err(ApiError::bad_request(
            format!(
                "File {} has purpose {:?}; a batch's input file must be uploaded with purpose \"batch\"",
                file.id, file.purpose
            ),
            Some("input_file_id"),
        ));
    }
    Ok(file)
}

async fn find(state: &Shared, owner: &Owner, id: &str) -> ApiResult<BatchRow> {
    let not_found = || ApiError::not_found("Batch", id, "batch_id");
    if !plausible_id(id, "batch_") {
        return Err(not_found());
    }
    state.meta.batch(&owner.0, id)?.ok_or_else(not_found)
}

pub(crate) async fn retrieve(
    state: Shared,
    Extension(owner): Extension<Owner>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Response> {
    let b = find(&state, &owner, &id).await?;
    Ok(axum::Json(render(&state, &b)).into_response())
}

pub(crate) async fn cancel(
    state: Shared,
    Extension(owner): Extension<Owner>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Response> {
    let b = find(&state, &owner, &id).await?;
    let from = [
        BatchStatus::Validating,
        BatchStatus::InProgress,
        BatchStatus::Finalizing,
    ];
    if !state
        .meta
        .transition(&b.id, &from, BatchStatus::Cancelling, unix_now())?
    {
        let now = find(&state, &owner, &id).await?;
        match now.status {
            // Asking again is fine.
            BatchStatus::Cancelling | BatchStatus::Cancelled => {}
            s => {
                return Err(ApiError::conflict(format!(
                    "Cannot cancel a batch with status {}.",
                    s.as_str()
                ))
                .with_code("batch_not_cancellable"));
            }
        }
    } else {
        tracing::info!(batch = %b.id, "batch cancelling");
        state.runner.cancel(&b.id);
    }
    let b = find(&state, &owner, &id).await?;
    Ok(axum::Json(render(&state, &b)).into_response())
}

pub(crate) async fn list(
    state: Shared,
    Extension(owner): Extension<Owner>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let limit = limit_param(&q, 20, 100)?;
    let after = q.get("after").map(String::as_str).filter(|s| !s.is_empty());
    if let Some(a) = after
        && (!plausible_id(a, "batch_") || state.meta.batch(&owner.0, a)?.is_none())
    {
        return Err(ApiError::bad_request(
            format!("Invalid 'after': no batch {a:?}"),
            Some("after"),
        ));
    }
    let (rows, more) = state.meta.list_batches(&owner.0, after, limit)?;
    let data = rows.iter().map(|b| render(&state, b)).collect();
    Ok(axum::Json(page(data, more)).into_response())
}
