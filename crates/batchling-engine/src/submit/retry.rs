//! The retry loop of Batch API calls. Whether an error is worth another
//! try is the provider's call ([`BatchApi::is_transient`]); how long to wait
//! is the policy's (the server's delay, else backoff).

use std::future::Future;

use batchling_core::RetryPolicy;
use batchling_providers::{BatchApi, BatchApiError};

use crate::report::Reporter;

/// Call `f` until it succeeds, fails for good, or the policy's attempts
/// are used up.
pub(crate) async fn retrying<B, T, F, Fut>(
    api: &B,
    policy: &RetryPolicy,
    reporter: &dyn Reporter,
    mut f: F,
) -> Result<T, BatchApiError>
where
    B: BatchApi,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, BatchApiError>>,
{
    let mut tries = 0;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if api.is_transient(&e) && tries + 1 < policy.max_attempts => {
                let wait = policy.backoff(tries, e.retry_after(), rand::random::<f64>());
                reporter.notice(&format!("{e}; retrying in {:.1}s", wait.as_secs_f64()));
                tokio::time::sleep(wait).await;
                tries += 1;
            }
            Err(e) => return Err(e),
        }
    }
}
