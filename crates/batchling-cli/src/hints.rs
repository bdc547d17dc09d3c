//! The flags behind an error. The libraries say what went wrong in their own
//! words; only the CLI knows which of its flags changes it, so it adds that
//! here, once, for every command.

use std::error::Error;

use batchling_engine::EngineError;
use batchling_engine::submit::SubmitError;
use batchling_server::ServeError;
use batchling_store::StoreError;

/// The hint to print after `e`'s message, if a flag would change the outcome:
/// the first cause in `e`'s chain that one of the library mappings knows.
pub(crate) fn for_error(e: &anyhow::Error) -> Option<String> {
    e.chain().find_map(|cause| {
        store(cause)
            .or_else(|| engine(cause))
            .or_else(|| submit(cause))
            .or_else(|| serve(cause))
    })
}

/// Hints for `batchling_store` errors (journal paths: `--state`, `--restart`).
fn store(cause: &(dyn Error + 'static)) -> Option<String> {
    let hint = match store_error(cause)? {
        StoreError::Open { .. } => "run and submit take another with --state",
        StoreError::NotAJournal { .. } => "--state for run and submit",
        StoreError::InputChanged { .. } | StoreError::CannotResume { .. } => {
            "rerun with --restart to start over, or use another --state"
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

/// Hints for `batchling_engine` run errors and stops.
fn engine(_cause: &(dyn Error + 'static)) -> Option<String> {
    None
}

/// Hints for `batchling_engine::submit` errors.
fn submit(_cause: &(dyn Error + 'static)) -> Option<String> {
    None
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
