//! Reading an input file into a job's lines: a first pass that checks it
//! (identity, unique ids, no line over the cap), then a second, lazy pass
//! that hands each line to the store's COPY as it is read.
//!
//! Lines are numbered and trimmed as the engine's reader does (a line's
//! `seq` is its physical line number − 1; the `\r\n` and a first line's
//! byte-order mark are left out; blank lines are skipped), because the
//! engine parses the stored line again when it is claimed.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use batchling_core::pricing::Catalog;
use batchling_core::request::{LineProblem, is_blank};
use batchling_core::tokens::TokenEstimate;
use batchling_engine::{MAX_LINE_BYTES, Validator, token_cost};
use batchling_queue::{NewLine, QueueError};

/// What a loaded line's numbers are computed with.
#[derive(Debug, Clone, Default)]
pub(crate) struct LoadSpec {
    /// Prices for each line's worst case (0 without them, or for a model
    /// not priced).
    pub(crate) prices: Option<Arc<Catalog>>,
    /// Output tokens assumed for a request that sets no maximum.
    pub(crate) default_max_output: u64,
    /// The budget across every worker, USD (`--max-cost`).
    pub(crate) budget_cap: Option<f64>,
}

/// Why a file cannot be loaded as a shared job.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// Two lines share a `custom_id`: the workers' answers could not be
    /// told apart.
    #[error(
        "{}: lines {first} and {line} share the custom_id {id:?}; a job shared by workers (--store) needs every custom_id unique: fix the file",
        path.display()
    )]
    DuplicateId {
        /// The file.
        path: PathBuf,
        /// The first line with the id.
        first: u64,
        /// The line repeating it.
        line: u64,
        /// The id.
        id: String,
    },
    /// A line over the reader's cap cannot be stored whole.
    #[error(
        "{}: line {line} is longer than {limit} bytes, too long for a job shared by workers (--store); shorten or remove it",
        path.display()
    )]
    TooLong {
        /// The file.
        path: PathBuf,
        /// The line.
        line: u64,
        /// The cap, bytes.
        limit: usize,
    },
}

/// The first pass: the SHA-256 of the file's bytes (its identity), after
/// checking every line. Bounded memory: one line and the id fingerprints.
pub(crate) fn check_and_hash(path: &Path) -> Result<[u8; 32], LoadError> {
    let read_err = |source| LoadError::Read {
        path: path.to_owned(),
        source,
    };
    let mut sha = ring::digest::Context::new(&ring::digest::SHA256);
    let mut validator = Validator::default();
    let mut lines = Lines::open(path).map_err(read_err)?;
    while let Some(line) = lines
        .next_line(|bytes| sha.update(bytes))
        .map_err(read_err)?
    {
        let (line_no, bytes) = line?;
        if let Err(e) = validator.validate(line_no, bytes)
            && let LineProblem::DuplicateCustomId {
                custom_id,
                first_line,
            } = e.problem
        {
            return Err(LoadError::DuplicateId {
                path: path.to_owned(),
                first: first_line,
                line: line_no,
                id: custom_id,
            });
        }
    }
    let mut identity = [0u8; 32];
    identity.copy_from_slice(sha.finish().as_ref());
    Ok(identity)
}

/// The second pass, lazily: each non-blank line as the store keeps it. A
/// read error or a file changed since [`check_and_hash`] ends the load
/// with an error (the store then keeps nothing of it).
pub(crate) fn new_lines(
    path: &Path,
    spec: &LoadSpec,
    identity: [u8; 32],
) -> Result<impl Iterator<Item = Result<NewLine, QueueError>>, LoadError> {
    let lines = Lines::open(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(SecondPass {
        lines,
        sha: Some(ring::digest::Context::new(&ring::digest::SHA256)),
        identity,
        validator: Validator::default(),
        spec: spec.clone(),
        path: path.to_owned(),
    })
}

struct SecondPass {
    lines: Lines,
    /// `None` once the end was reached (or an error given).
    sha: Option<ring::digest::Context>,
    identity: [u8; 32],
    validator: Validator,
    spec: LoadSpec,
    path: PathBuf,
}

impl SecondPass {
    fn changed(&self, why: String) -> QueueError {
        QueueError::BadInput {
            what: format!(
                "{} {why} while it was loaded; nothing was loaded: run again",
                self.path.display()
            ),
        }
    }
}

impl Iterator for SecondPass {
    type Item = Result<NewLine, QueueError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut sha = self.sha.take()?;
        let next = self.lines.next_line(|b| sha.update(b));
        let line = match next {
            Err(e) => return Some(Err(self.changed(format!("could not be read ({e})")))),
            Ok(None) => {
                if sha.finish().as_ref() != self.identity {
                    return Some(Err(self.changed("changed".to_owned())));
                }
                return None;
            }
            Ok(Some(Err(_too_long))) => {
                return Some(Err(self.changed("changed".to_owned())));
            }
            Ok(Some(Ok((line_no, bytes)))) => {
                new_line(&mut self.validator, &self.spec, line_no, bytes)
            }
        };
        self.sha = Some(sha);
        Some(Ok(line))
    }
}

