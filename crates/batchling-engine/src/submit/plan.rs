//! Splitting the input into parts: validate every line first, then group
//! by (endpoint, model) — with a routes config by (endpoint, target), each
//! line's body naming its target's model — and cut each group at the
//! request and byte limits (the target's API's).
//! A part's file is not stored: it is rebuilt from the input on demand
//! ([`part_content`]) and checked against the hash taken when planned.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::Path;

use batchling_core::output::push_json_str;
use batchling_core::{LineError, RequestLine};
use batchling_providers::batch::Refusal;
use batchling_store::{PartPlan, PartRequest};

use super::apis::Placed;
use crate::reader::{Input, Validator, for_each_line};

/// Most requests and bytes per part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartLimits {
    /// Requests per batch (the API's own cap applies too: OpenAI 50,000,
    /// Anthropic 100,000).
    pub max_requests: usize,
    /// Bytes of a part's requests as batch lines (the API's own cap
    /// applies too: OpenAI 200 MB, Anthropic 256 MB).
    pub max_bytes: u64,
}

impl Default for PartLimits {
    /// No limit of the user's: the API's own ([`BatchApi::limits`]) apply.
    ///
    /// [`BatchApi::limits`]: batchling_providers::BatchApi::limits
    fn default() -> Self {
        PartLimits {
            max_requests: usize::MAX,
            max_bytes: u64::MAX,
        }
    }
}

impl PartLimits {
    /// The smaller of these and the API's.
    pub fn within(self, api: batchling_providers::batch::BatchLimits) -> PartLimits {
        PartLimits {
            max_requests: self.max_requests.min(api.max_requests),
            max_bytes: self.max_bytes.min(api.max_bytes),
        }
    }
}

/// The batch-file line of a request: canonical `url` (the batch's
/// endpoint), the body verbatim.
pub(crate) fn batch_line(custom_id: &str, url: &str, body: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + custom_id.len() + 64);
    out.extend_from_slice(b"{\"custom_id\":");
    push_json_str(&mut out, custom_id);
    out.extend_from_slice(b",\"method\":\"POST\",\"url\":");
    push_json_str(&mut out, url);
    out.extend_from_slice(b",\"body\":");
    out.extend_from_slice(body.as_bytes());
    out.extend_from_slice(b"}\n");
    out
}

/// What a validation pass found.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// Bad lines, with their sequence numbers.
    pub(crate) problems: Vec<(u64, LineError)>,
    /// Non-blank lines.
    pub(crate) total: u64,
}

/// A line too large for any part.
#[derive(Debug)]
pub(crate) struct TooLarge {
    pub(crate) line_no: u64,
    pub(crate) bytes: u64,
    /// The most bytes a part of its target may hold.
    pub(crate) limit: u64,
}

/// A valid line the Batch API cannot take ([`BatchApi::refuse`]): it fails
/// alone, before anything is sent.
///
/// [`BatchApi::refuse`]: batchling_providers::BatchApi::refuse
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) seq: u64,
    pub(crate) line_no: u64,
    pub(crate) custom_id: String,
    pub(crate) why: Refusal,
}

/// Where a valid line goes ([`Apis::place`](super::apis::Apis)), or why
/// it cannot: no route, or its Batch API refuses it ([`BatchApi::refuse`]).
///
/// [`BatchApi::refuse`]: batchling_providers::BatchApi::refuse
pub(crate) type Place<'a> = &'a dyn Fn(&RequestLine) -> Result<Placed<'a>, Refusal>;

/// The part limits of a target (`None`: the one API).
pub(crate) type LimitsOf<'a> = &'a dyn Fn(Option<&str>) -> PartLimits;

/// A request's body as its part sends it: with `model` written in (a
/// routes config's target), else as it is.
fn placed_body<'b>(body: &'b str, model: Option<&str>) -> std::borrow::Cow<'b, str> {
    match model.and_then(|m| batchling_core::json::with_model(body.as_bytes(), m)) {
        Some(b) => String::from_utf8(b).map_or(std::borrow::Cow::Borrowed(body), Into::into),
        None => std::borrow::Cow::Borrowed(body),
    }
}

/// The batch-file line of `req` in a part whose lines name `model`.
fn placed_line(req: &RequestLine, model: Option<&str>) -> Vec<u8> {
    batch_line(
        &req.custom_id,
        req.endpoint.path(),
        &placed_body(&req.body, model),
    )
}

/// What a group of requests shares: endpoint, target, model.
type GroupKey = (String, Option<String>, Option<String>);

