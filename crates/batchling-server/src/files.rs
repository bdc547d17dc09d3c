//! The Files API: upload (streamed to disk, size-capped), list, retrieve,
//! content, delete.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use axum::Extension;
use axum::body::Body;
use axum::extract::multipart::{Field, Multipart, MultipartError, MultipartRejection};
use axum::extract::{Path as UrlPath, Query};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::api::{ApiError, ApiResult, FORM_ROOM, Owner, Shared, new_file_id, plausible_id};
use crate::meta::FileRow;
use crate::unix_now;

/// Purposes an upload may have: OpenAI's upload values that the File
/// object's `purpose` enum can also carry. OpenAI accepts `evals` on upload,
/// but no SDK's File type lists it, so one such file would break every
/// typed `files.list()` (async-openai fails the whole page).
const UPLOAD_PURPOSES: [&str; 5] = ["assistants", "batch", "fine-tune", "vision", "user_data"];

/// `purpose=batch` files expire after 30 days unless told otherwise.
const BATCH_FILE_LIFETIME: u64 = 30 * 86400;

/// Cap for a text form field (purpose, expiry): they are a few bytes.
const TEXT_FIELD_CAP: usize = 1024;

pub(crate) fn content_path(data_dir: &Path, id: &str) -> PathBuf {
    data_dir.join("files").join(id)
}

pub(crate) fn file_json(f: &FileRow) -> Value {
    json!({
        "id": f.id,
        "object": "file",
        "bytes": f.bytes,
        "created_at": f.created_at,
        "expires_at": f.expires_at,
        "filename": f.filename,
        "purpose": f.purpose,
        "status": "processed",
        "status_details": null,
    })
}

/// A temporary upload's path, and whether a file there is ours to remove
/// (created, and not yet moved into place): it is, when dropped.
struct TempUpload(PathBuf, bool);

impl Drop for TempUpload {
    fn drop(&mut self) {
        if self.1 {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

fn multipart_error(e: MultipartError) -> ApiError {
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::bad_request(format!("request too large: {}", e.body_text()), None);
    }
    ApiError::bad_request(format!("malformed multipart body: {}", e.body_text()), None)
}

async fn text_field(mut field: Field<'_>, name: &str) -> ApiResult<String> {
    let mut buf = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        buf.extend_from_slice(&chunk);
        if buf.len() > TEXT_FIELD_CAP {
            return Err(ApiError::bad_request(
                format!("form field {name:?} is longer than {TEXT_FIELD_CAP} bytes"),
                None,
            ));
        }
    }
    String::from_utf8(buf)
        .map(|s| s.trim().to_owned())
        .map_err(|_| ApiError::bad_request(format!("form field {name:?} is not UTF-8"), None))
}

/// `expires_after` sent as one JSON part: `{"anchor": "created_at", "seconds": N}`,
/// read into the same two texts as the bracketed form fields.
fn expiry_object(text: &str) -> ApiResult<(String, String)> {
    #[derive(serde::Deserialize)]
    struct Expiry {
        anchor: String,
        seconds: serde_json::Number,
    }
    let e: Expiry = serde_json::from_str(text).map_err(|e| {
        ApiError::bad_request(
            format!("expires_after must be {{\"anchor\": \"created_at\", \"seconds\": N}}: {e}"),
            Some("expires_after"),
        )
    })?;
    Ok((e.anchor, e.seconds.to_string()))
}

/// The name to keep: the last path component, without control characters,
/// at most 255 bytes. Only ever stored as metadata, never used as a path.
fn clean_filename(raw: Option<&str>) -> String {
    let base = raw
        .unwrap_or("upload")
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or("upload");
    let mut name: String = base.chars().filter(|c| !c.is_control()).collect();
    while name.len() > 255 {
        name.pop();
    }
    if name.is_empty() || name == "." || name == ".." {
        "upload".into()
    } else {
        name
    }
}

/// `POST /v1/files`: stream the form's file to `tmp/` (capped), check the
/// other fields, then move it into `files/` and record it.
pub(crate) async fn upload(
    state: Shared,
    Extension(owner): Extension<Owner>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<Response> {
    let cap = state.max_upload_bytes;
    // An announced length that cannot fit is refused before reading a byte.
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > cap.saturating_add(FORM_ROOM)) {
        return Err(ApiError::too_large(cap));
    }
    let multipart = multipart.map_err(|e| {
        ApiError::bad_request(
            format!("expected a multipart/form-data body: {}", e.body_text()),
            None,
        )
    })?;
    let id = new_file_id();
    let mut tmp = TempUpload(state.data_dir.join("tmp").join(format!("{id}.part")), false);
    let form = read_form(multipart, &mut tmp, cap, state.limits.max_form_parts).await?;
    let (filename, bytes, purpose) = form.file_and_purpose()?;
    let lifetime = form.lifetime(&purpose)?;
    let now = unix_now();
    let row = FileRow {
        id,
        owner: owner.0,
        filename,
        purpose,
        bytes,
        created_at: now,
        expires_at: lifetime.map(|l| now + l),
    };
    keep(&state, tmp, &row).await?;
    tracing::info!(file = %row.id, bytes = row.bytes, purpose = %row.purpose, "file uploaded");
    Ok(axum::Json(file_json(&row)).into_response())
}

/// What an upload's form carried, as sent.
#[derive(Debug, Default)]
struct UploadForm {
    /// The file part's cleaned name and size (its content is in the
    /// temporary file).
    file: Option<(String, u64)>,
    purpose: Option<String>,
    anchor: Option<String>,
    seconds: Option<String>,
}

/// Read the form's parts (at most `max_parts`), streaming the file part to
/// `tmp` (at most `cap` bytes).
async fn read_form(
    mut multipart: Multipart,
    tmp: &mut TempUpload,
    cap: u64,
    max_parts: usize,
) -> ApiResult<UploadForm> {
    let mut form = UploadForm::default();
    let mut parts = 0;
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        parts += 1;
        if parts > max_parts {
            return Err(ApiError::bad_request(
                format!(
                    "too many parts in the form: this server accepts at most {max_parts} (file, purpose, expires_after[anchor], expires_after[seconds])"
                ),
                None,
            ));
        }
        let name = field.name().unwrap_or("").to_owned();
        match name.as_str() {
            "file" => {
                if form.file.is_some() {
                    return Err(ApiError::bad_request(
                        "more than one file part",
                        Some("file"),
                    ));
                }
                let filename = clean_filename(field.file_name());
                form.file = Some((filename, save_file(field, tmp, cap).await?));
            }
            "purpose" => form.purpose = Some(text_field(field, "purpose").await?),
            "expires_after[anchor]" => form.anchor = Some(text_field(field, &name).await?),
            "expires_after[seconds]" => form.seconds = Some(text_field(field, &name).await?),
            // The same policy as one JSON part, as generic multipart clients
            // send an object field.
            "expires_after" => {
                let (a, s) = expiry_object(&text_field(field, &name).await?)?;
                (form.anchor, form.seconds) = (Some(a), Some(s));
            }
            // Unknown fields are drained (bounded) and ignored, as OpenAI's
            // server ignores parameters it does not know.
            _ => drop(text_field(field, &name).await?),
        }
    }
    Ok(form)
}