/// One line for the store: the whole raw line as its body; a line that
/// fails validation is kept too (with its id if one could be read), so
/// that the engine records it in the error file.
fn new_line(v: &mut Validator, spec: &LoadSpec, line_no: u64, bytes: &[u8]) -> NewLine {
    let (custom_id, est, worst) = match v.validate(line_no, bytes) {
        Ok(req) => {
            let est = token_cost(req.endpoint, req.body.as_bytes(), spec.default_max_output);
            let worst = worst_case(spec.prices.as_deref(), req.model.as_deref(), est);
            (req.custom_id, est.total(), worst)
        }
        Err(e) => (e.custom_id.unwrap_or_default(), 0, 0.0),
    };
    NewLine {
        seq: line_no - 1,
        custom_id,
        body: bytes.to_vec(),
        worst_cost: worst,
        est_tokens: est,
    }
}

/// The budget's worst case for a request, as the engine reserves it
/// (`budget::worst_case`); 0 when there are no prices or the model has none.
fn worst_case(prices: Option<&Catalog>, model: Option<&str>, est: TokenEstimate) -> f64 {
    let Some((_, price)) = prices.zip(model).and_then(|(c, m)| c.get(m)) else {
        return 0.0;
    };
    let cost = batchling_engine::budget::worst_case(price, est);
    if cost.is_finite() && cost >= 0.0 {
        cost
    } else {
        0.0
    }
}

/// The file's lines as the engine's reader numbers and trims them.
struct Lines {
    reader: BufReader<File>,
    path: PathBuf,
    buf: Vec<u8>,
    line_no: u64,
}

/// A line: its number and bytes, or a line over the cap.
type Line<'a> = Result<(u64, &'a [u8]), LoadError>;

impl Lines {
    fn open(path: &Path) -> io::Result<Lines> {
        Ok(Lines {
            reader: BufReader::with_capacity(256 << 10, File::open(path)?),
            path: path.to_owned(),
            buf: Vec::with_capacity(8 << 10),
            line_no: 0,
        })
    }

    /// The next non-blank line; `raw` sees every byte read, blank lines
    /// and line endings included (for the file's hash).
    fn next_line(&mut self, mut raw: impl FnMut(&[u8])) -> io::Result<Option<Line<'_>>> {
        // One byte more than the cap: room for the line's newline.
        let room = MAX_LINE_BYTES as u64 + 1;
        let (start, end) = loop {
            self.buf.clear();
            let n = (&mut self.reader)
                .take(room)
                .read_until(b'\n', &mut self.buf)?;
            if n == 0 {
                return Ok(None);
            }
            raw(&self.buf);
            self.line_no += 1;
            if self.buf.last() != Some(&b'\n') && n as u64 == room {
                return Ok(Some(Err(LoadError::TooLong {
                    path: self.path.clone(),
                    line: self.line_no,
                    limit: MAX_LINE_BYTES,
                })));
            }
            let mut end = self.buf.len();
            while end > 0 && matches!(self.buf[end - 1], b'\n' | b'\r') {
                end -= 1;
            }
            let start = if self.line_no == 1 && self.buf[..end].starts_with(b"\xEF\xBB\xBF") {
                3 // a UTF-8 byte-order mark some editors add
            } else {
                0
            };
            if !is_blank(&self.buf[start..end]) {
                break (start, end);
            }
        };
        Ok(Some(Ok((self.line_no, &self.buf[start..end]))))
    }
}