/// What [`plan`] found and made.
#[derive(Debug, Default)]
pub(crate) struct Planned {
    pub(crate) scan: Scan,
    pub(crate) plans: Vec<PartPlan>,
    pub(crate) too_large: Vec<TooLarge>,
    pub(crate) refused: Vec<Refused>,
}

/// One line read as a request, in either line form (OpenAI's batch line,
/// Anthropic's `{"custom_id", "params"}`).
fn read_request(line_no: u64, line: &[u8]) -> Option<RequestLine> {
    Validator::default().validate(line_no, line).ok()
}

/// Validate the whole file and plan parts for the valid requests that
/// `wanted(seq)` selects and `place` takes. Nothing is sent.
pub(crate) fn plan(
    path: &Path,
    limits: LimitsOf<'_>,
    round: u32,
    wanted: impl Fn(u64) -> bool,
    place: Place<'_>,
) -> io::Result<Planned> {
    // BTreeMap: parts come out in a stable order (by endpoint, target, then
    // model).
    let mut groups: BTreeMap<GroupKey, Vec<Item>> = BTreeMap::new();
    let mut scan = Scan::default();
    let mut too_large = Vec::new();
    let mut refused = Vec::new();
    let mut v = Validator::default();
    let mut seq = 0u64;
    for_each_line(Input::File(path.to_owned()).open()?, |line_no, line, _| {
        match line.and_then(|l| v.validate(line_no, l)) {
            Err(e) => scan.problems.push((seq, e)),
            Ok(req) if wanted(seq) => {
                let placed = match place(&req) {
                    Ok(p) => p,
                    Err(why) => {
                        refused.push(Refused {
                            seq,
                            line_no,
                            custom_id: req.custom_id,
                            why,
                        });
                        seq += 1;
                        return true;
                    }
                };
                let url = req.endpoint.path();
                let bytes = placed_line(&req, placed.model).len() as u64;
                let units = count_units(&req);
                let limit = limits(placed.target).max_bytes;
                if bytes > limit {
                    too_large.push(TooLarge {
                        line_no,
                        bytes,
                        limit,
                    });
                } else {
                    let model = placed.model.map(str::to_owned).or(req.model.clone());
                    let key = (url.to_owned(), placed.target.map(str::to_owned), model);
                    groups.entry(key).or_default().push(Item {
                        req: PartRequest {
                            seq,
                            line_no,
                            custom_id: req.custom_id,
                            route: placed.route.map(str::to_owned),
                        },
                        bytes,
                        units,
                    });
                }
            }
            Ok(_) => {}
        }
        seq += 1;
        true
    })?;
    scan.total = seq;
    let plans = cut(groups, limits, round);
    Ok(Planned {
        scan,
        plans,
        too_large,
        refused,
    })
}

/// A group's requests with their sizes, cut into parts at the limits.
struct Item {
    req: PartRequest,
    bytes: u64,
    units: usize,
}

fn cut(groups: BTreeMap<GroupKey, Vec<Item>>, limits: LimitsOf<'_>, round: u32) -> Vec<PartPlan> {
    let mut plans = Vec::new();
    for ((endpoint, target, model), items) in groups {
        let limits = limits(target.as_deref());
        let new_plan = |requests, bytes| PartPlan {
            round,
            model: model.clone(),
            endpoint: endpoint.clone(),
            target: target.clone(),
            requests,
            bytes,
            // Filled in by `hash_plans`, which builds the files.
            content_hash: String::new(),
        };
        let mut current: Vec<PartRequest> = Vec::new();
        let (mut bytes, mut units) = (0u64, 0usize);
        for item in items {
            if !current.is_empty()
                && (units + item.units > limits.max_requests.max(1)
                    || bytes + item.bytes > limits.max_bytes)
            {
                plans.push(new_plan(std::mem::take(&mut current), bytes));
                (bytes, units) = (0, 0);
            }
            bytes += item.bytes;
            units += item.units;
            current.push(item.req);
        }
        if !current.is_empty() {
            plans.push(new_plan(current, bytes));
        }
    }
    plans
}

/// What a request counts against the per-batch request limit: 1, except
/// for embeddings, where OpenAI caps the *inputs* of a batch at the same
/// 50,000 (docs/providers.md, "OpenAI: Files and Batches API"): an array of
/// texts (or of token arrays) counts its length.
fn count_units(req: &batchling_core::RequestLine) -> usize {
    if req.endpoint != batchling_core::Endpoint::Embeddings {
        return 1;
    }
    match req.body_value().ok().as_ref().map(|b| &b["input"]) {
        Some(serde_json::Value::Array(a)) if !a.first().is_some_and(|x| x.is_number()) => {
            a.len().max(1)
        }
        _ => 1,
    }
}

