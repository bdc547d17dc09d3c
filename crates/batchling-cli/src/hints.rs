//! The flags behind an error. The libraries say what went wrong in their own
//! words; only the CLI knows which of its flags changes it, so it adds that
//! here, once, for every command.

use std::error::Error;

use batchling_engine::submit::SubmitError;
use batchling_engine::{EngineError, Notice, StopCause};
use batchling_queue::QueueError;
use batchling_server::ServeError;
use batchling_store::StoreError;

use crate::job_store::OpenError;

/// The hint to print after `e`'s message, if a flag would change the outcome:
/// the first cause in `e`'s chain that one of the library mappings knows.
pub(crate) fn for_error(e: &anyhow::Error) -> Option<String> {
    e.chain().find_map(|cause| {
        store(cause)
            .or_else(|| engine(cause))
            .or_else(|| submit(cause))
            .or_else(|| serve(cause))
            .or_else(|| queue(cause))
    })
}

/// Hints for the job store's errors (`--store`, `--job`).
fn queue(cause: &(dyn Error + 'static)) -> Option<String> {
    let e = match cause.downcast_ref::<OpenError>() {
        Some(OpenError::Queue(e)) => e,
        Some(_) => return None,
        None => cause.downcast_ref::<QueueError>()?,
    };
    let hint = match e {
        QueueError::Refused { .. }
        | QueueError::Unreachable { .. }
        | QueueError::BadUrl { .. }
        | QueueError::Auth { .. }
        | QueueError::NoDatabase { .. }
        | QueueError::BadSchemaName { .. } => "check --store",
        QueueError::SchemaTooNew { .. } => {
            "upgrade batchling here, or name another schema in --store (?schema=NAME)"
        }
        QueueError::JobNotFound { .. } => "check --job and the schema in --store",
        _ => return None,
    };
    Some(hint.to_owned())
}

/// Hints for `batchling_store` errors (journal paths: `--state`, `--restart`).
fn store(cause: &(dyn Error + 'static)) -> Option<String> {
    let hint = match store_error(cause)? {
        StoreError::Open { .. } => "run and submit take another with --state",
        StoreError::NotAJournal { .. } => "run and submit take another with --state",
        StoreError::InputChanged { .. } | StoreError::CannotResume { .. } => {
            "--restart starts over; --state names another journal"
        }
        _ => return None,
    };
    Some(hint.to_owned())
}

/// The journal error in `cause`, also when it is wrapped by the engine's
/// errors: their `#[error(transparent)]` keeps the `StoreError` itself out of
/// the error chain.
fn store_error<'a>(cause: &'a (dyn Error + 'static)) -> Option<&'a StoreError> {
    if let Some(e) = cause.downcast_ref::<StoreError>() {
        return Some(e);
    }
    match cause.downcast_ref::<EngineError>() {
        Some(EngineError::Journal(e)) => return Some(e),
        Some(_) => return None,
        None => {}
    }
    match cause.downcast_ref::<SubmitError>()? {
        SubmitError::Journal(e) | SubmitError::Engine(EngineError::Journal(e)) => Some(e),
        _ => None,
    }
}

/// Hints for `batchling_engine` run errors.
fn engine(cause: &(dyn Error + 'static)) -> Option<String> {
    let hint = match cause.downcast_ref::<EngineError>()? {
        EngineError::NoConcurrency => "--concurrency",
        EngineError::NoAttempts => "--max-attempts",
        EngineError::BudgetWithoutPrices => "--max-cost needs --prices FILE",
        _ => return None,
    };
    Some(hint.to_owned())
}

/// A run's stop cause as `batchling run` words it: with the flag that
/// changes the outcome where there is one (the engine's own words name
/// none, since `serve` and `submit` have no such flags).
pub(crate) fn engine_stop(cause: &StopCause) -> String {
    match cause {
        StopCause::BudgetReached { limit_usd } => format!(
            "budget reached: the next request's worst case does not fit in --max-cost ${limit_usd:.4}; run the same command with a higher --max-cost to continue"
        ),
        StopCause::NoPrice { model } => format!(
            "no price is known for model {model:?}, so --max-cost cannot be enforced; add it with --prices FILE"
        ),
        StopCause::Unreachable { last_error } => format!(
            "the upstream kept failing for longer than --give-up-after (last error: {last_error})"
        ),
        StopCause::SharedBudgetUnreachable { why } => format!(
            "the shared rate budget (--limiter) could not be reached for longer than --give-up-after ({why}); nothing was sent meanwhile: run the same command again once Redis answers"
        ),
        other => other.to_string(),
    }
}

/// A run's notice as `batchling run` words it (a stop with its flag).
pub(crate) fn engine_notice(notice: &Notice) -> String {
    match notice {
        Notice::Stopping(cause) => format!("stopping: {}", engine_stop(cause)),
        other => other.to_string(),
    }
}

/// Hints for `batchling_engine::submit` errors (and the Batch API errors
/// they carry).
fn submit(cause: &(dyn Error + 'static)) -> Option<String> {
    use batchling_engine::submit::SubmitError;
    use batchling_providers::batch::{BatchApiError, SizeCap};
    if let Some(e) = cause.downcast_ref::<SubmitError>() {
        return match e {
            SubmitError::BadLines { .. } => Some(
                "fix them, or pass --skip-invalid to submit the rest and list them in the error file"
                    .into(),
            ),
            SubmitError::LineTooLarge { .. } => {
                Some("--max-batch-bytes sets the most a part may hold".into())
            }
            SubmitError::PartChanged { .. } => Some("rerun with --restart".into()),
            SubmitError::SettingsChanged { .. } => Some(
                "resume with the flags the journal was started with (--lenient or not), or start over with --restart"
                    .into(),
            ),
            SubmitError::Auth { .. } => Some(
                "the key is read from OPENAI_API_KEY, or from the variable --api-key-env names"
                    .into(),
            ),
            _ => None,
        };
    }
    match cause.downcast_ref::<BatchApiError>()? {
        BatchApiError::TooLarge {
            cap: SizeCap::Answer,
            ..
        } => Some("--max-response-mb sets the response cap".into()),
        _ => None,
    }
}

/// Hints for `batchling_server` errors.
fn serve(cause: &(dyn Error + 'static)) -> Option<String> {
    let hint = match cause.downcast_ref::<ServeError>()? {
        ServeError::Locked(_) => "--data-dir",
        ServeError::NoClientKeys => {
            "set them with --auth-keys-env NAME (comma-separated keys in $NAME) or auth_keys_env in the config file, or pass --no-auth to accept any client"
        }
        ServeError::NoUpstream => "give --base-url or a config file with [[upstream]] tables",
        _ => return None,
    };
    Some(hint.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_stops_name_the_flag_that_changes_them() {
        let budget = StopCause::BudgetReached { limit_usd: 0.5 };
        assert_eq!(
            engine_stop(&budget),
            "budget reached: the next request's worst case does not fit in --max-cost $0.5000; run the same command with a higher --max-cost to continue"
        );
        let outage = StopCause::Unreachable {
            last_error: "HTTP 503: down".into(),
        };
        assert_eq!(
            engine_notice(&Notice::Stopping(outage.clone())),
            "stopping: the upstream kept failing for longer than --give-up-after (last error: HTTP 503: down)"
        );
        // The engine's own words name no flag (serve has none of these).
        assert!(!outage.to_string().contains("--"));
        assert!(!budget.to_string().contains("--"));
    }

    #[test]
    fn store_errors_name_the_flag_also_when_wrapped() {
        let refused = QueueError::Refused {
            target: "127.0.0.1:1".into(),
        };
        let e = anyhow::Error::new(OpenError::Queue(refused)).context("--store URL");
        assert_eq!(for_error(&e).as_deref(), Some("check --store"));
        let unknown = QueueError::JobNotFound {
            job: batchling_queue::JobId(9),
            schema: "s".into(),
        };
        let e = anyhow::Error::new(unknown);
        assert_eq!(
            for_error(&e).as_deref(),
            Some("check --job and the schema in --store")
        );
        let newer = QueueError::SchemaTooNew {
            schema: "batchling".into(),
            found: 9,
            supported: 1,
        };
        let hint = for_error(&anyhow::Error::new(OpenError::Queue(newer)));
        assert!(hint.is_some_and(|h| h.contains("upgrade batchling")));
    }

    #[test]
    fn engine_errors_get_their_flag() {
        let e = anyhow::Error::new(EngineError::NoConcurrency);
        assert_eq!(for_error(&e).as_deref(), Some("--concurrency"));
    }
}
