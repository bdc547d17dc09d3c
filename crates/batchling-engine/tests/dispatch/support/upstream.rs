//! A scripted upstream in the same process: it answers each request by its
//! `custom_id` and attempt number, after a simulated latency, and logs every
//! send (when it started, how many were in flight, what it got back).
//!
//! ```ignore
//! let up = Upstream::new(ok())                         // what every request gets…
//!     .script("r03", [status(500), status(500), ok()]) // …but r03: two 500s, then 200
//!     .script("r07", [rate_limited(secs(2)), ok()])    // r07: a 429 first
//!     .model("b", [ok().rpm_limit(60)])                // model b's requests: this
//!     .down_for(secs(20), [status(500), reset()])      // before 20 s: everyone fails
//!     .arc();
//! ```
//!
//! The n-th attempt of a request gets the n-th reply of its script; the last
//! one repeats. Times in the log are simulated, since the upstream was made.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use batchling_core::ratelimit::{LimitReading, RateLimitSnapshot};
use batchling_core::{Usage, Verdict};
use batchling_providers::{Answer, Attempt, Outgoing, Provider, TransportError, TransportKind};
use bytes::Bytes;
use tokio::time::Instant;

/// What the upstream does with one attempt.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    outcome: Outcome,
    latency: Duration,
    retry_after: Option<Duration>,
    rpm_limit: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Ok(Usage),
    Status(u16),
    /// A status with this error body.
    Error(u16, &'static str),
    /// 200: the model refused (`finish_reason: content_filter`), billed.
    Refusal(Usage),
    Timeout,
    Reset,
}

impl Reply {
    fn new(outcome: Outcome) -> Self {
        Reply {
            outcome,
            latency: Duration::ZERO,
            retry_after: None,
            rpm_limit: None,
        }
    }

    /// Answer only after `latency` (simulated).
    pub(crate) fn after(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Send `Retry-After` with the answer.
    pub(crate) fn retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    /// Report this usage in a 200's body.
    pub(crate) fn usage(mut self, input: u64, output: u64) -> Self {
        if let Outcome::Ok(u) = &mut self.outcome {
            *u = Usage {
                input,
                cached_input: 0,
                output,
                ..Usage::default()
            };
        }
        self
    }

    /// Send `x-ratelimit-limit-requests: rpm` with the answer.
    pub(crate) fn rpm_limit(mut self, rpm: u64) -> Self {
        self.rpm_limit = Some(rpm);
        self
    }
}

/// 200 with a chat completion whose usage is 10 input and 20 output tokens.
pub(crate) fn ok() -> Reply {
    Reply::new(Outcome::Ok(Usage {
        input: 10,
        cached_input: 0,
        output: 20,
        ..Usage::default()
    }))
}

/// An error status with an OpenAI-style error body.
pub(crate) fn status(code: u16) -> Reply {
    Reply::new(Outcome::Status(code))
}

/// 200 with a refusal (`finish_reason: content_filter`), usage 10 in, 5 out.
pub(crate) fn refusal() -> Reply {
    Reply::new(Outcome::Refusal(Usage {
        input: 10,
        cached_input: 0,
        output: 5,
        ..Usage::default()
    }))
}

/// An error status with this body (an error object of the provider's).
pub(crate) fn error(code: u16, body: &'static str) -> Reply {
    Reply::new(Outcome::Error(code, body))
}

/// 429 with `Retry-After`.
pub(crate) fn rate_limited(retry_after: Duration) -> Reply {
    status(429).retry_after(retry_after)
}

/// No answer: the client's timeout passed (give it a latency with `after`).
pub(crate) fn timeout() -> Reply {
    Reply::new(Outcome::Timeout)
}

/// No answer: the connection was reset.
pub(crate) fn reset() -> Reply {
    Reply::new(Outcome::Reset)
}

/// One send as the upstream saw it.
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    pub(crate) custom_id: String,
    /// The body's `model`.
    pub(crate) model: String,
    /// 1 for the request's first send, 2 for its first retry, …
    pub(crate) attempt: usize,
    /// When it started.
    pub(crate) at: Duration,
    /// Sends in flight once this one started, itself included.
    pub(crate) in_flight: usize,
    /// When its answer (or transport error) went back; `None` while in
    /// flight, or if the engine dropped it.
    pub(crate) answered: Option<Duration>,
    /// The HTTP status it got; `None` for a timeout or reset.
    pub(crate) status: Option<u16>,
    /// The usage a 200 reported.
    pub(crate) usage: Option<Usage>,
}

