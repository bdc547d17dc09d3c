//! Reading an input file into a job's lines: a first pass that checks it
//! (identity, unique ids, no line over the cap), then a second, lazy pass
//! that hands each line to the store's COPY as it is read.
//!
//! Lines are read by the engine's own reader (`for_each_line_of`: a
//! line's `seq` is its physical line number − 1; the `\r\n` and a first
//! line's byte-order mark are left out; blank lines are skipped), because
//! the engine parses the stored line again when it is claimed.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use batchling_core::pricing::Catalog;
use batchling_core::request::LineProblem;
use batchling_core::tokens::TokenEstimate;
use batchling_engine::{MAX_LINE_BYTES, Validator, for_each_line_of, token_cost};
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
    let (file, sha) = Hashing::open(path).map_err(read_err)?;
    let mut validator = Validator::default();
    let mut refused = None;
    for_each_line_of(file, |line_no, line| {
        refused = match line {
            Err(_too_long) => Some(LoadError::TooLong {
                path: path.to_owned(),
                line: line_no,
                limit: MAX_LINE_BYTES,
            }),
            Ok(bytes) => duplicate(path, line_no, validator.validate(line_no, bytes).err()),
        };
        refused.is_none()
    })
    .map_err(read_err)?;
    match refused {
        Some(e) => Err(e),
        None => Ok(sha.finish()),
    }
}

/// The error of a line repeating an earlier line's id, if it does.
fn duplicate(
    path: &Path,
    line: u64,
    e: Option<batchling_core::request::LineError>,
) -> Option<LoadError> {
    let LineProblem::DuplicateCustomId {
        custom_id,
        first_line,
    } = e?.problem
    else {
        return None;
    };
    Some(LoadError::DuplicateId {
        path: path.to_owned(),
        first: first_line,
        line,
        id: custom_id,
    })
}

/// The second pass, lazily: each non-blank line as the store keeps it,
/// read on a thread of its own and handed over a short channel as the
/// COPY takes them. A read error or a file changed since
/// [`check_and_hash`] ends the load with an error (the store then keeps
/// nothing of it).
pub(crate) fn new_lines(
    path: &Path,
    spec: &LoadSpec,
    identity: [u8; 32],
) -> Result<impl Iterator<Item = Result<NewLine, QueueError>>, LoadError> {
    let (file, sha) = Hashing::open(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1024);
    let (spec, path) = (spec.clone(), path.to_owned());
    std::thread::spawn(move || {
        let changed = |why: String| QueueError::BadInput {
            what: format!(
                "{} {why} while it was loaded; nothing was loaded: run again",
                path.display()
            ),
        };
        let mut validator = Validator::default();
        let mut too_long = false;
        let read = for_each_line_of(file, |line_no, line| match line {
            Ok(bytes) => {
                let line = new_line(&mut validator, &spec, line_no, bytes);
                tx.send(Ok(line)).is_ok()
            }
            Err(_) => {
                too_long = true;
                false
            }
        });
        // What was sent matches the identity only if the whole file does.
        let end = match read {
            Err(e) => Some(changed(format!("could not be read ({e})"))),
            Ok(()) if too_long || sha.finish() != identity => Some(changed("changed".into())),
            Ok(()) => None,
        };
        if let Some(e) = end {
            let _ = tx.send(Err(e));
        }
    });
    Ok(rx.into_iter())
}

/// A file whose bytes are hashed (SHA-256) as they are read, and the hash.
struct Hashing {
    file: File,
    sha: Arc<Mutex<ring::digest::Context>>,
}

/// The hash of what a [`Hashing`] read.
struct Sha(Arc<Mutex<ring::digest::Context>>);

impl Hashing {
    fn open(path: &Path) -> io::Result<(Hashing, Sha)> {
        let sha = Arc::new(Mutex::new(ring::digest::Context::new(
            &ring::digest::SHA256,
        )));
        let file = File::open(path)?;
        Ok((
            Hashing {
                file,
                sha: sha.clone(),
            },
            Sha(sha),
        ))
    }
}

impl Read for Hashing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        lock(&self.sha).update(&buf[..n]);
        Ok(n)
    }
}

impl Sha {
    fn finish(self) -> [u8; 32] {
        let digest = lock(&self.0).clone().finish();
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        out
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
