//! `run --limiter redis://...`: the engine's shared rate budget
//! (`batchling_engine::shared::SharedBudget`) kept in Redis by
//! `batchling-limiter`, so processes sending with one key spend its limits
//! once between them.
//!
//! Processes share a lane when they send to the same base URL with the
//! same key (a routes config's group: its first key) under the same limit
//! group name (`default` without a config) for the same model. The
//! upstream is named in Redis by a SHA-256 digest of the base URL and the
//! key, never the key.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result};
use batchling_engine::pacer::{Cost, PerMinute};
use batchling_engine::shared::{Booking, Fut, SharedBudget, SharedLane, Ticket, Unavailable};
use batchling_limiter::{Admission, Lane, Limiter, Limits, Reservation};
use batchling_providers::ApiKey;

/// The share of a limit the processes book together, as the local pacer
/// aims: Redis's one-second log caps every window; this leaves room for
/// timers that wake a little late and bunch sends (BENCHMARKS.md: 0 429s
/// at 0.99 with three processes on one per-second limit).
const UTILISATION: f64 = 0.99;

/// The Redis budget, with each limit group's upstream digest.
#[derive(Debug)]
pub(crate) struct RedisBudget {
    limiter: Limiter,
    /// Limit group name → the digest of its base URL and key.
    upstreams: HashMap<String, String>,
}

impl RedisBudget {
    /// Connect to `url` (keys under `prefix`); `groups` are each limit
    /// group's (name, base URL, key).
    pub(crate) async fn connect(
        url: &str,
        prefix: &str,
        groups: impl IntoIterator<Item = (String, String, Option<ApiKey>)>,
    ) -> Result<Self> {
        let limiter = Limiter::connect(url, prefix)
            .await
            .context("--limiter: the shared rate budget")?;
        let upstreams = (groups.into_iter())
            .map(|(group, base_url, key)| (group, upstream_digest(&base_url, key.as_ref())))
            .collect();
        Ok(RedisBudget { limiter, upstreams })
    }

    /// The Redis lane of `lane`; `None` when it cannot be named (a group
    /// not known, a name over the limiter's bound).
    fn lane(&self, lane: SharedLane<'_>) -> Option<Lane> {
        let upstream = self.upstreams.get(lane.group)?;
        Lane::new(upstream, lane.group, lane.model).ok()
    }
}

/// SHA-256 of the base URL, a NUL and the key, the first 32 hex digits.
fn upstream_digest(base_url: &str, key: Option<&ApiKey>) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(base_url.trim_end_matches('/').as_bytes());
    ctx.update(&[0]);
    ctx.update(key.map_or("", ApiKey::expose).as_bytes());
    batchling_core::hex::hex(&ctx.finish().as_ref()[..16])
}

fn scaled(limit: Option<u64>) -> Option<u64> {
    limit.map(|l| ((l as f64 * UTILISATION) as u64).max(1))
}

fn unavailable(e: batchling_limiter::Error) -> Unavailable {
    Unavailable(e.to_string())
}

impl SharedBudget for RedisBudget {
    fn reserve<'a>(
        &'a self,
        lane: SharedLane<'a>,
        limits: PerMinute,
        cost: Cost,
    ) -> Fut<'a, Result<Booking, Unavailable>> {
        Box::pin(async move {
            // A lane that cannot be named is paced locally only.
            let Some(lane) = self.lane(lane) else {
                return Ok(Booking::Send {
                    wait: Duration::ZERO,
                    ticket: Ticket(Box::new(())),
                });
            };
            let limits = Limits {
                rpm: scaled(limits.rpm),
                tpm: scaled(limits.tpm),
                itpm: scaled(limits.itpm),
                otpm: scaled(limits.otpm),
            };
            let cost = batchling_limiter::Cost {
                input: cost.input,
                output: cost.output,
            };
            match self.limiter.reserve(&lane, &limits, cost).await {
                Ok(Admission::Send(r)) => Ok(Booking::Send {
                    wait: r.wait,
                    ticket: Ticket(Box::new((lane, r))),
                }),
                Ok(Admission::Later { retry_in, .. }) => Ok(Booking::Later(retry_in)),
                Err(e @ batchling_limiter::Error::Unavailable { .. }) => Err(unavailable(e)),
                // What Redis cannot book (a cost over its bound): this
                // request is paced locally only, rather than held forever.
                Err(_) => Ok(Booking::Send {
                    wait: Duration::ZERO,
                    ticket: Ticket(Box::new(())),
                }),
            }
        })
    }

    fn settle(&self, ticket: Ticket, actual: Cost) -> Fut<'_, Result<(), Unavailable>> {
        Box::pin(async move {
            let Ok(booked) = ticket.0.downcast::<(Lane, Reservation)>() else {
                return Ok(());
            };
            let (lane, r) = *booked;
            let actual = batchling_limiter::Cost {
                input: actual.input,
                output: actual.output,
            };
            self.limiter
                .settle(&lane, &r, actual)
                .await
                .map_err(unavailable)?;
            Ok(())
        })
    }

    fn pause<'a>(
        &'a self,
        lane: SharedLane<'a>,
        pause: Duration,
    ) -> Fut<'a, Result<(), Unavailable>> {
        Box::pin(async move {
            let Some(lane) = self.lane(lane) else {
                return Ok(());
            };
            self.limiter
                .pause(&lane, pause)
                .await
                .map_err(unavailable)?;
            Ok(())
        })
    }

    fn learn<'a>(
        &'a self,
        lane: SharedLane<'a>,
        limits: PerMinute,
    ) -> Fut<'a, Result<(), Unavailable>> {
        Box::pin(async move {
            let Some(lane) = self.lane(lane) else {
                return Ok(());
            };
            let limits = Limits {
                rpm: limits.rpm,
                tpm: limits.tpm,
                itpm: limits.itpm,
                otpm: limits.otpm,
            };
            self.limiter
                .learn(&lane, &limits)
                .await
                .map_err(unavailable)
        })
    }

    fn learned<'a>(
        &'a self,
        lane: SharedLane<'a>,
    ) -> Fut<'a, Result<Option<PerMinute>, Unavailable>> {
        Box::pin(async move {
            let Some(lane) = self.lane(lane) else {
                return Ok(None);
            };
            let l = self.limiter.learned(&lane).await.map_err(unavailable)?;
            let limits = PerMinute {
                rpm: l.rpm,
                tpm: l.tpm,
                itpm: l.itpm,
                otpm: l.otpm,
            };
            Ok((!limits.is_empty()).then_some(limits))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upstream_digest_never_holds_the_key_and_tells_keys_apart() {
        let key = ApiKey::new("test-key-one");
        let a = upstream_digest("http://127.0.0.1:1/v1", Some(&key));
        assert_eq!(a.len(), 32);
        assert!(!a.contains("test-key"));
        assert_eq!(a, upstream_digest("http://127.0.0.1:1/v1/", Some(&key)));
        let other = ApiKey::new("test-key-two");
        assert_ne!(a, upstream_digest("http://127.0.0.1:1/v1", Some(&other)));
        assert_ne!(a, upstream_digest("http://127.0.0.1:2/v1", Some(&key)));
    }
}