/// Stream the file part to `tmp`, synced; its size.
async fn save_file(mut field: Field<'_>, tmp: &mut TempUpload, cap: u64) -> ApiResult<u64> {
    let mut out = tokio::fs::File::create(&tmp.0)
        .await
        .map_err(ApiError::internal)?;
    tmp.1 = true;
    let mut size = 0u64;
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        size += chunk.len() as u64;
        if size > cap {
            return Err(ApiError::too_large(cap));
        }
        out.write_all(&chunk).await.map_err(ApiError::internal)?;
    }
    out.sync_all().await.map_err(ApiError::internal)?;
    Ok(size)
}

impl UploadForm {
    /// The file's name and size and its purpose: both required, the purpose
    /// one a File object can carry, a batch input named `.jsonl`.
    fn file_and_purpose(&self) -> ApiResult<(String, u64, String)> {
        let Some((filename, bytes)) = self.file.clone() else {
            return Err(ApiError::bad_request(
                "Missing required parameter: 'file'.",
                Some("file"),
            ));
        };
        let purpose = self.purpose.clone().ok_or_else(|| {
            ApiError::bad_request("Missing required parameter: 'purpose'.", Some("purpose"))
        })?;
        if !UPLOAD_PURPOSES.contains(&purpose.as_str()) {
            return Err(ApiError::bad_request(
                format!(
                    "Invalid value for 'purpose': {purpose:?}; this server accepts {} (the purposes a File object can carry)",
                    UPLOAD_PURPOSES.join(", ")
                ),
                Some("purpose"),
            ));
        }
        if purpose == "batch" && !filename.ends_with(".jsonl") {
            return Err(ApiError::bad_request(
                "Invalid file format for Batch API. Must be .jsonl",
                Some("file"),
            ));
        }
        Ok((filename, bytes, purpose))
    }

