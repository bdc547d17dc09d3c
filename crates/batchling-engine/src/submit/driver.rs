//! What moves a journal's parts along on a Batch API: launch (upload,
//! create), poll, collect, cancel. `submit` and `cancel` both drive it.

use std::cell::Cell;
use std::path::Path;
use std::sync::Arc;

use batchling_core::RetryPolicy;
use batchling_core::clock::unix_now;
use batchling_core::pricing::{Catalog, ModelPrice};
use batchling_providers::batch::{
    BatchApi, BatchInfo, BatchInput, BatchProblem, BatchResults, BatchStatus, Lookup, NewBatch,
    ResultRefs,
};
use batchling_store::{Counts, FinalState, Journal, Part, PartEnd, PartState, StoreError};
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::apis::{Apis, BatchTarget};
use super::collect;
use super::job::SubmitError;
use super::plan;
use super::retry::retrying;
use crate::report::Reporter;

/// A submit journal and the Batch APIs its parts live on.
pub(crate) struct Driver<'a, B> {
    apis: &'a Apis<B>,
    /// The input: a part's requests are rebuilt from it.
    input: &'a Path,
    pub(crate) journal: Journal,
    reporter: &'a dyn Reporter,
    /// Retries of each Batch API call.
    retry: RetryPolicy,
    /// Batch prices, for the cost of collected parts.
    prices: Option<Arc<Catalog>>,
    /// The journal's submit id: random, made once, so the tags and file
    /// names of two jobs never collide.
    submit_id: String,
    /// When the journal was started: batches older than this are not ours.
    started_unix: u64,
}

impl<'a, B: BatchApi> Driver<'a, B> {
    pub(crate) fn new(
        apis: &'a Apis<B>,
        input: &'a Path,
        journal: Journal,
        reporter: &'a dyn Reporter,
        retry: RetryPolicy,
        prices: Option<Arc<Catalog>>,
    ) -> Result<Self, StoreError> {
        let submit_id = match journal.submit_value("submit_id")? {
            Some(id) => id,
            None => {
                let id = format!("{:016x}", rand::random::<u64>());
                journal.set_submit_value("submit_id", &id)?;
                id
            }
        };
        let started_unix = journal.meta()?.created_at.unwrap_or_else(unix_now);
        Ok(Driver {
            apis,
            input,
            journal,
            reporter,
            retry,
            prices,
            submit_id,
            started_unix,
        })
    }

