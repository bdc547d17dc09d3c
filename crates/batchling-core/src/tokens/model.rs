//! Model name → encoding, after `tiktoken/model.py` (tiktoken 0.14.0; see
//! docs/providers.md, "Token counting").

use super::Encoding;
use Encoding::{Cl100kBase, O200kBase};

/// Exact model names (`MODEL_TO_ENCODING`), checked before the prefixes.
///
/// The deprecated p50k / r50k models (`text-davinci-003`, `davinci`, `curie`,
/// ...) are left out on purpose: the API no longer serves them and we have no
/// variant for their encodings, so they fall through to [`Encoding::Approximate`].
const EXACT: &[(&str, Encoding)] = &[
    // reasoning
    ("o1", O200kBase),
    ("o3", O200kBase),
    ("o4-mini", O200kBase),
    // chat
    ("gpt-5", O200kBase),
    ("gpt-4.1", O200kBase),
    ("gpt-4.5", O200kBase), // not in tiktoken, which lists only `gpt-4.5-*`
    ("gpt-4o", O200kBase),
    ("gpt-4", Cl100kBase),
    ("gpt-3.5-turbo", Cl100kBase),
    ("gpt-3.5", Cl100kBase),
    ("gpt-35-turbo", Cl100kBase), // Azure deployment name
    // base
    ("davinci-002", Cl100kBase),
    ("babbage-002", Cl100kBase),
    // embeddings
    ("text-embedding-ada-002", Cl100kBase),
    ("text-embedding-3-small", Cl100kBase),
    ("text-embedding-3-large", Cl100kBase),
];

/// Prefixes (`MODEL_PREFIX_TO_ENCODING`), in tiktoken's order.
const PREFIXES: &[(&str, Encoding)] = &[
    ("o1-", O200kBase),
    ("o3-", O200kBase),
    ("o4-mini-", O200kBase),
    ("gpt-5", O200kBase),
    ("gpt-4.5-", O200kBase),
    ("gpt-4.1-", O200kBase),
    ("chatgpt-4o-", O200kBase),
    ("gpt-4o-", O200kBase),
    ("gpt-4-", Cl100kBase),
    ("gpt-3.5-turbo-", Cl100kBase),
    ("gpt-35-turbo-", Cl100kBase),
    // gpt-oss uses o200k_harmony: o200k_base plus special tokens only, so
    // ordinary text encodes identically.
    ("gpt-oss-", O200kBase),
    // tiktoken-rs's extra entry (codex-mini-latest is an o4-mini derivative).
    ("codex-mini", O200kBase),
];

pub(super) fn lookup(model: &str) -> Encoding {
    // Fine-tuned models: `ft:<base>:<org>:<suffix>:<id>` → the base model's
    // encoding. (tiktoken matches `ft:gpt-4` before the base is known, which
    // would send `ft:gpt-4.1-...` to cl100k; tiktoken-rs strips like this.)
    if let Some(rest) = model.strip_prefix("ft:") {
        let base = rest.split(':').next().unwrap_or(rest);
        return lookup_plain(base);
    }
    lookup_plain(model)
}

fn lookup_plain(model: &str) -> Encoding {
    if let Some(&(_, enc)) = EXACT.iter().find(|(name, _)| *name == model) {
        return enc;
    }
    if let Some(&(_, enc)) = PREFIXES.iter().find(|(p, _)| model.starts_with(p)) {
        return enc;
    }
    Encoding::Approximate
}