/// xxh3-128 of a part file, in hex.
pub(crate) fn content_hash(content: &[u8]) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(content))
}

/// Rebuild the files of several parts in one pass over the input: index i
/// of the result is the file of `parts[i]`, whose lines name model
/// `models[i]` (a target's; `None`: as they are).
pub(crate) fn part_contents(
    path: &Path,
    parts: &[&[PartRequest]],
    models: &[Option<&str>],
) -> io::Result<Vec<Vec<u8>>> {
    // Which (part, position) each input line feeds.
    let mut wanted: std::collections::HashMap<u64, Vec<(usize, usize)>> =
        std::collections::HashMap::new();
    for (p, reqs) in parts.iter().enumerate() {
        for (k, r) in reqs.iter().enumerate() {
            wanted.entry(r.line_no).or_default().push((p, k));
        }
    }
    let mut lines: Vec<Vec<Option<Vec<u8>>>> = parts.iter().map(|r| vec![None; r.len()]).collect();
    for_each_line(Input::File(path.to_owned()).open()?, |line_no, line, _| {
        if let Some(slots) = wanted.get(&line_no)
            && let Ok(line) = line
            && let Some(req) = read_request(line_no, line)
        {
            for &(p, k) in slots {
                let model = models.get(p).copied().flatten();
                lines[p][k] = Some(placed_line(&req, model));
            }
        }
        true
    })?;
    Ok(lines
        .into_iter()
        .map(|ls| ls.into_iter().flatten().flatten().collect())
        .collect())
}

/// Fill in each plan's hash and byte count from its file, in one pass over
/// the input with a streaming hash per part (no part file is held: a
/// part's lines come in input order). A target's part names its model in
/// every line.
pub(crate) fn hash_plans(path: &Path, plans: &mut [PartPlan]) -> io::Result<()> {
    let mut owner: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    for (i, p) in plans.iter().enumerate() {
        for r in &p.requests {
            owner.insert(r.line_no, i);
        }
    }
    let mut hashers: Vec<xxhash_rust::xxh3::Xxh3> = plans
        .iter()
        .map(|_| xxhash_rust::xxh3::Xxh3::new())
        .collect();
    let mut sizes = vec![0u64; plans.len()];
    for_each_line(Input::File(path.to_owned()).open()?, |line_no, line, _| {
        if let Some(&i) = owner.get(&line_no)
            && let Ok(line) = line
            && let Some(req) = read_request(line_no, line)
        {
            let text = placed_line(&req, rewrite_model(&plans[i]));
            hashers[i].update(&text);
            sizes[i] += text.len() as u64;
        }
        true
    })?;
    for ((p, h), size) in plans.iter_mut().zip(hashers).zip(sizes) {
        p.bytes = size;
        p.content_hash = format!("{:032x}", h.digest128());
    }
    Ok(())
}

/// The model a plan's lines are rewritten to: its target's (`None` for a
/// part of the one API: its lines as they are).
fn rewrite_model(p: &PartPlan) -> Option<&str> {
    p.target.as_ref().and(p.model.as_deref())
}