    /// The Batch API part `p` lives on: its target's (a resume or a cancel
    /// talks to the API that has the batch).
    fn api_of(&self, p: &Part) -> Result<&'a B, SubmitError> {
        self.apis
            .api(p.target.as_deref())
            .ok_or_else(|| SubmitError::NoTarget {
                part: p.part,
                target: p.target.clone().unwrap_or_default(),
            })
    }

    /// The tag a part's batch is created with, which finds it again.
    fn tag(&self, part: u64) -> String {
        format!("{}:{part}", self.submit_id)
    }

    /// Upload and create every part that needs it, one part after the
    /// other (each batch starts as early as it can; one part's requests are
    /// in memory at a time).
    pub(crate) async fn launch(
        &mut self,
        input: &Path,
        shutdown: &CancellationToken,
    ) -> Result<(), SubmitError> {
        for p in self.journal.parts()? {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            match p.state {
                PartState::Planned => {
                    let requests = rebuild(input, &self.journal, &p)?;
                    let file_id = self.upload(&p, requests.clone()).await?;
                    self.mark_creating(p.part)?;
                    let input = file_id.map_or(BatchInput::Inline(requests), BatchInput::File);
                    self.create(&p, input, false).await?;
                }
                PartState::Uploaded | PartState::Creating => {
                    if p.state == PartState::Uploaded {
                        self.mark_creating(p.part)?;
                    }
                    let input = match &p.file_id {
                        Some(id) => BatchInput::File(id.clone()),
                        None => BatchInput::Inline(rebuild(input, &self.journal, &p)?),
                    };
                    let resumed = p.state == PartState::Creating;
                    self.create(&p, input, resumed).await?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Journal that the part's create is about to be sent, and when: a
    /// batch created before that is not the part's ([`Lookup::since_unix`]).
    fn mark_creating(&mut self, part: u64) -> Result<(), StoreError> {
        let key = creating_key(part);
        if self.journal.submit_value(&key)?.is_none() {
            self.journal
                .set_submit_value(&key, &unix_now().to_string())?;
        }
        self.journal.part_creating(part)
    }

    /// What finds the part's batch again, if its create worked unheard:
    /// its tag, its size, when its create was first sent, and the batches
    /// the journal already gives to other parts.
    fn lookup_of(&self, part: u64) -> Result<(String, u64, Vec<String>), StoreError> {
        let since = self
            .journal
            .submit_value(&creating_key(part))?
            .and_then(|t| t.parse().ok())
            .unwrap_or(self.started_unix);
        let known = self
            .journal
            .parts()?
            .into_iter()
            .filter(|p| p.part != part)
            .filter_map(|p| p.batch_id)
            .collect();
        Ok((self.tag(part), since, known))
    }

    /// Upload a part's requests and journal where they went.
    async fn upload(&mut self, p: &Part, requests: Bytes) -> Result<Option<String>, SubmitError> {
        let name = format!("batchling-{}-part-{}.jsonl", self.submit_id, p.part);
        let api = self.api_of(p)?;
        let file_id = retrying(api, &self.retry, self.reporter, || {
            api.upload(&name, requests.clone())
        })
        .await?;
        self.journal.part_uploaded(p.part, file_id.as_deref())?;
        if let Some(id) = &file_id {
            self.reporter.notice(&format!(
                "part {}: uploaded {} requests ({} bytes) as {id}",
                p.part, p.requests, p.bytes
            ));
        }
        Ok(file_id)
    }

    /// Create the part's batch. When the part may already have one (it was
    /// found in `creating`, or an attempt failed: a create whose answer was
    /// lost may have worked), look it up by its tag first.
    async fn create(
        &mut self,
        p: &Part,
        input: BatchInput,
        resumed: bool,
    ) -> Result<(), SubmitError> {
        let (tag, since_unix, known) = self.lookup_of(p.part)?;
        let new = NewBatch {
            input,
            endpoint: p.endpoint.clone(),
            tag,
            requests: p.requests,
        };
        let lookup = Lookup {
            tag: &new.tag,
            since_unix,
            requests: p.requests,
            known: &known,
        };
        let api = self.api_of(p)?;
        let look_first = Cell::new(resumed);
        let (batch, found) = retrying(api, &self.retry, self.reporter, || {
            let look = look_first.replace(true);
            let new = &new;
            async move {
                if look && let Some(b) = api.find(&lookup).await? {
                    return Ok((b, true));
                }
                api.create(new).await.map(|b| (b, false))
            }
        })
        .await?;
        self.journal
            .part_submitted(p.part, &batch.id, &batch.status)?;
        self.reporter.notice(&format!(
            "part {}: {} batch {} ({} requests, {}{})",
            p.part,
            if found {
                "found its already created"
            } else {
                "created"
            },
            batch.id,
            p.requests,
            p.model.as_deref().unwrap_or("no model"),
            p.target
                .as_deref()
                .map(|t| format!(", target {t}"))
                .unwrap_or_default()
        ));
        Ok(())
    }

    /// One round: poll every submitted part, then collect every ended
    /// one. Returns whether anything changed, and the parts as they now
    /// stand (read once, kept current by this round's moves).
    pub(crate) async fn cycle(&mut self) -> Result<(bool, Vec<Part>), SubmitError> {
        let mut parts = self.journal.parts()?;
        let changed = self.poll(&mut parts).await?;
        self.collect_finished(&mut parts).await?;
        Ok((changed, parts))
    }

    /// Retrieve every submitted part once and journal what changed.
    async fn poll(&mut self, parts: &mut [Part]) -> Result<bool, SubmitError> {
        let mut changed = false;
        for p in parts.iter_mut().filter(|p| p.state == PartState::Submitted) {
            let id = p.batch_id.clone().unwrap_or_default();
            let api = self.api_of(p)?;
            let b = retrying(api, &self.retry, self.reporter, || api.retrieve(&id)).await?;
            let counts = counts_of(&b);
            if b.status.is_terminal() {
                let errors = (!b.problems.is_empty())
                    .then(|| serde_json::to_string(&b.problems).unwrap_or_default());
                self.journal.part_finished(
                    p.part,
                    &PartEnd {
                        status: &b.status,
                        counts,
                        output_file_id: b.results.output.as_deref(),
                        error_file_id: b.results.errors.as_deref(),
                        errors_json: errors.as_deref(),
                    },
                )?;
                p.state = PartState::Finished;
                p.output_file_id = b.results.output;
                p.error_file_id = b.results.errors;
                p.errors = errors;
                changed = true;
            } else if p.batch_status.as_ref() != Some(&b.status) || p.counts != Some(counts) {
                self.journal.part_progress(p.part, &b.status, counts)?;
                changed = true;
            }
            p.batch_status = Some(b.status);
            p.counts = Some(counts);
        }
        Ok(changed)
    }

    /// Fetch and journal the results of every ended part.
    async fn collect_finished(&mut self, parts: &mut [Part]) -> Result<(), SubmitError> {
        for p in parts.iter_mut().filter(|p| p.state == PartState::Finished) {
            let batch = ended_batch(p);
            let api = self.api_of(p)?;
            let endpoint = p.endpoint.clone();
            let mut results = retrying(api, &self.retry, self.reporter, || {
                api.results(&batch, &endpoint)
            })
            .await?;
            if api.warns_on(&endpoint) {
                let n = self.add_warnings(api, p, &mut results);
                self.journal
                    .set_submit_value(&warnings_key(p.part), &n.to_string())?;
            }
            let reqs = self.journal.part_requests(p.part)?;
            if batch.status == BatchStatus::Failed {
                let (summary, _) = collect::failure_report(p.part, &batch, &reqs);
                self.reporter.notice(&summary);
            }
            let target = p.target.as_deref().and_then(|t| self.apis.batch_target(t));
            let price = self.price_of(p, target);
            let via = p
                .target
                .as_deref()
                .zip(target)
                .map(|(name, t)| collect::Via {
                    target: name,
                    group: &t.group,
                    key_id: &t.key_id,
                });
            let c = collect::collect(p.part, &batch, &reqs, results, price, via);
            if c.ignored > 0 {
                self.reporter.notice(&format!(
                    "part {}: {} result line(s) named no request of the part (or one already answered); ignored",
                    p.part, c.ignored
                ));
            }
            let done = c
                .records
                .iter()
                .filter(|r| r.state == FinalState::Done)
                .count();
            self.journal
                .part_collected(p.part, &c.records, c.cost_usd)?;
            p.state = PartState::Collected;
            self.reporter.notice(&format!(
                "part {}: batch {} {}: {done} answered, {} failed",
                p.part,
                batch.id,
                batch.status.as_str(),
                c.records.len() - done
            ));
        }
        Ok(())
    }

    /// The batch price of a part's answers: its target's price in the
    /// config, else the catalog's for its model.
    fn price_of(&self, p: &Part, target: Option<&BatchTarget<B>>) -> Option<ModelPrice> {
        if let Some(price) = target.and_then(|t| t.price.clone()) {
            return Some(price);
        }
        let catalog = self.prices.as_deref()?;
        catalog
            .get(p.model.as_deref()?)
            .map(|(_, price)| price.clone())
    }

    /// Give the API the part's requests, rebuilt, to join to its answers
    /// what they lost on the way; how many warnings that makes. An input
    /// that no longer rebuilds them costs the warnings, not the answers.
    fn add_warnings(&self, api: &B, p: &Part, results: &mut BatchResults) -> u64 {
        match rebuild(self.input, &self.journal, p) {
            Ok(requests) => api.add_warnings(&requests, results),
            Err(e) => {
                self.reporter.notice(&format!(
                    "part {}: its answers do not list what their requests lost on the way: {e}",
                    p.part
                ));
                0
            }
        }
    }

    /// Ask the server to cancel every live part; returns how many it took.
    pub(crate) async fn cancel_live(&mut self) -> Result<u64, SubmitError> {
        let mut n = 0;
        for p in self.journal.parts()? {
            if p.state != PartState::Submitted || p.batch_status == Some(BatchStatus::Cancelling) {
                continue;
            }
            let id = p.batch_id.clone().unwrap_or_default();
            let api = self.api_of(&p)?;
            // `None`: it ended meanwhile, and the next poll collects it.
            if let Some(b) = retrying(api, &self.retry, self.reporter, || api.cancel(&id)).await? {
                self.journal
                    .part_progress(p.part, &b.status, counts_of(&b))?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Settle every part caught between upload and create: find its batch
    /// (or create nothing), so no batch escapes a cancel.
    pub(crate) async fn find_creating(&mut self) -> Result<(), SubmitError> {
        for p in self.journal.parts()? {
            if p.state != PartState::Creating {
                continue;
            }
            let (tag, since_unix, known) = self.lookup_of(p.part)?;
            let lookup = Lookup {
                tag: &tag,
                since_unix,
                requests: p.requests,
                known: &known,
            };
            let found = self.api_of(&p)?.find(&lookup).await?;
            if let Some(b) = found {
                self.journal.part_submitted(p.part, &b.id, &b.status)?;
            }
        }
        Ok(())
    }
}

/// The journal key of how many warnings a part's answers carry.
pub(crate) fn warnings_key(part: u64) -> String {
    format!("warnings:{part}")
}

/// The journal key of when a part's create was first sent.
fn creating_key(part: u64) -> String {
    format!("creating_at:{part}")
}

/// A part's requests rebuilt from the input, checked against the plan.
fn rebuild(input: &Path, journal: &Journal, p: &Part) -> Result<Bytes, SubmitError> {
    let reqs = journal.part_requests(p.part)?;
    // A target's part names its model in every line (the plan's rule).
    let model = p.target.as_ref().and(p.model.as_deref());
    let content = plan::part_contents(input, &[&reqs], &[model])
        .map_err(|source| SubmitError::Input {
            path: input.to_owned(),
            source,
        })?
        .pop()
        .unwrap_or_default();
    if plan::content_hash(&content) != p.content_hash {
        return Err(SubmitError::PartChanged {
            path: input.to_owned(),
            part: p.part,
        });
    }
    Ok(Bytes::from(content))
}

fn counts_of(b: &BatchInfo) -> Counts {
    Counts {
        total: b.counts.total,
        completed: b.counts.completed,
        failed: b.counts.failed,
    }
}

/// An ended part's batch, as the journal has it (the poll that saw it end
/// journaled all of it, so it is not retrieved again).
fn ended_batch(p: &Part) -> BatchInfo {
    let counts = p.counts.unwrap_or_default();
    BatchInfo {
        id: p.batch_id.clone().unwrap_or_default(),
        status: p
            .batch_status
            .clone()
            .unwrap_or(BatchStatus::Other(String::new())),
        counts: batchling_providers::batch::BatchCounts {
            total: counts.total,
            completed: counts.completed,
            failed: counts.failed,
        },
        results: ResultRefs {
            output: p.output_file_id.clone(),
            errors: p.error_file_id.clone(),
        },
        problems: p
            .errors
            .as_deref()
            .and_then(|e| serde_json::from_str::<Vec<BatchProblem>>(e).ok())
            .unwrap_or_default(),
    }
}
