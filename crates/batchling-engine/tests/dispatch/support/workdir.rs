//! A job in a temporary directory: its input, output, error file and
//! journal, and readers for what a run left there.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use batchling_engine::report::Silent;
use batchling_engine::{Input, Job, RunSummary};
use batchling_store::Journal;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use super::Upstream;

/// The `custom_id` of the `i`-th request: `r00`, `r01`, …
pub(crate) fn id(i: usize) -> String {
    format!("r{i:02}")
}

pub(crate) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub(crate) fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A job of `n` chat requests (`r00`…), each allowing up to 100 output
/// tokens, with the engine's defaults; tests change `job` as they need.
pub(crate) struct Workdir {
    _dir: TempDir,
    pub(crate) job: Job,
    n: usize,
}

impl Workdir {
    pub(crate) fn with_requests(n: usize) -> Self {
        Self::with_models(n, |_| "m")
    }

    /// As [`Workdir::with_requests`], request `i` for model `model(i)`.
    pub(crate) fn with_models(n: usize, model: impl Fn(usize) -> &'static str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let input = dir.path().join("requests.jsonl");
        let lines: String = (0..n)
            .map(|i| {
                format!(
                    r#"{{"custom_id":"{}","method":"POST","url":"/v1/chat/completions","body":{{"model":"{}","messages":[{{"role":"user","content":"hi"}}],"max_tokens":100}}}}{}"#,
                    id(i),
                    model(i),
                    "\n"
                )
            })
            .collect();
        std::fs::write(&input, lines).expect("the input is written");
        let mut job = Job::new(Input::File(input), dir.path().join("out.jsonl"));
        // No fsync per commit: what a commit makes visible is the same.
        job.durable = false;
        Workdir { _dir: dir, job, n }
    }

    /// Run the job to its end.
    pub(crate) async fn run(&self, upstream: &Arc<Upstream>) -> RunSummary {
        self.run_until(upstream, CancellationToken::new()).await
    }

    /// Run the job until it ends or `shutdown` is cancelled.
    pub(crate) async fn run_until(
        &self,
        upstream: &Arc<Upstream>,
        shutdown: CancellationToken,
    ) -> RunSummary {
        batchling_engine::run(
            self.job.clone(),
            batchling_engine::Routes::single(upstream.clone()),
            shutdown,
            Arc::new(Silent),
        )
        .await
        .expect("the run itself works")
    }

    /// Run the job to its end over `routes`.
    pub(crate) async fn run_routes(
        &self,
        routes: batchling_engine::Routes<Upstream>,
    ) -> RunSummary {
        batchling_engine::run(
            self.job.clone(),
            routes,
            CancellationToken::new(),
            Arc::new(Silent),
        )
        .await
        .expect("the run itself works")
    }

    /// The `custom_id`s of the output file, in its order.
    pub(crate) fn answered(&self) -> Vec<String> {
        custom_ids(&self.job.output)
    }

    /// Every request is in the output file, once.
    #[track_caller]
    pub(crate) fn assert_each_answered_once(&self) {
        let mut answered = self.answered();
        answered.sort();
        let mut all: Vec<String> = (0..self.n).map(id).collect();
        all.sort();
        assert_eq!(answered, all, "each request once in the output");
    }

    /// The `custom_id`s of the error file, in its order.
    pub(crate) fn failed(&self) -> Vec<String> {
        custom_ids(&self.job.errors)
    }

    /// The error file's lines.
    pub(crate) fn failure_lines(&self) -> Vec<serde_json::Value> {
        lines(&self.job.errors)
    }

    /// The requests the journal has a final state for.
    pub(crate) fn journaled(&self) -> BTreeSet<String> {
        let journal = Journal::open_read_only(&self.job.state).expect("the journal opens");
        let finished = journal.finished_seqs().expect("the journal reads");
        (0..self.n)
            .filter(|&seq| finished.contains(seq as u64))
            .map(id)
            .collect()
    }
}

fn lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).expect("an output line is JSON"))
        .collect()
}

fn custom_ids(path: &std::path::Path) -> Vec<String> {
    lines(path)
        .iter()
        .map(|l| l["custom_id"].as_str().expect("a custom_id").to_owned())
        .collect()
}
