//! Reading the input: a stream of lines, each parsed and validated on its
//! own, duplicates caught, token costs counted. Runs on a blocking thread so
//! parsing and tokenizing overlap with the network work.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use batchling_core::json::{scan_object, string_value};
use batchling_core::request::{LineError, LineProblem, RequestLine, is_blank, parse_line};
use batchling_core::tokens::{self, TokenEstimate};
use batchling_core::{Endpoint, SeqSet};
use bytes::Bytes;

/// Where requests come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A JSONL file.
    File(PathBuf),
    /// Standard input.
    Stdin,
}

impl Input {
    /// The name used in messages.
    pub fn display_name(&self) -> String {
        match self {
            Input::File(p) => p.display().to_string(),
            Input::Stdin => "<stdin>".into(),
        }
    }

    pub(crate) fn open(&self) -> io::Result<LineReader> {
        let inner: Box<dyn Read + Send> = match self {
            Input::File(p) => Box::new(File::open(p)?),
            Input::Stdin => Box::new(io::stdin()),
        };
        Ok(BufReader::with_capacity(256 << 10, inner))
    }
}

/// A buffered input stream.
pub(crate) type LineReader = BufReader<Box<dyn Read + Send>>;

/// Catches repeated `custom_id`s across a whole file in bounded memory: a
/// 64-bit fingerprint and the first line number per id (about 34 bytes an
/// id in the table), never the ids themselves.
///
/// Two different ids share a fingerprint with probability about n²/2⁶⁵
/// (3·10⁻⁸ for a million lines); such a line would be reported as a
/// duplicate, visibly, in the error file, never dropped silently.
#[derive(Debug, Default)]
pub struct DuplicateCheck {
    seen: HashMap<u64, u32>,
}

impl DuplicateCheck {
    /// Record `custom_id` from `line_no`; the earlier line if it was seen.
    pub fn check(&mut self, custom_id: &str, line_no: u64) -> Option<u64> {
        let fp = xxhash_rust::xxh3::xxh3_64(custom_id.as_bytes());
        match self.seen.entry(fp) {
            std::collections::hash_map::Entry::Occupied(e) => Some(u64::from(*e.get())),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(u32::try_from(line_no).unwrap_or(u32::MAX));
                None
            }
        }
    }
}

/// Validates lines one at a time, as they are read.
#[derive(Debug, Default)]
pub struct Validator {
    dups: DuplicateCheck,
}

impl Validator {
    /// Parse, validate and check one non-blank line for a repeated id.
    /// Both line forms are read: OpenAI's batch line, and Anthropic's batch
    /// request line, `{"custom_id", "params"}`, read as a `/v1/messages` line.
    pub fn validate(&mut self, line_no: u64, line: &[u8]) -> Result<RequestLine, LineError> {
        let req = parse_request(line_no, line)?;
        if let Some(first_line) = self.dups.check(&req.custom_id, line_no) {
            return Err(LineError {
                line_no,
                custom_id: Some(req.custom_id.clone()),
                problem: LineProblem::DuplicateCustomId {
                    custom_id: req.custom_id,
                    first_line,
                },
            });
        }
        Ok(req)
    }
}

/// Parse and validate one non-blank line in either form (no duplicate
/// check: a line claimed from a shared job store was checked at its load).
pub(crate) fn parse_request(line_no: u64, line: &[u8]) -> Result<RequestLine, LineError> {
    match parse_line(line_no, line) {
        Ok(req) => Ok(req),
        // Only a line without "method" can be Anthropic's: the OpenAI
        // path pays nothing for the second form.
        Err(e) if e.problem == LineProblem::BadMethod("nothing".into()) => {
            params_line(line_no, line).unwrap_or(Err(e))
        }
        Err(e) => Err(e),
    }
}