/// Sequence numbers as a set, from a list.
pub(crate) fn seq_set(seqs: Vec<u64>) -> HashSet<u64> {
    seqs.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Every line to the one API, as it is.
    fn as_is(_: &RequestLine) -> Result<Placed<'static>, Refusal> {
        Ok(Placed {
            target: None,
            route: None,
            model: None,
        })
    }

    fn line(id: &str, model: &str) -> String {
        format!(
            r#"{{"custom_id":"{id}","method":"POST","url":"/v1/chat/completions","body":{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}}}"#
        )
    }

    #[test]
    fn parts_split_by_model_count_and_bytes() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        for i in 0..5 {
            writeln!(f, "{}", line(&format!("a{i}"), "m1")).unwrap();
        }
        writeln!(f, "{}", line("b0", "m2")).unwrap();
        writeln!(f, "not json").unwrap();
        let limits = PartLimits {
            max_requests: 2,
            max_bytes: 1 << 20,
        };
        let Planned {
            scan,
            plans,
            too_large: big,
            ..
        } = plan(f.path(), &|_| limits, 0, |_| true, &as_is).unwrap();
        assert!(big.is_empty());
        assert_eq!(scan.total, 7);
        assert_eq!(scan.problems.len(), 1);
        assert_eq!(scan.problems[0].1.line_no, 7);
        let sizes: Vec<(usize, Option<&str>)> = plans
            .iter()
            .map(|p| (p.requests.len(), p.model.as_deref()))
            .collect();
        assert_eq!(
            sizes,
            vec![
                (2, Some("m1")),
                (2, Some("m1")),
                (1, Some("m1")),
                (1, Some("m2"))
            ]
        );
        let one = batch_line("a0", "/v1/chat/completions", "{}").len() as u64;
        let limits = PartLimits {
            max_requests: 100,
            max_bytes: 400,
        };
        let plans = plan(f.path(), &|_| limits, 0, |s| s < 5, &as_is)
            .unwrap()
            .plans;
        assert!(plans.len() >= 2, "{plans:?} ({one} bytes each at least)");
        let mut plans = plans;
        hash_plans(f.path(), &mut plans).unwrap();
        assert!(plans.iter().all(|p| p.bytes <= 400));
        // The streamed hash is the hash of the file an upload rebuilds.
        for p in &plans {
            let file = part_contents(f.path(), &[&p.requests], &[None])
                .unwrap()
                .pop()
                .unwrap();
            assert_eq!(p.content_hash, content_hash(&file));
            assert_eq!(p.bytes, file.len() as u64);
        }
        assert_eq!(plans.iter().map(|p| p.requests.len()).sum::<usize>(), 5);
    }

    #[test]
    fn refused_lines_stay_out_of_parts_and_batch_file_lines_rebuild() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "{}", line("a", "m")).unwrap();
        writeln!(f, "{}", line("no", "m")).unwrap();
        let params = r#"{"model":"m",  "max_tokens":1,"messages":[]}"#;
        writeln!(f, r#"{{"custom_id":"p","params":{params}}}"#).unwrap();
        let refuse = |l: &RequestLine| match l.custom_id.as_str() {
            "no" => Err(Refusal {
                code: "invalid_url",
                message: format!("line {}: no", l.line_no),
            }),
            _ => as_is(l),
        };
        let limits = PartLimits::default();
        let mut planned = plan(f.path(), &|_| limits, 0, |_| true, &refuse).unwrap();
        assert_eq!(planned.refused.len(), 1);
        let r = &planned.refused[0];
        assert_eq!((r.seq, r.line_no, r.custom_id.as_str()), (1, 2, "no"));
        let ids: Vec<Vec<&str>> = planned
            .plans
            .iter()
            .map(|p| p.requests.iter().map(|r| r.custom_id.as_str()).collect())
            .collect();
        assert_eq!(
            ids,
            vec![vec!["a"], vec!["p"]],
            "by endpoint: chat, then messages"
        );
        hash_plans(f.path(), &mut planned.plans).unwrap();
        let p = &planned.plans[1];
        let file = part_contents(f.path(), &[&p.requests], &[None])
            .unwrap()
            .pop()
            .unwrap();
        assert_eq!(
            p.content_hash,
            content_hash(&file),
            "a batch-file line rebuilds"
        );
        assert_eq!(file, batch_line("p", "/v1/messages", params));
    }

    #[test]
    fn the_smaller_of_the_users_and_the_apis_limits_applies() {
        let api = batchling_providers::batch::BatchLimits {
            max_requests: 100,
            max_bytes: 1000,
        };
        let l = PartLimits::default().within(api);
        assert_eq!((l.max_requests, l.max_bytes), (100, 1000));
        let user = PartLimits {
            max_requests: 7,
            max_bytes: 5000,
        };
        let l = user.within(api);
        assert_eq!((l.max_requests, l.max_bytes), (7, 1000));
    }

    #[test]
    fn embedding_inputs_count_against_the_request_limit() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let emb = |id: &str, input: &str| {
            format!(
                r#"{{"custom_id":"{id}","method":"POST","url":"/v1/embeddings","body":{{"model":"e","input":{input}}}}}"#
            )
        };
        writeln!(f, "{}", emb("a", r#"["x","y","z"]"#)).unwrap();
        writeln!(f, "{}", emb("b", r#"[1,2,3]"#)).unwrap();
        writeln!(f, "{}", emb("c", r#""one""#)).unwrap();
        writeln!(f, "{}", emb("d", r#"["p","q"]"#)).unwrap();
        let limits = PartLimits {
            max_requests: 5,
            max_bytes: 1 << 20,
        };
        let plans = plan(f.path(), &|_| limits, 0, |_| true, &as_is)
            .unwrap()
            .plans;
        let ids: Vec<Vec<&str>> = plans
            .iter()
            .map(|p| p.requests.iter().map(|r| r.custom_id.as_str()).collect())
            .collect();
        // 3 + 1 + 1 inputs fill the first part; 2 more start the second.
        assert_eq!(ids, vec![vec!["a", "b", "c"], vec!["d"]]);
    }
}
