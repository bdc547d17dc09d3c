//! Builders the unit tests of every provider module share.

use batchling_core::ratelimit::RateLimitSnapshot;
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::attempt::Answer;

/// A JSON answer of `status` with `body`, no headers read.
pub(crate) fn answer(status: u16, body: &str) -> Answer {
    Answer {
        status,
        body: Bytes::from(body.to_owned()),
        request_id: None,
        limits: RateLimitSnapshot::default(),
        retry_after: None,
        should_retry: None,
        body_is_json: true,
        usage: None,
    }
}

/// A header map of `pairs`.
pub(crate) fn header_map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}