/// A line of Anthropic's Message Batches request file,
/// `{"custom_id": ..., "params": {...}}` (no `method`, `url` or `body`),
/// read as a native `/v1/messages` line whose body is `params`, verbatim;
/// `None` when the line is not of that form. The checks are the OpenAI
/// line's (the id, a JSON object body, no `stream: true`): the line is
/// spelled as one and read by [`parse_line`].
fn params_line(line_no: u64, line: &[u8]) -> Option<Result<RequestLine, LineError>> {
    const KEYS: [&str; 5] = ["custom_id", "params", "method", "url", "body"];
    let text = std::str::from_utf8(line).ok()?;
    let [custom_id, params, method, url, body] = scan_object(text, KEYS).ok()?;
    let (Some(custom_id), Some(params), None, None, None) = (custom_id, params, method, url, body)
    else {
        return None;
    };
    let (custom_id, params) = (&text[custom_id], &text[params]);
    if !params.starts_with('{') {
        let id = string_value(custom_id).map(|s| s.into_owned());
        let found = serde_json::from_str::<serde_json::Value>(params).map_or(
            "not an object",
            |v| match v {
                serde_json::Value::Array(_) => "an array",
                serde_json::Value::String(_) => "a string",
                serde_json::Value::Null => "null",
                _ => "a scalar",
            },
        );
        return Some(Err(LineError {
            line_no,
            custom_id: id,
            problem: LineProblem::BadBody(format!(
                "{found} (an Anthropic batch line's \"params\" is its body)"
            )),
        }));
    }
    let mut openai = Vec::with_capacity(line.len() + 64);
    openai.extend_from_slice(br#"{"custom_id":"#);
    openai.extend_from_slice(custom_id.as_bytes());
    openai.extend_from_slice(br#","method":"POST","url":"/v1/messages","body":"#);
    openai.extend_from_slice(params.as_bytes());
    openai.push(b'}');
    Some(parse_line(line_no, &openai))
}

/// Validate every request of a file in order (duplicates included), until
/// `f` returns false. For whole-file passes that send nothing.
pub fn for_each_request(
    path: &Path,
    mut f: impl FnMut(Result<RequestLine, LineError>) -> bool,
) -> io::Result<()> {
    let mut v = Validator::default();
    for_each_line(Input::File(path.to_owned()).open()?, |line_no, line, _| {
        f(line.and_then(|l| v.validate(line_no, l)))
    })
}

/// Every problem in a whole file, for a check before sending anything.
/// Reads the file once.
pub fn check_file(path: &Path) -> io::Result<Vec<LineError>> {
    let mut problems = Vec::new();
    for_each_request(path, |r| {
        problems.extend(r.err());
        true
    })?;
    Ok(problems)
}

/// The longest input line read (its bytes before the `\n`, a `\r`
/// included); OpenAI caps a whole batch input file at 200 MB. A longer line
/// is an error line (`line_too_large`), read past without being held whole
/// (at most this much of it is buffered), and the run goes on.
pub const MAX_LINE_BYTES: usize = 64 << 20;

/// Call `f` with each non-blank line of `reader` and its 1-based physical
/// line number, numbered and trimmed exactly as `run` reads its input (the
/// line ending and a first line's byte-order mark left out), until `f`
/// returns false. A line over [`MAX_LINE_BYTES`] comes as a
/// `line_too_large` error, never held whole. For readers of the input
/// outside the engine (a shared job store's loader).
pub fn for_each_line_of(
    reader: impl Read + Send + 'static,
    mut f: impl FnMut(u64, Result<&[u8], LineError>) -> bool,
) -> io::Result<()> {
    let reader: LineReader = BufReader::with_capacity(256 << 10, Box::new(reader));
    for_each_line(reader, |line_no, line, _| f(line_no, line))
}

/// A line as [`for_each_line`] hands it on: its bytes, or the error of a
/// line over [`MAX_LINE_BYTES`].
pub(crate) type RawLine<'a> = Result<&'a [u8], LineError>;

/// Call `f` with each non-blank line (without its line ending) and its
/// 1-based physical line number, until `f` returns false. `f` also learns
/// whether more input is already buffered (false: the next read may block).
/// A line over [`MAX_LINE_BYTES`] comes as a `line_too_large` error.
pub(crate) fn for_each_line(
    r: LineReader,
    f: impl FnMut(u64, RawLine<'_>, bool) -> bool,
) -> io::Result<()> {
    for_each_line_capped(r, MAX_LINE_BYTES, f)
}

fn for_each_line_capped(
    mut r: LineReader,
    cap: usize,
    mut f: impl FnMut(u64, RawLine<'_>, bool) -> bool,
) -> io::Result<()> {
    let mut buf = Vec::with_capacity(8 << 10);
    let mut line_no = 0u64;
    loop {
        let Some(fits) = read_line(&mut r, &mut buf, cap)? else {
            return Ok(());
        };
        line_no += 1;
        if !fits {
            let problem = LineProblem::TooLarge {
                limit_bytes: cap as u64,
            };
            let e = LineError {
                line_no,
                custom_id: None,
                problem,
            };
            let more_buffered = !r.buffer().is_empty();
            if !f(line_no, Err(e), more_buffered) {
                return Ok(());
            }
            continue;
        }
        let mut line = buf.as_slice();
        while let Some((b'\n' | b'\r', rest)) = line.split_last() {
            line = rest;
        }
        if line_no == 1 && line.starts_with(b"\xEF\xBB\xBF") {
            line = &line[3..]; // a UTF-8 byte-order mark some editors add
        }
        if is_blank(line) {
            continue;
        }
        let more_buffered = !r.buffer().is_empty();
        if !f(line_no, Ok(line), more_buffered) {
            return Ok(());
        }
    }
}

/// Read the next line, newline included, into `buf`: `None` at the end of
/// the input, `Some(false)` for a line of more than `cap` bytes, whose
/// rest is then skipped in small reads (it is never held whole).
fn read_line(r: &mut LineReader, buf: &mut Vec<u8>, cap: usize) -> io::Result<Option<bool>> {
    buf.clear();
    // One byte more than the cap: room for the line's newline.
    let room = cap as u64 + 1;
    let n = (&mut *r).take(room).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') || (n as u64) < room {
        return Ok(Some(true));
    }
    loop {
        buf.clear();
        let k = (&mut *r).take(64 << 10).read_until(b'\n', buf)?;
        if k == 0 || buf.last() == Some(&b'\n') {
            break;
        }
    }
    // Give back what the long line made the buffer grow to.
    buf.clear();
    buf.shrink_to(8 << 10);
    Ok(Some(false))
}

/// Count the lines of a file quickly (for the progress total). Counts
/// newline bytes; blank lines make it a slight overestimate until the reader
/// reaches the end and sets the exact figure.
pub(crate) fn count_lines(path: &Path) -> io::Result<u64> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut n, mut last) = (0u64, b'\n');
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        n += buf[..k].iter().filter(|&&b| b == b'\n').count() as u64;
        last = buf[k - 1];
    }
    Ok(n + u64::from(last != b'\n'))
}