type Hook = Box<dyn Fn(&[Sent]) + Send + Sync>;

/// The scripted upstream. See the module docs.
pub(crate) struct Upstream {
    start: Instant,
    default: Vec<Reply>,
    scripts: HashMap<String, Vec<Reply>>,
    models: HashMap<String, Vec<Reply>>,
    outage: Option<(Duration, Vec<Reply>)>,
    /// From then on, every send gets one of these, in turn by send number.
    later: Vec<(Duration, Vec<Reply>)>,
    on_send: Option<Hook>,
    log: Mutex<Log>,
}

#[derive(Default)]
struct Log {
    sends: Vec<Sent>,
    in_flight: usize,
}

impl Upstream {
    /// An upstream giving every attempt `default`, from now on.
    pub(crate) fn new(default: Reply) -> Self {
        Self::each([default])
    }

    /// An upstream giving every request's attempts `replies` in order (the
    /// last repeats), from now on.
    pub(crate) fn each(replies: impl IntoIterator<Item = Reply>) -> Self {
        let default: Vec<Reply> = replies.into_iter().collect();
        assert!(!default.is_empty(), "a script needs a reply");
        Upstream {
            start: Instant::now(),
            default,
            scripts: HashMap::new(),
            models: HashMap::new(),
            outage: None,
            later: Vec::new(),
            on_send: None,
            log: Mutex::default(),
        }
    }

    /// Request `custom_id`'s attempts get `replies` in order; the last repeats.
    pub(crate) fn script(
        mut self,
        custom_id: &str,
        replies: impl IntoIterator<Item = Reply>,
    ) -> Self {
        let replies: Vec<Reply> = replies.into_iter().collect();
        assert!(!replies.is_empty(), "a script needs a reply");
        self.scripts.insert(custom_id.to_owned(), replies);
        self
    }

    /// Requests for `model` with no script of their own get `replies`
    /// instead of the default, in order; the last repeats.
    pub(crate) fn model(mut self, model: &str, replies: impl IntoIterator<Item = Reply>) -> Self {
        let replies: Vec<Reply> = replies.into_iter().collect();
        assert!(!replies.is_empty(), "a script needs a reply");
        self.models.insert(model.to_owned(), replies);
        self
    }

    /// The sends of one model, in order.
    pub(crate) fn sends_for(&self, model: &str) -> Vec<Sent> {
        let log = self.lock();
        let of = log.sends.iter().filter(|s| s.model == model);
        of.cloned().collect()
    }

    /// Every send that starts in the first `period` gets one of `replies`
    /// (in turn, by send number), whatever its script says.
    pub(crate) fn down_for(
        mut self,
        period: Duration,
        replies: impl IntoIterator<Item = Reply>,
    ) -> Self {
        let replies: Vec<Reply> = replies.into_iter().collect();
        assert!(!replies.is_empty(), "an outage needs a reply");
        self.outage = Some((period, replies));
        self
    }

    /// Every send that starts at `from` or later gets one of `replies` (in
    /// turn, by send number), whatever its script says; a later `from`
    /// given after wins from its time.
    pub(crate) fn starting_at(
        mut self,
        from: Duration,
        replies: impl IntoIterator<Item = Reply>,
    ) -> Self {
        let replies: Vec<Reply> = replies.into_iter().collect();
        assert!(!replies.is_empty(), "a phase needs a reply");
        self.later.push((from, replies));
        self
    }

    /// Call `hook` as each send starts, with the log so far (that send last).
    /// It runs under the log's lock: it must not call back into the upstream.
    pub(crate) fn on_send(mut self, hook: impl Fn(&[Sent]) + Send + Sync + 'static) -> Self {
        self.on_send = Some(Box::new(hook));
        self
    }

    pub(crate) fn arc(self) -> Arc<Self> {
        Arc::new(self)
    }

    /// Every send so far, in the order they started.
    pub(crate) fn sends(&self) -> Vec<Sent> {
        self.lock().sends.clone()
    }

