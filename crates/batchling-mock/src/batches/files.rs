//! The Files API: upload (multipart), list, retrieve.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;

use axum::body::Body;
use bytes::Bytes;
use hyper::Response;
use hyper::header::CONTENT_TYPE;

use super::http::{error, ok_json, page};
use super::{BatchApi, StoredFile, injected_failure, lock, now};
use crate::server::Shared;

pub(crate) fn with_file(
    api: &BatchApi,
    id: &str,
    f: impl FnOnce(&StoredFile) -> Response<Body>,
) -> Response<Body> {
    let store = lock(&api.store);
    match store.files.iter().find(|x| x.id == id) {
        Some(file) => f(file),
        None => error(
            404,
            &format!("No such File object: {id}"),
            Some("file_id"),
            None,
        ),
    }
}

/// The parts of a multipart/form-data body: (name, filename, content).
fn multipart(content_type: &str, body: &[u8]) -> Option<Vec<(String, Option<String>, Bytes)>> {
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))?
        .trim_matches('"');
    let delim = format!("--{boundary}");
    let mut out = Vec::new();
    let mut rest = body;
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let start = find(rest, delim.as_bytes())?;
    rest = &rest[start + delim.len()..];
    loop {
        if rest.starts_with(b"--") {
            return Some(out);
        }
        rest = rest.strip_prefix(b"\r\n")?;
        let head_end = find(rest, b"\r\n\r\n")?;
        let head = std::str::from_utf8(&rest[..head_end]).ok()?;
        rest = &rest[head_end + 4..];
        let end = find(rest, format!("\r\n{delim}").as_bytes())?;
        let content = Bytes::copy_from_slice(&rest[..end]);
        rest = &rest[end + 2 + delim.len()..];
        let disposition = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))?;
        let field = |key: &str| {
            disposition.split(';').find_map(|p| {
                p.trim()
                    .strip_prefix(key)
                    .map(|v| v.trim_matches('"').to_owned())
            })
        };
        out.push((field("name=")?, field("filename="), content));
    }
}

pub(crate) fn upload(
    shared: &Shared,
    parts: &hyper::http::request::Parts,
    body: &[u8],
) -> Response<Body> {
    let api = &shared.batches;
    if let Some(r) = injected_failure(api, &api.fail_uploads) {
        return r;
    }
    let ct = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(fields) = multipart(ct, body) else {
        return error(
            400,
            "Expected a multipart/form-data body with 'file' and 'purpose'.",
            None,
            None,
        );
    };
    let purpose = fields
        .iter()
        .find(|(n, _, _)| n == "purpose")
        .map(|(_, _, c)| String::from_utf8_lossy(c).into_owned());
    let file = fields.iter().find(|(n, _, _)| n == "file");
    let (Some(purpose), Some((_, filename, content))) = (purpose, file) else {
        return error(
            400,
            "Missing required parameter: 'file' or 'purpose'.",
            None,
            None,
        );
    };
    let filename = filename.clone().unwrap_or_else(|| "upload".into());
    if purpose == "batch" && !filename.ends_with(".jsonl") {
        return error(
            400,
            "Invalid file format for Batch API. Must be .jsonl",
            Some("file"),
            None,
        );
    }
    let f = StoredFile {
        id: api.new_id("file-", 24),
        filename,
        purpose,
        created_at: now(),
        content: content.clone(),
    };
    let object = f.object();
    lock(&api.store).files.push(f);
    api.files_uploaded.fetch_add(1, Relaxed);
    ok_json(&object)
}

pub(crate) fn list(api: &BatchApi, q: &HashMap<String, String>) -> Response<Body> {
    let store = lock(&api.store);
    let mut files: Vec<&StoredFile> = store
        .files
        .iter()
        .filter(|f| q.get("purpose").is_none_or(|p| *p == f.purpose))
        .collect();
    if q.get("order").is_none_or(|o| o != "asc") {
        files.reverse();
    }
    let limit = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(10_000usize);
    page(
        files.iter().map(|f| f.object()).collect(),
        q.get("after"),
        limit,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_bodies_are_split_into_fields() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jsonl\"\r\nContent-Type: application/octet-stream\r\n\r\n{\"a\":1}\n\r\n--XyZ--\r\n";
        let parts = multipart("multipart/form-data; boundary=XyZ", body).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].0, "purpose");
        assert_eq!(&parts[0].2[..], b"batch");
        assert_eq!(parts[1].1.as_deref(), Some("a.jsonl"));
        assert_eq!(&parts[1].2[..], b"{\"a\":1}\n");
    }
}
