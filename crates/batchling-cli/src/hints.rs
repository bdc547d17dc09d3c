//! The flags behind an error. The libraries say what went wrong in their own
//! words; only the CLI knows which of its flags changes it, so it adds that
//! here, once, for every command.

use std::error::Error;

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
fn store(_cause: &(dyn Error + 'static)) -> Option<String> {
    None
}

/// Hints for `batchling_engine` run errors and stops.
fn engine(_cause: &(dyn Error + 'static)) -> Option<String> {
    None
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
fn serve(_cause: &(dyn Error + 'static)) -> Option<String> {
    None
}