    /// The sends of one request, in order.
    pub(crate) fn sends_of(&self, custom_id: &str) -> Vec<Sent> {
        let log = self.lock();
        let of = log.sends.iter().filter(|s| s.custom_id == custom_id);
        of.cloned().collect()
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Log a send and pick its reply.
    fn begin(&self, custom_id: &str, model: String) -> (usize, Reply) {
        let at = self.now();
        let mut log = self.lock();
        let attempt = 1 + log
            .sends
            .iter()
            .filter(|s| s.custom_id == custom_id)
            .count();
        let phase = self.later.iter().rev().find(|(from, _)| at >= *from);
        let reply = match (&self.outage, phase) {
            (Some((period, replies)), _) if at < *period => {
                &replies[log.sends.len() % replies.len()]
            }
            (_, Some((_, replies))) => &replies[log.sends.len() % replies.len()],
            _ => {
                let script = self.scripts.get(custom_id);
                let script = script.or_else(|| self.models.get(&model));
                let script = script.unwrap_or(&self.default);
                &script[(attempt - 1).min(script.len() - 1)]
            }
        };
        log.in_flight += 1;
        let in_flight = log.in_flight;
        log.sends.push(Sent {
            custom_id: custom_id.to_owned(),
            model,
            attempt,
            at,
            in_flight,
            answered: None,
            status: None,
            usage: None,
        });
        if let Some(hook) = &self.on_send {
            hook(&log.sends);
        }
        (log.sends.len() - 1, reply.clone())
    }

    /// Log that send `index` got its answer.
    fn end(&self, index: usize, attempt: &Attempt) {
        let at = self.now();
        let mut log = self.lock();
        log.in_flight -= 1;
        let sent = &mut log.sends[index];
        sent.answered = Some(at);
        if let Attempt::Answered(a) = attempt {
            sent.status = Some(a.status);
            sent.usage = a.usage;
        }
    }
}

impl Reply {
    /// The attempt the engine gets back; `n` tells answers apart.
    fn attempt(&self, n: usize) -> Attempt {
        let (status, body, usage) = match self.outcome {
            Outcome::Ok(u) => (200, completion(u), Some(u)),
            Outcome::Status(code) => (code, error_body(code), None),
            Outcome::Error(code, body) => (code, body.to_owned(), None),
            Outcome::Refusal(u) => (
                200,
                completion(u).replace("\"stop\"", "\"content_filter\""),
                Some(u),
            ),
            Outcome::Timeout => return transport(TransportKind::Timeout, "timed out"),
            Outcome::Reset => return transport(TransportKind::Connection, "connection reset"),
        };
        let limits = RateLimitSnapshot {
            requests: LimitReading {
                limit: self.rpm_limit,
                ..LimitReading::default()
            },
            ..RateLimitSnapshot::default()
        };
        Attempt::Answered(Answer {
            status,
            body: Bytes::from(body),
            request_id: Some(format!("req_{n}")),
            limits,
            retry_after: self.retry_after,
            should_retry: None,
            body_is_json: true,
            usage,
        })
    }
}

fn completion(u: Usage) -> String {
    format!(
        r#"{{"object":"chat.completion","choices":[{{"index":0,"message":{{"role":"assistant","content":"ok"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":{},"completion_tokens":{},"total_tokens":{}}}}}"#,
        u.input,
        u.output,
        u.input + u.output
    )
}

fn error_body(code: u16) -> String {
    format!(r#"{{"error":{{"message":"scripted {code}","type":"server_error"}}}}"#)
}

fn transport(kind: TransportKind, message: &str) -> Attempt {
    Attempt::Transport(TransportError {
        kind,
        message: message.to_owned(),
    })
}

impl Provider for Upstream {
    fn send(&self, request: &Outgoing) -> impl Future<Output = Attempt> + Send {
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let model = body["model"].as_str().unwrap_or_default().to_owned();
        let (index, reply) = self.begin(&request.custom_id, model);
        async move {
            // A zero latency answers without yielding, as a very fast server.
            if !reply.latency.is_zero() {
                tokio::time::sleep(reply.latency).await;
            }
            let attempt = reply.attempt(index);
            self.end(index, &attempt);
            attempt
        }
    }

    /// What the answers mean is the OpenAI-compatible provider's business.
    fn classify(&self, attempt: &Attempt) -> Verdict {
        batchling_providers::openai::classify(attempt)
    }

    fn describe(&self, answer: &batchling_providers::Answer) -> String {
        batchling_providers::openai::classify::error_message(answer)
    }
}