/// A valid request on its way to the dispatcher.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub(crate) seq: u64,
    pub(crate) line_no: u64,
    pub(crate) custom_id: String,
    pub(crate) endpoint: Endpoint,
    pub(crate) body: Bytes,
    pub(crate) model: Option<String>,
    pub(crate) tokens: TokenEstimate,
    /// The fencing token of its claim, when it came from a shared job
    /// store (`run --store`).
    pub(crate) claim: Option<i64>,
}

/// What the reader produces, in input order.
pub(crate) enum ReadItem {
    Valid(Parsed),
    /// A line that is no request: its seq, why, and its claim's token (a
    /// shared job store's line).
    Invalid(u64, LineError, Option<i64>),
}

/// Token cost of a request for pacing. Falls back to a byte-based guess
/// (4 bytes a token) when the body cannot be counted, so pacing never stops
/// on an odd body.
pub fn token_cost(endpoint: Endpoint, body: &[u8], default_max_output: u64) -> TokenEstimate {
    serde_json::from_slice(body)
        .ok()
        .and_then(|v| tokens::estimate(endpoint, &v, default_max_output).ok())
        .unwrap_or(TokenEstimate {
            input: (body.len() as u64).div_ceil(4),
            max_output: if endpoint.generates_output() {
                default_max_output
            } else {
                0
            },
            exact: false,
        })
}

/// Lines travel to the loop in batches of up to this many, which keeps
/// thread wake-ups rare.
const BATCH: usize = 64;