    /// How long the file lives, in seconds (`None`: until deleted).
    fn lifetime(&self, purpose: &str) -> ApiResult<Option<u64>> {
        match (self.anchor.as_deref(), self.seconds.as_deref()) {
            (None, None) => Ok((purpose == "batch").then_some(BATCH_FILE_LIFETIME)),
            (Some("created_at"), Some(s)) => match s.parse::<u64>() {
                Ok(n) if (3600..=2_592_000).contains(&n) => Ok(Some(n)),
                _ => Err(ApiError::bad_request(
                    format!(
                        "expires_after[seconds] must be an integer from 3600 to 2592000, not {s:?}"
                    ),
                    Some("expires_after[seconds]"),
                )),
            },
            (Some(a), Some(_)) if a != "created_at" => Err(ApiError::bad_request(
                format!("expires_after[anchor] must be \"created_at\", not {a:?}"),
                Some("expires_after[anchor]"),
            )),
            _ => Err(ApiError::bad_request(
                "expires_after needs both [anchor] and [seconds]",
                Some("expires_after"),
            )),
        }
    }
}

/// Move the upload into `files/` and record it; a row that cannot be
/// recorded takes its content with it.
async fn keep(state: &Shared, mut tmp: TempUpload, row: &FileRow) -> ApiResult<()> {
    let dest = content_path(&state.data_dir, &row.id);
    tokio::fs::rename(&tmp.0, &dest)
        .await
        .map_err(ApiError::internal)?;
    tmp.1 = false;
    if let Err(e) = state.meta.insert_file(row) {
        let _ = std::fs::remove_file(&dest);
        return Err(e.into());
    }
    Ok(())
}

fn param<'a>(q: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    q.get(name).map(String::as_str).filter(|s| !s.is_empty())
}

/// Parse `limit` within `1..=max`.
pub(crate) fn limit_param(
    q: &HashMap<String, String>,
    default: usize,
    max: usize,
) -> ApiResult<usize> {
    match param(q, "limit") {
        None => Ok(default),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(
                format!("Invalid 'limit': {s:?}; expected an integer from 1 to {max}"),
                Some("limit"),
            )),
        },
    }
}

/// A list page in OpenAI's shape.
pub(crate) fn page(data: Vec<Value>, has_more: bool) -> Value {
    let first = data
        .first()
        .and_then(|v| v["id"].as_str())
        .map(str::to_owned);
    let last = data
        .last()
        .and_then(|v| v["id"].as_str())
        .map(str::to_owned);
    json!({"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": has_more})
}

pub(crate) async fn list(
    state: Shared,
    Extension(owner): Extension<Owner>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let limit = limit_param(&q, 10_000, 10_000)?;
    let asc = match param(&q, "order") {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(o) => {
            return Err(ApiError::bad_request(
                format!("Invalid 'order': {o:?}; expected asc or desc"),
                Some("order"),
            ));
        }
    };
    let after = param(&q, "after");
    if let Some(a) = after
        && state.meta.file(&owner.0, a)?.is_none()
    {
        return Err(ApiError::bad_request(
            format!("Invalid 'after': no file {a:?}"),
            Some("after"),
        ));
    }
    let (rows, more) = state
        .meta
        .list_files(&owner.0, param(&q, "purpose"), after, limit, asc)?;
    Ok(axum::Json(page(rows.iter().map(file_json).collect(), more)).into_response())
}

async fn find(state: &Shared, owner: &Owner, id: &str) -> ApiResult<FileRow> {
    if !plausible_id(id, "file-") {
        return Err(ApiError::not_found("File", id, "file_id"));
    }
    state
        .meta
        .file(&owner.0, id)?
        .ok_or_else(|| ApiError::not_found("File", id, "file_id"))
}

pub(crate) async fn retrieve(
    state: Shared,
    Extension(owner): Extension<Owner>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Response> {
    let f = find(&state, &owner, &id).await?;
    Ok(axum::Json(file_json(&f)).into_response())
}

pub(crate) async fn content(
    state: Shared,
    Extension(owner): Extension<Owner>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Response> {
    let f = find(&state, &owner, &id).await?;
    let file = tokio::fs::File::open(content_path(&state.data_dir, &f.id))
        .await
        .map_err(ApiError::internal)?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 256 << 10));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, f.bytes.to_string()),
        ],
        body,
    )
        .into_response())
}

pub(crate) async fn delete(
    state: Shared,
    Extension(owner): Extension<Owner>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Response> {
    let f = find(&state, &owner, &id).await?;
    if state.meta.delete_file(&owner.0, &f.id)? {
        state.runner.release_file(&f.id);
    }
    Ok(axum::Json(json!({"id": f.id, "object": "file", "deleted": true})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames_never_become_paths() {
        assert_eq!(clean_filename(Some("../../etc/passwd")), "passwd");
        assert_eq!(clean_filename(Some("a\\b\\c.jsonl")), "c.jsonl");
        assert_eq!(clean_filename(Some("..")), "upload");
        assert_eq!(clean_filename(Some("x\ny.jsonl")), "xy.jsonl");
        assert_eq!(clean_filename(None), "upload");
        assert_eq!(clean_filename(Some(&"é".repeat(300))).len(), 254);
    }
}