/// Read `input` to the end (or until the receiver goes away), sending the
/// lines on in batches. Returns the number of non-blank lines read and
/// whether the input was read to its end.
pub(crate) fn read_input(
    input: &Input,
    tx: tokio::sync::mpsc::Sender<Vec<ReadItem>>,
    count_tokens: Arc<AtomicBool>,
    default_max_output: u64,
    finished: &SeqSet,
) -> io::Result<(u64, bool)> {
    let mut v = Validator::default();
    let mut seq = 0u64;
    let mut batch = Vec::with_capacity(BATCH);
    let mut open = true;
    for_each_line(input.open()?, |line_no, line, more_buffered| {
        // Every line is validated, finished or not, so a duplicate of an id
        // that finished in an earlier run is still caught.
        let checked = line.and_then(|l| v.validate(line_no, l));
        if finished.contains(seq) {
            seq += 1;
            if !more_buffered && !batch.is_empty() {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                open = tx.blocking_send(full).is_ok();
            }
            return open;
        }
        let item = match checked {
            Ok(req) => {
                let tokens = if count_tokens.load(Relaxed) {
                    token_cost(req.endpoint, req.body.as_bytes(), default_max_output)
                } else {
                    TokenEstimate::default()
                };
                ReadItem::Valid(Parsed {
                    seq,
                    line_no,
                    custom_id: req.custom_id,
                    endpoint: req.endpoint,
                    body: Bytes::from(req.body),
                    model: req.model,
                    tokens,
                    claim: None,
                })
            }
            Err(e) => ReadItem::Invalid(seq, e, None),
        };
        seq += 1;
        batch.push(item);
        // A slow pipe must not hold lines back: send when nothing more is
        // buffered, not only when the batch is full.
        if batch.len() >= BATCH || !more_buffered {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            open = tx.blocking_send(full).is_ok();
        }
        open
    })?;
    if open && !batch.is_empty() {
        open = tx.blocking_send(batch).is_ok();
    }
    Ok((seq, open))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn duplicates_name_the_first_line() {
        let mut v = Validator::default();
        let l = |id: &str| {
            format!(r#"{{"custom_id":"{id}","method":"POST","url":"/v1/embeddings","body":{{}}}}"#)
        };
        assert!(v.validate(1, l("a").as_bytes()).is_ok());
        assert!(v.validate(2, l("b").as_bytes()).is_ok());
        let e = v.validate(7, l("a").as_bytes()).unwrap_err();
        assert_eq!(
            e.problem,
            LineProblem::DuplicateCustomId {
                custom_id: "a".into(),
                first_line: 1
            }
        );
    }

    #[test]
    fn anthropic_batch_lines_are_native_messages_lines() {
        let mut v = Validator::default();
        let params = r#"{"model":"claude-haiku-4-5", "max_tokens":10,"messages":[{"role":"user","content":"hi \u00e9"}]}"#;
        let line = format!(r#"{{"custom_id":"a-1","params":{params}}}"#);
        let req = v.validate(4, line.as_bytes()).unwrap();
        assert_eq!(req.endpoint, Endpoint::Messages);
        assert_eq!(req.body, params, "params are the body, verbatim");
        assert_eq!((req.line_no, req.custom_id.as_str()), (4, "a-1"));
        assert_eq!(req.model.as_deref(), Some("claude-haiku-4-5"));
        // Duplicates across both forms are caught.
        let openai = r#"{"custom_id":"a-1","method":"POST","url":"/v1/messages","body":{}}"#;
        assert!(matches!(
            v.validate(5, openai.as_bytes()).unwrap_err().problem,
            LineProblem::DuplicateCustomId { first_line: 4, .. }
        ));
        let mut problem = |l: &str| v.validate(9, l.as_bytes()).unwrap_err().problem;
        assert!(matches!(
            problem(r#"{"custom_id":"b","params":[1]}"#),
            LineProblem::BadBody(m) if m.contains("params") && m.contains("an array")
        ));
        assert_eq!(
            problem(r#"{"custom_id":"c","params":{"model":"m","stream":true}}"#),
            LineProblem::Streaming
        );
        // A line with neither form still says what an OpenAI line lacks.
        assert_eq!(
            problem(r#"{"custom_id":"d","url":"/v1/messages","params":{}}"#),
            LineProblem::BadMethod("nothing".into())
        );
        assert_eq!(
            problem(r#"{"custom_id":"e"}"#),
            LineProblem::BadMethod("nothing".into())
        );
    }

    #[test]
    fn lines_skip_blanks_and_strip_endings() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"\xEF\xBB\xBFa\r\n\n  \nb\nc").unwrap();
        let mut got = Vec::new();
        for_each_line(Input::File(f.path().into()).open().unwrap(), |n, l, _| {
            got.push((n, String::from_utf8(l.unwrap().to_vec()).unwrap()));
            true
        })
        .unwrap();
        assert_eq!(got, vec![(1, "a".into()), (4, "b".into()), (5, "c".into())]);
        assert_eq!(count_lines(f.path()).unwrap(), 5);
    }

    #[test]
    fn lines_over_the_cap_are_errors_and_the_next_line_is_read() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        // A cap of 5 bytes before the "\n" (a "\r" counts): 5 bytes fit,
        // 6 do not, also at the end of the input; a long line spans many
        // small reads.
        let long = "x".repeat(200_000);
        write!(f, "abcd\nabcde\n{long}\r\nok\r\nabcd\r\n\nabcde\nabcdef").unwrap();
        let mut got = Vec::new();
        let reader = BufReader::with_capacity(
            16,
            Box::new(File::open(f.path()).unwrap()) as Box<dyn Read + Send>,
        );
        for_each_line_capped(reader, 5, |n, l, _| {
            got.push(match l {
                Ok(l) => (n, String::from_utf8(l.to_vec()).unwrap()),
                Err(e) => (e.line_no, e.problem.code().to_owned()),
            });
            true
        })
        .unwrap();
        let want = [
            (1, "abcd"),
            (2, "abcde"),
            (3, "line_too_large"),
            (4, "ok"),
            (5, "abcd"),
            (7, "abcde"),
            (8, "line_too_large"),
        ];
        let want: Vec<(u64, String)> = want.iter().map(|&(n, s)| (n, s.into())).collect();
        assert_eq!(got, want);
    }
}
